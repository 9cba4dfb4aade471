"""What the commands share: progress bars and the model files they run on."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..embedded import BUNDLE, available, bundle_paths
from .. import load_transformer
from .. import memory
from ..streaming import resident_blocks, stream_blocks


def bar(total: int, desc: str, unit: str, initial: int = 0, show: bool = True):
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not show)


def progress_bar(total: int, desc: str):
    b = bar(total, desc, "scale")

    def update(k, n):
        b.update(k - b.n)
        if k == n:
            b.close()
    return update


def model_files(args, parser_name: str, text: bool = True) -> tuple[str, str, str | None, bool]:
    """--model/--vae/--text-encoder, or all three from the embedded toy bundle when none is given. ``text`` False:
    the text encoder is the caller's to check (VAR has none, Switti two)."""
    given = [args.model, args.vae, args.text_encoder]
    if all(given) or (not text and args.model and args.vae):
        return (*given, False)
    if any(given):
        raise ValueError(f"{parser_name}: give --model, --vae and --text-encoder together, or none of them for the "
                         f"embedded toy model.")
    if not available():
        raise ValueError(f"{parser_name}: give --model, --vae and --text-encoder (this checkout has no embedded toy "
                         f"model in {BUNDLE}; build one with: python -m toyworld pretrain --out {BUNDLE})")
    paths = bundle_paths()
    print("using the embedded toy model (var_core/bundle, 128²); pass --model, --vae and --text-encoder for "
          "another", file=sys.stderr)
    return str(paths["transformer"]), str(paths["vae"]), str(paths["text_encoder"]), True


def default_cache() -> Path:
    """One reusable folder for working files: $XDG_CACHE_HOME/varbooth (~/.cache/varbooth)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "varbooth"


def load_model(args, path: str, device: torch.device, dtype: torch.dtype | None):
    """The transformer on ``device``; with --stream-blocks its blocks stay in CPU memory and visit ``device`` one at
    a time (in the dtype they would have there: bf16 blocks on CUDA unless --dtype says otherwise), until
    ``keep_what_fits`` knows the job."""
    if not getattr(args, "stream_blocks", False):
        return load_transformer(path, device=device, dtype=dtype)
    model = load_transformer(path, device="cpu", dtype=dtype or (torch.bfloat16 if device.type == "cuda" else None))
    stream_blocks(model, device)
    return model


RESERVE = 2**30  # left free on the device beside a streamed model and its job: the allocator's slack


def keep_what_fits(model, job_bytes: int) -> None:
    """--stream-blocks: keep on the device the blocks that fit beside the job (``job_bytes``, from var_core.memory)
    in its free memory, and stream only the others (the fewer streamed, the less copied per scale)."""
    streaming = getattr(model, "_streaming", None)
    if streaming is None:
        return
    budget = (memory.free_bytes(streaming.device) or 0) + streaming.device_bytes - job_bytes - RESERVE
    resident = resident_blocks(model, budget)
    if resident:
        stream_blocks(model, streaming.device, resident)
    print(f"streaming {len(model.blocks) - resident} of {len(model.blocks)} blocks", file=sys.stderr)
