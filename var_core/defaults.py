"""Settings left to the model, resolved in one place: the family's release values, overridden by the model file's own
metadata (the embedded model states its own), overridden by what the user gives. CLI help, node tooltips and the
docs state these defaults through ``describe``, so no text can promise another value than the code uses.

    defaults.sampling(model, cfg=None, tau=3.0)  # {"cfg": the model's own, "tau": 3.0, "top_k", "top_p", "pn"}
    defaults.tuning(model)                       # {"pn", "steps", "lr", "embedding_lr"} for TrainConfig
    defaults.describe("tuning", "steps")         # "500 for Infinity, 300 for the embedded model"
"""
from __future__ import annotations

from .embedded import available, bundle_paths
from .family import families, family_of


def sampling(model, **given) -> dict:
    """{"cfg", "tau", "top_k", "top_p", "pn"}: each value given (not None) as it is, the others the model's own."""
    return _resolve(model.family.sampling_defaults(model), given, "sampling")


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
    text = ", ".join(parts)
    return text + (f"; {_shown(embedded[key])} for the embedded model" if key in embedded else "")


def shared(kind: str, key: str):
    """The release value of ``key`` that every family and variant agrees on (a widget's default, where a widget
    cannot say "the model's own"); refused when they differ."""
    values = {repr(d[key]): d[key] for f in families() for d in f.release_defaults(kind).values() if key in d}
    if len(values) != 1:
        raise ValueError(f"The families' {kind} default of {key} differs ({', '.join(values)}): leave it to the model.")
    return next(iter(values.values()))


def embedded_defaults() -> dict:
    """What the embedded model's file states ({"sampling": ..., "tuning": ...}), read from its header only; empty
    when the bundle is absent."""
    if not available():
        return {}
    paths = bundle_paths()
    return family_of(str(paths["transformer"]), "transformer").file_defaults(str(paths["transformer"]))


def _shown(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{v:g} ({mode})" for mode, v in value.items() if v)
    return f"{value:g}" if isinstance(value, float) else str(value)
