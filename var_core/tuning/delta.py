"""A subject's trainable tensors, and how they change the base model's weights without touching them.

A ``SubjectDelta`` holds, for the selected block tensors (selection.py), either

* ``full``: a delta of the same shape as the weight (ARBooth's setting), stored as ``delta.{block}.{name}``; or
* ``lora``: low-rank factors of every selected matrix, W + (alpha/rank)·B·A, stored as ``lora_A.{block}.{name}``
  (rank, in) and ``lora_B.{block}.{name}`` (out, rank); vectors (biases, ...) are left frozen;

plus, optionally, ``placeholder``: K vectors (K, C_text) that replace the T5 output of the placeholder token.
All trainable tensors are fp32 (the master copies); B and the deltas start at zero, so a new delta changes nothing.

The weights act through ``Infinity.patch``: for block i at scale k the patched weight is W + strength_k·Δ, made
inside the block's call. Because the *weight tensor* is replaced, a LoRA on the fused ``mat_qkv``/``mat_kv``
projections (read with ``F.linear(x, self.mat_qkv.weight, ...)``) takes effect, which PEFT wrappers cannot do.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict
from typing import Iterable, Sequence

import torch

from ..transformer import Infinity
from .selection import block_tensor, parse_blocks, parse_groups, select_targets

MODES = ("lora", "full", "none")


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

    def to(self, device=None, dtype=None) -> "SubjectDelta":
        """Move (and optionally cast) every tensor; returns self."""
        self.tensors = {k: v.detach().to(device=device, dtype=dtype).requires_grad_(v.requires_grad)
                        for k, v in self.tensors.items()}
        return self

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
        """Δ of one tensor (fp32, unscaled by strength)."""
        if self.mode == "full":
            return self.tensors[f"delta.{block}.{name}"]
        a, b = self.tensors[f"lora_A.{block}.{name}"], self.tensors[f"lora_B.{block}.{name}"]
        return (self.alpha / self.rank) * (b.float() @ a.float())


class SubjectPatch:
    """``Infinity.patch`` for a list of (delta, strength): W + Σ strength_k·Δ for every patched tensor.

    strength: a number, or one number per scale (the per-scale schedule; e.g. full strength on the coarse scales,
    which carry the subject's identity, less on the fine ones). Zero strength reproduces the base exactly.
    """

    def __init__(self, model: Infinity, entries: list[tuple[SubjectDelta, float | Sequence[float]]]):
        self.model = model
        self.entries = entries

    @staticmethod
    def strength_at(strength, scale: int | None) -> float:
        if isinstance(strength, (int, float)):
            return float(strength)
        values = [float(s) for s in strength]
        if scale is None:
            if len(set(values)) > 1:
                raise ValueError("A per-scale strength schedule needs scale-by-scale sampling (the KV-cached sampler); "
                                 "a forward over several scales at once can only use one strength.")
            return values[0]
        if scale >= len(values):
            raise ValueError(f"The strength schedule has {len(values)} values, but scale {scale} was reached: give "
                             f"one value per scale of the resolution.")
        return values[scale]

    def __call__(self, block: int, scale: int | None) -> dict[str, torch.Tensor] | None:
        target = self.model.blocks[block]
        patched: dict[str, torch.Tensor] = {}
        for delta, strength in self.entries:
            s = self.strength_at(strength, scale)
            names = delta.block_names().get(block, ())
            if s == 0.0 or not names:
                continue
            for name in names:
                base = patched.get(name)
                if base is None:
                    base = target.get_parameter(name).float()
                patched[name] = base + s * delta.weight_delta(block, name).to(base.device)
        # one rounding to the stored dtype (bf16 on GPU): the patched weight looks like the base weight
        return {n: w.to(target.get_parameter(n).dtype) for n, w in patched.items()} or None


def apply_subjects(model: Infinity, subjects: Iterable[tuple[SubjectDelta, float | Sequence[float]]]) -> Infinity:
    """A view of ``model`` that samples with the given subjects, each at its strength (number or per-scale list).

    The base weights are shared, never modified: the same loaded model serves any number of views. Applying to a
    view adds to its subjects (chainable).
    """
    subjects = list(subjects)
    for delta, _ in subjects:
        check_fits(delta, model)
    view = copy.copy(model)  # shares parameters and submodules; only the patch attribute differs
    entries = list(model.patch.entries) if isinstance(model.patch, SubjectPatch) else []
    base = model.patch.model if isinstance(model.patch, SubjectPatch) else model
    view.patch = SubjectPatch(base, entries + subjects)
    return view


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
    entries = []
    for delta, strength in model.patch.entries:
        per_scale = [strength] * len(factors) if isinstance(strength, (int, float)) else list(strength)
        if len(per_scale) < len(factors):
            raise ValueError(f"A subject's strength schedule has {len(per_scale)} values for {len(factors)} scales.")
        entries.append((delta, [float(s) * float(f) for s, f in zip(per_scale, factors)]))
    view = copy.copy(model)
    view.patch = SubjectPatch(model.patch.model, entries)
    return view


def subjects_of(model: Infinity) -> list[SubjectDelta]:
    return [d for d, _ in model.patch.entries] if isinstance(model.patch, SubjectPatch) else []


def check_fits(delta: SubjectDelta, model: Infinity) -> None:
    """The delta must come from this base model (fingerprint, when known) and its shapes must fit."""
    known = delta.metadata.get("fingerprint")
    if known and known != fingerprint(model):
        raise ValueError(f"The subject was trained on another base model (fingerprint {known}, architecture "
                         f"{delta.metadata.get('architecture')}) than this one (fingerprint {fingerprint(model)}, "
                         f"{model.source or 'given in memory'}). Load the base model it was trained on.")
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


def fingerprint(model: Infinity) -> str:
    """A short hash of the base model: its architecture and a few of its weights.

    Values are rounded to bf16 first, so fp32, bf16 and converted copies of the same checkpoint agree.
    """
    base = model.patch.model if getattr(model.patch, "model", None) is not None else model
    h = hashlib.sha256(json.dumps(asdict(base.config), sort_keys=True).encode())
    blocks = base.blocks
    samples = (base.cfg_uncond[:4], base.pos_start, base.head.bias, base.word_embed.weight[:8],
               blocks[0].ffn.fc1.weight[:8, :8], blocks[-1].ca.proj.weight[:8, :8])
    for t in samples:
        h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]
