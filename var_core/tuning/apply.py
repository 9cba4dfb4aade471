"""One home for applying subjects: a base model with subjects at (per-scale) strengths, as one object, a
``SubjectView``. It gives the sampler the weights (its ``patch``: full deltas merged, LoRA unmerged) and the
conditioning (``encode``: each subject's placeholder read as its learned vectors, blended with the class word by
strength). The library's ``sample``, the CLI, the nodes and training's own student all go through it.

    view = apply_subjects(model, [(dog, 1.0), (cup, [1, 1, 1, 0.5, 0.5])])
    text = view.encode(text_encoder, ["a photo of <dog> dog next to <cup> cup"])
    images = var_core.sample(view, vae, text, schedule)

Zero strength reproduces the base exactly, on both sides.
"""
from __future__ import annotations

import copy
import functools
import itertools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from .. import fp8
from ..infinity.layers import BlockPatch, LowRank
from ..infinity.model import PER_SCALE_NEEDS_CACHE, TextMix
from ..defaults import check
from ..schedules import per_scale
from .delta import SubjectDelta
from .fingerprint import check_fits
from .placeholder import substitute


class SubjectPatch:
    """``Infinity.patch`` for a list of (delta, strength): for every patched block, the full deltas merged into the
    weights (W + Σ strength_k·Δ in fp32, rounded once to the stored dtype) and the LoRA updates as unmerged
    low-rank paths (their own fp32 precision survives next to bf16 weights).

    strength: a number, or one number per scale (the per-scale schedule; e.g. full strength on the coarse scales,
    which carry the subject's identity, less on the fine ones). Zero strength reproduces the base exactly.
    """

    def __init__(self, model, entries: list[tuple[SubjectDelta, float | Sequence[float]]]):
        self.model = model
        self.entries = entries

    def check_scales(self, num_scales: int) -> None:
        """Every per-scale strength list must have one value per scale of the resolution being sampled."""
        for delta, strength in self.entries:
            if not isinstance(strength, (int, float)):
                per_scale(strength, num_scales, f"The strength schedule of subject {delta.token!r}")

    def varies(self, num_scales: int) -> bool:
        """Whether some subject's strength differs between the scales."""
        return any(not isinstance(s, (int, float)) and len(set(per_scale(s, num_scales, "strength"))) > 1
                   for _, s in self.entries)

    def strengths(self, scale_index: int) -> tuple[float, ...]:
        return tuple(self.strength_at(s, scale_index) for _, s in self.entries)

    @staticmethod
    def strength_at(strength, scale_index: int | None) -> float:
        if isinstance(strength, (int, float)):
            return float(strength)
        if scale_index is not None:
            return float(strength[scale_index])
        if len(set(strength)) > 1:
            raise ValueError(PER_SCALE_NEEDS_CACHE)
        return float(strength[0])

    def __call__(self, block: int, scale_index: int | None) -> BlockPatch | None:
        target = self.model.blocks[block]
        merged: dict[str, torch.Tensor] = {}
        updates: dict[str, dict[str, list[LowRank]]] = {}
        for delta, strength in self.entries:
            s = self.strength_at(strength, scale_index)
            names = delta.block_names().get(block, ())
            if s == 0.0 or not names:
                continue
            for name in names:
                if delta.mode == "lora":
                    module, layer, _ = name.split(".")  # e.g. "ca.mat_kv.weight"
                    updates.setdefault(module, {}).setdefault(layer, []).append(delta.low_rank(block, name, s))
                else:
                    base = merged.get(name)
                    if base is None:
                        base = fp8.value(target, name).float()
                    merged[name] = base + s * delta.weight_delta(block, name).to(base.device)
        if not merged and not updates:
            return None
        # one rounding to the stored dtype (bf16 on GPU): the patched weight looks like the base weight
        return BlockPatch({n: w.to(fp8.compute_dtype(target.get_parameter(n))) for n, w in merged.items()}, updates)


