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


class CodeSum:
    """The running sum of every scale's codes so far, grown to the final grid (B, d, h, w): the next scale's tokens
    are made from it, and after the last scale it is the decoder's input. The one place this sum is computed
    (training inputs, labels, sampling, decoding)."""

    def __init__(self, schedule):
        self.final = tuple(schedule[-1])
        self.total: torch.Tensor | None = None

    def add(self, bits: torch.Tensor) -> None:
        up = resize_bilinear(bits_to_codes(bits), self.final)
        self.total = up if self.total is None else self.total + up

    def tokens_at(self, hw) -> torch.Tensor:
        """The sum resized to the grid ``hw`` as tokens (B, h*w, d): the model's input for that scale."""
        return tokens(resize_bilinear(self.total, hw))


def latent_to_bits(latent: torch.Tensor, schedule) -> list[torch.Tensor]:
    """Per-scale bit labels of a latent: each scale quantises what the earlier scales left unexplained."""
    _, bits = teacher_forcing(latent, schedule, flip_prob=0.0)
    return bits


def summed_codes(bits: list[torch.Tensor], schedule) -> torch.Tensor:
    """Sum of every scale's codes grown to the final grid: the decoder's input."""
    sums = CodeSum(schedule)
    for b in bits:
        sums.add(b)
    return sums.total


def teacher_forcing(latent: torch.Tensor, schedule, flip_prob: float = 0.0, generator: torch.Generator | None = None):
    """Teacher-forced inputs and bit labels with Bitwise Self-Correction.

    For every scale, the label is the quantisation of (latent - running sum). With ``flip_prob`` > 0, each scale
    draws p uniformly from {0, 0.01, ..., flip_prob} and flips every bit with probability p before adding the
    scale's codes to the running sum, so later labels learn to correct earlier mistakes. ``flip_prob=0`` is exact
    and deterministic.

    Returns (inputs per scale k>=1 [(B,h_k*w_k,d)], bits per scale [(B,h_k,w_k,d)]).
    """
    latent = latent.float()
    sums = CodeSum(schedule)
    inputs, labels = [], []
    steps = int(round(flip_prob * 100))
    for k, hw in enumerate(schedule):
        residual = latent if sums.total is None else latent - sums.total
        bits = quantize(resize_area(residual, hw))
        labels.append(bits)
        if steps > 0:
            device = generator.device if generator is not None else bits.device
            p = torch.randint(0, steps + 1, (), generator=generator, device=device).item() * 0.01
            flip = (torch.rand(bits.shape, generator=generator, device=device) < p).to(bits.device)
            bits = bits ^ flip.to(torch.uint8)
        sums.add(bits)
        if k + 1 < len(schedule):
            inputs.append(sums.tokens_at(schedule[k + 1]))
    return inputs, labels


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
    sums, inputs = CodeSum(schedule), []
    for k in range(len(schedule) - 1):
        sums.add(bits[k])
        inputs.append(sums.tokens_at(schedule[k + 1]))
    return inputs
