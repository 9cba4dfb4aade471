"""A subject's trainable tensors, and how they change the base model's weights without touching them.

A ``SubjectDelta`` holds, for the selected block tensors (selection.py), either

* ``full``: a delta of the same shape as the weight (ARBooth's setting), stored as ``delta.{block}.{name}``; or
* ``lora``: low-rank factors of every selected matrix, W + (alpha/rank)·B·A, stored as ``lora_A.{block}.{name}``
  (rank, in) and ``lora_B.{block}.{name}`` (out, rank); vectors (biases, ...) are left frozen;

plus, optionally, ``placeholder``: K vectors (K, C_text) that replace the T5 output of the placeholder token.
All trainable tensors are fp32 (the master copies); B and the deltas start at zero, so a new delta changes nothing.

They act through ``Infinity.patch``, inside each block's call: a full delta is merged (W + strength_k·Δ, in fp32,
rounded once); a LoRA runs unmerged, x·Aᵀ·Bᵀ·strength_k·alpha/rank in fp32 added to the layer's output, so an
update far below the bf16 resolution of W still counts. Every linear layer of a block, the fused
``mat_qkv``/``mat_kv`` projections included, takes these updates (transformer.linear), which PEFT wrappers cannot do.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, replace
from typing import Iterable, Sequence

import torch

from ..schedules import per_scale
from ..infinity.layers import BlockPatch, LowRank
from ..infinity.model import Infinity
from .selection import block_tensor, parse_blocks, parse_groups, select_targets

MODES = ("lora", "full", "none")
FINGERPRINT_VALUES = 24


class SubjectDelta:
    def __init__(self, tensors: dict[str, torch.Tensor], mode: str, rank: int = 0, alpha: float = 0.0,
                 groups: Sequence[str] = (), blocks: Sequence[int] = (), token: str = "<placeholder>",
                 class_word: str = "", metadata: dict | None = None):
        self.tensors = tensors
        self.mode, self.rank, self.alpha = mode, int(rank), float(alpha)
        self.groups, self.blocks = tuple(groups), tuple(blocks)
        self.token, self.class_word = token, class_word
        self.metadata = dict(metadata or {})  # what the file said (training settings, fingerprint, ...)
        self._by_block: dict[int, list[str]] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, model: Infinity, mode: str = "lora", groups=("ca", "ffn"), blocks=None, rank: int = 16,
               alpha: float | None = None, placeholder_vectors: int = 4, token: str = "<placeholder>",
               class_word: str = "", generator: torch.Generator | None = None) -> "SubjectDelta":
        """A zero delta for ``model``: it changes nothing until trained."""
        if mode not in MODES:
            raise ValueError(f"Unknown delta mode {mode!r}: choose from {', '.join(MODES)}.")
        if mode == "lora" and rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
        if mode == "none" and placeholder_vectors < 1:
            raise ValueError("Nothing to train: mode 'none' needs placeholder vectors (placeholder_vectors >= 1).")
        groups = parse_groups(groups)
        blocks = parse_blocks(blocks, model.config.depth)
        tensors: dict[str, torch.Tensor] = {}
        device = model.device
        for i, name in (select_targets(model, groups, blocks) if mode != "none" else []):
            w = block_tensor(model, i, name)
            if mode == "full":
                tensors[f"delta.{i}.{name}"] = torch.zeros(w.shape, device=device)
            elif w.dim() == 2:
                out_f, in_f = w.shape
                if rank > min(out_f, in_f):
                    raise ValueError(f"LoRA rank {rank} is above the width of {name} in block {i} ({out_f}x{in_f}): "
                                     f"a rank of at most {min(out_f, in_f)} can be learned; 4-64 is usual.")
                a = torch.empty(rank, in_f).uniform_(-1, 1, generator=generator) / math.sqrt(in_f)  # kaiming-like
                tensors[f"lora_A.{i}.{name}"] = a.to(device)
                tensors[f"lora_B.{i}.{name}"] = torch.zeros(out_f, rank, device=device)
        if placeholder_vectors:
            tensors["placeholder"] = torch.zeros(placeholder_vectors, model.config.text_channels, device=device)
        return cls(tensors, mode, rank if mode == "lora" else 0, (alpha or rank) if mode == "lora" else 0.0,
                   groups if mode != "none" else (), blocks if mode != "none" else (), token, class_word)

    # ------------------------------------------------------------------ views
    @property
    def placeholder(self) -> torch.Tensor | None:
        return self.tensors.get("placeholder")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors.values())

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def requires_grad_(self, flag: bool = True) -> "SubjectDelta":
        for t in self.tensors.values():
            t.requires_grad_(flag)
        return self

    def to(self, device=None, dtype=None, copy: bool = False) -> "SubjectDelta":
        """A SubjectDelta with every tensor on ``device`` (and cast to ``dtype``); this one is left as it is (others
        may hold it). ``copy=True`` also copies tensors that need no move, so the result can be trained in place."""
        tensors = {k: v.detach().to(device=device, dtype=dtype, copy=copy).requires_grad_(v.requires_grad)
                   for k, v in self.tensors.items()}
        return SubjectDelta(tensors, self.mode, self.rank, self.alpha, self.groups, self.blocks, self.token,
                            self.class_word, self.metadata)

    def block_names(self) -> dict[int, list[str]]:
        """{block index: tensor names patched in that block}."""
        if self._by_block is None:
            by_block: dict[int, list[str]] = {}
            for key in self.tensors:
                if key.startswith(("delta.", "lora_B.")):
                    _, i, name = key.split(".", 2)
                    by_block.setdefault(int(i), []).append(name)
            self._by_block = by_block
        return self._by_block

    def weight_delta(self, block: int, name: str) -> torch.Tensor:
        """Δ of one tensor (fp32, unscaled by strength); for LoRA the product (alpha/rank)·B·A."""
        if self.mode == "full":
            return self.tensors[f"delta.{block}.{name}"]
        return self.low_rank(block, name, 1.0).merged()

    def low_rank(self, block: int, name: str, strength: float) -> LowRank:
        """The LoRA update of one matrix at ``strength``, to run unmerged beside the frozen layer."""
        return LowRank(self.tensors[f"lora_A.{block}.{name}"], self.tensors[f"lora_B.{block}.{name}"],
                       strength * self.alpha / self.rank)


class SubjectPatch:
    """``Infinity.patch`` for a list of (delta, strength): for every patched block, the full deltas merged into the
    weights (W + Σ strength_k·Δ in fp32, rounded once to the stored dtype) and the LoRA updates as unmerged
    low-rank paths (their own fp32 precision survives next to bf16 weights).

    strength: a number, or one number per scale (the per-scale schedule; e.g. full strength on the coarse scales,
    which carry the subject's identity, less on the fine ones). Zero strength reproduces the base exactly.
    """

    def __init__(self, model: Infinity, entries: list[tuple[SubjectDelta, float | Sequence[float]]]):
        self.model = model
        self.entries = entries

    def check_scales(self, num_scales: int) -> None:
        """Every per-scale strength list must have one value per scale of the resolution being sampled."""
        for delta, strength in self.entries:
            if not isinstance(strength, (int, float)):
                per_scale(strength, num_scales, f"The strength schedule of subject {delta.token!r}")

    @staticmethod
    def strength_at(strength, scale_index: int | None) -> float:
        if isinstance(strength, (int, float)):
            return float(strength)
        if scale_index is not None:
            return float(strength[scale_index])
        if len(set(strength)) > 1:
            raise ValueError("A per-scale strength schedule needs scale-by-scale sampling (the KV-cached sampler); "
                             "a forward over several scales at once can only use one strength.")
        return float(strength[0])

    def __call__(self, block: int, scale_index: int | None) -> BlockPatch | None:
        target = self.model.blocks[block]
        merged: dict[str, torch.Tensor] = {}
        updates: dict[str, dict[str, list[LowRank]]] = {}
        for delta, strength in self.entries:
            s = self.strength_at(strength, scale_index)
            names = delta.block_names().get(block, ())
            if s == 0.0 or not names:
                continue
            for name in names:
                if delta.mode == "lora":
                    module, layer, _ = name.split(".")  # e.g. "ca.mat_kv.weight"
                    updates.setdefault(module, {}).setdefault(layer, []).append(delta.low_rank(block, name, s))
                else:
                    base = merged.get(name)
                    if base is None:
                        base = target.get_parameter(name).float()
                    merged[name] = base + s * delta.weight_delta(block, name).to(base.device)
        if not merged and not updates:
            return None
        # one rounding to the stored dtype (bf16 on GPU): the patched weight looks like the base weight
        return BlockPatch({n: w.to(target.get_parameter(n).dtype) for n, w in merged.items()}, updates)


class SubjectView(Infinity):
    """A base model with subjects applied: it shares every parameter and submodule with the base, so calls that
    would change them for everyone (to, train, requires_grad_, ...) are refused; make them on the base model."""

    def _refuse(self, *args, **kwargs):
        raise RuntimeError("This is a view of a shared base model with subjects applied; moving, casting or "
                           "switching it would change the base for everyone. Do it on the base model, then apply "
                           "the subjects again.")

    to = cuda = cpu = half = float = bfloat16 = requires_grad_ = load_state_dict = cast_blocks = apply = _refuse

    def train(self, mode: bool = True):
        if mode != self.training:
            self._refuse()
        return self


def _view(model: Infinity, patch: SubjectPatch) -> SubjectView:
    view = copy.copy(model)  # shares parameters and submodules; only the patch attribute differs
    view.__class__ = SubjectView
    view.patch = patch
    return view


def apply_subjects(model: Infinity, subjects: Iterable[tuple[SubjectDelta, float | Sequence[float]]]) -> Infinity:
    """A view of ``model`` that samples with the given subjects, each at its strength (number or per-scale list).

    The base weights are shared, never modified: the same loaded model serves any number of views. Applying to a
    view adds to its subjects (chainable).
    """
    subjects = list(subjects)
    for delta, _ in subjects:
        check_fits(delta, model)
    entries = list(model.patch.entries) if isinstance(model.patch, SubjectPatch) else []
    base = model.patch.model if isinstance(model.patch, SubjectPatch) else model
    return _view(model, SubjectPatch(base, entries + subjects))


def arbooth_subject(model: Infinity, token: str = "<placeholder>") -> SubjectDelta | None:
    """The learned placeholder vectors of a model loaded from an ARBooth checkpoint (its fine-tuned weights are the
    model itself), as a subject to apply so that ``token`` in prompts means them; None for other models."""
    if model.special_token is None:
        return None
    vectors = model.special_token.detach().float().to(model.device)
    return SubjectDelta({"placeholder": vectors}, "none", token=token, metadata={"fingerprint": fingerprint(model)})


def with_strength_schedule(model: Infinity, factors: Sequence[float]) -> Infinity:
    """A view whose subjects' strengths are multiplied by ``factors`` (one per scale)."""
    if not isinstance(model.patch, SubjectPatch):
        return model
    K = len(factors)
    entries = [(delta, [s * f for s, f in zip(per_scale(strength, K, f"The strength of subject {delta.token!r}"),
                                              factors)])
               for delta, strength in model.patch.entries]
    return _view(model, SubjectPatch(model.patch.model, entries))


def subjects_of(model: Infinity) -> list[SubjectDelta]:
    return [d for d, _ in model.patch.entries] if isinstance(model.patch, SubjectPatch) else []


def check_fits(delta: SubjectDelta, model: Infinity) -> None:
    """The delta must come from this base model (fingerprint, when known) and its shapes must fit."""
    known = delta.metadata.get("fingerprint")
    if known and not same_base(known, model):
        raise ValueError(f"The subject was trained on another base model (fingerprint {known}, architecture "
                         f"{delta.metadata.get('architecture')}) than this one (fingerprint {fingerprint(model)}, "
                         f"{model.source or 'given in memory'}){_architecture_change(delta, model)}. Load the base "
                         f"model it was trained on.")
    for key, t in delta.tensors.items():
        if key == "placeholder":
            if t.dim() != 2 or t.shape[1] != model.config.text_channels:
                raise ValueError(f"Placeholder vectors {tuple(t.shape)} do not fit text width "
                                 f"{model.config.text_channels}.")
            continue
        kind, i, name = key.split(".", 2)
        if int(i) >= model.config.depth:
            raise ValueError(f"{key}: block {i} does not exist (the model has {model.config.depth} blocks).")
        w = block_tensor(model, int(i), name)
        expected = {"delta": tuple(w.shape), "lora_A": (delta.rank, w.shape[-1]),
                    "lora_B": (w.shape[0], delta.rank)}[kind]
        if tuple(t.shape) != expected:
            raise ValueError(f"{key} has shape {tuple(t.shape)}, expected {expected} for this model.")


def _architecture_change(delta: SubjectDelta, model: Infinity) -> str:
    """What differs between the subject's base architecture and ``model``'s, in words ("" when unknown or equal):
    e.g. a subject of Infinity-2B (32-bit tokens) offered to Infinity-8B (56-bit 2x2-patchified tokens)."""
    try:
        theirs = json.loads(delta.metadata.get("architecture") or "{}")
    except ValueError:
        return ""
    mine = asdict(model.config)
    changed = [f"{k} {theirs[k]} (this model: {mine[k]})" for k in mine if k in theirs and theirs[k] != mine[k]]
    if not changed:
        return ""
    tokens = ""
    if "bits" in theirs and theirs["bits"] != model.config.bits:
        def kind(bits, patch):
            return f"{bits}-bit tokens" + (f" ({patch}x{patch}-patchified, Infinity-8B-shaped)" if patch > 1 else "")
        mine_kind = kind(model.config.bits, model.config.token_patch)
        theirs_kind = kind(theirs["bits"], replace(model.config, bits=theirs["bits"]).token_patch)
        tokens = f"; it was trained on a model with {theirs_kind}, this one has {mine_kind}"
    return f": the architectures differ ({', '.join(changed)}){tokens}"


def _fingerprint_samples(model: Infinity) -> list[torch.Tensor]:
    blocks = model.blocks  # a view shares these with its base
    return [model.cfg_uncond[:4], model.pos_start, model.head.bias, model.word_embed.weight[:8],
            blocks[0].ffn.fc1.weight[:8, :8], blocks[-1].ca.proj.weight[:8, :8]]


def fingerprint(model: Infinity) -> str:
    """The base model's identity: '<hash of its architecture>:<24 of its weights, 3 significant digits>'.

    Weights are compared with a tolerance (same_base), not hashed: fp32, bf16 and fp16 copies of one checkpoint (and
    fp16 -> bf16 double rounding) differ in the last bits, while another checkpoint differs far more.
    """
    if model.sharded_fingerprint:  # an FSDP-sharded base (distributed.shard_base): its weights are split
        return model.sharded_fingerprint
    arch = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode()).hexdigest()[:12]
    values = torch.cat([t.detach().float().flatten().cpu() for t in _fingerprint_samples(model)])
    idx = torch.linspace(0, values.numel() - 1, FINGERPRINT_VALUES).long()
    return arch + ":" + ",".join(f"{v:.3g}" for v in values[idx].tolist())


def same_base(known: str, model: Infinity) -> bool:
    """Whether a stored fingerprint names ``model`` (any of the dtypes the loaders offer)."""
    if ":" not in known:  # format 1 (a hash of bf16-rounded weights): exact, so only fp32/bf16 copies agree
        return known == _legacy_fingerprint(model)
    arch, _, text = known.partition(":")
    mine_arch, _, mine = fingerprint(model).partition(":")
    if arch != mine_arch:
        return False
    a = torch.tensor([float(v) for v in text.split(",")])
    b = torch.tensor([float(v) for v in mine.split(",")])
    # bf16 keeps 8 significant bits (0.4 %), the 3-digit text 0.05 %; fp16 flushes values below 6e-8
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-2, atol=1e-4)


def _legacy_fingerprint(model: Infinity) -> str:
    h = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for t in _fingerprint_samples(model):
        h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]
