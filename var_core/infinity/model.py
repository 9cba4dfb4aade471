"""The Infinity transformer, clean-room, with the released checkpoint's exact parameter names.

Shapes, stated once:
  text        : a list of B tensors (len_i, Ct5), raw T5 features of each prompt (padding removed)
  sequence    : (B, L, C); scale k occupies positions [s_k, s_k + h_k*w_k), tokens row-major; position 0 is the
                start token (scale 0 is 1x1)
  logits      : (B, L, 2d), bit-major pairs: [..., 2c] is the logit of bit c = 0 and [..., 2c+1] of bit c = 1

Numerics follow the official inference: the residual stream, norms, AdaLN, RoPE, the text path and the head run in
fp32; the blocks' linear layers may run in bf16/fp16 under autocast.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from . import quantizer
from .family import INFINITY, file_defaults
from .. import fp8
from ..checkpoint import SHARD_INDEX, CheckpointError, check_keys, describe_source, load_state_dict
from .layers import AdaLNBeforeHead, Block, BlockChunk, RMSNorm, TextCondition, TextPool, rope_table, scale_levels

# Bits per latent pixel of Infinity's patchified VAEs (infinity_vae_d56_f8_14_patchify.pth, Infinity-8B's): a model
# whose tokens carry 4x one of these is read as spatially patchified (InfinityConfig.token_patch).
PATCHIFIED_VAE_BITS = (14,)


@dataclass(frozen=True)
class InfinityConfig:
    depth: int = 32
    embed_dim: int = 2048
    num_heads: int = 16
    block_chunks: int = 8
    ffn_hidden: int = 8192
    bits: int = 32  # d: bits per token = VAE latent channels
    text_channels: int = 2048  # Ct5
    text_maxlen: int = 512  # rows of the learned null text cfg_uncond
    text_pool_heads: int = 16  # Ct5 // 128 in the reference, independent of num_heads
    num_levels: int = 15  # rows of lvl_embed: the most scales a schedule may have
    lvl_embed_per_chunk: bool = False  # ARBooth checkpoints add lvl_embed before every chunk; the base model once

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def token_patch(self) -> int:
        """Spatial patchify: each token is a token_patch x token_patch block of VAE latent pixels (quantizer.py).
        Infinity-8B's tokens are 2x2 blocks of its d14 VAE (4*14 = 56 bits); every other Infinity model has 1.
        Read from the token width, which is all a checkpoint says: no plain Infinity VAE has 56 bits."""
        return 2 if self.bits % 4 == 0 and self.bits // 4 in PATCHIFIED_VAE_BITS else 1

    @property
    def vae_bits(self) -> int:
        """Bits per VAE latent pixel (d of the VAE this model pairs with)."""
        return self.bits // self.token_patch ** 2

    @staticmethod
    def from_state_dict(sd) -> "InfinityConfig":
        """Infer the architecture from tensor shapes, so every released size loads without a config."""
        def shape(key):
            if key not in sd:
                raise KeyError(key)
            return tuple(sd[key].shape)

        blocks = {(int(m[1]), int(m[2])) for k in sd if (m := re.match(r"block_chunks\.(\d+)\.module\.(\d+)\.", k))}
        if not blocks:
            raise KeyError("block_chunks.0.module.0.*")
        chunks = 1 + max(c for c, _ in blocks)
        per_chunk = 1 + max(j for _, j in blocks)
        b0 = "block_chunks.0.module.0."
        return InfinityConfig(
            depth=chunks * per_chunk,
            embed_dim=shape("pos_start")[-1],
            num_heads=shape(b0 + "sa.scale_mul_1H11")[1],
            block_chunks=chunks,
            ffn_hidden=shape(b0 + "ffn.fc1.weight")[0],
            bits=shape("word_embed.weight")[1],
            text_channels=shape("text_norm.weight")[0],
            text_maxlen=shape("cfg_uncond")[0],
            text_pool_heads=shape("text_proj_for_sos.ca.mat_q")[1],
            num_levels=shape("lvl_embed.weight")[0],
        )



PER_SCALE_NEEDS_CACHE = ("A per-scale subject strength needs scale-by-scale sampling (the KV-cached sampler); a "
                         "forward over several scales at once can only use one strength.")


@dataclass(frozen=True)
class TextMix:
    """One prompt read several ways and blended: ``readings[r]`` (len_r, Ct5) weighs ``weights[r][k]`` at scale k (a
    single value: every scale); the weights of a scale sum to 1. It is how a subject's strength reaches the text: its
    placeholder read as the learned vectors (weight = strength) or as the class word (1 - strength), tuning/apply.py.

    The cross-attention sees every weighted reading's rows with log(weight) added to their attention logits, and the
    pooled vector (start token, AdaLN) is the weighted mean of the readings'; a reading of weight 0 is left out, so
    weights 0 and 1 give exactly the condition of the one reading.
    """
    readings: tuple[torch.Tensor, ...]
    weights: tuple[tuple[float, ...], ...]

    def at(self, scale: int | None) -> list[tuple[torch.Tensor, float]]:
        """(reading, weight) of the readings that weigh at ``scale`` (None: a forward over several scales)."""
        out = []
        for reading, w in zip(self.readings, self.weights):
            if scale is None and len(set(w)) > 1:
                raise ValueError(PER_SCALE_NEEDS_CACHE)
            weight = w[0] if scale is None or len(w) == 1 else w[scale]
            if weight > 0:
                out.append((reading, float(weight)))
        return out


def pad_text(text: list[torch.Tensor], device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (len_i, Ct5) -> padded (B, Lt, Ct5) and a key mask (B, 1, 1, Lt)."""
    if isinstance(text, torch.Tensor):
        text = [text] if text.dim() == 2 else list(text)
    if len(text) == 0:
        raise ValueError("No text given: pass a list with one (len, C_text) tensor per prompt.")
    for i, t in enumerate(text):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] == 0:
            raise ValueError(f"Text {i} must be a non-empty (len, C_text) tensor, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}.")
    lens = torch.tensor([t.shape[0] for t in text], device=device)
    padded = torch.nn.utils.rnn.pad_sequence([t.to(device=device, dtype=dtype) for t in text], batch_first=True)
    mask = torch.arange(padded.shape[1], device=device)[None] < lens[:, None]
    return padded, mask[:, None, None, :]


