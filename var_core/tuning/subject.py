"""Subject files: a safetensors file holding only what was trained, plus metadata.

Tensors: ``lora_A.{block}.{name}`` / ``lora_B.{block}.{name}`` or ``delta.{block}.{name}``, and ``placeholder``.
Metadata (all strings): ``format`` = "varbooth-subject", ``format_version``, ``family`` (e.g. "infinity"; files
without it are Infinity's), ``fingerprint`` and ``architecture`` of the base model, ``mode``, ``rank``, ``alpha``,
``groups``, ``blocks``, ``token``, ``class_word``, ``library_version`` and ``training`` (JSON: steps, lr, loss
weights, resolution, ...).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from .. import __version__
from ..checkpoint import CheckpointError, save_safetensors_atomic
from .delta import MODES, SubjectDelta
from .placeholder import DEFAULT_TOKEN
from .fingerprint import base_identity, check_fits, family_of_subject

FORMAT, FORMAT_VERSION = "varbooth-subject", "1"


def save_subject(delta: SubjectDelta, path, model=None, training: dict | None = None,
                 dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Write ``delta`` (atomic; refuses to replace a file unless ``overwrite``). The base model's fingerprint comes
    from ``model`` or, without one, from the delta's metadata (set by training and loading). ``dtype`` casts the
    weight tensors (e.g. bf16 halves a full delta); the placeholder vectors are always kept in fp32."""
    if model is not None:
        base = base_identity(model)
    elif "fingerprint" in delta.metadata:
        base = {"family": family_of_subject(delta), **{k: delta.metadata[k] for k in ("fingerprint", "architecture")}}
    else:
        raise ValueError("Saving a subject needs the base model it was trained on (for its fingerprint).")
    tensors = {k: (v if dtype is None or k == "placeholder" else v.to(dtype)) for k, v in delta.tensors.items()}
    training = training if training is not None else delta.metadata.get("training", {})
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **base, "mode": delta.mode,
        "rank": str(delta.rank), "alpha": repr(delta.alpha), "groups": ",".join(delta.groups),
        "blocks": ",".join(map(str, delta.blocks)), "token": delta.token, "class_word": delta.class_word,
        "library_version": __version__, "training": json.dumps(training, sort_keys=True, default=str),
    }
    return save_safetensors_atomic(tensors, path, meta, overwrite=overwrite)


def load_subject(path, model=None, device=None) -> SubjectDelta:
    """Read a subject file. With ``model``, refuse it unless it was trained on that base model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Subject file '{path}' does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({e}).") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a VARBooth subject file (its metadata has no format={FORMAT!r}).")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"'{path}' has subject format version {meta.get('format_version')!r}; this library "
                              f"reads version {FORMAT_VERSION}. Update the library.")
    tensors = {k: (v.float() if k == "placeholder" else v) for k, v in tensors.items()}
    parsed = {}
    for key, parse, expected in (("rank", int, "a whole number"), ("alpha", float, "a number"),
                                 ("blocks", lambda v: tuple(int(b) for b in v.split(",") if b),
                                  "block numbers separated by commas"),
                                 ("training", lambda v: json.loads(v or "{}"), "a JSON object")):
        value = meta.get(key, {"rank": "0", "alpha": "0", "blocks": "", "training": "{}"}[key])
        try:
            parsed[key] = parse(value)
        except (ValueError, TypeError):
            raise CheckpointError(f"'{path}' has the metadata {key}={value!r}, which is not {expected} (was the "
                                  f"file edited by hand?). Restore it from the original subject file.") from None
    if not isinstance(parsed["training"], dict):
        raise CheckpointError(f"'{path}' has training metadata that is not a JSON object (was the file edited by "
                              f"hand?). Restore it from the original subject file.")
    if meta.get("mode", "lora") not in MODES:
        raise CheckpointError(f"'{path}' has the metadata mode={meta.get('mode')!r}; a subject is one of "
                              f"{', '.join(MODES)}. Restore it from the original subject file.")
    delta = SubjectDelta(tensors, meta.get("mode", "lora"), parsed["rank"], parsed["alpha"],
                         tuple(g for g in meta.get("groups", "").split(",") if g), parsed["blocks"],
                         meta.get("token", DEFAULT_TOKEN), meta.get("class_word", ""),
                         {**meta, "training": parsed["training"]})
    if model is not None:
        try:
            check_fits(delta, model)
        except ValueError as e:
            raise CheckpointError(f"Subject '{path}' does not fit the loaded model: {e}") from None
        device = device or model.device
    return delta.to(device) if device is not None else delta
