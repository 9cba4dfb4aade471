"""Infinity's losses on bit logits (B, L, 2d): the bitwise cross-entropy, bit accuracy and the per-bit KL."""
from __future__ import annotations

import torch


def bitwise_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss (B, L): the 2-way cross-entropy of every bit, averaged over the d bits."""
    logp = logits.float().unflatten(-1, (-1, 2)).log_softmax(-1)  # (B, L, d, 2)
    return -logp.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1).mean(-1)


def bitwise_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Infinity's loss: mean over the batch of (1/L) * sum_p w_p * loss_p, with w_p = 1 unless given ((L,) tensor)."""
    per_token = bitwise_token_loss(logits, labels)
    if token_weights is not None:
        per_token = per_token * token_weights.to(per_token)
    return per_token.mean()


def bit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of bits whose more likely value equals the label."""
    pred = logits.unflatten(-1, (-1, 2)).argmax(-1)
    return (pred == labels.long()).float().mean()


def bitwise_kl(student: torch.Tensor, teacher: torch.Tensor, per_bit: bool = True) -> torch.Tensor:
    """Mean over tokens of KL(teacher ‖ student) on logits (B, L, 2d): per_bit, each bit its own 2-way distribution,
    as the model samples it (averaged over the d bits); else ARBooth's one softmax over a token's whole 2d-vector."""
    s, t = student.float(), teacher.float()
    if per_bit:
        s, t = s.unflatten(-1, (-1, 2)), t.unflatten(-1, (-1, 2))
    log_s, log_t = s.log_softmax(-1), t.log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
