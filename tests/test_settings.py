"""Every numeric setting of sample(), TrainConfig and a subject's strength, fed NaN, ±∞, negative, zero and
non-integer values, gives a result or a ValueError naming the setting and the value, never a traceback from inside
torch (defaults.check is the one validator)."""
from __future__ import annotations

import math

import pytest
import torch

from toyworld.builders import make_trainer
from var_core import sample
from var_core.tuning import SubjectDelta, TrainConfig, apply_subjects

BAD = (math.nan, math.inf, -math.inf, -1, 0, 2.5)
SCHEDULE = [(1, 1), (2, 2), (3, 3)]


def outcome(call, name: str):
    """'ok', or the refusal's message; any other exception fails the test."""
    try:
        call()
        return "ok"
    except ValueError as e:
        message = str(e)
        assert name in message, (name, message)
        return message


@pytest.mark.parametrize("name", ["cfg", "tau", "top_k", "top_p", "seed"])
def test_sampling_settings(toy, name):
    model = toy[0]
    text = [torch.randn(3, model.config.text_channels, generator=torch.Generator().manual_seed(0))]
    results = {v: outcome(lambda: sample(model, None, text, SCHEDULE, **{name: v}), name) for v in BAD}
    assert results[math.nan] != "ok" and results[math.inf] != "ok"  # never drawn from
    if name in ("cfg", "tau"):  # also one value per scale
        assert outcome(lambda: sample(model, None, text, SCHEDULE, **{name: [1.0, math.nan, 1.0]}), name) != "ok"
    assert results[-1] != "ok" or name == "seed"


NUMERIC = {f: getattr(TrainConfig, f) for f in ("steps", "batch_size", "rank", "alpha", "placeholder_vectors",
                                                 "warmup_steps", "weight_decay", "grad_clip", "flip_prob",
                                                 "prior_weight", "prior_tau", "prior_top_p", "prior_cfg",
                                                 "prior_samples", "seed", "lr", "embedding_lr")}


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_training_settings(toy, name):
    results = {v: outcome(lambda: make_trainer(toy, **{"steps": 1, name: v}),
                          "rate" if name.endswith("lr") else name) for v in BAD}
    assert results[math.nan] != "ok" and results[math.inf] != "ok"
    assert results[-1] != "ok"
    if name in ("steps", "batch_size", "rank", "placeholder_vectors", "warmup_steps", "prior_samples", "seed"):
        assert results[2.5] != "ok"  # a whole number


def test_subject_strength(toy):
    model = toy[0]
    delta = SubjectDelta.create(model, "lora", rank=2, token="<s1>", class_word="dog")
    for value in BAD:
        result = outcome(lambda: apply_subjects(model, [(delta, value)]), "strength of subject <s1>")
        assert (result == "ok") == (value in (0, 2.5))
    assert outcome(lambda: apply_subjects(model, [(delta, [1.0, math.nan, 1.0])]), "strength") != "ok"


def test_an_unknown_mode_is_named(toy):
    assert "lorra" in outcome(lambda: make_trainer(toy, mode="lorra", steps=1), "mode")
