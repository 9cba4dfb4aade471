"""Subject tuning's scale weighting of the loss (the per-token losses and the distillation KL are the family's)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..schedules import per_scale


@dataclass(frozen=True)
class ScaleWeights:
    """Per-scale loss weights. Default = ARBooth's: 1.0 on the coarse scales, 0.5 on the rest.

    The coarse scales are the first ``coarse_fraction`` of the schedule, rounded, and at least one scale on each side:
    ARBooth's "first 8 of 13 scales" at 1024² (8/13), and the same share of the schedule at every resolution: 3 of 5
    scales at 128², 4 of 7 at 256², 6 of 10 at 512². ``per_scale``, if given, is one weight per scale of the training
    resolution and overrides the split.
    """
    coarse: float = 1.0
    fine: float = 0.5
    coarse_fraction: float = 8 / 13
    per_scale: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.per_scale is not None:
            object.__setattr__(self, "per_scale", tuple(float(v) for v in self.per_scale))
        values = [self.coarse, self.fine, *(self.per_scale or ())]
        if not all(math.isfinite(v) and v >= 0 for v in values) or not any(v > 0 for v in values):
            raise ValueError(f"Scale loss weights must be finite and >= 0, not all 0; got coarse={self.coarse}, "
                             f"fine={self.fine}, per_scale={self.per_scale}.")
        if not 0 < self.coarse_fraction < 1:
            raise ValueError(f"coarse_fraction is the share of the scales counted as coarse, in (0, 1); got "
                             f"{self.coarse_fraction}.")

    def coarse_scales(self, num_scales: int) -> int:
        """How many of the first scales are coarse."""
        return min(num_scales - 1, max(1, round(self.coarse_fraction * num_scales))) if num_scales > 1 else 1

    def scale_weights(self, schedule: Sequence[tuple[int, int]]) -> list[float]:
        if self.per_scale is not None:
            return per_scale(self.per_scale, len(schedule), "The per-scale loss weights")
        k = self.coarse_scales(len(schedule))
        return [self.coarse] * k + [self.fine] * (len(schedule) - k)

    def token_weights(self, schedule, device=None) -> torch.Tensor:
        """(L,) weight of every token position."""
        sizes = torch.tensor([h * w for h, w in schedule], device=device)
        return torch.repeat_interleave(torch.tensor(self.scale_weights(schedule), device=device), sizes)


def weighted_loss(family, logits: torch.Tensor, labels: torch.Tensor, schedule, weights: ScaleWeights) -> torch.Tensor:
    """ARBooth's L_wCE: mean over the batch of (1/L)·Σ_p w_p·ℓ_p (weights not renormalised), ℓ_p the family's
    per-token cross-entropy (Infinity: of the bits)."""
    per_token = family.token_loss(logits, labels)
    return (per_token * weights.token_weights(schedule, logits.device).to(per_token)).mean()
