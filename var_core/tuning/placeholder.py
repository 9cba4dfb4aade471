"""The placeholder token: its T5 output row is replaced by a subject's K learned vectors (ARBooth's special_token).

The vectors live in T5-output space (before the transformer's text_norm), so the prompt grows by K-1 rows and both
the start-token pooling and every cross-attention see them. The token is always read as one token, fed to T5 as
one fixed spare id (TextEncoder.tokenize), so its (untrained) T5 input embedding, which only shapes the rows around
it, is the same in training and sampling, and for every subject.
"""
from __future__ import annotations

import itertools
import re
from typing import Sequence

import torch

from ..infinity.model import TextMix
from .delta import SubjectPatch

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


def encode_prompts(text_encoder, prompts: Sequence[str] | str, subjects: Sequence = ()) -> list:
    """T5 features of each prompt with every subject's placeholder token replaced by that subject's vectors.

    ``subjects``: SubjectDelta objects (read at full strength), or a model view from apply_subjects, whose subjects
    are read at their strengths. On the text side a subject's strength s (per scale, clipped to 0..1; above 1 only
    the weight changes grow) blends two readings of the prompt: the placeholder as the learned vectors (weight s) and
    as the class word (1 - s; class_reading). So strength 0 is exactly the prompt with the class word, and a prompt
    whose subjects all read at strength 1 is a plain tensor, as before; otherwise it is a TextMix.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    strengths = {}
    if hasattr(subjects, "patch"):
        entries = subjects.patch.entries if isinstance(subjects.patch, SubjectPatch) else []
        subjects, strengths = [d for d, _ in entries], {id(d): s for d, s in entries}
    with_vectors = [s for s in subjects if s.placeholder is not None]
    tokens = [s.token for s in with_vectors]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"Two subjects use the same placeholder token ({tokens}); give each its own token.")
    weight = {s.token: _text_weights(strengths.get(id(s), 1.0)) for s in with_vectors}
    whole = [s for s in with_vectors if set(weight[s.token]) == {1.0}]
    absent = [s for s in with_vectors if set(weight[s.token]) == {0.0}]
    mixed = [s for s in with_vectors if s not in whole and s not in absent]
    readings = {on: _read(text_encoder, prompts, whole + [s for s, o in zip(mixed, on) if o],
                          absent + [s for s, o in zip(mixed, on) if not o])
                for on in itertools.product((False, True), repeat=len(mixed))}
    plain = readings[(False,) * len(mixed)]
    out = []
    for i, prompt in enumerate(prompts):
        named = [j for j, s in enumerate(mixed) if s.token in prompt]
        if not named:
            out.append(plain[i])
            continue
        feats, weights = [], []
        for on in itertools.product((False, True), repeat=len(named)):
            key = [False] * len(mixed)
            w = (1.0,)
            for j, o in zip(named, on):
                key[j] = o
                wj = weight[mixed[j].token]
                w = _times(w, wj if o else tuple(1.0 - v for v in wj))
            feats.append(readings[tuple(key)][i])
            weights.append(w)
        out.append(TextMix(tuple(feats), tuple(weights)))
    return out


def class_reading(prompt: str, token: str, class_word: str) -> str:
    """``prompt`` with ``token`` read as the class word: "a photo of <sks> dog" -> "a photo of dog" (the token
    dropped where the class word follows it), "a photo of <sks>" -> "a photo of dog"."""
    if token not in prompt:
        return prompt
    if class_word:
        prompt = re.sub(re.escape(token) + r"\s+(?=" + re.escape(class_word) + r"\b)", "", prompt)
    return re.sub(r"\s+", " ", prompt.replace(token, class_word)).strip()


def _read(text_encoder, prompts, as_subject, as_class) -> list[torch.Tensor]:
    """Every prompt with the tokens of ``as_subject`` replaced by their vectors and those of ``as_class`` by their
    class word."""
    for s in as_class:
        prompts = [class_reading(p, s.token, s.class_word) for p in prompts]
    features, positions = text_encoder.encode(prompts, [s.token for s in as_subject])
    return [substitute(feats, {p: s.placeholder.detach() for s in as_subject for p in rows[s.token]})
            for feats, rows in zip(features, positions)]


def _text_weights(strength) -> tuple[float, ...]:
    values = [strength] if isinstance(strength, (int, float)) else list(strength)
    return tuple(min(1.0, max(0.0, float(v))) for v in values)


def _times(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    """Per-scale product of two weight lists (a single value stands for every scale)."""
    if len(a) == 1 or len(b) == 1:
        return tuple(x * y for x in a for y in b)
    return tuple(x * y for x, y in zip(a, b))
