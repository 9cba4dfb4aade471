"""The multi-scale bitwise quantizer (BSQ) that links the BitVAE latent to the transformer's tokens.

Shapes, stated once:
  latent / codes sums F : (B, d, h, w) float, (h, w) = the last scale of the schedule
  bits of one scale     : (B, h_k, w_k, d) uint8 in {0, 1}; bit c is latent channel c
  a scale's tokens      : (B, h_k*w_k, d), row-major (index i*w_k + j)

A scale's code is (2*bit - 1)/sqrt(d). Residuals are shrunk with 'area' (adaptive average) pooling; codes are grown
back and the running sum is resized for the next scale with bilinear interpolation (align_corners=False), which is
the reference's 'trilinear' on a time axis of length 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_bilinear(x: torch.Tensor, size) -> torch.Tensor:
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_area(x: torch.Tensor, size) -> torch.Tensor:
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="area")


def quantize(residual: torch.Tensor) -> torch.Tensor:
    """(B, d, h, w) residual -> (B, h, w, d) bits: the sign of the L2-normalised vector at each location."""
    unit = F.normalize(residual.float(), dim=1, eps=1e-12)
    return (unit > 0).permute(0, 2, 3, 1).to(torch.uint8)


def bits_to_codes(bits: torch.Tensor) -> torch.Tensor:
    """(B, h, w, d) bits -> (B, d, h, w) codes of +-1/sqrt(d)."""
    d = bits.shape[-1]
    return ((bits.float() * 2 - 1) / math.sqrt(d)).permute(0, 3, 1, 2)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C), row-major."""
    return x.flatten(2).transpose(1, 2)


def latent_to_bits(latent: torch.Tensor, schedule) -> list[torch.Tensor]:
    """Per-scale bit labels of a latent: each scale quantises what the earlier scales left unexplained."""
    bits, _ = teacher_forcing(latent, schedule, flip_prob=0.0)
    return bits


def summed_codes(bits: list[torch.Tensor], schedule) -> torch.Tensor:
    """Sum of every scale's codes grown to the final grid: the decoder's input."""
    final = tuple(schedule[-1])
    total = None
    for b in bits:
        up = resize_bilinear(bits_to_codes(b), final)
        total = up if total is None else total + up
    return total


def teacher_forcing(latent: torch.Tensor, schedule, flip_prob: float = 0.0, generator: torch.Generator | None = None):
    """Bit labels and teacher-forced inputs with Bitwise Self-Correction.

    For every scale, the label is the quantisation of (latent - running sum). With ``flip_prob`` > 0, each scale
    draws p uniformly from {0, 0.01, ..., flip_prob} and flips every bit with probability p before adding the
    scale's codes to the running sum, so later labels learn to correct earlier mistakes. ``flip_prob=0`` is exact
    and deterministic.

    Returns (bits per scale [(B,h_k,w_k,d)], inputs per scale k>=1 [(B,h_k*w_k,d)]).
    """
    latent = latent.float()
    final = tuple(schedule[-1])
    running = torch.zeros_like(latent)
    labels, inputs = [], []
    steps = int(round(flip_prob * 100))
    for k, hw in enumerate(schedule):
        bits = quantize(resize_area(latent - running, hw))
        labels.append(bits)
        if steps > 0:
            p = torch.randint(0, steps + 1, (), generator=generator).item() * 0.01
            device = generator.device if generator is not None else bits.device
            flip = (torch.rand(bits.shape, generator=generator, device=device) < p).to(bits.device)
            bits = bits ^ flip.to(torch.uint8)
        running = running + resize_bilinear(bits_to_codes(bits), final)
        if k + 1 < len(schedule):
            inputs.append(tokens(resize_bilinear(running, schedule[k + 1])))
    return labels, inputs


def flatten_bits(bits: list[torch.Tensor]) -> torch.Tensor:
    """Per-scale bits -> (B, L, d), scales concatenated in order, tokens row-major."""
    return torch.cat([b.flatten(1, 2) for b in bits], dim=1)


def split_bits(flat: torch.Tensor, schedule) -> list[torch.Tensor]:
    """(B, L, d) -> per-scale (B, h_k, w_k, d)."""
    out, start = [], 0
    for h, w in schedule:
        out.append(flat[:, start:start + h * w].unflatten(1, (h, w)))
        start += h * w
    return out


def inputs_from_bits(bits: list[torch.Tensor], schedule) -> list[torch.Tensor]:
    """Teacher-forced inputs of scales 1..K-1 from given bits (no flips): the running code sum resized to each scale."""
    final = tuple(schedule[-1])
    running, inputs = None, []
    for k in range(len(schedule) - 1):
        up = resize_bilinear(bits_to_codes(bits[k]), final)
        running = up if running is None else running + up
        inputs.append(tokens(resize_bilinear(running, schedule[k + 1])))
    return inputs
