"""How much memory one training step's activations take, and whether gradient checkpointing is needed to fit them.

Checkpointing trades compute for memory (each block runs twice: about 7 % of a toy step, more on larger models), so
the trainer uses it only when a step without it would not fit in what the device has free (``needs_checkpointing``).
The byte counts are an analytic model of transformer.Block, checked against measured runs in benchmarks/memory.py.
"""
from __future__ import annotations

import torch

from ..infinity.layers import PER_SCALE_MIN_TOKENS
from ..infinity.model import InfinityConfig
from ..memory import F32, dtype_size, free_bytes, tokens, widths

# Per-token bytes of autograd's saved tensors in one block, read off transformer.Block (s: compute dtype size, f: fp32)
# with LoRA on ca and ffn and a text condition that needs gradients (placeholder vectors):
#   self-attention: block input (LayerNorm) f, LN output (·(1+scale)) f, q and k in fp32 (normalize) 2f, q and k after
#     RoPE s+s, the qkv output (v is a view of it, SDPA keeps it) 3s, attention output s, proj output (·gamma1) s
#   cross-attention: residual (ca_norm) f, ca_norm output (mat_q's LoRA A) f, q s and attention output s (SDPA),
#     proj's fp32 input (its LoRA A) f
#   FFN: residual (LN) f, LN output f, modulated input (fc1's LoRA A) f, fc1 output (GELU) f·F, GELU output (fc2's
#     LoRA A) f·F, fc2 output (·gamma2) f
# = (11f + 9s)·C + 2f·F per token.
SAVED_F_C, SAVED_S_C, SAVED_F_FFN = 11, 9, 2
# Working set of a block's backward beyond what it saved: the gradients of the residual stream (in and out), of the
# attention/FFN input, and of the FFN hidden (fc2's input grad, GELU's input grad, fp32; the base fc1 input grad in s).
BWD_F_C, BWD_F_FFN, BWD_S_FFN = 3, 2, 1
# Share of the free memory a step's activations may take without checkpointing: the model's error (measured 0.85-1.08
# of the real peak) and what it leaves out (the allocator's fragmentation) must fit in the rest.
HEADROOM = 0.7


def mask_bytes(schedule, dtype: torch.dtype) -> int:
    """The block-causal mask's copy that one block's masked SDPA makes in the compute dtype (L, L) and keeps for
    backward; only below PER_SCALE_MIN_TOKENS tokens (longer sequences run per scale, without a mask). Measured on the
    CPU's flash kernel (about 2.2 bytes per L² element in bf16, independent of batch and heads); assumed the same for
    CUDA's memory-efficient kernel."""
    L = tokens(schedule)
    return 0 if L >= PER_SCALE_MIN_TOKENS else L * L * dtype_size(dtype)


def training_activation_bytes(config, schedule, batch: int, dtype: torch.dtype,
                              checkpointing: bool) -> int:
    """Peak of one teacher-forced forward + backward of the student (instance or prior half: they run one after the
    other, so one counts). Without checkpointing every block's saved tensors are kept; with it each block's input
    (fp32) is, and one block's saved tensors are rebuilt at a time in backward."""
    s = dtype_size(dtype)
    C, F, logits = widths(config)
    n = batch * tokens(schedule)
    saved = n * ((SAVED_F_C * F32 + SAVED_S_C * s) * C + SAVED_F_FFN * F32 * F)
    working = n * (BWD_F_C * F32 * C + (BWD_F_FFN * F32 + BWD_S_FFN * s) * F)
    mask = mask_bytes(schedule, dtype)
    if checkpointing:
        kept = config.depth * n * F32 * C + saved + mask
    else:
        kept = config.depth * (saved + mask)
    # the logits, their fp32 copy, log-softmax and the loss's terms
    return kept + working + n * logits * F32 * 5


def needs_checkpointing(config: InfinityConfig, schedule, batch: int, dtype: torch.dtype,
                        device: torch.device) -> tuple[bool, str]:
    """Whether a training step needs gradient checkpointing to fit in ``device``'s free memory, and why (a short
    sentence with the two numbers)."""
    without = training_activation_bytes(config, schedule, batch, dtype, checkpointing=False)
    free = free_bytes(device)
    if free is None:
        return True, f"on: a step keeps {without / 2**30:.2f} GiB of activations without it and the free memory of " \
                     f"{device} is unknown"
    need = without > HEADROOM * free
    return need, (f"{'on' if need else 'off'}: a step keeps {without / 2**30:.2f} GiB of activations without it, "
                  f"{free / 2**30:.1f} GiB free on {device}")
