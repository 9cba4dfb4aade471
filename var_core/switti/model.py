"""The Switti transformer (yandex-research/switti), clean-room, with the release's parameter names.

Both released variants: Switti (non-AR: a token attends to its own scale only, and the sampler keeps no
self-attention cache) and Switti-AR (``use_ar``: a token attends to its own and every earlier scale, and the sampler
keeps a KV cache).

Shapes, stated once:
  text     : PromptEmbeds (text.py): embeds (B, T, D_ctx), pooled (B, D_pool), mask (B, T) True = real token
  sequence : (B, L, C); scale k is pn_k x pn_k tokens, row-major, at positions [s_k, s_k + pn_k^2); position 0 is
             the start token c + pos_start (pn_0 = 1)
  logits   : (B, L, V) over the VQ codebook

Numerics follow the official fp32 code op by op; the crop-size Fourier features are so sensitive that even the order
of their float multiplications matters (fixture README). With a lower ``dtype`` only the blocks' linear layers run
in it (autocast); the text pooler, crop features, norms, RoPE and the head stay fp32.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import fp8
from .. import pruning as prune
from ..checkpoint import CheckpointError, check_keys, describe_source, load_state_dict
from ..vq import patch
from .clip_files import MAX_LENGTH
from .family import SWITTI
from .text import PromptEmbeds

# patch_nums of the released resolutions (RESOLUTION_PATCH_NUMS_MAPPING of the reference's utils/arg_util.py)
PATCH_NUMS = {
    256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
    1024: (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64),
}
TRAIN_IMAGE_SIZE = (512, 512)  # the crop condition the sampler always uses (also for the 1024 models)
EPS = 1e-6  # every norm of the model
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass(frozen=True)
class SwittiConfig:
    """The release's config.json keys (SwittiHF) and the extension keys that override what SwittiHF derives."""
    depth: int = 30
    rope: bool = True
    rope_theta: float = 10000
    rope_size: float = 128
    use_swiglu_ffn: bool = True
    use_ar: bool = False
    use_crop_cond: bool = True
    reso: int = 512  # selects patch_nums from PATCH_NUMS unless patch_nums is given
    # SwittiHF derives width 64*depth, depth heads and patch_nums from reso, and hard-codes the rest
    embed_dim: int | None = None
    num_heads: int | None = None
    patch_nums: tuple[int, ...] | None = None
    vocab_size: int = 4096
    Cvae: int = 32
    context_dim: int = 768 + 1280  # CLIP-L || bigG hidden widths
    pooled_dim: int = 1280  # bigG pooler width

    def __post_init__(self):
        for name in ("rope", "use_swiglu_ffn", "use_ar", "use_crop_cond"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth <= 0:
            raise ValueError(f"depth must be a positive integer, got {self.depth!r}")
        if self.embed_dim is None:
            object.__setattr__(self, "embed_dim", 64 * self.depth)
        if self.num_heads is None:
            object.__setattr__(self, "num_heads", self.depth)
        if self.patch_nums is None:
            if self.reso not in PATCH_NUMS:
                raise ValueError(f"reso {self.reso!r} is not a released resolution ({', '.join(map(str, PATCH_NUMS))})"
                                 f" and no patch_nums are given")
            object.__setattr__(self, "patch_nums", PATCH_NUMS[self.reso])
        object.__setattr__(self, "patch_nums", tuple(self.patch_nums))
        for name in ("embed_dim", "num_heads", "vocab_size", "Cvae", "context_dim", "pooled_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("rope_theta", "rope_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not self.patch_nums or any(not isinstance(p, int) or p <= 0 for p in self.patch_nums) \
                or self.patch_nums[0] != 1:
            raise ValueError(f"patch_nums must be positive integers starting with 1, got {list(self.patch_nums)}")
        if self.embed_dim % self.num_heads or self.head_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must split into {self.num_heads} heads of a width divisible "
                             f"by 4 (2-D RoPE)")
        if self.use_crop_cond and self.embed_dim % 8:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by 8 (crop conditioning)")
        if not self.rope:
            raise ValueError("rope=false (absolute position embeddings) is not supported: no released Switti uses it")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        # as the reference computes it: int(C * (8/3)) for SwiGLU, round(4 C) for the GELU MLP
        return int(self.embed_dim * (8 / 3)) if self.use_swiglu_ffn else round(self.embed_dim * 4.0)

    @property
    def scale_starts(self) -> tuple[int, ...]:
        starts = [0]
        for pn in self.patch_nums[:-1]:
            starts.append(starts[-1] + pn * pn)
        return tuple(starts)

    @property
    def L(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    @staticmethod
    def read(folder: str | os.PathLike) -> SwittiConfig:
        """The config.json of a Switti folder (PyTorchModelHubMixin layout), with errors naming the file."""
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise CheckpointError(f"'{folder}' has no {CONFIG_FILE}: a Switti transformer is the Hugging Face folder "
                                  f"(e.g. a local copy of yresearch/Switti) holding {CONFIG_FILE} and {WEIGHTS_FILE}.")
        try:
            raw = json.loads(path.read_text())
        except (ValueError, OSError) as e:
            raise CheckpointError(f"'{path}' is not readable JSON ({e}).") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"'{path}' is not a Switti config: expected a JSON object of settings.")
        known = {f.name for f in fields(SwittiConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"'{path}' is not a Switti config: unknown keys {unknown} (known: {sorted(known)}).")
        try:
            return SwittiConfig(**raw)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"'{path}' is not a usable Switti config: {e}.") from None


# ------------------------------------------------------------------------------------------------------------------
def scale_levels(patch_nums: tuple[int, ...]) -> torch.Tensor:
    """(L,) int64: the scale index of every sequence position."""
    return torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])


