"""The original class-conditional VAR transformer (FoundationVision/VAR, var_dNN.pth), clean-room, with the released
parameter names.

Shapes, stated once:
  labels : (B,) int64 class ids; label == num_classes is the unconditional class
  inputs : (B, L - 1, Cvae) teacher-forcing inputs of scales 1..K-1 (VQVAE.inputs_from_codes)
  logits : (B, L, V) fp32, L = sum of pn_k^2 over the model's square schedule (patch_nums)

Every block is AdaLN-conditioned on the class embedding, which is also the start token. Training attends
causally by scale (the saved `attn_bias_for_masking`); sampling runs one scale at a time with a KV cache held in a
VARSamplingState (never in the modules, so one model can serve interleaved samplers).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import fp8
from ..checkpoint import CheckpointError, check_keys, describe_source, load_state_dict
from .. import pruning as prune
from ..vq import patch
from .family import VAR as VAR_FAMILY

# Training checkpoints (ar-ckpt-*.pth) keep the transformer under trainer/var_wo_ddp; the release files are flat.
_WRAPPERS = (("trainer", "var_wo_ddp"),)


@dataclass(frozen=True)
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_hidden: int = 4096
    num_classes: int = 1000
    vocab_size: int = 4096
    Cvae: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    shared_aln: bool = False
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6

    @staticmethod
    def from_state_dict(sd) -> VARConfig:
        """The architecture from tensor shapes (raises KeyError naming a tensor it needs but cannot find)."""
        blocks = {int(m[1]) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        if not blocks:
            raise KeyError("blocks.0.attn.mat_qkv.weight")
        counts = torch.bincount(sd["lvl_1L"].flatten()).tolist()
        patch_nums = tuple(math.isqrt(n) for n in counts)
        if any(p * p != n for p, n in zip(patch_nums, counts)):
            raise ValueError(f"lvl_1L has {counts} positions per scale, not squares")
        embed_dim, cvae = sd["word_embed.weight"].shape
        l2 = "blocks.0.attn.scale_mul_1H11" in sd
        # without the per-head scales the head count is not in any shape; the release rule is heads = depth
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if l2 else 1 + max(blocks)
        return VARConfig(depth=1 + max(blocks), embed_dim=embed_dim, num_heads=heads,
                         mlp_hidden=sd["blocks.0.ffn.fc1.weight"].shape[0],
                         num_classes=sd["class_emb.weight"].shape[0] - 1, vocab_size=sd["head.weight"].shape[0],
                         Cvae=cvae, patch_nums=patch_nums, shared_aln="shared_ada_lin.1.weight" in sd,
                         attn_l2_norm=l2)


class KVCache:
    """One block's self-attention keys and values (rows, heads, tokens, head_dim), grown scale by scale."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v

    def keep(self, rows: int) -> None:
        if self.k is not None:
            self.k, self.v = self.k[:rows], self.v[:rows]


@dataclass
class Modulation:
    """What a class embedding makes of every AdaLN, computed once per sampling (or per scale where the classes or the
    subjects' strengths differ between scales): each block's (rows, 1, 6, C) and the head norm's (rows, 1, 2, C)."""
    cond: torch.Tensor  # (rows, C): [cond; uncond] while guided, else cond only
    blocks: list[torch.Tensor]
    head: torch.Tensor

    def rows(self, n: int) -> Modulation:
        return Modulation(self.cond[:n], [m[:n] for m in self.blocks], self.head[:n])


@dataclass
class VARSamplingState:
    modulation: list[Modulation]  # per scale
    caches: list[KVCache]
    batch: int
    previous: torch.Tensor | None = None  # the last scale's output before the head (pruning restores from it)


