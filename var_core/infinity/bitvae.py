"""The BitVAE tokenizer (Infinity's BSQ-VAE): a Flux-style VQGAN without attention, clean-room, with the released
checkpoint's exact parameter names.

Shapes, stated once:
  images  : (B, 3, H, W) float in [-1, 1], RGB; H and W are multiples of the patch size (16)
  latent  : (B, d, H/16, W/16) fp32, the encoder output (there is no quant conv); d = bits per token
  bits    : one (B, h_k, w_k, d) uint8 tensor per scale of the schedule (see quantizer.py)

Only the convolutional encoder and decoder live here. The quantizer has no weights: bits and code sums are computed
by var_core.infinity.quantizer, so the checkpoint's int64 `quantizer.lfq.mask` buffers are read and dropped.

The reference wraps every conv in a `Conv` module and every GroupNorm in a `Normalize` module (for its 3-D variant),
hence key names like `encoder.conv_in.conv.weight`; the small `_Conv` / `_Norm` wrappers below reproduce them.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import quantizer
from .family import INFINITY
from ..checkpoint import CheckpointError, check_keys, describe_source, load_state_dict
from ..schedules import VAE_STRIDE


@dataclass(frozen=True)
class BitVAEConfig:
    d: int = 32  # bits per token = latent channels
    base_ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2  # per encoder level; decoder levels have one more

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))

    @property
    def patch_size(self) -> int:
        """Pixels per latent token along each axis: every level but the last halves the resolution."""
        return 2 ** (len(self.ch_mult) - 1)

    @staticmethod
    def from_state_dict(sd) -> "BitVAEConfig":
        """Infer the architecture from tensor shapes (either key form): every released size loads without a config."""
        def weight(module):
            for key in (module + ".conv.weight", module + ".weight"):
                if key in sd:
                    return sd[key]
            raise KeyError(module + ".conv.weight")

        levels = sorted({int(m[1]) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        blocks = sorted({int(m[1]) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
        if not levels or not blocks:
            raise KeyError("encoder.down.0.block.0.*")
        base_ch = weight("encoder.conv_in").shape[0]
        widths = [weight(f"encoder.down.{l}.block.0.conv1").shape[0] for l in range(1 + levels[-1])]
        if any(w % base_ch for w in widths):
            raise ValueError(f"level widths {widths} are not multiples of the base width {base_ch}")
        return BitVAEConfig(d=weight("encoder.conv_out").shape[0], base_ch=base_ch,
                            ch_mult=tuple(w // base_ch for w in widths), num_res_blocks=1 + blocks[-1])


# ----------------------------------------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """An nn.Conv2d one level down (`<name>.conv.weight`), as in the reference."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2 if padding is None else padding)

    def forward(self, x):
        return self.conv(x)


class _Norm(nn.Module):
    """GroupNorm one level down (`<name>.norm.weight`): 32 groups (24 if 32 does not divide C), eps 1e-6."""

    def __init__(self, c: int):
        super().__init__()
        groups = 32 if c % 32 == 0 else 24 if c % 24 == 0 else None
        if groups is None:
            raise ValueError(f"GroupNorm needs a channel count divisible by 32 or 24, got {c}")
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)

    def forward(self, x):
        return self.norm(x)


