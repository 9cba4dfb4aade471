"""Settings left to the model, resolved in one place: the family's release values, overridden by the model file's own
metadata (the embedded model states its own), overridden by what the user gives. CLI help, node tooltips and the
docs state these defaults through ``describe``, so no text can promise another value than the code uses. ``check``
is the one validator of a numeric setting: its message names the setting, the value and what is allowed.

    defaults.sampling(model, cfg=None, tau=3.0)  # {"cfg": the model's own, "tau": 3.0, "top_k", "top_p", "pn"}
    defaults.sampling(view)                      # a view with a subject applied: the file's with-subject values
    defaults.tuning(model)                       # {"pn", "steps", "lr", "embedding_lr"} for TrainConfig
    defaults.describe("tuning", "steps")         # "500 for Infinity, 300 for the embedded model"
"""
from __future__ import annotations

import functools
import math
from numbers import Integral, Real

from .embedded import available, bundle_paths
from .family import families, family_of


# (lowest, highest, whole number) of each sampling setting; a bound in a 1-tuple is exclusive (check)
SAMPLING_RANGES = {"cfg": (0.0, None, False), "tau": ((0.0,), None, False), "top_k": (0, None, True),
                   "top_p": (0.0, 1.0, False)}
PER_SCALE = ("cfg", "tau")  # may be one value per scale


def sampling(model, **given) -> dict:
    """The family's settings (Infinity: {"cfg", "tau", "top_k", "top_p", "pn"}; Switti, VAR: {"cfg", "top_k",
    "top_p"}): each value given (not None) as it is, the others the model's own;
    refused with a message when a value is out of its range (SAMPLING_RANGES)."""
    settings = _resolve(model.family.sampling_defaults(model), given, "sampling")
    for key, (low, high, whole) in SAMPLING_RANGES.items():
        if key not in settings:  # (a setting the family does not have, e.g. tau for Switti and VAR)
            continue
        values = settings[key] if isinstance(settings[key], (list, tuple)) and key in PER_SCALE else [settings[key]]
        for value in values:
            check(key, value, low, high, whole)
    return settings


def check(name: str, value, low=None, high=None, whole: bool = False):
    """``value`` if it is a finite number in range (a whole number where ``whole``), else a ValueError that names
    the setting, the value and the allowed range. A bound in a 1-tuple is exclusive: (0.0,) means above 0."""
    (low, low_open), (high, high_open) = (_bound(low), _bound(high))
    kind = Integral if whole else Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) and \
        (low is None or (value > low if low_open else value >= low)) and \
        (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = [f"{'above' if low_open else 'at least'} {low:g}" if low is not None else "",
                  f"{'below' if high_open else 'at most'} {high:g}" if high is not None else ""]
        allowed = " and ".join(b for b in bounds if b) or "finite"
        raise ValueError(f"{name} = {value!r} is not allowed: it must be {'a whole' if whole else 'a'} number "
                         f"{allowed}.")
    return value


def _bound(bound) -> tuple:
    return (bound[0], True) if isinstance(bound, tuple) else (bound, False)


def tuning(model, **given) -> dict:
    """{"pn", "steps", "lr", "embedding_lr"}: each value given (not None) as it is, the others the model's own; a
    learning rate the family gives per tuning mode stays a {mode: lr} dict (TrainConfig picks its mode's)."""
    return _resolve(model.family.tuning_defaults(model), given, "tuning")


def _resolve(own: dict, given: dict, kind: str) -> dict:
    unknown = sorted(set(given) - set(own))
    if unknown:
        raise TypeError(f"Unknown {kind} settings {unknown}; the model's own are {sorted(own)}.")
    return {k: v if given.get(k) is None else given[k] for k, v in own.items()}


def describe(kind: str, key: str) -> str:
    """The default of a setting left to the model, in words for help texts: every family's release value(s), then
    what the embedded model's file says, e.g. "4 for Infinity-2B, 3 for Infinity-8B; 4 for the embedded model"."""
    parts = []
    for family in families():
        values = {title: d[key] for title, d in family.release_defaults(kind).items() if key in d}
        if len(set(map(_shown, values.values()))) == 1:
            parts.append(f"{_shown(next(iter(values.values())))} for {family.title}")
        else:
            parts += [f"{_shown(v)} for {title}" for title, v in values.items()]
    embedded = embedded_defaults().get(kind, {})
    with_subject = embedded_defaults().get("with_subject", {}) if kind == "sampling" else {}
    text = ", ".join(parts)
    if key in embedded:
        text += f"; {_shown(embedded[key])} for the embedded model"
        text += f" ({_shown(with_subject[key])} with a subject applied)" if key in with_subject else ""
    return text


def shared(kind: str, key: str, family: str) -> object:
    """The release value of ``key`` that every variant of ``family`` agrees on (a widget's default, where a widget
    cannot say "the model's own"); refused when they differ."""
    values = {repr(d[key]): d[key] for f in families() if f.name == family
              for d in f.release_defaults(kind).values() if key in d}
    if len(values) != 1:
        raise ValueError(f"The {family} {kind} default of {key} differs ({', '.join(values)}): leave it to the model.")
    return next(iter(values.values()))


@functools.cache  # read once per process: help texts and tooltips ask for it many times
def embedded_defaults() -> dict:
    """What the embedded model's file states ({"sampling": ..., "tuning": ..., "with_subject": ...}), read from its
    header only; empty when the bundle is absent."""
    if not available():
        return {}
    paths = bundle_paths()
    return family_of(str(paths["transformer"]), "transformer").file_defaults(str(paths["transformer"]))


def _shown(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{v:g} ({mode})" for mode, v in value.items() if v)
    return f"{value:g}" if isinstance(value, float) else str(value)
