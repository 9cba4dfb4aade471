"""The multi-scale bitwise quantizer (BSQ) that links the BitVAE latent to the transformer's tokens.

Shapes, stated once:
  latent / codes sums F : (B, d, h, w) float, (h, w) = the last scale of the schedule
  bits of one scale     : (B, h_k, w_k, d) uint8 in {0, 1}; bit c is latent channel c
  a scale's tokens      : (B, h_k*w_k, d), row-major (index i*w_k + j)

A scale's code is (2*bit - 1)/sqrt(d). Residuals are shrunk with 'area' (adaptive average) pooling; codes are grown
back and the running sum is resized for the next scale with bilinear interpolation (align_corners=False), which is
the reference's 'trilinear' on a time axis of length 1.

Spatial patchify (Infinity-8B, ``patch`` p = 2): each transformer token is a p x p block of VAE latent pixels. The VAE
quantises on a grid p times the transformer's (scale k at (p*h_k, p*w_k), d bits per latent pixel) and a token's
p*p*d bits are pixel_unshuffle's channels: bit c of latent pixel (p*i+dy, p*j+dx) is token channel c*p*p + dy*p + dx.
Functions taking ``patch`` take and return bits in the transformer's token layout (B, h_k, w_k, p*p*d) on the
transformer's schedule; with patch 1 both layouts are the same and nothing is reshaped.
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


def vae_schedule(schedule, patch: int = 1) -> list[tuple[int, int]]:
    """The grids the VAE quantises on for a transformer schedule: each scale ``patch`` times larger."""
    return [(patch * h, patch * w) for h, w in schedule]


def patchify(bits: torch.Tensor, patch: int) -> torch.Tensor:
    """VAE layout (B, p*h, p*w, d) -> token layout (B, h, w, p*p*d) (pixel_unshuffle order, see the module doc)."""
    if patch == 1:
        return bits
    return F.pixel_unshuffle(bits.permute(0, 3, 1, 2), patch).permute(0, 2, 3, 1)


def unpatchify(bits: torch.Tensor, patch: int) -> torch.Tensor:
    """Token layout (B, h, w, p*p*d) -> VAE layout (B, p*h, p*w, d); the inverse of patchify."""
    if patch == 1:
        return bits
    return F.pixel_shuffle(bits.permute(0, 3, 1, 2), patch).permute(0, 2, 3, 1)


class CodeSum:
    """The running sum of every scale's codes so far, grown to the VAE's final grid (B, d, p*h, p*w): the next scale's
    tokens are made from it, and after the last scale it is the decoder's input. The one place this sum is computed
    (training inputs, labels, sampling, decoding). Bits come and tokens go in the transformer's layout (``patch``)."""

    def __init__(self, schedule, patch: int = 1):
        self.patch = patch
        self.final = vae_schedule(schedule[-1:], patch)[0]
        self.total: torch.Tensor | None = None

    def add(self, bits: torch.Tensor) -> None:
        up = resize_bilinear(bits_to_codes(unpatchify(bits, self.patch)), self.final)
        self.total = up if self.total is None else self.total + up

    def tokens_at(self, hw) -> torch.Tensor:
        """The sum resized to the token grid ``hw`` as tokens (B, h*w, p*p*d): the model's input for that scale
        (resized to the VAE grid p*hw, then each p x p block gathered into one token)."""
        x = resize_bilinear(self.total, vae_schedule([hw], self.patch)[0])
        return tokens(x if self.patch == 1 else F.pixel_unshuffle(x, self.patch))


def latent_to_bits(latent: torch.Tensor, schedule) -> list[torch.Tensor]:
    """Per-scale bit labels of a latent: each scale quantises what the earlier scales left unexplained."""
    _, bits = teacher_forcing(latent, schedule, flip_prob=0.0)
    return bits


def summed_codes(bits: list[torch.Tensor], schedule, patch: int = 1) -> torch.Tensor:
    """Sum of every scale's codes grown to the final grid: the decoder's input."""
    sums = CodeSum(schedule, patch)
    for b in bits:
        sums.add(b)
    return sums.total


def teacher_forcing(latent: torch.Tensor, schedule, flip_prob: float = 0.0, generator: torch.Generator | None = None,
                    patch: int = 1):
    """Teacher-forced inputs and bit labels with Bitwise Self-Correction.

    For every scale, the label is the quantisation of (latent - running sum). With ``flip_prob`` > 0, each scale
    draws p uniformly from {0, 0.01, ..., flip_prob} and flips every bit with probability p before adding the
    scale's codes to the running sum, so later labels learn to correct earlier mistakes. ``flip_prob=0`` is exact
    and deterministic. ``latent`` is the VAE's (B, d, p*h, p*w) for a transformer ``schedule`` ending at (h, w).

    Returns (inputs per scale k>=1 [(B,h_k*w_k,p*p*d)], bits per scale [(B,h_k,w_k,p*p*d)]), in the token layout.
    """
    latent = latent.float()
    sums = CodeSum(schedule, patch)
    inputs, labels = [], []
    steps = int(round(flip_prob * 100))
    for k, (hw, vae_hw) in enumerate(zip(schedule, vae_schedule(schedule, patch))):
        residual = latent if sums.total is None else latent - sums.total
        bits = patchify(quantize(resize_area(residual, vae_hw)), patch)
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


def inputs_from_bits(bits: list[torch.Tensor], schedule, patch: int = 1) -> list[torch.Tensor]:
    """Teacher-forced inputs of scales 1..K-1 from given bits (no flips): the running code sum resized to each scale."""
    sums, inputs = CodeSum(schedule, patch), []
    for k in range(len(schedule) - 1):
        sums.add(bits[k])
        inputs.append(sums.tokens_at(schedule[k + 1]))
    return inputs
