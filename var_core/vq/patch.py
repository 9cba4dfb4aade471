"""Subjects on the codebook families' transformers (Switti, VAR): a forward hook on every tunable linear layer adds
the applied subjects' updates to its output while a call of a model view with subjects runs (``active``), and does
nothing otherwise. A LoRA runs unmerged in fp32, x·Aᵀ·Bᵀ·strength·alpha/rank; a full delta adds strength·Δ·x; so
strength 0 leaves the base's own output untouched, bit for bit, and the base weights are never changed."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

_ACTIVE: ContextVar = ContextVar("subject_patch", default=None)  # (SubjectPatch, scale index or None)


def install(model) -> None:
    """Hook every linear layer of ``model``'s blocks that its family's subjects may tune (once, at loading)."""
    for i, block in enumerate(model.blocks):
        for names in model.family.tuning_groups.values():
            for name in names:
                try:
                    layer = block.get_submodule(name.rsplit(".", 1)[0])
                except AttributeError:  # (a variant without this layer, e.g. Switti's GELU MLP: not tunable)
                    continue
                layer.register_forward_hook(_updates(i, name))


def per_scale(model, cond, make) -> list:
    """``make(cond_k, k)`` once per scale where the conditions (``cond`` a list, one per scale) or the applied
    subjects' strengths differ between scales (k the scale, under whose strengths ``make`` runs), else once (k None);
    scales that agree on both share one result."""
    K = len(model.schedule)
    varies = isinstance(cond, list) or (model.patch is not None and model.patch.varies(K))
    conds = cond if isinstance(cond, list) else [cond] * K
    made: dict = {}
    out = []
    for k in range(K if varies else 1):
        key = (id(conds[k]), model.patch.strengths(k) if model.patch is not None else None)
        if key not in made:
            made[key] = make(conds[k], k if varies else None)
        out.append(made[key])
    return out


@contextmanager
def active(patch, scale: int | None = None):
    """Run the enclosed calls with ``patch`` (a SubjectPatch, or None for the base) at scale ``scale`` (None: a
    call over every scale, where a per-scale strength must be one value)."""
    token = _ACTIVE.set(None if patch is None else (patch, scale))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _updates(block: int, name: str):
    def hook(module, args, out):
        current = _ACTIVE.get()
        if current is None:
            return None
        patch, scale = current
        x = args[0]
        for delta, strength in patch.entries:
            s = patch.strength_at(strength, scale)
            if s == 0.0 or name not in delta.block_names().get(block, ()):
                continue
            with torch.autocast(x.device.type, enabled=False):  # the update keeps its own fp32 precision
                if delta.mode == "lora":
                    u = delta.low_rank(block, name, s)
                    out = out.float() + u.scale * F.linear(F.linear(x.to(u.a.dtype), u.a), u.b)
                else:
                    out = out.float() + s * F.linear(x.float(), delta.weight_delta(block, name).to(x.device))
        return out
    return hook
