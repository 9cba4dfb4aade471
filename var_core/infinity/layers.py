"""The layers of the Infinity transformer (blocks, attention, RoPE, norms), with the checkpoint's parameter names.

Numerics follow the official inference: the residual stream, norms, AdaLN and RoPE run in fp32; the linear layers
may run in bf16/fp16 under autocast. A subject's weights reach a block as a BlockPatch (replacement weights and
unmerged low-rank updates), taken by every linear layer, the fused mat_qkv / mat_kv projections included.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schedules import rope_grid

if TYPE_CHECKING:
    from .model import InfinityConfig

LN_EPS = 1e-6


class TextCondition(NamedTuple):
    """Everything the blocks need from the text, computed once per forward or per sampling run."""
    memory: torch.Tensor  # (B, Lt, C) cross-attention memory, padded
    mask: torch.Tensor  # (B, 1, 1, Lt) bool, True where a text token is real; or a float bias (TextMix)
    pooled: torch.Tensor  # (B, C) attention-pooled prompt vector: start token and head AdaLN input
    gss: torch.Tensor  # (B, 1, 6, C) shared AdaLN output for the blocks



def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=LN_EPS)


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return layer_norm(x) * (1 + scale) + shift


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2p], x[2p+1]) of (..., L, hd) by per-token angles; cos/sin are (L, hd/2)."""
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def rope_table(schedule, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D RoPE angles for every token of a schedule: (L, hd/2) cos and sin, fp32.

    The first hd/4 pairs rotate by the row position, the rest by the column. Positions are normalised to the last
    scale of the template's 1M schedule: token (i, j) of an h_k x w_k scale sits at (round(i*G_h/h_k),
    round(j*G_w/w_k)), round half to even, computed in fp32 like the reference.
    """
    g_h, g_w = rope_grid(schedule)
    quarter = head_dim // 4
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 2 * quarter, 2, dtype=torch.int64).float() / (2 * quarter)))
    rows, cols = [], []
    for h, w in schedule:
        y = (torch.arange(h) * (g_h / h)).round()
        x = (torch.arange(w) * (g_w / w)).round()
        rows.append(y[:, None].expand(h, w).reshape(-1))
        cols.append(x[None, :].expand(h, w).reshape(-1))
    y, x = torch.cat(rows), torch.cat(cols)
    angles = torch.cat((y[:, None] * inv_freq, x[:, None] * inv_freq), dim=-1)
    return angles.cos().to(device), angles.sin().to(device)


class KVCache:
    """Per-block self-attention keys/values of all scales sampled so far, preallocated for the whole sequence."""

    def __init__(self, depth: int):
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth
        self.length = 0  # tokens already stored (before the scale being processed)

    def append(self, block: int, k: torch.Tensor, v: torch.Tensor, total: int):
        if self.k[block] is None:
            shape = (*k.shape[:2], total, k.shape[-1])
            self.k[block] = k.new_empty(shape)
            self.v[block] = v.new_empty(shape)
        end = self.length + k.shape[2]
        self.k[block][:, :, self.length:end] = k
        self.v[block][:, :, self.length:end] = v
        return self.k[block][:, :, :end], self.v[block][:, :, :end]

    def keep(self, rows: int) -> None:
        """Only the first ``rows`` rows from now on (the conditional ones, once no scale is guided)."""
        self.k = [None if t is None else t[:rows] for t in self.k]
        self.v = [None if t is None else t[:rows] for t in self.v]


# Below this many tokens one masked SDPA call is faster than a call per scale (kernel launches dominate);
# measured on an H100 with the 2B model: 512² (2521 tokens) trains faster masked, 1024² (10521) 30% faster per scale.
PER_SCALE_MIN_TOKENS = 4096


def block_causal_attention(q, k, v, sizes: tuple[int, ...]) -> torch.Tensor:
    """Attention where the tokens of scale k see the tokens of scales 0..k (Infinity's training mask).

    Long sequences are computed one scale at a time against its prefix, without a mask: the same result as SDPA
    with the (L, L) block-causal mask, but able to use the fused (flash) kernels and skipping the masked half.
    """
    if sum(sizes) < PER_SCALE_MIN_TOKENS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_block_causal_mask(sizes, q.device), scale=1.0)
    outs, end = [], 0
    for n in sizes:
        start, end = end, end + n
        outs.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], scale=1.0))
    return torch.cat(outs, dim=2)


@functools.lru_cache(maxsize=8)
def _block_causal_mask(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):
        level = scale_levels([(n, 1) for n in sizes], device)
        return level[:, None] >= level[None, :]


class LowRank(NamedTuple):
    """An unmerged low-rank update of a linear layer (LoRA): adds scale·(x·Aᵀ)·Bᵀ to the layer's output."""
    a: torch.Tensor  # (rank, in)
    b: torch.Tensor  # (out, rank)
    scale: float

    def merged(self) -> torch.Tensor:
        return self.scale * (self.b.float() @ self.a.float())


class BlockPatch(NamedTuple):
    """What a subject changes in one block call: replacement weights {name: tensor} and unmerged low-rank updates
    {module: {layer: [LowRank, ...]}} (e.g. {"ca": {"mat_kv": [...]}})."""
    weights: dict
    updates: dict


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, updates=()) -> torch.Tensor:
    """F.linear plus unmerged low-rank updates, run in their own dtype (fp32) outside autocast: an update far below
    the bf16 resolution of the weight still counts. With updates the output is fp32 (the next layer casts)."""
    y = F.linear(x, weight, bias)
    if updates:
        with torch.autocast(x.device.type, enabled=False):
            y = y.float()
            for u in updates:
                y = y + u.scale * F.linear(F.linear(x.to(u.a.dtype), u.a), u.b)
    return y


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in here: autocast's when it is on, else x's. Attention inputs are cast to it, so an
    fp32 low-rank update in a projection does not push the attention itself to fp32."""
    t = x.device.type
    return torch.get_autocast_dtype(t) if torch.is_autocast_enabled(t) else x.dtype


class SelfAttention(nn.Module):
    """Cosine attention: unit q and k, q scaled by a learned per-head factor, RoPE after normalisation, SDPA scale 1."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope, scale_sizes=None, cache: KVCache | None = None, block: int = 0, total: int = 0,
                updates=None):
        """scale_sizes: None (x attends to everything before it in the cache, or to itself), or the token count of
        each scale in x for the block-causal teacher-forced forward. updates: {layer: [LowRank]} (BlockPatch)."""
        B, L, C = x.shape
        u = updates or {}
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = linear(x, self.mat_qkv.weight, bias, u.get("mat_qkv")).to(compute_dtype(x))
        qkv = qkv.view(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, L, hd)
        gain = self.scale_mul_1H11.float().clamp_max(math.log(100.0)).exp()  # cosine attention's learned sharpness
        q = apply_rope(F.normalize(q.float(), dim=-1) * gain, *rope).to(v.dtype)
        k = apply_rope(F.normalize(k.float(), dim=-1), *rope).to(v.dtype)
        if cache is not None:
            k, v = cache.append(block, k, v, total)
        if scale_sizes is None:
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            out = block_causal_attention(q, k, v, scale_sizes)
        return linear(out.transpose(1, 2).reshape(B, L, C), self.proj.weight, self.proj.bias, u.get("proj"))


