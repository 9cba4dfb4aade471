"""Subject files: a safetensors file holding only what was trained, plus metadata.

Tensors: ``lora_A.{block}.{name}`` / ``lora_B.{block}.{name}`` or ``delta.{block}.{name}``, and ``placeholder``.
Metadata (all strings): ``format`` = "varbooth-subject", ``format_version``, ``fingerprint`` and ``architecture`` of
the base model, ``mode``, ``rank``, ``alpha``, ``groups``, ``blocks``, ``token``, ``class_word``, ``library_version``
and ``training`` (JSON: steps, lr, loss weights, resolution, ...).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from ..checkpoint import CheckpointError, save_safetensors_atomic
from ..transformer import Infinity
from .delta import SubjectDelta, check_fits

FORMAT, FORMAT_VERSION = "varbooth-subject", "1"


def fingerprint(model: Infinity) -> str:
    """A short hash of the base model: its architecture and a few of its weights.

    Values are rounded to bf16 first, so fp32, bf16 and converted copies of the same checkpoint agree.
    """
    base = model.patch.model if getattr(model.patch, "model", None) is not None else model
    h = hashlib.sha256(json.dumps(asdict(base.config), sort_keys=True).encode())
    blocks = base.blocks
    samples = (base.cfg_uncond[:4], base.pos_start, base.head.bias, base.word_embed.weight[:8],
               blocks[0].ffn.fc1.weight[:8, :8], blocks[-1].ca.proj.weight[:8, :8])
    for t in samples:
        h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def save_subject(delta: SubjectDelta, path, model: Infinity, training: dict | None = None,
                 dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Write ``delta`` (atomic; refuses to replace a file unless ``overwrite``). ``dtype`` casts the weight tensors
    (e.g. bf16 halves a full delta); the placeholder vectors are always kept in fp32."""
    from .. import __version__
    tensors = {k: (v if dtype is None or k == "placeholder" else v.to(dtype)) for k, v in delta.tensors.items()}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint(model),
        "architecture": json.dumps(asdict(model.config), sort_keys=True), "mode": delta.mode,
        "rank": str(delta.rank), "alpha": repr(delta.alpha), "groups": ",".join(delta.groups),
        "blocks": ",".join(map(str, delta.blocks)), "token": delta.token, "class_word": delta.class_word,
        "library_version": __version__, "training": json.dumps(training or {}, sort_keys=True, default=str),
    }
    return save_safetensors_atomic(tensors, path, meta, overwrite=overwrite)


def load_subject(path, model: Infinity | None = None, device=None) -> SubjectDelta:
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
    if model is not None:
        mine = fingerprint(model)
        if meta.get("fingerprint") != mine:
            raise CheckpointError(
                f"Subject '{path}' was trained on another base model (fingerprint {meta.get('fingerprint')}, "
                f"architecture {meta.get('architecture')}) than the loaded one (fingerprint {mine}, "
                f"{model.source or 'given in memory'}). Load the base model it was trained on.")
    tensors = {k: (v.float() if k == "placeholder" else v) for k, v in tensors.items()}
    delta = SubjectDelta(tensors, meta.get("mode", "lora"), int(meta.get("rank", 0)), float(meta.get("alpha", 0)),
                         tuple(g for g in meta.get("groups", "").split(",") if g),
                         tuple(int(b) for b in meta.get("blocks", "").split(",") if b),
                         meta.get("token", "<placeholder>"), meta.get("class_word", ""),
                         {**meta, "training": json.loads(meta.get("training") or "{}")})
    if model is not None:
        try:
            check_fits(delta, model)
        except ValueError as e:
            raise CheckpointError(f"Subject '{path}' does not fit the loaded model: {e}") from None
        device = device or model.device
    return delta.to(device) if device is not None else delta
