"""`python -m var_core convert` and `demo`."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import var_core as vc
from tqdm import tqdm

from ..checkpoint import DTYPES, HUB_WEIGHTS, hub_weights, read_file, save_safetensors_atomic, write_atomic
from ..demo import DemoConfig, run_demo
from .common import default_cache


def cmd_convert(args) -> int:
    """A checkpoint rewritten as safetensors, validated by loading it (optionally in bf16/fp16). A folder in the hub
    layout (Switti, VQVAE-Switti: config.json + model.safetensors) becomes a folder: its config.json and the
    rewritten weights."""
    raw = read_file(args.input)
    kind = args.kind if args.kind != "auto" else vc.detect_kind(raw, args.input)
    family = vc.family_of(raw, kind)
    folder = hub_weights(Path(args.input)) is not None
    dtype = DTYPES[args.dtype]
    source = args.input if folder else raw  # a hub folder is read with its config.json
    if kind == "transformer":
        model = vc.load_transformer(source, dtype=dtype if dtype != torch.float32 else None)
        tensors = dict(model.state_dict())
        if model.special_token is not None:
            tensors["special_token"] = model.special_token
    else:
        tensors = dict(vc.load_vae(source).state_dict())
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": f"{family.name}-{kind}", "source": Path(args.input).name, "var_core": vc.__version__}
    if folder:
        out_folder = Path(args.output)
        if out_folder.exists() and not args.overwrite:
            raise FileExistsError(f"'{out_folder}' already exists; choose another output or pass --overwrite.")
        out_folder.mkdir(parents=True, exist_ok=True)
        config = (Path(args.input) / "config.json").read_bytes()
        write_atomic(out_folder / "config.json", lambda tmp: Path(tmp).write_bytes(config), overwrite=True)
        out = save_safetensors_atomic(tensors, out_folder / HUB_WEIGHTS, metadata=metadata, overwrite=True)
    else:
        out = save_safetensors_atomic(tensors, args.output, metadata=metadata, overwrite=args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(tensors)} tensors, {family.title} {kind})")
    return 0


def cmd_demo(args) -> int:
    """The main job on the embedded toy model: teach it a held-out subject from 4 photos, draw it in new contexts."""

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="step", file=sys.stderr))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    work = Path(args.work or default_cache() / "demo")
    work.mkdir(parents=True, exist_ok=True)
    out = run_demo(args.out, DemoConfig(subject=args.subject, steps=args.steps, seed=args.seed), args.bundle,
                   work=work, overwrite=args.overwrite, progress=progress)
    print(f"wrote {out}: the 4 photos, the subject in 4 new contexts, and the plain class prompt before | after")
    return 0
