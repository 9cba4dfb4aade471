"""Fine-scale token pruning: the transformer computes only part of each of the finest scales' tokens.

The idea is FastVAR's (Guo et al., ICCV 2025, "cached token pruning"); the code is our own. The last scales hold most
of the tokens, and most of what they add is detail at edges and texture, while flat regions change little from the
scale before. At a pruned scale:
  1. every token's input (the running sum resized to the scale, in the VAE's space) is scored by how far it is from
     the mean of its image's map (its high-frequency part), and the ``keep`` fraction that differ most are kept;
  2. the blocks run on the kept tokens only (their own positions; the KV cache gets only their keys and values);
  3. every other token's output is the previous scale's output at the same place, resized to this scale, so the
     head still predicts every token of the scale.
Off (``scales`` 0) the sampler is the exact one. Samplers of every family take a ``Pruning``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import defaults


@dataclass(frozen=True)
class Pruning:
    scales: int = 0  # how many of the finest scales run on part of their tokens (0: none, the exact sampler)
    keep: float = 0.5  # the fraction of each such scale's tokens the transformer computes

    def __post_init__(self):
        defaults.check("prune_scales", self.scales, 0, None, whole=True)
        defaults.check("prune_keep", self.keep, (0.0,), 1.0)

    def keep_at(self, k: int, K: int) -> float | None:
        """The fraction of scale k's tokens computed, or None where the scale runs whole (never the first: its one
        token has no earlier scale to restore from)."""
        return self.keep if self.scales and k >= max(1, K - self.scales) and self.keep < 1 else None


OFF = Pruning()


def pivotal(tokens: torch.Tensor, keep: float) -> torch.Tensor:
    """Positions (B, m) of the kept tokens of (B, n, d) inputs, ascending: the m = ceil(keep * n) farthest from
    their image's mean token."""
    n = tokens.shape[1]
    m = max(1, math.ceil(keep * n))
    score = (tokens.float() - tokens.float().mean(dim=1, keepdim=True)).norm(dim=-1)
    return score.topk(m, dim=1, sorted=False).indices.sort(dim=1).values


def rows(index: torch.Tensor, count: int) -> torch.Tensor:
    """The B images' positions repeated for ``count`` rows (the unconditional rows read the same tokens)."""
    return index.repeat(count // index.shape[0], 1)


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (rows, n, ...) at the positions index (rows, m) -> (rows, m, ...)."""
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))


def table(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A per-position table (n, d) (RoPE angles) at each row's positions, shaped to broadcast over heads:
    (rows, 1, m, d)."""
    return t[index].unsqueeze(1)


def restore(kept: torch.Tensor, index: torch.Tensor, previous: torch.Tensor, previous_hw, hw) -> torch.Tensor:
    """The scale's whole output (rows, h*w, C): the kept tokens' outputs at their positions, the previous scale's
    output (rows, h'*w', C) resized to (h, w) everywhere else."""
    rows_, _, C = previous.shape
    grid = previous.transpose(1, 2).reshape(rows_, C, *previous_hw).float()
    full = F.interpolate(grid, size=tuple(hw), mode="bilinear", align_corners=False)
    full = full.flatten(2).transpose(1, 2).to(kept.dtype)
    return full.scatter(1, index.unsqueeze(-1).expand(-1, -1, C), kept)