# ----------------------------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        C = cfg.embed_dim
        self.num_heads, self.head_dim, self.l2_norm = cfg.num_heads, C // cfg.num_heads, cfg.attn_l2_norm
        if self.l2_norm:  # cosine attention with a learned per-head temperature, capped at 100
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.zeros(1, cfg.num_heads, 1, 1))
            self.max_scale_mul = math.log(100.0)  # clamp_max rounds it to the weight's dtype, as the reference's
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
        if self.l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNSelfAttn(nn.Module):
    """x += gamma1 * attn(LN(x)(1 + scale1) + shift1); x += gamma2 * ffn(LN(x)(1 + scale2) + shift2)."""
    weight_calls = ("forward", "modulation")  # what reads the weights (fp8.py, streaming.py wrap them)

    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.C, self.eps = cfg.embed_dim, cfg.norm_eps
        self.attn, self.ffn = SelfAttention(cfg), FFN(cfg)
        if cfg.shared_aln:  # a per-block offset to the one shared projection of the condition
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, cfg.embed_dim))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_dim, 6 * cfg.embed_dim))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """(rows, 1, 6, C) of the class embeddings (rows, C), or of the shared projection (rows, 1, 6, C)."""
        if hasattr(self, "ada_gss"):
            return self.ada_gss + cond
        return self.ada_lin(cond).view(-1, 1, 6, self.C)

    def forward(self, x: torch.Tensor, ada: torch.Tensor, attn_bias: torch.Tensor | None,
                cache: KVCache | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada.unbind(2)
        h = F.layer_norm(x, (self.C,), eps=self.eps).mul(scale1.add(1)).add_(shift1)
        x = x + self.attn(h, attn_bias, cache).mul_(gamma1)
        h = F.layer_norm(x, (self.C,), eps=self.eps).mul(scale2.add(1)).add_(shift2)
        return x + self.ffn(h).mul(gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.C, self.eps = cfg.embed_dim, cfg.norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_dim, 2 * cfg.embed_dim))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        return self.ada_lin(cond).view(-1, 1, 2, self.C)

    def forward(self, x: torch.Tensor, ada: torch.Tensor) -> torch.Tensor:
        scale, shift = ada.unbind(2)
        return F.layer_norm(x, (self.C,), eps=self.eps).mul(scale.add(1)).add_(shift)


