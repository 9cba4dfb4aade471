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

import math
from typing import Sequence

import torch

from ..infinity.layers import LowRank
from ..defaults import check
from .fingerprint import fingerprint
from .placeholder import DEFAULT_TOKEN
from .selection import block_tensor, parse_blocks, parse_groups, select_targets

MODES = ("lora", "full", "none")


class SubjectDelta:
    def __init__(self, tensors: dict[str, torch.Tensor], mode: str, rank: int = 0, alpha: float = 0.0,
                 groups: Sequence[str] = (), blocks: Sequence[int] = (), token: str = DEFAULT_TOKEN,
                 class_word: str = "", metadata: dict | None = None):
        self.tensors = tensors
        self.mode, self.rank, self.alpha = mode, int(rank), float(alpha)
        self.groups, self.blocks = tuple(groups), tuple(blocks)
        self.token, self.class_word = token, class_word
        self.metadata = dict(metadata or {})  # what the file said (training settings, fingerprint, ...)
        self._by_block: dict[int, list[str]] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, model, mode: str = "lora", groups=None, blocks=None, rank: int = 16,
               alpha: float | None = None, placeholder_vectors: int = 4, token: str = DEFAULT_TOKEN,
               class_word: str = "", generator: torch.Generator | None = None) -> "SubjectDelta":
        """A zero delta for ``model``: it changes nothing until trained."""
        if mode not in MODES:
            raise ValueError(f"Unknown delta mode {mode!r}: choose from {', '.join(MODES)}.")
        if mode == "lora":
            check("rank", rank, 1, whole=True)
            if alpha is not None:
                check("alpha", alpha, (0.0,))
        if mode == "none" and placeholder_vectors < 1:
            raise ValueError("Nothing to train: mode 'none' needs placeholder vectors (placeholder_vectors >= 1).")
        groups = parse_groups(groups or model.family.default_groups, model.family.tuning_groups)
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
            width = model.family.placeholder_width(model)
            tensors["placeholder"] = torch.zeros(placeholder_vectors, width, device=device)
        alpha = (rank if alpha is None else alpha) if mode == "lora" else 0.0
        return cls(tensors, mode, rank if mode == "lora" else 0, alpha,
                   groups if mode != "none" else (), blocks if mode != "none" else (), token, class_word,
                   metadata={"family": model.family.name})

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


def arbooth_subject(model, token: str = DEFAULT_TOKEN) -> SubjectDelta | None:
    """The learned placeholder vectors of a model loaded from an ARBooth checkpoint (its fine-tuned weights are the
    model itself), as a subject to apply so that ``token`` in prompts means them; None for other models."""
    if model.special_token is None:
        return None
    vectors = model.special_token.detach().float().to(model.device)
    return SubjectDelta({"placeholder": vectors}, "none", token=token, metadata={"fingerprint": fingerprint(model)})