def _norm_silu(norm: _Norm, x: torch.Tensor) -> torch.Tensor:
    # SiLU in place on the norm's fresh output: GroupNorm's backward needs its input, not its output, so this stays
    # autograd-correct and saves one full-resolution activation.
    return F.silu(norm(x), inplace=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _Norm(c_in)
        self.conv1 = _Conv(c_in, c_out)
        self.norm2 = _Norm(c_out)
        self.conv2 = _Conv(c_out, c_out)
        if c_in != c_out:
            self.nin_shortcut = _Conv(c_in, c_out, kernel=1)

    def forward(self, x):
        h = self.conv2(_norm_silu(self.norm2, self.conv1(_norm_silu(self.norm1, x))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return h.add_(skip)  # h is conv2's fresh output; conv's backward does not need it


class Downsample(nn.Module):
    """Halve H and W: zero-pad one row/column at the bottom/right, then a 3x3 stride-2 conv without padding."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = _Conv(c, c, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = _Conv(c, c)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.block_1(x))


class _Level(nn.Module):
    """One resolution: `block.{b}` ResnetBlocks, then an optional `downsample` / `upsample`."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, resample: str | None = None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if b == 0 else c_out, c_out) for b in range(n_blocks))
        if resample == "down":
            self.downsample = Downsample(c_out)
        elif resample == "up":
            self.upsample = Upsample(c_out)

    def forward(self, x):
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, d, H/p, W/p): conv_in, one level per ch_mult entry (all but the last downsample), mid,
    norm -> SiLU -> conv_out."""

    def __init__(self, config: BitVAEConfig):
        super().__init__()
        widths = [config.base_ch * m for m in config.ch_mult]
        self.conv_in = _Conv(3, config.base_ch)
        c_in, n = config.base_ch, len(widths)
        self.down = nn.ModuleList()
        for l, c in enumerate(widths):
            self.down.append(_Level(c_in, c, config.num_res_blocks, "down" if l < n - 1 else None))
            c_in = c
        self.mid = _Mid(c_in)
        self.norm_out = _Norm(c_in)
        self.conv_out = _Conv(c_in, config.d)

    def forward(self, x):
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        return self.conv_out(_norm_silu(self.norm_out, self.mid(x)))


class Decoder(nn.Module):
    """(B, d, h, w) -> (B, 3, h*p, w*p), unclamped: conv_in, mid, then levels from the deepest up (`up[l]` is level
    l, run in the order n-1 .. 0; all but level 0 upsample), norm -> SiLU -> conv_out."""

    def __init__(self, config: BitVAEConfig):
        super().__init__()
        widths = [config.base_ch * m for m in config.ch_mult]
        c_in = widths[-1]
        self.conv_in = _Conv(config.d, c_in)
        self.mid = _Mid(c_in)
        levels = {}
        for l in reversed(range(len(widths))):
            levels[l] = _Level(c_in, widths[l], config.num_res_blocks + 1, "up" if l > 0 else None)
            c_in = widths[l]
        self.up = nn.ModuleList(levels[l] for l in range(len(widths)))
        self.norm_out = _Norm(c_in)
        self.conv_out = _Conv(c_in, 3)

    def forward(self, z):
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(_norm_silu(self.norm_out, x))


# ----------------------------------------------------------------------------------------------------------------------
class BitVAE(nn.Module):
    """Frozen image tokenizer: images <-> latents <-> per-scale bits. The public methods run without gradients."""
    family = INFINITY

    # cuDNN runs fp32 convolutions in TF32 by default, which moves the latent by ~1e-2 and flips BSQ bits. An fp32
    # model therefore turns TF32 off around its own convolutions; set this True to trade that exactness for speed
    # (or load the VAE in bf16).
    allow_tf32: bool = False

    def __init__(self, config: BitVAEConfig = BitVAEConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.source = None  # the file it was loaded from, for error messages

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def token_patch(self) -> int:
        """Latent pixels per transformer token along each axis: a transformer token always covers 16x16 pixels
        (schedules.VAE_STRIDE), so an f8 VAE (Infinity-8B's) gives 2x2-patchified tokens, an f16 VAE 1."""
        if VAE_STRIDE % self.patch_size:
            raise ValueError(f"A VAE with patch size {self.patch_size} cannot tile the transformer's "
                             f"{VAE_STRIDE}-pixel tokens.")
        return VAE_STRIDE // self.patch_size

    @property
    def device(self) -> torch.device:
        return self.encoder.conv_in.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    def _precision(self):
        if self.allow_tf32 or self.dtype != torch.float32 or self.device.type != "cuda":
            return contextlib.nullcontext()
        return _no_cudnn_tf32()

    # ------------------------------------------------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor, schedule=None) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"Images must be a (B, 3, H, W) tensor in [-1, 1], got {shape}.")
        H, W = images.shape[-2:]
        p = self.patch_size
        if schedule is not None:
            h, w = schedule[-1]
            if (H, W) != (h * p, w * p):
                raise ValueError(f"Images are {H}x{W} (HxW) but this scale schedule (last scale {h}x{w}) expects "
                                 f"{h * p}x{w * p}: resize/crop the images to that size.")
        elif H % p or W % p:
            raise ValueError(f"Image height and width must be multiples of {p}, got {H}x{W}; e.g. "
                             f"{max(p, round(H / p) * p)}x{max(p, round(W / p) * p)} would work.")

    def _check_bits(self, bits, schedule) -> None:
        if len(bits) != len(schedule):
            raise ValueError(f"Got bits for {len(bits)} scales but the schedule has {len(schedule)}.")
        B = bits[0].shape[0] if bits else None
        for k, (b, (h, w)) in enumerate(zip(bits, schedule)):
            if b.dim() != 4 or tuple(b.shape) != (B, h, w, self.d):
                raise ValueError(f"Bits of scale {k} must be (B, h, w, d) = ({B}, {h}, {w}, {self.d}), "
                                 f"got {tuple(b.shape)}.")

    # ------------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, d, H/16, W/16) fp32 latent (the encoder output, before quantisation)."""
        self._check_images(images)
        with self._precision():
            return self.encoder(images.to(device=self.device, dtype=self.dtype)).float()

    @torch.no_grad()
    def decode_latent(self, codes_sum: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) summed codes -> (B, 3, 16h, 16w) fp32 images clamped to [-1, 1]."""
        if codes_sum.dim() != 4 or codes_sum.shape[1] != self.d:
            raise ValueError(f"Decoder input must be (B, {self.d}, h, w), got {tuple(codes_sum.shape)}.")
        with self._precision():
            x = self.decoder(codes_sum.to(device=self.device, dtype=self.dtype))
        return x.clamp_(-1, 1).float()

    @torch.no_grad()
    def encode_bits(self, images: torch.Tensor, schedule) -> list[torch.Tensor]:
        """Images -> per-scale bits [(B, h_k, w_k, d) uint8]; the images must be 16x the schedule's last scale."""
        schedule = [tuple(s) for s in schedule]
        self._check_images(images, schedule)
        return quantizer.latent_to_bits(self.encode_latent(images), schedule)

    @torch.no_grad()
    def decode_bits(self, bits: list[torch.Tensor], schedule) -> torch.Tensor:
        """Per-scale bits (as from encode_bits or the sampler) -> images (B, 3, H, W) in [-1, 1]."""
        schedule = [tuple(s) for s in schedule]
        self._check_bits(bits, schedule)
        return self.decode_latent(quantizer.summed_codes([b.to(self.device) for b in bits], schedule))


@contextlib.contextmanager
def _no_cudnn_tf32():
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------------------------------------------------------
# The weightless quantizer's int64 bit-weight buffer (2^(d-1) .. 2^0), under both of the reference's attribute names.
_IGNORED = ("quantizer.lfq.mask", "quantize.lfq.mask")


def _to_wrapper_form(sd: dict, expected) -> dict:
    """Rename flat keys (`conv_in.weight`, `norm1.bias`, `nin_shortcut.weight`, `downsample.conv.weight`) to the
    module form (`conv_in.conv.weight`, ...), as the reference's load_cnn does; anything else is left for check_keys."""
    out = {}
    for key, value in sd.items():
        if key not in expected:
            module, _, leaf = key.rpartition(".")
            for inner in ("conv", "norm"):
                candidate = f"{module}.{inner}.{leaf}"
                if candidate in expected and candidate not in sd:
                    key = candidate
                    break
        out[key] = value
    return out


def load_vae(path_or_state_dict, device=None, dtype=None) -> BitVAE:
    """Load a BitVAE from a .pth/.safetensors file or a state dict; the architecture comes from tensor shapes.

    Accepts the released `{'vae': state_dict}` file and a bare state dict, in the module key form or the flat form.
    Loading is strict for the encoder and decoder (one CheckpointError lists every missing, unexpected or mis-shaped
    tensor). Returns the model in eval mode without gradients, in ``dtype`` (default fp32) on ``device`` (default CPU).
    """
    sd = dict(load_state_dict(path_or_state_dict, wrappers=(("vae",),), what="a BitVAE"))
    for key in _IGNORED:
        sd.pop(key, None)
    try:
        config = BitVAEConfig.from_state_dict(sd)
    except KeyError as e:
        src = describe_source(path_or_state_dict, capital=True)
        raise CheckpointError(f"{src} is not a BitVAE checkpoint: it has no '{e.args[0]}' "
                              "tensor. (Is it a transformer or a text encoder file?)") from None
    except ValueError as e:
        src = describe_source(path_or_state_dict, capital=True)
        raise CheckpointError(f"{src} is not a usable BitVAE checkpoint: {e}.") from None
    with torch.device("meta"):
        model = BitVAE(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    sd = _to_wrapper_form(sd, expected)
    check_keys(expected, sd, path_or_state_dict, "BitVAE")
    model.load_state_dict(sd, assign=True)
    model.source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else None
    model.to(device=torch.device(device) if device is not None else "cpu", dtype=dtype or torch.float32)
    return model.eval().requires_grad_(False)

