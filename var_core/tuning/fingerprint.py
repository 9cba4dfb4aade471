"""A base model's identity, recorded in every subject file so a subject is refused by another base: its architecture
and, for every tensor, two numbers from an evenly strided sample of its values (their RMS and their projection on a
fixed random sign pattern), compared with a tolerance, so the same checkpoint in fp32, bf16 or fp16 agrees while a
base with any tensor changed by a few percent does not. Fingerprints of earlier versions (24 values of a few
tensors; a hash) are still read and compared their own way."""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, replace

import numpy as np

import torch

from .. import fp8
from .selection import block_tensor

FINGERPRINT_VALUES = 24  # of the format before "v2"
SAMPLES = 64  # values read from every tensor (strided over all of it)
TOLERANCE = 0.02  # of a tensor's RMS: bf16 keeps 8 significant bits (0.4 %), fp16 flushes values below 6e-8


def base_identity(model) -> dict[str, str]:
    """What a subject file records of its base: family, fingerprint and architecture."""
    return {"family": model.family.name, "fingerprint": fingerprint(model),
            "architecture": json.dumps(asdict(model.config), sort_keys=True)}


def family_of_subject(delta) -> str:
    return delta.metadata.get("family") or "infinity"  # subject files before families existed are Infinity's


def check_fits(delta, model) -> None:
    """The delta must come from this base model (family and fingerprint, when known) and its shapes must fit."""
    if family_of_subject(delta) != model.family.name:
        raise ValueError(f"The subject was trained on a base of the {family_of_subject(delta)!r} family; this base is "
                         f"{model.family.title} ({model.source or 'given in memory'}). Load the base it was trained "
                         f"on.")
    known = delta.metadata.get("fingerprint")
    if known and not same_base(known, model):
        raise ValueError(f"The subject was trained on another base model than this one "
                         f"({model.source or 'given in memory'}): load the base model it was trained on"
                         f"{_architecture_change(delta, model)}. (Fingerprints {_short(known)} vs "
                         f"{_short(fingerprint(model))}.)")
    for key, t in delta.tensors.items():
        if key == "placeholder":
            width = model.family.placeholder_width(model)
            if t.dim() != 2 or t.shape[1] != width:
                raise ValueError(f"Placeholder vectors {tuple(t.shape)} do not fit this model's width {width}.")
            continue
        kind, i, name = key.split(".", 2)
        if int(i) >= model.config.depth:
            raise ValueError(f"{key}: block {i} does not exist (the model has {model.config.depth} blocks).")
        w = block_tensor(model, int(i), name)
        expected = {"delta": tuple(w.shape), "lora_A": (delta.rank, w.shape[-1]),
                    "lora_B": (w.shape[0], delta.rank)}[kind]
        if tuple(t.shape) != expected:
            raise ValueError(f"{key} has shape {tuple(t.shape)}, expected {expected} for this model.")


def _architecture_change(delta, model) -> str:
    """What differs between the subject's base architecture and ``model``'s, in words ("" when unknown or equal):
    e.g. a subject of Infinity-2B (32-bit tokens) offered to Infinity-8B (56-bit 2x2-patchified tokens)."""
    try:
        theirs = json.loads(delta.metadata.get("architecture") or "{}")
    except ValueError:
        return ""
    mine = json.loads(json.dumps(asdict(model.config)))  # (tuples read back as lists)
    changed = [f"{k} {theirs[k]} (this model: {mine[k]})" for k in mine if k in theirs and theirs[k] != mine[k]]
    if not changed:
        return ""
    tokens = ""
    if "bits" in theirs and theirs["bits"] != model.config.bits:
        def kind(bits, patch):
            return f"{bits}-bit tokens" + (f" ({patch}x{patch}-patchified, Infinity-8B-shaped)" if patch > 1 else "")
        mine_kind = kind(model.config.bits, model.config.token_patch)
        theirs_kind = kind(theirs["bits"], replace(model.config, bits=theirs["bits"]).token_patch)
        tokens = f"; it was trained on a model with {theirs_kind}, this one has {mine_kind}"
    return f": the architectures differ ({', '.join(changed)}){tokens}"


def _fingerprint_samples(model) -> list[torch.Tensor]:
    """The few tensors the fingerprint of the format before "v2" read."""
    blocks = model.blocks  # a view shares these with its base
    return [model.cfg_uncond[:4], model.pos_start, model.head.bias, model.word_embed.weight[:8],
            fp8.value(blocks[0], "ffn.fc1.weight")[:8, :8], fp8.value(blocks[-1], "ca.proj.weight")[:8, :8]]


