"""Safe reading of checkpoint files (.pth / .safetensors) and atomic writing of safetensors.

Every reader here refuses to execute pickled code (``torch.load(weights_only=True)``) and turns the many ways a
file can be wrong (missing, truncated, not a checkpoint, wrong wrapper) into one ``CheckpointError`` that names the
file and says what was expected.
"""
from __future__ import annotations

import json
import os
import pickle
import secrets
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A model file could not be used. The message names the file and what was expected."""


# The dtypes the loaders and the CLI offer, by name (one map for the whole project).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def dtype_named(name: str) -> torch.dtype:
    """'fp32' / 'bf16' / 'fp16' (or float32, bfloat16, float16, half, float) -> the torch dtype."""
    key = _DTYPE_ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[key]


def describe_source(source, capital: bool = False) -> str:
    """How error messages name where weights came from: the file, a state dict given in memory, or (None) a model
    made in memory."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{source}'"
    text = "the given state dict" if source is not None else "(given in memory)"
    return text[0].upper() + text[1:] if capital else text


SHARD_INDEX = "model.safetensors.index.json"


HUB_WEIGHTS = "model.safetensors"  # a folder's one weights file, beside its config.json (the hub mixin's layout)


def hub_weights(path: Path) -> Path | None:
    """The weights file of a folder in the hub mixin's layout (config.json + model.safetensors: Switti, VQVAE-Switti,
    a CLIP text encoder), else None."""
    if path.is_dir() and not (path / SHARD_INDEX).is_file() and (path / HUB_WEIGHTS).is_file():
        return path / HUB_WEIGHTS
    return None


def read_file(path: str | os.PathLike) -> Mapping:
    """Read a .pth/.pt/.ckpt/.bin pickle (weights only), a .safetensors file, a folder of safetensors shards with
    its model.safetensors.index.json (how Infinity-8B is released) or a folder holding one model.safetensors, onto
    the CPU."""
    path = Path(path)
    if path.is_dir():
        return read_shards(path) if hub_weights(path) is None else read_file(hub_weights(path))
    if not path.is_file():
        raise CheckpointError(f"Model file '{path}' does not exist (or is not a file).")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"'{path}' is not a readable safetensors file ({e}). "
                                  "It may be truncated: compare its size with the published one.") from e
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=_can_mmap(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"'{path}' holds pickled objects other than tensors, so it was not loaded (loading it could run "
            f"arbitrary code). Expected a plain state dict of tensors. Details: {_first_line(e)}") from e
    except Exception as e:  # torch reports damaged files with many types (EOFError, KeyError, RuntimeError, ...)
        raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint ({_first_line(e)}). "
                              "It may be truncated or not a model file: re-download it.") from e


def read_shards(folder: Path) -> dict:
    """Every tensor of a sharded safetensors checkpoint (the Hugging Face layout: model-0000i-of-0000N.safetensors and
    model.safetensors.index.json, whose weight_map names the shard of each key). Strict both ways: a key the index
    names must be in its shard, and a shard may hold no key the index does not name."""
    index_path = folder / SHARD_INDEX
    if not index_path.is_file():
        raise CheckpointError(f"'{folder}' is a folder but has no {SHARD_INDEX}: a sharded checkpoint is the folder "
                              f"holding the model-0000i-of-0000N.safetensors files and their index.")
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"'{index_path}' is not a shard index (expected a JSON object with a 'weight_map' of "
                              f"key -> shard file): {_first_line(e)}") from None
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    tensors = {}
    for shard, keys in by_shard.items():
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CheckpointError(f"Shard '{shard_path}' is missing: {SHARD_INDEX} says it holds {len(keys)} "
                                  f"tensors (e.g. '{keys[0]}'). Download every shard listed in the index.")
        found = read_file(shard_path)
        absent = [k for k in keys if k not in found]
        if absent:
            raise CheckpointError(f"Shard '{shard_path}' has no tensor '{absent[0]}', which {SHARD_INDEX} places "
                                  f"there ({len(absent)} such keys). The shard or the index is from another copy.")
        extra = [k for k in found if weight_map.get(k) != shard]
        if extra:
            raise CheckpointError(f"Shard '{shard_path}' holds '{extra[0]}', which {SHARD_INDEX} does not place "
                                  f"there ({len(extra)} such keys). The shard or the index is from another copy.")
        tensors.update(found)
    return tensors


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _can_mmap(path: Path) -> bool:
    # mmap keeps multi-GB files out of RAM until a tensor is used; only the zip format supports it.
    return zipfile.is_zipfile(path)