class Infinity(nn.Module):
    family = INFINITY

    def __init__(self, config: InfinityConfig):
        super().__init__()
        self.config = config
        C, Ct = config.embed_dim, config.text_channels
        if config.depth % config.block_chunks:
            raise ValueError(f"depth {config.depth} is not divisible by block_chunks {config.block_chunks}")
        self.cfg_uncond = nn.Parameter(torch.zeros(config.text_maxlen, Ct))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.text_norm = RMSNorm(Ct)
        self.text_proj_for_sos = TextPool(C, Ct, config.text_pool_heads)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(Ct, C), nn.GELU(approximate="tanh"), nn.Linear(C, C))
        self.lvl_embed = nn.Embedding(config.num_levels, C)
        self.word_embed = nn.Linear(config.bits, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        per_chunk = config.depth // config.block_chunks
        self.block_chunks = nn.ModuleList(
            BlockChunk([Block(config) for _ in range(per_chunk)]) for _ in range(config.block_chunks))
        self.head_nm = AdaLNBeforeHead(C)
        self.head = nn.Linear(C, 2 * config.bits)
        self.gradient_checkpointing = False
        self.special_token = None  # an ARBooth file's learned placeholder vectors, if loaded from one
        self.source = None  # the file it was loaded from, for error messages
        # what its file's metadata says it samples and tunes with (family.file_defaults; the embedded model's does)
        self.file_defaults: dict[str, dict] = {"sampling": {}, "tuning": {}, "with_subject": {}}
        self.sharded_fingerprint = None  # {format: its fingerprint}, taken before FSDP split its blocks
        # patch(block_index, scale_index) -> BlockPatch or None: weights used instead of the stored ones and
        # low-rank updates (subjects applied, tuning/apply.py). A plain attribute: a shallow copy carries its own.
        self.patch = None
        self._rope_cache: dict = {}

    # ----------------------------------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[Block]:
        return [b for chunk in self.block_chunks for b in chunk.module]

    @property
    def device(self) -> torch.device:
        return self.pos_start.device

    @property
    def sharded(self) -> bool:
        """Whether FSDP split the blocks' weights over processes (tuning.distributed.shard_base)."""
        from torch.distributed.tensor import DTensor  # (distributed builds only)
        return isinstance(self.blocks[0].ffn.fc1.weight, DTensor)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the blocks' weights: linear layers run in it (autocast when it is not fp32)."""
        return fp8.compute_dtype(self.block_chunks[0].module[0].ffn.fc1.weight)

    def autocast(self):
        dtype = self.compute_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def rope(self, schedule):
        key = (tuple(map(tuple, schedule)), str(self.device))
        if key not in self._rope_cache:
            with torch.inference_mode(False):  # a table made while sampling must stay usable for training
                self._rope_cache[key] = rope_table(schedule, self.config.head_dim, self.device)
        return self._rope_cache[key]

    def null_text(self, text: list) -> list:
        """The learned negative prompt: the first len_i rows of cfg_uncond for each prompt (for a TextMix, a mix
        of them with its weights, so that each reading is guided against the null text of its own length)."""
        rows = self.cfg_uncond.shape[0]

        def null(t):
            if isinstance(t, TextMix):
                return TextMix(tuple(null(r) for r in t.readings), t.weights)
            return self.cfg_uncond[:min(t.shape[0], rows)]
        return [null(t) for t in text]

    # ----------------------------------------------------------------------------------------------------------
    def condition(self, text: list, scale: int | None = None) -> TextCondition:
        """Text path: RMSNorm -> (attention pool -> start vector, shared AdaLN) and (MLP -> cross-attention memory).
        ``text`` items may be TextMix (blended readings), taken at ``scale``."""
        if isinstance(text, TextCondition):
            return text
        if not any(isinstance(t, TextMix) for t in text):
            return self._condition(text)
        parts = [t.at(scale) if isinstance(t, TextMix) else [(t, 1.0)] for t in text]
        if all(len(p) == 1 for p in parts):  # one reading each (strength 0 or 1 here): that reading exactly
            return self._condition([p[0][0] for p in parts])
        flat = self._condition([r for p in parts for r, _ in p])
        memories, biases, pooled, i = [], [], [], 0
        for p in parts:
            rows, bias, pool = [], [], 0.0
            for reading, w in p:
                n = reading.shape[0]
                rows.append(flat.memory[i, :n])
                bias.append(torch.full((n,), math.log(w), device=self.device))
                pool = pool + w * flat.pooled[i]
                i += 1
            memories.append(torch.cat(rows))
            biases.append(torch.cat(bias))
            pooled.append(pool)
        memory = torch.nn.utils.rnn.pad_sequence(memories, batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence(biases, batch_first=True, padding_value=-math.inf)[:, None, None, :]
        pooled = torch.stack(pooled)
        with torch.autocast(self.device.type, enabled=False):
            gss = self.shared_ada_lin(pooled).view(-1, 1, 6, self.config.embed_dim)
        return TextCondition(memory, mask, pooled, gss)

    def _condition(self, text: list[torch.Tensor]) -> TextCondition:
        widths = {t.shape[-1] for t in text if isinstance(t, torch.Tensor)}
        if widths - {self.config.text_channels}:
            raise ValueError(f"Text features have width {sorted(widths)}, but this model expects "
                             f"{self.config.text_channels} (the text encoder does not match the transformer).")
        padded, mask = pad_text(text, self.device)
        with torch.autocast(self.device.type, enabled=False):
            t = self.text_norm(padded)
            pooled = self.text_proj_for_sos(t, mask).float()
            memory = self.text_proj_for_ca(t)
            gss = self.shared_ada_lin(pooled).view(-1, 1, 6, self.config.embed_dim)
        return TextCondition(memory, mask, pooled, gss)

    def start_token(self, cond: TextCondition) -> torch.Tensor:
        return cond.pooled[:, None, :] + self.pos_start

    def embed_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.word_embed(inputs.float())

    def logits(self, x: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.head(self.head_nm(x.float(), cond.pooled))

    def run_blocks(self, x, cond, rope, levels, scale_sizes=None, cache=None, total=0, scale_index=None):
        """All blocks over x (B, l, C); ``levels`` (l, C) is the lvl_embed of each position. ``scale_sizes``: the
        token count of each scale in x for the block-causal forward (None with the KV cache). ``scale_index``: the
        index of the one scale x holds (None: several), passed on to ``self.patch``."""
        per_chunk = self.config.depth // self.config.block_chunks
        for c, chunk in enumerate(self.block_chunks):
            if c == 0 or self.config.lvl_embed_per_chunk:
                x = x + levels
            for j, block in enumerate(chunk.module):
                i = c * per_chunk + j
                args = (cond, rope, scale_sizes, cache, i, total)
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(self._run_block, block, i, scale_index, x, *args, use_reentrant=False)
                else:
                    x = self._run_block(block, i, scale_index, x, *args)
        return x

    def _run_block(self, block, i, scale_index, x, *args):
        # Patched weights are made here, inside the checkpointed call: one block's worth at a time, recomputed in
        # the backward pass instead of being kept for the whole forward.
        patch = self.patch(i, scale_index) if self.patch is not None else None
        if patch is None:
            return block(x, *args)
        if patch.weights:
            return functional_call(block, patch.weights, (x, *args), {"updates": patch.updates})
        return block(x, *args, updates=patch.updates)

    # ----------------------------------------------------------------------------------------------------------
    def forward(self, text, inputs: torch.Tensor, schedule) -> torch.Tensor:
        """Teacher-forced forward with the block-causal mask.

        text: list of (len_i, Ct5) or a TextCondition; inputs: (B, L-1, d) inputs of scales 1..K-1 (see
        quantizer.teacher_forcing); returns logits (B, L, 2d).
        """
        schedule = [tuple(s) for s in schedule]
        if len(schedule) > self.config.num_levels:
            raise ValueError(f"The schedule has {len(schedule)} scales; this model supports at most "
                             f"{self.config.num_levels}.")
        cond = self.condition(text)
        sizes = [h * w for h, w in schedule]
        L = sum(sizes)
        if inputs.shape[1:] != (L - 1, self.config.bits):
            raise ValueError(f"Teacher-forced inputs must be (B, {L - 1}, {self.config.bits}) for this schedule, "
                             f"got {tuple(inputs.shape)}.")
        if inputs.shape[0] != cond.pooled.shape[0]:
            raise ValueError(f"{inputs.shape[0]} images but {cond.pooled.shape[0]} prompts.")
        x = torch.cat((self.start_token(cond), self.embed_inputs(inputs.to(self.device))), dim=1)
        level = scale_levels(schedule, self.device)
        with self.autocast():  # block-causal: a token sees its own and all earlier scales
            x = self.run_blocks(x, cond, self.rope(schedule), self.lvl_embed(level), scale_sizes=tuple(sizes))
        return self.logits(x, cond)

    def teacher_forced_logits(self, text, bits: list[torch.Tensor], schedule) -> torch.Tensor:
        """Logits (B, L, 2d) of every scale given the per-scale bits (B, h_k, w_k, d) of the earlier ones (no flips),
        bits in this model's token layout (patchified for Infinity-8B: quantizer.patchify)."""
        bits = [b.to(self.device) for b in bits]
        inputs = torch.cat(quantizer.inputs_from_bits(bits, schedule, self.config.token_patch), dim=1)
        return self(text, inputs, schedule)

    # ----------------------------------------------------------------------------------------------------------
    def cast_blocks(self, dtype: torch.dtype) -> "Infinity":
        """Store the blocks' linear layers in ``dtype`` (bf16 halves memory); norms, AdaLN offsets, the text path
        and the head stay fp32, as in the official inference."""
        for chunk in self.block_chunks:
            for module in chunk.modules():
                if isinstance(module, nn.Linear):
                    module.to(dtype)
        return self


# Keys the reference may leave in training checkpoints that are not weights (its loader drops them too).
_NON_WEIGHTS = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")
# Where known containers keep the model: Infinity training checkpoints, ARBooth outputs.
_WRAPPERS = (("trainer", "gpt_fsdp"), ("trainer", "gpt_wo_ddp"), ("model",))


def _whole_shard_folder(source):
    """One shard of a sharded checkpoint stands for its whole folder (file pickers list the shards, not the folder)."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.isfile(source):
        return source
    index = os.path.join(os.path.dirname(os.path.abspath(source)), SHARD_INDEX)
    if not os.path.isfile(index):
        return source
    try:
        with open(index) as f:
            shards = set(json.load(f)["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return source  # read_shards reports a broken index when the folder itself is given
    return os.path.dirname(os.path.abspath(source)) if os.path.basename(source) in shards else source


def load_transformer(path_or_state_dict, device=None, dtype=None) -> Infinity:
    """Load an Infinity transformer from a .pth/.safetensors file or a state dict; the architecture comes from shapes.

    Accepts the released flat state dict (one file, or Infinity-8B's folder of safetensors shards with its
    model.safetensors.index.json; any one of its shards stands for the folder), an Infinity training checkpoint
    (``trainer.gpt_fsdp``) and an ARBooth file (``model``, whose learned ``special_token`` is kept as
    ``model.special_token`` and whose blocks expect lvl_embed per chunk). Loading is strict. ``dtype`` is the
    blocks' storage/compute dtype: default bf16 on CUDA, else fp32; the text path and the head always stay fp32.
    """
    path_or_state_dict = _whole_shard_folder(path_or_state_dict)
    sd = dict(load_state_dict(path_or_state_dict, wrappers=_WRAPPERS, what="an Infinity transformer"))
    for key in _NON_WEIGHTS:
        sd.pop(key, None)
    special_token = sd.pop("special_token", None)
    try:
        config = InfinityConfig.from_state_dict(sd)
    except KeyError as e:
        raise CheckpointError(
            f"{describe_source(path_or_state_dict, capital=True)} is not an Infinity transformer checkpoint: it has "
            f"no '{e.args[0]}' "
            f"tensor. (Is it a VAE or a text encoder file?)") from None
    config = replace(config, lvl_embed_per_chunk=special_token is not None)
    with torch.device("meta"):
        model = Infinity(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    for key, shape in expected.items():  # converted files sometimes drop the all-zero key-bias buffers
        if key.endswith("zero_k_bias") and key not in sd:
            sd[key] = torch.zeros(shape)
    check_keys(expected, sd, path_or_state_dict, "Infinity transformer")
    model.load_state_dict(sd, assign=True)
    model.special_token = special_token
    model.source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else None
    model.file_defaults = file_defaults(model.source)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.float().cast_blocks(dtype).to(device)
    return model.eval().requires_grad_(False)

