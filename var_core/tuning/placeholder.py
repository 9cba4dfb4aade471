"""The placeholder token: its T5 output row is replaced by a subject's K learned vectors (ARBooth's special_token).

The vectors live in T5-output space (before the transformer's text_norm), so the prompt grows by K-1 rows and both
the start-token pooling and every cross-attention see them. The token itself is added to the tokenizer as a special
token, so it is always one token; its (untrained) T5 input embedding only shapes the rows around it.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .delta import subjects_of

DEFAULT_TOKEN = "<placeholder>"


def ensure_token(text_encoder, token: str) -> int:
    """Add ``token`` to the tokenizer if needed; its id must fall inside T5's embedding table. Returns the id."""
    tok = text_encoder.tokenizer
    if token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
    tid = text_encoder.token_id(token)
    rows = text_encoder.model.get_input_embeddings().weight.shape[0]
    if tid >= rows:
        raise ValueError(f"The token {token!r} got id {tid}, past T5's {rows} embedding rows: this tokenizer has no "
                         f"free rows left; use fewer placeholder tokens.")
    return tid


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


def placeholder_positions(text_encoder, prompts: Sequence[str], token: str) -> list[list[int]]:
    ensure_token(text_encoder, token)
    return [text_encoder.token_positions(p, token) for p in prompts]


def encode_prompts(text_encoder, prompts: Sequence[str] | str, subjects: Sequence = ()) -> list[torch.Tensor]:
    """T5 features of each prompt with every subject's placeholder token replaced by that subject's vectors.

    ``subjects``: SubjectDelta objects (or a model view from apply_subjects, whose subjects are used).
    """
    if hasattr(subjects, "patch"):
        subjects = subjects_of(subjects)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    with_vectors = [s for s in subjects if s.placeholder is not None]
    tokens = [s.token for s in with_vectors]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"Two subjects use the same placeholder token ({tokens}); give each its own token.")
    for s in with_vectors:
        ensure_token(text_encoder, s.token)
    features = text_encoder(prompts)
    out = []
    for prompt, feats in zip(prompts, features):
        replacements = {p: s.placeholder.detach() for s in with_vectors for p in text_encoder.token_positions(prompt, s.token)}
        out.append(substitute(feats, replacements))
    return out
