"""fp8 weight storage: the blocks' linear weights kept as float8 e4m3 with one fp32 scale per output row (a quarter of
fp32's bytes, half of bf16's), turned back into bf16 for one block's call at a time and computed in bf16.

    model = var_core.load_transformer(path, device, dtype="fp8")

Quantization is per output row, scaled so the row's largest magnitude lands on e4m3's largest finite value (448):
about 3 significant bits per weight. What that costs in pictures: docs/benchmarks.md. Everything else (norms, AdaLN,
embeddings, the text path, the head) stays as loaded. A reader of a block weight outside a call sees the fp8 tensor:
``value(module, name)`` gives its value, ``compute_dtype(tensor)`` the dtype it computes in.
"""
from __future__ import annotations

import torch
from torch import nn

from . import checkpoint

FP8 = torch.float8_e4m3fn
DTYPES = {**checkpoint.DTYPES, "fp8": FP8}  # what a transformer's blocks load in
E4M3_MAX = 448.0
SCALE = "weight_scale"  # the buffer beside an fp8 weight: its per-row scales


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if weight.dtype == FP8 else weight.dtype


def value(root: nn.Module, name: str) -> torch.Tensor:
    """``root.get_parameter(name)`` as a number: an fp8 weight times its row scales (fp32), anything else as stored."""
    t = root.get_parameter(name)
    if t.dtype != FP8:
        return t
    owner = root.get_submodule(name.rpartition(".")[0])
    return t.float() * getattr(owner, SCALE)[:, None]


def quantize_blocks(model) -> None:
    """Store every linear weight of ``model``'s blocks in fp8 (with its row scales) and dequantize per call."""
    for block in model.blocks:
        layers = [m for m in block.modules() if isinstance(m, nn.Linear) and m.weight.dtype != FP8]
        for m in layers:
            w = m.weight.detach().float()
            scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
            m.weight = nn.Parameter((w / scale[:, None]).to(FP8), requires_grad=False)
            m.register_buffer(SCALE, scale)
        for call in getattr(block, "weight_calls", ("forward",)) if layers else ():
            setattr(block, call, _dequantized(layers, getattr(block, call)))


def _dequantized(layers, forward):
    def run(*args, **kwargs):
        swapped = []
        for m in layers:
            w = m._parameters["weight"]
            if w.dtype == FP8:  # (a weight given by the caller, e.g. a subject's merged weight, is its own)
                m._parameters["weight"] = (w.to(torch.bfloat16) * getattr(m, SCALE)[:, None].to(torch.bfloat16))
                swapped.append((m, w))
        try:
            return forward(*args, **kwargs)
        finally:
            for m, w in swapped:
                m._parameters["weight"] = w
    return run