class SubjectView:
    """A base model with subjects applied (mixed into the base's own class, view_class): it shares every parameter
    and submodule with the base, so calls that would change them for everyone (to, train, requires_grad_, ...) are
    refused; make them on the base model."""

    def encode(self, text_encoder, prompts: Sequence[str] | str) -> list:
        """The conditioning of ``prompts`` for this view: encode_prompts with its subjects at their strengths."""
        return encode_prompts(text_encoder, prompts, self)

    @property
    def subjects(self) -> list[SubjectDelta]:
        return subjects_of(self)

    def _refuse(self, *args, **kwargs):
        raise RuntimeError("This is a view of a shared base model with subjects applied; moving, casting or "
                           "switching it would change the base for everyone. Do it on the base model, then apply "
                           "the subjects again.")

    to = cuda = cpu = half = float = bfloat16 = requires_grad_ = load_state_dict = cast_blocks = apply = _refuse

    def train(self, mode: bool = True):
        if mode != self.training:
            self._refuse()
        return self


@functools.lru_cache(maxsize=None)
def view_class(cls: type) -> type:
    """SubjectView mixed into a model class (one per family's model class)."""
    return cls if issubclass(cls, SubjectView) else type(f"{cls.__name__}View", (SubjectView, cls), {})


def _view(model, patch: SubjectPatch):
    view = copy.copy(model)  # shares parameters and submodules; only the patch attribute differs
    view.__class__ = view_class(type(model))
    view.patch = patch
    return view


def apply_subjects(model, subjects: Iterable[tuple[SubjectDelta, float | Sequence[float]]]):
    """A view of ``model`` that samples with the given subjects, each at its strength (number or per-scale list).

    The base weights are shared, never modified: the same loaded model serves any number of views. Applying to a
    view adds to its subjects (chainable).
    """
    subjects = list(subjects)
    for delta, strength in subjects:
        check_fits(delta, model)
        for value in (strength if isinstance(strength, (list, tuple)) else [strength]):
            check(f"the strength of subject {delta.token}", value, 0.0)
    entries = list(model.patch.entries) if isinstance(model.patch, SubjectPatch) else []
    base = model.patch.model if isinstance(model.patch, SubjectPatch) else model
    return _view(model, SubjectPatch(base, entries + subjects))


def with_strength_schedule(model, factors: Sequence[float]):
    """A view whose subjects' strengths are multiplied by ``factors`` (one per scale)."""
    if not isinstance(model.patch, SubjectPatch):
        return model
    K = len(factors)
    entries = [(delta, [s * f for s, f in zip(per_scale(strength, K, f"The strength of subject {delta.token!r}"),
                                              factors)])
               for delta, strength in model.patch.entries]
    return _view(model, SubjectPatch(model.patch.model, entries))


def entries_of(model) -> list[tuple[SubjectDelta, float | Sequence[float]]]:
    """(subject, strength) of every subject applied to ``model`` (none for a base)."""
    return list(model.patch.entries) if isinstance(getattr(model, "patch", None), SubjectPatch) else []


def subject_applied(model) -> bool:
    """Whether some subject acts on ``model`` (a strength above 0 at some scale); strength 0 is the base exactly."""
    return any(any(v != 0 for v in (s if isinstance(s, (list, tuple)) else [s])) for _, s in entries_of(model))


def subjects_of(model) -> list[SubjectDelta]:
    return [d for d, _ in entries_of(model)]


@dataclass(frozen=True)
class PromptReadings:
    """Prompts encoded every way their subjects' strengths can blend them: ``readings[on]`` holds every prompt's
    features with subject j read as the subject where on[j] (its learned vectors; a subject without vectors: its
    token as written, as it was trained), else as its class word. What Infinity Text Encode hands the sampler, which
    blends the readings with its model's (per-scale) strengths (``blend``)."""
    prompts: tuple[str, ...]
    subjects: tuple[SubjectDelta, ...]  # the subjects that some prompt names
    readings: dict

    def __len__(self) -> int:
        return len(self.prompts)


def read_prompts(text_encoder, prompts: Sequence[str] | str, subjects: Sequence[SubjectDelta] = ()) -> PromptReadings:
    """Encode ``prompts`` once for every way of reading the placeholders of ``subjects`` that they name."""
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    named = tuple(s for s in subjects if any(s.token in p for p in prompts))
    tokens = [s.token for s in subjects if s.placeholder is not None or s in named]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"Two subjects use the same placeholder token ({tokens}); give each its own token.")
    readings = {on: _read(text_encoder, prompts, [s for s, o in zip(named, on) if o],
                          [s for s, o in zip(named, on) if not o])
                for on in itertools.product((False, True), repeat=len(named))}
    return PromptReadings(prompts, named, readings)