def _architecture_hash(model) -> str:
    return hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode()).hexdigest()[:12]


def _signature(model) -> np.ndarray:
    """(tensors, 2): for every tensor of the model (by name), the RMS of an evenly strided sample of SAMPLES values
    and their mean times a fixed random sign pattern."""
    signs = torch.randint(0, 2, (SAMPLES,), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    rows = []
    for _, t in sorted(_values_of(model.state_dict()).items()):
        flat = t.detach().reshape(-1)
        v = flat[::max(1, flat.numel() // SAMPLES)][:SAMPLES].float().cpu()
        v = torch.nan_to_num(v, posinf=1.0, neginf=-1.0)  # (a -inf attention mask buffer; finite values as they are)
        rows.append([v.pow(2).mean().sqrt().item(), (v * signs[:v.numel()]).mean().item()])
    return np.asarray(rows, dtype=np.float32)


def _values_of(state: dict) -> dict:
    """The tensors as numbers: an fp8 weight times its row scales (the scales themselves left out), so a base loaded
    in fp8 is the same base (within TOLERANCE) as in bf16 or fp32."""
    out = {}
    for name, t in state.items():
        if name.endswith("." + fp8.SCALE):
            continue
        out[name] = t.float() * state[name[:-len("weight")] + fp8.SCALE][:, None] if t.dtype == fp8.FP8 else t
    return out


def _v2(model) -> str:
    return f"v2:{_architecture_hash(model)}:{base64.b64encode(_signature(model).tobytes()).decode()}"


def _values(model) -> str:
    """The format before "v2": '<architecture hash>:<24 values of a few tensors, 3 significant digits>'."""
    values = torch.cat([t.detach().float().flatten().cpu() for t in _fingerprint_samples(model)])
    picked = values[torch.linspace(0, values.numel() - 1, FINGERPRINT_VALUES).long()]
    return _architecture_hash(model) + ":" + ",".join(f"{v:.3g}" for v in picked.tolist())


FORMATS = {"v2": _v2, "values": _values, "hash": lambda model: _legacy_fingerprint(model)}


def _identity(model, form: str) -> str:
    if model.sharded_fingerprint:  # an FSDP-sharded base: every format was taken while its weights were whole
        return model.sharded_fingerprint[form]
    return FORMATS[form](model)


def identities(model) -> dict[str, str]:
    """The model's fingerprint in every format (what a sharded base keeps: distributed.shard_base)."""
    return {form: make(model) for form, make in FORMATS.items()}


def fingerprint(model) -> str:
    """The base model's identity: 'v2:<hash of its architecture>:<base64 of _signature>'."""
    return _identity(model, "v2")


def same_base(known: str, model) -> bool:
    """Whether a stored fingerprint (of any format) names ``model`` (in any of the dtypes the loaders offer)."""
    if known.startswith("v2:"):
        (_, arch, text), (_, mine_arch, mine_text) = known.split(":", 2), fingerprint(model).split(":", 2)
        theirs, mine = (np.frombuffer(base64.b64decode(t), dtype=np.float32).reshape(-1, 2) for t in (text, mine_text))
        if arch != mine_arch or theirs.shape != mine.shape:
            return False
        scale = np.maximum(np.maximum(theirs[:, :1], mine[:, :1]), 1e-6)  # per tensor: its RMS
        return bool((np.abs(theirs - mine) <= TOLERANCE * scale).all())
    if ":" not in known:  # format 1 (a hash of bf16-rounded weights): exact, so only fp32/bf16 copies agree
        return known == _identity(model, "hash")
    (arch, _, text), (mine_arch, _, mine_text) = known.partition(":"), _identity(model, "values").partition(":")
    a = torch.tensor([float(v) for v in text.split(",")])
    b = torch.tensor([float(v) for v in mine_text.split(",")])
    # bf16 keeps 8 significant bits (0.4 %), the 3-digit text 0.05 %; fp16 flushes values below 6e-8; fp8 blocks keep
    # 3 bits (6 %) of the block weights this format reads
    rtol = 1 / 16 if any(p.dtype == fp8.FP8 for p in model.blocks[0].parameters()) else 1e-2
    return arch == mine_arch and a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=1e-4)


def _short(known: str) -> str:
    return hashlib.sha256(known.encode()).hexdigest()[:10]


def _legacy_fingerprint(model) -> str:
    h = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for t in _fingerprint_samples(model):
        h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]
