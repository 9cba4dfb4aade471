"""The placeholder token: its T5 output row is replaced by a subject's K learned vectors (ARBooth's special_token).

The vectors live in T5-output space (before the transformer's text_norm), so the prompt grows by K-1 rows and both
the start-token pooling and every cross-attention see them. The token is always read as one token, fed to T5 as
one fixed spare id (TextEncoder.tokenize), so its (untrained) T5 input embedding, which only shapes the rows around
it, is the same in training and sampling, and for every subject.
"""
from __future__ import annotations


import torch


DEFAULT_TOKEN = "<placeholder>"


def substitute(features: torch.Tensor, replacements: dict[int, torch.Tensor]) -> torch.Tensor:
    """Replace row p of ``features`` (len, C) by ``replacements[p]`` (K, C) for every p (differentiable)."""
    if not replacements:
        return features
    parts, start = [], 0
    for p in sorted(replacements):
        parts += [features[start:p], replacements[p].to(features)]
        start = p + 1
    parts.append(features[start:])
    return torch.cat(parts)
