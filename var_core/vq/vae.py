"""The multi-scale residual VQ-VAE shared by the original VAR (vae_ch160v4096z32.pth) and Switti (VQVAE-Switti:
config.json + model.safetensors), clean-room, with the released tensor names.

Shapes, stated once:
  images   : (B, 3, H, W) float in [-1, 1]; H = 16 h, W = 16 w for the release's five levels
  latent   : (B, Cvae, h, w), quant_conv(encoder(images))
  schedule : K (h_k, w_k) tuples, small to large; the last one is the latent size (h, w)
  codes    : K LongTensors (B, h_k, w_k), row-major inside a scale
  f_hat    : (B, Cvae, h, w), the running sum of phi_k(upsampled code embeddings)

The encoder/decoder are the LDM VQ-f16 layout; the quantizer has one codebook and a few 3x3 "phi" convs shared by
scale position (see VQVAE.phi_index). Every op follows the reference's order, so results match it to float rounding.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, check_keys, describe_source, load_state_dict

Schedule = list[tuple[int, int]]


@dataclass(frozen=True)
class VQVAEConfig:
    vocab_size: int = 4096
    Cvae: int = 32  # code width (z_channels)
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2  # per encoder level; decoder levels have one more
    share_quant_resi: int = 4  # number of phi convs shared across the scales
    quant_resi: float = 0.5  # phi(h) = (1 - r) h + r conv(h)
    patch_nums: tuple[int, ...] | None = None  # Switti's v_patch_nums; None when the transformer gives the schedule
    vocab_hit_rows: int = 10  # rows of the training statistic ema_vocab_hit_SV (kept so loading is strict)

    @staticmethod
    def from_state_dict(sd) -> VQVAEConfig:
        """The architecture from tensor shapes (raises KeyError naming a tensor it needs but cannot find)."""
        def count(pattern: str) -> int:
            found = {int(m[1]) for k in sd if (m := re.match(pattern, k))}
            if not found:
                raise KeyError(pattern.replace(r"\.", ".").replace(r"(\d+)", "0"))
            return 1 + max(found)

        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = count(r"encoder\.down\.(\d+)\.")
        widths = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
        if any(w % ch for w in widths):
            raise ValueError(f"level widths {widths} are not multiples of the base width {ch}")
        vocab_size, cvae = sd["quantize.embedding.weight"].shape
        return VQVAEConfig(vocab_size=vocab_size, Cvae=cvae, ch=ch, ch_mult=tuple(w // ch for w in widths),
                           num_res_blocks=count(r"encoder\.down\.0\.block\.(\d+)\."),
                           share_quant_resi=count(r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight"),
                           vocab_hit_rows=sd["quantize.ema_vocab_hit_SV"].shape[0])


# ----------------------------------------------------------------------------------------------------------------------
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()  # on the norms' fresh outputs: no copy (the decoder's memory and time)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h), inplace=inplace))


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions; q, k, v from one 1x1 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        # two bmm's with contiguous operands, as the reference computes them
        w = torch.bmm(q.transpose(1, 2).contiguous(), k.contiguous()).mul_(C ** -0.5).softmax(dim=2)
        h = torch.bmm(v.contiguous(), w.transpose(1, 2).contiguous())
        return x + self.proj_out(h.view(B, C, H, W))


class Downsample(nn.Module):
    """Zero-pad one row/column at the bottom/right, then a 3x3 stride-2 conv without padding."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution: ResnetBlocks, each followed by an AttnBlock on the deepest level, then an optional resample."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attn: bool, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(blocks if attn else 0))
        if resample == "down":
            self.downsample = Downsample(c_out)
        elif resample == "up":
            self.upsample = Upsample(c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if hasattr(self, "downsample"):
            h = self.downsample(h)
        if hasattr(self, "upsample"):
            h = self.upsample(h)
        return h


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList(
            _Level(([cfg.ch] + widths)[i], widths[i], cfg.num_res_blocks, attn=i == n - 1,
                   resample="down" if i < n - 1 else None) for i in range(n))
        self.mid = _Mid(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.Cvae, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(cfg.Cvae, widths[-1], 3, padding=1)
        self.mid = _Mid(widths[-1])
        # up.{i} is level i (run from n-1 down to 0); its input is the width of the level below it in the run
        self.up = nn.ModuleList(
            _Level(widths[min(i + 1, n - 1)], widths[i], cfg.num_res_blocks + 1, attn=i == n - 1,
                   resample="up" if i > 0 else None) for i in range(n))
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------------------------------
class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv3x3(h): the refinement applied to each scale's upsampled code embeddings."""

    def __init__(self, c: int, ratio: float):
        super().__init__(c, c, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


class _PhiBank(nn.Module):
    def __init__(self, count: int, c: int, ratio: float):
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(c, ratio) for _ in range(count))


class _Quantizer(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.Cvae)
        self.quant_resi = _PhiBank(cfg.share_quant_resi, cfg.Cvae, cfg.quant_resi)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(cfg.vocab_hit_rows, cfg.vocab_size))


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantize = _Quantizer(config)
        self.quant_conv = nn.Conv2d(config.Cvae, config.Cvae, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(config.Cvae, config.Cvae, 3, padding=1)
        S = config.share_quant_resi
        # The reference's tick positions of the shared phis, in float64: at K = 10 two scales fall exactly halfway
        # between ticks and only float64 rounding decides which phi they get.
        margin = 1 / (3 * S) if S == 4 else 1 / (2 * S)
        self._ticks = np.linspace(margin, 1 - margin, S)
        self.source: str | None = None  # the file or folder it was loaded from, for error messages

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantize.embedding.weight

    @property
    def device(self) -> torch.device:
        return self.codebook.device

    def phi_index(self, k: int, K: int) -> int:
        """Which shared phi refines scale k of K: the tick nearest to k / (K - 1) (first on ties)."""
        return int(np.argmin(np.abs(self._ticks - (k / (K - 1) if K > 1 else 0.0))))

    # ---- pieces of the scale-wise loop (also used by the samplers) ----
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, Cvae, h, w) embeddings."""
        B, h, w = codes.shape
        # the reference's layout (a channels-last view of (B, h*w, Cvae)), so the convs after it round alike
        return self.quantize.embedding(codes.reshape(B, h * w)).transpose(1, 2).view(B, -1, h, w)

    def embed_soft(self, probs: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, V) probabilities -> (B, Cvae, h, w) expected embeddings (Gumbel-smoothed sampling)."""
        return (probs @ self.codebook.unsqueeze(0)).transpose(1, 2).reshape(probs.shape[0], -1, *hw)

    def _residual(self, h_BChw: torch.Tensor, k: int, schedule: Schedule) -> torch.Tensor:
        """Scale k's contribution to f_hat: phi_k of the embeddings, bicubic-upsampled unless k is the last scale."""
        K = len(schedule)
        if k != K - 1:
            h_BChw = F.interpolate(h_BChw, size=tuple(schedule[-1]), mode="bicubic")
        return self.quantize.quant_resi.qresi_ls[self.phi_index(k, K)](h_BChw)

    def add_scale(self, fhat: torch.Tensor, h_BChw: torch.Tensor, k: int, schedule: Schedule) -> torch.Tensor:
        """f_hat after scale k, given its (B, Cvae, h_k, w_k) embeddings (a new tensor; ``fhat`` is not changed)."""
        return fhat + self._residual(h_BChw, k, schedule)

    @staticmethod
    def tokens_at(fhat: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """f_hat area-resized to hw, as (B, h*w, Cvae) tokens in row-major order: the next scale's input."""
        return F.interpolate(fhat, size=tuple(hw), mode="area").flatten(2).transpose(1, 2)

    def _zero_fhat(self, batch: int, schedule: Schedule) -> torch.Tensor:
        return self.codebook.new_zeros(batch, self.config.Cvae, *schedule[-1], dtype=torch.float32)

    # ---- whole passes ----
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images.to(self.quant_conv.weight.dtype)))

    def encode_codes(self, images: torch.Tensor, schedule: Schedule) -> list[torch.Tensor]:
        """Multi-scale residual quantisation of the images' latent: at each scale the area-resized remainder is
        matched to its nearest code (squared L2), and that scale's contribution is subtracted from the remainder."""
        return self.latent_codes(self.encode_latent(images), schedule)

    def latent_codes(self, f_rest: torch.Tensor, schedule: Schedule) -> list[torch.Tensor]:
        """encode_codes of a latent (B, Cvae, h, w) already computed (subject tuning encodes its photos once)."""
        B, C, H, W = f_rest.shape
        if tuple(schedule[-1]) != (H, W):
            raise ValueError(f"the schedule ends at {tuple(schedule[-1])} but the latent is {H}x{W}")
        E = self.codebook
        e_sq = E.square().sum(dim=1)
        codes = []
        for k, (h, w) in enumerate(schedule):
            z = f_rest if k == len(schedule) - 1 else F.interpolate(f_rest, size=(h, w), mode="area")
            z = z.permute(0, 2, 3, 1).reshape(-1, C)
            d = z.square().sum(dim=1, keepdim=True) + e_sq
            d.addmm_(z, E.T, alpha=-2, beta=1)  # ||z||^2 + ||e||^2 - 2 z.e, in the reference's op order
            codes.append(d.argmin(dim=1).view(B, h, w))
            f_rest = f_rest - self._residual(self.embed(codes[-1]), k, schedule)
        return codes

    def codes_to_fhat(self, codes: list[torch.Tensor], schedule: Schedule) -> torch.Tensor:
        fhat = self._zero_fhat(codes[0].shape[0], schedule)
        for k, c in enumerate(codes):
            fhat = self.add_scale(fhat, self.embed(c.reshape(-1, *schedule[k])), k, schedule)
        return fhat

    def inputs_from_codes(self, codes: list[torch.Tensor], schedule: Schedule) -> torch.Tensor:
        """Teacher-forcing inputs (B, L - h_0 w_0, Cvae): for each scale k >= 1, f_hat after scales 0..k-1
        area-resized to scale k."""
        fhat = self._zero_fhat(codes[0].shape[0], schedule)
        inputs = []
        for k in range(len(schedule) - 1):
            fhat = self.add_scale(fhat, self.embed(codes[k].reshape(-1, *schedule[k])), k, schedule)
            inputs.append(self.tokens_at(fhat, schedule[k + 1]))
        return torch.cat(inputs, dim=1)

    def decode_latent(self, fhat: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, h, w) f_hat -> (B, 3, 16h, 16w) images in [-1, 1]."""
        return self.decoder(self.post_quant_conv(fhat.to(self.post_quant_conv.weight.dtype))).clamp_(-1, 1)

    def decode_codes(self, codes: list[torch.Tensor], schedule: Schedule) -> torch.Tensor:
        return self.decode_latent(self.codes_to_fhat(codes, schedule))


# ----------------------------------------------------------------------------------------------------------------------
# config.json key (VQVAE-Switti's PyTorchModelHubMixin layout) -> VQVAEConfig field. `reso` is not used: the released
# VAE is shared by every Switti resolution, and the schedule comes from the transformer.
_CONFIG_KEYS = {"vocab_size": "vocab_size", "z_channels": "Cvae", "ch": "ch", "ch_mult": "ch_mult",
                "share_quant_resi": "share_quant_resi", "v_patch_nums": "patch_nums"}


def _read_folder(folder: Path) -> tuple[dict, dict]:
    """(state dict, config.json overrides) of a VQVAE-Switti folder."""
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise CheckpointError(f"'{folder}' is not a VQ-VAE folder: it has no {path.name} (expected config.json "
                                  "and model.safetensors, as in VQVAE-Switti).")
    try:
        config = json.loads(config_path.read_text())
        overrides = {field: config[key] for key, field in _CONFIG_KEYS.items() if config.get(key) is not None}
    except (ValueError, AttributeError) as e:
        raise CheckpointError(f"'{config_path}' is not a JSON object of VQ-VAE settings ({e}).") from None
    for field in ("ch_mult", "patch_nums"):
        if field in overrides:
            overrides[field] = tuple(int(v) for v in overrides[field])
    return dict(load_state_dict(weights, what="a VQ-VAE")), overrides


def load_vq_vae(source, device=None, dtype=None) -> VQVAE:
    """Load the multi-scale VQ-VAE from a VAR .pth file, a state dict, or a VQVAE-Switti folder (config.json +
    model.safetensors). Settings in config.json win; everything else comes from tensor shapes. Loading is strict.
    Returns the model in eval mode without gradients, in ``dtype`` (default fp32) on ``device`` (default CPU)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        sd, overrides = _read_folder(Path(source))
    else:
        sd, overrides = dict(load_state_dict(source, what="a VQ-VAE")), {}
    src = describe_source(source, capital=True)
    try:
        config = replace(VQVAEConfig.from_state_dict(sd), **overrides)
    except KeyError as e:
        raise CheckpointError(f"{src} is not a multi-scale VQ-VAE checkpoint: it has no '{e.args[0]}' tensor. "
                              "(Is it a transformer file?)") from None
    except ValueError as e:
        raise CheckpointError(f"{src} is not a usable VQ-VAE checkpoint: {e}.") from None
    with torch.device("meta"):
        model = VQVAE(config)
    check_keys({k: v.shape for k, v in model.state_dict().items()}, sd, source, "multi-scale VQ-VAE")
    model.load_state_dict(sd, assign=True)
    model.source = str(source) if isinstance(source, (str, os.PathLike)) else None
    model.to(device=torch.device(device) if device is not None else "cpu", dtype=dtype or torch.float32)
    return model.eval().requires_grad_(False)