class _SharedAdaLin(nn.Linear):
    """shared_aln: one projection of the condition for all blocks, viewed as (B, 1, 6, C)."""

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return super().forward(cond).view(-1, 1, 6, self.out_features // 6)


# ----------------------------------------------------------------------------------------------------------------------
class VAR(nn.Module):
    family = VAR_FAMILY
    patch = None  # the applied subjects (tuning/apply.py: a view of this model sets it)
    sharded = False
    sharded_fingerprint = None
    special_token = None
    gradient_checkpointing = False  # (subject tuning sets it on its view)

    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        C, pn = config.embed_dim, config.patch_nums
        self.first_l = pn[0] ** 2
        ends = [sum(p * p for p in pn[:i + 1]) for i in range(len(pn))]
        self.begin_ends = list(zip([0] + ends[:-1], ends))  # token range of each scale
        L = ends[-1]
        self.word_embed = nn.Linear(config.Cvae, C)
        self.class_emb = nn.Embedding(config.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, L, C))
        self.lvl_embed = nn.Embedding(len(pn), C)
        if config.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), _SharedAdaLin(C, 6 * C))
        self.blocks = nn.ModuleList(AdaLNSelfAttn(config) for _ in range(config.depth))
        levels = torch.cat([torch.full((p * p,), i) for i, p in enumerate(pn)])
        self.register_buffer("lvl_1L", levels.view(1, L))
        # a query attends to every key of its own and earlier scales
        causal = torch.where(levels[:, None] >= levels[None, :], 0.0, -torch.inf)
        self.register_buffer("attn_bias_for_masking", causal.view(1, 1, L, L))
        self.head_nm = AdaLNBeforeHead(config)
        self.head = nn.Linear(C, config.vocab_size)
        self.source: str | None = None  # the file it was loaded from, for error messages

    @property
    def schedule(self) -> list[tuple[int, int]]:
        return [(p, p) for p in self.config.patch_nums]

    @property
    def device(self) -> torch.device:
        return self.pos_1LC.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return fp8.compute_dtype(self.blocks[0].attn.proj.weight)

    def embed_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """Class labels (B,) -> their embeddings (B, C); embeddings (a subject's class vector) pass as they are."""
        return cond.to(self.device, torch.float32) if cond.is_floating_point() else self.class_emb(cond.to(self.device))

    def _block_input(self, cond: torch.Tensor) -> torch.Tensor:
        """What every block's AdaLN reads, in the blocks' dtype: the class embeddings, or their shared projection."""
        return (self.shared_ada_lin(cond) if hasattr(self, "shared_ada_lin") else cond).to(self.compute_dtype)

    def _blocks(self, x: torch.Tensor, cond: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """The blocks in training, in their own dtype: tokens (rows, l, C) -> their outputs (rows, l, C)."""
        ada = self._block_input(cond)
        x, attn_bias = x.to(self.compute_dtype), attn_bias.to(self.compute_dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():  # recomputed in the backward: less memory
                x = checkpoint(self._patched_block, block, x, ada, attn_bias, use_reentrant=False)
            else:
                x = block(x, block.modulation(ada), attn_bias)
        return x

    def _patched_block(self, block, x, ada, attn_bias):
        # the subjects' updates are switched on inside, so the block's recomputation in the backward pass has them too
        with patch.active(self.patch):
            return block(x, block.modulation(ada), attn_bias, None)

    def _head(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """fp32 logits (rows, l, V) of the blocks' outputs."""
        return self.head_logits(self.head_nm(x.float(), self.head_nm.modulation(cond)))

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """fp32 logits (rows, l, V) of normed features (what ``sampling_step`` returns; linear in them, so guidance
        mixes the features and the head runs once per image, not once per row)."""
        return self.head(h.float()).float()

    def forward(self, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Training forward, causal by scale, without class dropout: (B,) labels or (B, C) class embeddings,
        (B, L-1, Cvae) -> (B, L, V)."""
        B, ed = labels.shape[0], self.first_l + inputs.shape[1]
        cond = self.embed_cond(labels)
        sos = cond.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(inputs.float())), dim=1)
        x += self.lvl_embed(self.lvl_1L[:, :ed].expand(B, -1)) + self.pos_1LC[:, :ed]
        with patch.active(self.patch):
            return self._head(self._blocks(x, cond, self.attn_bias_for_masking[:, :, :ed, :ed]), cond)

    def teacher_forced_logits(self, cond: torch.Tensor, codes: list[torch.Tensor], schedule, vae,
                              image_sizes=None) -> torch.Tensor:
        """Logits (B, L, V) of every scale given the codes of the earlier ones. ``image_sizes``: unused (Switti's)."""
        if [tuple(hw) for hw in schedule] != self.schedule:
            raise ValueError(f"VAR's positions are learned for the schedule {self.schedule}; got {list(schedule)}")
        device = self.pos_1LC.device
        return self.forward(cond.to(device), vae.inputs_from_codes(codes, schedule).to(device))

    # ---- per-scale sampling with a KV cache ----
    def start_sampling(self, cond, negative=None, batch: int | None = None, guided: bool = True) -> VARSamplingState:
        """State for sampling ``batch`` images of ``cond``: (B,) labels (or one label for all), (B, C) class
        embeddings, or one such per scale (a subject's class vector at a per-scale strength). Rows are [cond;
        unconditional] when guided. The AdaLN modulations are computed here, once, or once per scale where the classes
        or the applied subjects' strengths differ between scales. ``negative`` is unused: VAR's negative is the
        unconditional class."""
        modulation = patch.per_scale(self, cond, lambda c, k: self._modulation(c, batch, guided, k))
        batch = modulation[0].cond.shape[0] // (2 if guided else 1)
        return VARSamplingState(modulation, [KVCache() for _ in self.blocks], batch)

    def _modulation(self, c, batch: int | None, guided: bool, k: int | None) -> Modulation:
        c = torch.as_tensor(c, device=self.device)
        c = self.embed_cond(c.reshape(-1) if not c.is_floating_point() else c.reshape(-1, c.shape[-1]))
        batch = batch or c.shape[0]
        if c.shape[0] == 1:
            c = c.expand(batch, -1)
        if c.shape[0] != batch:
            raise ValueError(f"{c.shape[0]} classes for a batch of {batch}")
        if guided:
            c = torch.cat((c, self.class_emb(torch.full((batch,), self.config.num_classes, device=self.device))))
        with patch.active(self.patch, k):
            ada = self._block_input(c)
            return Modulation(c, [block.modulation(ada) for block in self.blocks], self.head_nm.modulation(c))

    def sampling_step(self, state: VARSamplingState, k: int, tokens: torch.Tensor | None,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input (rows, l_k, C) fp32 of scale k (``head_logits`` makes the logits, after the guidance
        mix). ``tokens``: None at k = 0, else the (B, l_k, Cvae) area-resized running f_hat, shared by the
        conditional and unconditional rows. keep: the positions (B, m) the blocks compute (pruning.py), the others
        restored from the scale before."""
        now = state.modulation[k if len(state.modulation) > 1 else 0]
        cond = now.cond
        rows = cond.shape[0]
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        begin, end = self.begin_ends[k]
        if k == 0:
            x = (cond.unsqueeze(1).expand(rows, self.first_l, -1)
                 + self.pos_start.expand(rows, self.first_l, -1) + lvl_pos[:, :self.first_l])
        else:
            if tokens.shape[1] != end - begin:
                raise ValueError(f"scale {k} has {end - begin} tokens, got {tokens.shape[1]}")
            x = self.word_embed(tokens.to(self.pos_1LC.device, torch.float32)) + lvl_pos[:, begin:end]
            x = x.repeat(rows // x.shape[0], 1, 1)
        if keep is not None:
            keep = prune.rows(keep, rows)
            x = prune.take(x, keep)
        with patch.active(self.patch, k):
            x = x.to(self.compute_dtype)
            for block, ada, cache in zip(self.blocks, now.blocks, state.caches):
                x = block(x, ada, None, cache)
        if keep is not None:
            x = prune.restore(x, keep, state.previous, self.schedule[k - 1], self.schedule[k])
        state.previous = x
        return self.head_nm(x.float(), now.head)

    @staticmethod
    def drop_uncond(state: VARSamplingState) -> None:
        """From the next step on, run only the conditional rows (every cache is cut to them)."""
        state.modulation = [m.rows(state.batch) for m in state.modulation]
        state.previous = None if state.previous is None else state.previous[:state.batch]
        for cache in state.caches:
            cache.keep(state.batch)


def load_var(source, device=None, dtype=None) -> VAR:
    """Load a VAR transformer from a var_dNN.pth file (flat state dict), a training checkpoint or a state dict;
    the architecture comes from tensor shapes. Loading is strict. ``dtype`` is the blocks' storage/compute dtype:
    default bf16 on CUDA, else fp32; embeddings and the head stay fp32."""
    sd = dict(load_state_dict(source, wrappers=_WRAPPERS, what="a VAR transformer"))
    src = describe_source(source, capital=True)
    try:
        config = VARConfig.from_state_dict(sd)
    except KeyError as e:
        raise CheckpointError(f"{src} is not a VAR transformer checkpoint: it has no '{e.args[0]}' tensor. "
                              "(Is it a VAE file?)") from None
    except ValueError as e:
        raise CheckpointError(f"{src} is not a usable VAR transformer checkpoint: {e}.") from None
    with torch.device("meta"):
        model = VAR(config)
    check_keys({k: v.shape for k, v in model.state_dict().items()}, sd, source, "VAR transformer")
    model.load_state_dict(sd, assign=True)
    model.source = str(source) if isinstance(source, (str, os.PathLike)) else None
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.float().blocks.to(dtype)
    patch.install(model)
    return model.to(device).eval().requires_grad_(False)
