"""How much memory a sampling run needs beyond the weights, for any family: the KV cache of every block for the whole
schedule, and the tensors alive inside one block at the largest scale (inference keeps nothing between blocks).

ComfyUI's nodes ask the memory manager for this much before they sample (``load_models_gpu(memory_required=...)``);
benchmarks/memory.py builds its whole-job peaks on the same functions and checks them against measured runs.
"""
from __future__ import annotations

import os

import torch

F32 = 4


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tokens(schedule) -> int:
    return sum(h * w for h, w in schedule)


def widths(config) -> tuple[int, int, int]:
    """(width C, FFN hidden F, logits per token) of any family's config: Infinity predicts 2 logits per bit, Switti
    and VAR one per codebook entry."""
    ffn = getattr(config, "ffn_hidden", None) or config.mlp_hidden
    logits = 2 * config.bits if hasattr(config, "bits") else config.vocab_size
    return config.embed_dim, ffn, logits


def kv_cache_bytes(config, schedule, sequences: int, dtype: torch.dtype) -> int:
    """Keys and values of all blocks, (sequences, L, C) each, for the whole schedule."""
    return 2 * config.depth * sequences * tokens(schedule) * config.embed_dim * dtype_size(dtype)


def sampling_activation_bytes(config, schedule, sequences: int, dtype: torch.dtype) -> int:
    """Tensors alive while one block runs the largest scale.

    Self-attention: the residual x (f), the modulated input (f), the qkv output (3s), q after RoPE (s) while k goes
    through normalize and RoPE in fp32 (about 2f); FFN: x, the modulated input (f each), its cast (s), fc1's and the
    activation's outputs (s·F each; a gated FFN, Switti's SwiGLU, holds the gate and the product too: 4 s·F). Plus
    the scale's logits (fp32, and the CFG mix)."""
    s = dtype_size(dtype)
    C, F, logits = widths(config)
    n = sequences * max(h * w for h, w in schedule)
    attention = (4 * F32 + 4 * s) * C
    ffn = (2 * F32 + s) * C + (4 if getattr(config, "use_swiglu_ffn", False) else 2) * s * F
    return n * max(attention, ffn) + n * logits * F32 * 2


def sampling_bytes(model, schedule, batch: int, guided: bool = True) -> int:
    """What sampling ``batch`` images on ``schedule`` needs beyond the weights (``guided``: the unconditional rows of
    classifier-free guidance double the sequences): one block's activations at the largest scale, the self-attention
    KV cache (none where a scale attends only to itself, Switti's non-AR models: then the last block's keys and values
    and the scale's input outlive the block), and the cross-attention keys and values a model keeps for every block
    (``model.context_tokens`` of them: Switti's)."""
    config, dtype = model.config, model.compute_dtype
    sequences = batch * (2 if guided else 1)
    total = sampling_activation_bytes(config, schedule, sequences, dtype)
    if getattr(config, "use_ar", True):
        total += kv_cache_bytes(config, schedule, sequences, dtype)
    else:  # no cache: a block's keys and values (s each) and the scale's input beside its output (f each) outlive it
        total += sequences * max(h * w for h, w in schedule) * (2 * dtype_size(dtype) + 2 * F32) * config.embed_dim
    context = getattr(model, "context_tokens", 0)
    return total + 2 * config.depth * sequences * context * config.embed_dim * dtype_size(dtype)


def free_bytes(device: torch.device) -> int | None:
    """Memory the device has free for more tensors (None: unknown). CUDA: the driver's free memory plus what torch's
    allocator holds unused; CPU: the available physical memory (Linux, macOS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None