def unwrap(obj, source, wrappers: tuple[tuple[str, ...], ...], what: str = "a model") -> StateDict:
    """Return the flat tensor dict inside ``obj``: ``obj`` itself, or ``obj[k1][k2]...`` for the first matching path."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{describe_source(source, capital=True)} is not {what} checkpoint: it holds a "
                              f"{type(obj).__name__}, not a state dict.")
    for path in wrappers:
        inner = obj
        for key in path:
            inner = inner.get(key) if isinstance(inner, Mapping) else None
        if isinstance(inner, Mapping) and inner:
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj.keys()))[:8])
        raise CheckpointError(f"{describe_source(source, capital=True)} is not {what} checkpoint: no tensors where "
                              f"expected (top-level keys: {keys}).")
    return tensors


def tensor_names(source) -> set[str]:
    """Every tensor name of a checkpoint (a path or a state dict), also inside container dicts, without reading the
    tensors where the format allows (safetensors headers, a shard index; pickles are memory-mapped)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        path = hub_weights(path) or path
        if path.is_dir() and (path / SHARD_INDEX).is_file():
            try:
                return set(json.loads((path / SHARD_INDEX).read_text())["weight_map"])
            except (ValueError, KeyError, TypeError):
                pass  # read_shards says what is wrong with the index
        elif path.suffix.lower() == ".safetensors" and path.is_file():
            try:
                with safe_open(str(path), framework="pt") as f:
                    return set(f.keys())
            except (SafetensorError, OSError, ValueError):
                pass  # read_file says what is wrong with it
        source = read_file(path)
    names: set[str] = set()
    stack = [source]
    while stack:
        obj = stack.pop()
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if isinstance(v, Mapping):
                    stack.append(v)
                else:
                    names.add(str(k))
    return names


def load_state_dict(path_or_state_dict, wrappers: tuple[tuple[str, ...], ...] = (), what: str = "a model") -> StateDict:
    """A flat ``{name: tensor}`` dict from a path or an in-memory dict, unwrapping known container keys."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = read_file(path_or_state_dict)
    else:
        obj = path_or_state_dict
    return unwrap(obj, path_or_state_dict, wrappers, what)


def check_keys(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Tensor], source, what: str) -> None:
    """Strict key/shape comparison with one readable error listing every problem."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k}: file {tuple(found[k].shape)}, model {tuple(expected[k])}"
             for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return

    def show(items):
        return "; ".join(items[:6]) + (f" ... ({len(items)} in all)" if len(items) > 6 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if wrong:
        parts.append(f"mis-shaped tensors: {show(wrong)}")
    raise CheckpointError(f"{describe_source(source, capital=True)} is not a valid {what} checkpoint: "
                          + " | ".join(parts))


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"'{path}' already exists; choose another name or allow overwriting explicitly.")


def write_atomic(path: str | os.PathLike, write, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place, so a crash never
    leaves half a file behind; refuse to replace an existing file unless ``overwrite``. Without ``overwrite`` the
    name is taken by a hard link, which fails if the name exists at that moment: of two writers racing for one name,
    exactly one wins and the other gets FileExistsError (a check first, then a rename, would let both "succeed")."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise _exists_error(path)  # early, before any work; the link below is what makes it race-free
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp")
    # created like any file (0644 under the usual umask; mkstemp would make it 0600), and never an existing one
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = os.stat(tmp).st_mode & 0o777
    try:
        write(tmp)
        os.chmod(tmp, mode)  # some writers (safetensors) replace the file with a 0600 one
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_exclusive(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_folder(path.parent)  # the new name survives a power loss only once its folder is on disk
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder (NTFS journals its renames)
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to sync a folder; nothing more can be done there
        pass
    finally:
        os.close(fd)


def _link_exclusive(tmp: str, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path`` only if no file has it (atomic)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:  # a file system without hard links: reserve the name exclusively, then move the file onto it
        if not reserve_name(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)


def reserve_name(path: str | os.PathLike) -> bool:
    """Create ``path`` as an empty file if no file has that name (atomic); False when it exists. A name chosen now
    and written much later (a training's checkpoint) is held this way, so another writer cannot pick it meanwhile;
    write it later with overwrite=True."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False
    return True


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state (Adam's step, exp_avg, exp_avg_sq) as flat tensors ``adam.<name>.<field>``,
    ``names``: one per parameter, in param-group order. The one format every resumable state here is written in."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if len(names) != len(params):
        raise ValueError(f"{len(names)} names for {len(params)} optimized parameters")
    return {f"adam.{name}.{field}": torch.as_tensor(value).detach().cpu().clone()
            for name, p in zip(names, params) for field, value in optimizer.state.get(p, {}).items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                           names: list[str]) -> None:
    """Restore what optimizer_tensors wrote (parameters without saved state keep a fresh one)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for name, p in zip(names, params):
        prefix = f"adam.{name}."
        state = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        if state:  # Adam keeps its step count on the CPU (unless capturable), the moments beside the parameter
            optimizer.state[p] = {k: t.clone() if k == "step" else t.to(p.device, copy=True) for k, t in state.items()}


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write safetensors atomically (see write_atomic)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {})), overwrite)
