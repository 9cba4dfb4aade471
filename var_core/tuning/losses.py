"""The two training losses: scale-weighted bitwise cross-entropy, and prior distillation against the frozen base."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..schedules import per_scale
from ..training import bitwise_cross_entropy


@dataclass(frozen=True)
class ScaleWeights:
    """Per-scale loss weights. Default = ARBooth's: 1.0 on the coarse scales, 0.5 on the rest.

    A scale is coarse when its token grid has at most ``coarse_tokens`` tokens (400 = up to 20×20: the first 8 scales
    at 1024² *and* at 512², whose schedules share those scales; for other aspect ratios the same area). ``per_scale``,
    if given, is one weight per scale of the training resolution and overrides the step.
    """
    coarse: float = 1.0
    fine: float = 0.5
    coarse_tokens: int = 400
    per_scale: tuple[float, ...] | None = None

    def scale_weights(self, schedule: Sequence[tuple[int, int]]) -> list[float]:
        if self.per_scale is not None:
            return per_scale(self.per_scale, len(schedule), "The per-scale loss weights")
        return [self.coarse if h * w <= self.coarse_tokens else self.fine for h, w in schedule]

    def token_weights(self, schedule, device=None) -> torch.Tensor:
        """(L,) weight of every token position."""
        sizes = torch.tensor([h * w for h, w in schedule], device=device)
        return torch.repeat_interleave(torch.tensor(self.scale_weights(schedule), device=device), sizes)


def weighted_bitwise_loss(logits: torch.Tensor, labels: torch.Tensor, schedule, weights: ScaleWeights) -> torch.Tensor:
    """ARBooth's L_wCE: mean over the batch of (1/L)·Σ_p w_p·ℓ_p (weights not renormalised)."""
    return bitwise_cross_entropy(logits, labels, weights.token_weights(schedule, logits.device))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                      per_bit: bool = True) -> torch.Tensor:
    """Mean over tokens of KL(teacher ‖ student) on logits (B, L, 2d).

    per_bit=True (default): each bit is its own 2-way distribution, as the model samples it; the KL is averaged over
    the d bits. per_bit=False reproduces ARBooth's code: one softmax over the whole 2d-vector of a token.
    """
    s, t = student.float() / temperature, teacher.float() / temperature
    if per_bit:
        s, t = s.unflatten(-1, (-1, 2)), t.unflatten(-1, (-1, 2))
    log_s, log_t = s.log_softmax(-1), t.log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return kl.mean()