def blend(text: PromptReadings, entries: Sequence[tuple[SubjectDelta, float | Sequence[float]]] = ()) -> list:
    """The conditioning of ``text`` with subjects at strengths (``entries``: entries_of(a view)): on the text side a
    subject's strength s (per scale, clipped to 0..1; above 1 only the weight changes grow) blends two readings of
    the prompt, the placeholder as the learned vectors (weight s) and as the class word (1 - s; class_reading). So
    strength 0 is exactly the prompt with the class word, and a prompt whose subjects all read at strength 1 is a
    plain tensor; otherwise it is a TextMix. A subject the prompts were read without is refused; one they were read
    with that ``entries`` leaves out reads as its class word (strength 0)."""
    def strength_of(read) -> float | Sequence[float]:
        return next((s for d, s in entries if _same_reading(d, read)), 0.0)
    missing = [d.token for d, _ in entries if any(d.token in p for p in text.prompts)
               and not any(_same_reading(d, read) for read in text.subjects)]
    if missing:
        raise ValueError(f"The prompt names {', '.join(missing)}, a subject applied to the model, but it was encoded "
                         f"without that subject: encode the prompt with the model the subject is applied to (in "
                         f"ComfyUI: connect Apply Subject's model to Infinity Text Encode's model input).")
    weight = [_text_weights(strength_of(s)) for s in text.subjects]
    whole = [set(w) == {1.0} for w in weight]
    out = []
    for i, prompt in enumerate(text.prompts):
        mixed = [j for j, s in enumerate(text.subjects) if s.token in prompt and set(weight[j]) not in ({1.0}, {0.0})]
        if not mixed:
            out.append(text.readings[tuple(whole)][i])
            continue
        feats, weights = [], []
        for on in itertools.product((False, True), repeat=len(mixed)):
            key = list(whole)  # the mixed subjects' entries are set below
            w = (1.0,)
            for j, o in zip(mixed, on):
                key[j] = o
                w = _times(w, weight[j] if o else tuple(1.0 - v for v in weight[j]))
            feats.append(text.readings[tuple(key)][i])
            weights.append(w)
        out.append(TextMix(tuple(feats), tuple(weights)))
    return out


def _same_reading(a: SubjectDelta, b: SubjectDelta) -> bool:
    """Whether two subjects read a prompt the same way (a copy of a subject on another device does)."""
    if (a.token, a.class_word) != (b.token, b.class_word) or (a.placeholder is None) != (b.placeholder is None):
        return False
    return a.placeholder is None or a is b or torch.equal(a.placeholder.detach().cpu(), b.placeholder.detach().cpu())


def encode_prompts(text_encoder, prompts: Sequence[str] | str, subjects=()) -> list:
    """Features of each prompt with every subject's placeholder token replaced by that subject's vectors (blend).

    ``subjects``: SubjectDelta objects (read at full strength), or a model view from apply_subjects, whose subjects
    are read at their strengths."""
    entries = entries_of(subjects) if hasattr(subjects, "patch") else [(s, 1.0) for s in subjects]
    return blend(read_prompts(text_encoder, prompts, [d for d, _ in entries]), entries)


def class_reading(prompt: str, token: str, class_word: str) -> str:
    """``prompt`` with ``token`` read as the class word: "a photo of <sks> dog" -> "a photo of dog" (the token
    dropped where the class word follows it), "a photo of <sks>" -> "a photo of dog"."""
    if token not in prompt:
        return prompt
    if class_word:
        prompt = re.sub(re.escape(token) + r"\s+(?=" + re.escape(class_word) + r"\b)", "", prompt)
    return re.sub(r"\s+", " ", prompt.replace(token, class_word)).strip()


def _read(text_encoder, prompts, as_subject, as_class) -> list[torch.Tensor]:
    """Every prompt with the tokens of ``as_subject`` replaced by their vectors (kept as written for a subject
    without vectors) and those of ``as_class`` by their class word."""
    for s in as_class:
        prompts = [class_reading(p, s.token, s.class_word) for p in prompts]
    as_subject = [s for s in as_subject if s.placeholder is not None]
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