class CrossAttention(nn.Module):
    """Image tokens attend to their own prompt's text tokens (padding masked)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.mat_q = nn.Linear(dim, dim)
        self.mat_kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def keys_values(self, memory: torch.Tensor, updates=None):
        B, Lt, _ = memory.shape
        kv = linear(memory, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)), updates)
        return kv.view(B, Lt, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, Lt, hd)

    def forward(self, x, memory, mask, updates=None):
        B, L, C = x.shape
        u = updates or {}
        k, v = self.keys_values(memory, u.get("mat_kv"))
        q = linear(x, self.mat_q.weight, self.mat_q.bias, u.get("mat_q")).to(compute_dtype(x))
        q = q.view(B, L, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype),
                                             attn_mask=mask if mask.dtype == torch.bool else mask.to(q.dtype))
        return linear(out.transpose(1, 2).reshape(B, L, C), self.proj.weight, self.proj.bias, u.get("proj"))


class AttentionPool(nn.Module):
    """One learned query per head pools a prompt's text tokens into a single vector (the start token)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int):
        super().__init__()
        self.mat_q = nn.Parameter(torch.zeros(1, num_heads, dim // num_heads))
        self.mat_kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, text, mask):
        B, Lt, _ = text.shape
        H = self.mat_q.shape[1]
        kv = F.linear(text, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        k, v = kv.view(B, Lt, 2, H, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q = self.mat_q[:, :, None, :].expand(B, -1, -1, -1).to(k.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, 1, hd)
        return self.proj(out.reshape(B, -1))


class TextPool(nn.Module):
    def __init__(self, dim: int, kv_dim: int, num_heads: int):
        super().__init__()
        self.ca = AttentionPool(dim, kv_dim, num_heads)  # the checkpoint nests it as text_proj_for_sos.ca.*

    def forward(self, text, mask):
        return self.ca(text, mask)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, updates=None):
        u = updates or {}
        h = F.gelu(linear(x, self.fc1.weight, self.fc1.bias, u.get("fc1")), approximate="tanh")
        return linear(h, self.fc2.weight, self.fc2.bias, u.get("fc2"))


class Block(nn.Module):
    """x += g1*SA(AdaLN(x)); x += CA(LN_affine(x), text); x += g2*FFN(AdaLN(x))."""

    def __init__(self, config: InfinityConfig):
        super().__init__()
        C = config.embed_dim
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, C))
        self.sa = SelfAttention(C, config.num_heads)
        self.ca = CrossAttention(C, C, config.num_heads)
        self.ffn = FFN(C, config.ffn_hidden)
        self.ca_norm = nn.LayerNorm(C, eps=LN_EPS)

    def forward(self, x, cond: TextCondition, rope, scale_sizes=None, cache=None, block=0, total=0, updates=None):
        """updates: a subject's unmerged low-rank updates of this block's layers, {"sa"|"ca"|"ffn": {layer: [...]}}."""
        u = updates or {}
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + cond.gss).unbind(2)
        x = x + self.sa(modulate(x, scale1, shift1), rope, scale_sizes, cache, block, total, u.get("sa")) * gamma1
        x = x + self.ca(self.ca_norm(x), cond.memory, cond.mask, u.get("ca"))
        return x + self.ffn(modulate(x, scale2, shift2), u.get("ffn")) * gamma2


class BlockChunk(nn.Module):
    def __init__(self, blocks: list[Block]):
        super().__init__()
        self.module = nn.ModuleList(blocks)  # the checkpoint's block_chunks.{c}.module.{j}


class AdaLNBeforeHead(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, pooled):
        scale, shift = self.ada_lin(pooled).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return modulate(x, scale, shift)


def scale_levels(schedule, device=None) -> torch.Tensor:
    """The scale index of every sequence position, (L,)."""
    sizes = [h * w for h, w in schedule]
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))