def attention_bias(levels: torch.Tensor, causal: bool) -> torch.Tensor:
    """(1, 1, L, L) additive mask of the training forward: a query sees keys of its own scale (and, causal, of
    earlier ones)."""
    q, k = levels[:, None], levels[None, :]
    visible = q >= k if causal else q == k
    return torch.where(visible, 0.0, -torch.inf)[None, None]


def rope_table(config: SwittiConfig) -> torch.Tensor:
    """(L, hd/2) complex64 axial RoPE: pairs p < hd/4 turn with the column, the others with the row, each scale
    spanning positions [0, rope_size] (the reference's compute_axial_cis, same fp32 op order)."""
    hd = config.head_dim
    tables = []
    for pn in config.patch_nums:
        norm = config.rope_size / (pn - 1 if pn > 1 else 1)
        freqs = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 4)[: hd // 4].float() / hd)) * norm
        t = torch.arange(pn * pn, dtype=torch.float32)
        angles = torch.cat([torch.outer(t % pn, freqs), torch.outer(torch.div(t, pn, rounding_mode="floor"), freqs)],
                           dim=-1)
        tables.append(torch.polar(torch.ones_like(angles), angles))
    return torch.cat(tables)


def crop_coords(image_sizes, base: int = 512) -> torch.Tensor:
    """(B, 4) int32 [orig_h, orig_w, crop_top, crop_left] of images resized so the short side is ``base`` and
    center-cropped (the reference's get_crop_condition)."""
    hw = torch.tensor([[int(h), int(w)] for h, w in image_sizes], dtype=torch.int32)
    ratio = base / hw.min(-1).values
    orig = (hw * ratio[:, None]).to(torch.int32)
    return torch.cat([orig, ((orig - base) // 2).clamp(min=0)], dim=1)


def text_bias(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool -> (B, 1, 1, T) additive cross-attention mask."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, -torch.inf)[:, None, None, :]


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=EPS)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, l, C) -> (B, H, l, hd)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[2p], x[2p+1]) of (B, H, l, hd) by the complex (l, hd/2) table."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rope).flatten(3).type_as(x)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SDPA over heads -> (B, l, C). q/k come out of fp32 norms: they meet v in its (autocast) dtype."""
    dtype = v.dtype
    out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v, scale=1 / math.sqrt(q.shape[-1]),
                                         attn_mask=None if bias is None else bias.to(dtype))
    return out.transpose(1, 2).flatten(2)


# ------------------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # normalised in fp32, scaled in the input's dtype (as the reference)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).type_as(x) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, config: SwittiConfig):
        super().__init__()
        C = config.embed_dim
        self.heads = config.num_heads
        self.to_qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)

    def forward(self, x, rope, bias, past=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """-> (output, (K, V) of ``past`` and x): q and k are LayerNorm-ed over all of C, then split and rotated."""
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q = apply_rope(split_heads(layer_norm(q), self.heads), rope)
        k = apply_rope(split_heads(layer_norm(k), self.heads), rope)
        v = split_heads(v, self.heads)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        return self.proj(attend(q, k, v, bias)), (k, v)


class CrossAttention(nn.Module):
    def __init__(self, config: SwittiConfig):
        super().__init__()
        C = config.embed_dim
        self.heads = config.num_heads
        self.to_q = nn.Linear(C, C)
        self.to_kv = nn.Linear(config.context_dim, 2 * C)
        self.proj = nn.Linear(C, C)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return split_heads(layer_norm(k), self.heads), split_heads(v, self.heads)

    def forward(self, x, kv, bias) -> torch.Tensor:
        q = split_heads(layer_norm(self.to_q(x)), self.heads)
        return self.proj(attend(q, *kv, bias))


class SwiGLU(nn.Module):
    def __init__(self, config: SwittiConfig):
        super().__init__()
        C, hidden = config.embed_dim, config.ffn_hidden
        self.gate_proj = nn.Linear(C, hidden, bias=False)
        self.up_proj = nn.Linear(C, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MLP(nn.Module):
    """The GELU FFN of ``use_swiglu_ffn=false``."""

    def __init__(self, config: SwittiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.ffn_hidden)
        self.fc2 = nn.Linear(config.ffn_hidden, config.embed_dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """AdaLN self-attention, plain cross-attention and AdaLN FFN, each sandwiched between two RMSNorms."""
    weight_calls = ("forward", "modulation", "context_kv")  # what reads the weights (fp8.py, streaming.py wrap them)

    def __init__(self, config: SwittiConfig):
        super().__init__()
        C = self.C = config.embed_dim
        self.attn = SelfAttention(config)
        self.cross_attn = CrossAttention(config)
        self.ffn = SwiGLU(config) if config.use_swiglu_ffn else MLP(config)
        for name in ("self_attention_norm1", "self_attention_norm2", "cross_attention_norm1",
                     "cross_attention_norm2", "ffn_norm1", "ffn_norm2"):
            setattr(self, name, RMSNorm(C))
        self.attention_y_norm = RMSNorm(config.context_dim)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        if config.use_crop_cond:
            self.crop_cond_scales = nn.Parameter(torch.zeros(1, C))

    def modulation(self, c: torch.Tensor, crop: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2 from c and the crop term."""
        if crop is not None:
            c = c + self.crop_cond_scales * crop
        return self.ada_lin(c).view(-1, 1, 6, self.C)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn.keys_values(self.attention_y_norm(context))

    def forward(self, x, mod, rope, bias, context_kv, context_bias, past=None):
        """-> (x, the self-attention (K, V) of ``past`` and x)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod.unbind(2)
        a, kv = self.attn(self.self_attention_norm1(x).mul(scale1.add(1)).add(shift1), rope, bias, past)
        x = x + self.self_attention_norm2(a).mul(gamma1)
        x = x + self.cross_attention_norm2(self.cross_attn(self.cross_attention_norm1(x), context_kv, context_bias))
        x = x + self.ffn_norm2(self.ffn(self.ffn_norm1(x).mul(scale2.add(1)).add(shift2))).mul(gamma2)
        return x, kv


class FourierFeatures(nn.Module):
    """diffusers' GaussianFourierProjection(log=False, flip_sin_to_cos=False): [sin, cos] of x * w * 2 * pi."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # evaluated left to right in fp32, as the reference: arguments reach ~1e4 rad, so x * (2 pi w) differs
        arg = x[:, None] * self.weight[None, :] * 2 * math.pi
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int):
        super().__init__()
        self.C = C
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(c).view(-1, 1, 2, self.C).unbind(2)
        return layer_norm(x).mul(scale.add(1)).add(shift)


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Conditioning:
    """What the prompts give every scale: c = text_pooler(pooled) (rows, C), the head's condition; per block the
    AdaLN modulation (rows, 1, 6, C) of c + crop term and the cross-attention K, V (rows, H, T, hd); the text mask
    (rows, 1, 1, T)."""
    cond: torch.Tensor
    modulation: list[torch.Tensor]
    context: list[tuple[torch.Tensor, torch.Tensor]]
    context_bias: torch.Tensor

    def rows(self, n: int) -> Conditioning:
        return Conditioning(self.cond[:n], [m[:n] for m in self.modulation],
                            [(k[:n], v[:n]) for k, v in self.context], self.context_bias[:n])


@dataclass
class SamplingState:
    """What one scale-by-scale generation carries between scales. Rows are [cond; null] (2B) while ``guided``,
    else the B cond rows. ``conditioning``: one for every scale, or one per scale (a subject whose strength or
    reading changes with the scale)."""
    batch: int  # B
    guided: bool
    conditioning: list[Conditioning]
    self_kv: list[tuple[torch.Tensor, torch.Tensor] | None]  # per block, AR only: K (normed, rotated), V so far
    next_scale: int = 0
    previous: torch.Tensor | None = None  # the last scale's output before the head (pruning restores from it)

    @property
    def rows(self) -> int:
        return 2 * self.batch if self.guided else self.batch

    def at(self, k: int) -> Conditioning:
        return self.conditioning[k if len(self.conditioning) > 1 else 0]


class Switti(nn.Module):
    family = SWITTI
    context_tokens = MAX_LENGTH  # every block's cross-attention keys and values are kept while sampling (memory.py)
    patch = None  # the applied subjects (tuning/apply.py: a view of this model sets it)
    sharded = False
    sharded_fingerprint = None
    special_token = None
    gradient_checkpointing = False  # (subject tuning sets it on its view)

    def __init__(self, config: SwittiConfig):
        super().__init__()
        self.config = config
        C = config.embed_dim
        self.word_embed = nn.Linear(config.Cvae, C)
        self.text_pooler = nn.Linear(config.pooled_dim, C)
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.lvl_embed = nn.Embedding(len(config.patch_nums), C)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        if config.use_crop_cond:
            self.crop_embed = FourierFeatures(C // 8)  # 4 coordinates x [sin, cos] x C/8 = C
            self.crop_proj = nn.Linear(C, C)
        levels = scale_levels(config.patch_nums)
        self.register_buffer("lvl_1L", levels[None])
        self.register_buffer("attn_bias_for_masking", attention_bias(levels, config.use_ar))
        self.head_nm = AdaLNBeforeHead(C)
        self.head = nn.Linear(C, config.vocab_size)
        self.source = None  # the folder it was loaded from, for messages
        self._rope: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.pos_start.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return fp8.compute_dtype(self.blocks[0].attn.proj.weight)

    def autocast(self):
        dtype = self.compute_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def rope_freqs(self) -> torch.Tensor:
        key = str(self.device)
        if key not in self._rope:
            with torch.inference_mode(False):  # a table made while sampling must stay usable for training
                self._rope[key] = rope_table(self.config).to(self.device)
        return self._rope[key]

    @property
    def schedule(self) -> list[tuple[int, int]]:
        """The (h, w) of every scale: the model's positions are learned for these only."""
        return [(pn, pn) for pn in self.config.patch_nums]

    def check_schedule(self, schedule) -> None:
        if [tuple(s) for s in schedule] != self.schedule:
            raise ValueError(f"This Switti model generates the scales {self.schedule}; the given schedule "
                             f"{[tuple(s) for s in schedule]} differs.")

    # ---------------------------------------------------------------------------------------------------------------
    def crop_term(self, image_sizes) -> torch.Tensor | None:
        """(B, C) crop_proj(Fourier features of the crop coordinates), or None without crop conditioning."""
        if not self.config.use_crop_cond:
            return None
        coords = crop_coords(image_sizes).to(self.device)
        features = self.crop_embed(coords.view(-1)).reshape(coords.shape[0], self.config.embed_dim)
        return self.crop_proj(features)

    def logits(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The head, in fp32; it sees c without the crop term."""
        return self.head_logits(self.head_input(x, c))

    def head_input(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.head_nm(x.float(), c.float())

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the head's input (what ``sampling_step`` returns; linear in it, so guidance mixes the
        inputs and the head runs once per image, not once per row)."""
        with torch.autocast(self.device.type, enabled=False):
            return self.head(h)

    def forward(self, cond: PromptEmbeds, inputs: torch.Tensor, image_sizes=None) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) with the variant's training mask. inputs: (B, L-1, Cvae) inputs of scales
        1..K-1; image_sizes: per-row (height, width) for the crop condition (None: 512x512, the sampler's)."""
        config = self.config
        B = inputs.shape[0]
        if tuple(inputs.shape[1:]) != (config.L - 1, config.Cvae):
            raise ValueError(f"Teacher-forced inputs must be (B, {config.L - 1}, {config.Cvae}), got "
                             f"{tuple(inputs.shape)}.")
        if len(cond) != B:
            raise ValueError(f"{B} images but {len(cond)} prompts.")
        image_sizes = [TRAIN_IMAGE_SIZE] * B if image_sizes is None else list(image_sizes)
        if len(image_sizes) != B:
            raise ValueError(f"{B} images but {len(image_sizes)} image sizes.")
        cond = cond.to(self.device)
        c = self.text_pooler(cond.pooled.float())
        crop = self.crop_term(image_sizes)
        x = torch.cat((c[:, None] + self.pos_start, self.word_embed(inputs.to(self.device).float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1))
        rope, bias, context_bias = self.rope_freqs(), self.attn_bias_for_masking, text_bias(cond.mask)

        def run(block, x, c, crop, embeds):
            # the subjects' updates are switched on inside, so a checkpointed block's recomputation has them too
            with self.autocast(), patch.active(self.patch):
                return block(x, block.modulation(c, crop), rope, bias, block.context_kv(embeds), context_bias)[0]
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():  # recomputed in the backward: less memory
                x = checkpoint(run, block, x, c, crop, cond.embeds, use_reentrant=False)
            else:
                x = run(block, x, c, crop, cond.embeds)
        return self.logits(x, c)

    def teacher_forced_logits(self, cond: PromptEmbeds, codes: list[torch.Tensor], schedule, vae,
                              image_sizes=None) -> torch.Tensor:
        """Logits (B, L, V) of every scale given the codes (B, pn_k, pn_k) of all scales (the VQ-VAE makes the
        inputs of scales 1..K-1 from them)."""
        self.check_schedule(schedule)
        return self(cond, vae.inputs_from_codes(codes, schedule), image_sizes)

    # ---------------------------------------------------------------------------------------------------------------
    def start_sampling(self, cond: PromptEmbeds | list[PromptEmbeds], negative: PromptEmbeds | None, batch: int,
                       guided: bool) -> SamplingState:
        """Prepare a generation of ``batch`` images: rows [cond; negative] (negative, the null prompt, spread over
        the batch) when ``guided``, else cond only; every row gets the 512x512 crop condition. The text's
        cross-attention K/V and the AdaLN modulations are computed here, once, or once per scale where the prompts
        (``cond`` a list, one per scale) or the applied subjects' strengths differ between scales."""
        conditioning = patch.per_scale(self, cond, lambda c, k: self._conditioning(c, negative, batch, guided, k))
        return SamplingState(batch, guided, conditioning, [None] * len(self.blocks))

    def _conditioning(self, cond: PromptEmbeds, negative, batch: int, guided: bool, k: int | None) -> Conditioning:
        text = cond.expand(batch)
        if guided:
            if negative is None:
                raise ValueError("Guided sampling needs the negative (null) prompt's embeddings.")
            if negative.embeds.shape[1:] != text.embeds.shape[1:]:
                raise ValueError(f"The negative prompt's embeddings {tuple(negative.embeds.shape[1:])} do not match "
                                 f"the prompts' {tuple(text.embeds.shape[1:])} (tokens x width).")
            text = PromptEmbeds.cat([text, negative.expand(batch)])
        text = text.to(self.device)
        c = self.text_pooler(text.pooled.float())
        crop = self.crop_term([TRAIN_IMAGE_SIZE] * len(text))
        with self.autocast(), patch.active(self.patch, k):
            modulation = [block.modulation(c, crop) for block in self.blocks]
            context = [block.context_kv(text.embeds) for block in self.blocks]
        return Conditioning(c, modulation, context, text_bias(text.mask))

    def sampling_step(self, state: SamplingState, k: int, tokens: torch.Tensor | None,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input (rows, pn_k^2, C) fp32 of scale k (``head_logits`` makes the logits, after CFG).
        tokens: None at k = 0, else (B, pn_k^2, Cvae), the running f_hat area-resized to scale k (the same for the null
        rows). keep: the positions (B, m) the blocks compute (pruning.py), the others restored from the scale before."""
        config = self.config
        if k != state.next_scale:
            raise ValueError(f"Scales are sampled in order: expected scale {state.next_scale}, got {k}.")
        pn, start = config.patch_nums[k], config.scale_starts[k]
        now = state.at(k)
        if k == 0:
            x = now.cond[:, None] + self.pos_start + self.lvl_embed.weight[0]
        else:
            if tokens is None or tuple(tokens.shape) != (state.batch, pn * pn, config.Cvae):
                raise ValueError(f"Scale {k} needs tokens ({state.batch}, {pn * pn}, {config.Cvae}), got "
                                 f"{None if tokens is None else tuple(tokens.shape)}.")
            x = self.word_embed(tokens.to(self.device).float()) + self.lvl_embed.weight[k]
            x = x.repeat(state.rows // state.batch, 1, 1)
        rope = self.rope_freqs()[start:start + pn * pn]
        if keep is not None:
            keep = prune.rows(keep, x.shape[0])
            x, rope = prune.take(x, keep), prune.table(rope, keep)
        with self.autocast(), patch.active(self.patch, k):
            for i, block in enumerate(self.blocks):
                # non-AR: a scale attends to itself only, so nothing is kept between scales
                past = state.self_kv[i] if config.use_ar else None
                x, kv = block(x, now.modulation[i], rope, None, now.context[i], now.context_bias, past)
                if config.use_ar:
                    state.self_kv[i] = kv
        if keep is not None:
            prev = config.patch_nums[k - 1]
            x = prune.restore(x, keep, state.previous, (prev, prev), (pn, pn))
        state.next_scale, state.previous = k + 1, x
        return self.head_input(x, now.cond)

    def drop_uncond(self, state: SamplingState) -> None:
        """Keep only the B cond rows from the next scale on (guidance switched off): every cache is sliced."""
        if not state.guided:
            return
        B = state.batch
        state.conditioning = [c.rows(B) for c in state.conditioning]
        state.self_kv = [None if kv is None else (kv[0][:B], kv[1][:B]) for kv in state.self_kv]
        state.previous = None if state.previous is None else state.previous[:B]
        state.guided = False

    # ---------------------------------------------------------------------------------------------------------------
    def cast_blocks(self, dtype: torch.dtype) -> Switti:
        """Store the blocks' linear layers in ``dtype``; everything else stays fp32."""
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
        return self


def load_switti(folder: str | os.PathLike, device=None, dtype: torch.dtype | None = None) -> Switti:
    """A Switti transformer from its Hugging Face folder (config.json + model.safetensors, as SwittiHF's
    PyTorchModelHubMixin writes them). Strict: every tensor, including the lvl_1L / attn_bias_for_masking buffers,
    must match the model config.json describes. ``dtype``: the blocks' linear layers (default bf16 on CUDA, else
    fp32); the rest stays fp32."""
    if not Path(folder).is_dir():
        raise CheckpointError(f"'{folder}' is not a folder: a Switti transformer is the Hugging Face folder holding "
                              f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
    config = SwittiConfig.read(folder)
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"'{folder}' has {CONFIG_FILE} but no {WEIGHTS_FILE}: download the weights into it.")
    sd = load_state_dict(weights, what="a Switti transformer")
    with torch.device("meta"):
        model = Switti(config)
    check_keys({k: v.shape for k, v in model.state_dict().items()}, sd, weights,
               f"Switti transformer (as {Path(folder) / CONFIG_FILE} describes it)")
    levels = scale_levels(config.patch_nums)
    if not (torch.equal(sd["lvl_1L"], levels[None])
            and torch.equal(sd["attn_bias_for_masking"], attention_bias(levels, config.use_ar))):
        variant = "causal-by-scale (use_ar=true)" if config.use_ar else "block-diagonal (use_ar=false)"
        raise CheckpointError(f"{describe_source(str(weights), capital=True)} holds masking buffers (lvl_1L, "
                              f"attn_bias_for_masking) that are not the {variant} ones for patch_nums "
                              f"{list(config.patch_nums)}: {CONFIG_FILE} and the weights are from different models.")
    model.load_state_dict(sd, assign=True)
    model.source = str(folder)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.float().cast_blocks(dtype).to(device)
    patch.install(model)
    return model.eval().requires_grad_(False)
