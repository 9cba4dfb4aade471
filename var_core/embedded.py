"""The embedded default model: a small Infinity, BitVAE and T5 encoder trained on the toy world (the test bench's
toyworld package made it: python -m toyworld pretrain), shipped in ``var_core/bundle`` and read by the ordinary
loaders, plus photos of a few subjects it never saw.

    model, vae, text_encoder = load_models()   # the three parts, by the same loaders as Infinity-2B's files
    paths = bundle_paths()                     # {"transformer", "vae", "text_encoder"}
    example_subjects()                         # {"guide_dog": {"photos": [...], ...}, ...}: for the demo and templates
"""
from __future__ import annotations

import json
from pathlib import Path

BUNDLE = Path(__file__).with_name("bundle")
PN = "0.015M"  # the bundle's resolution: 128², 5 scales (pretraining writes it into the model file's metadata)


def available(folder=BUNDLE) -> bool:
    """Whether the bundle's three model parts are there."""
    folder = Path(folder)
    return all(p.exists() for p in (folder / "infinity.safetensors", folder / "bitvae.safetensors", folder / "t5"))


def bundle_paths(folder=BUNDLE) -> dict[str, Path]:
    folder = Path(folder)
    paths = {"transformer": folder / "infinity.safetensors", "vae": folder / "bitvae.safetensors",
             "text_encoder": folder / "t5"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"The embedded toy model is incomplete (missing {', '.join(missing)}). It ships with "
                                f"the repository; rebuild it with: python -m toyworld pretrain --out {folder}")
    return paths


def load_models(folder=BUNDLE, device=None):
    """(transformer, BitVAE, text encoder) of the bundle, each by its ordinary loader."""
    from . import load_text_encoder, load_transformer, load_vae  # the package imports this module (via defaults)

    paths = bundle_paths(folder)
    return (load_transformer(paths["transformer"], device), load_vae(paths["vae"], device),
            load_text_encoder(paths["text_encoder"], device))


def manifest(folder=BUNDLE) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))


def example_subjects(folder=BUNDLE) -> dict[str, dict]:
    """{name: {"class_word", "member", "photos": [paths], "subject": path or None}} of the bundled subjects (held-out
    glyphs): their photos, and where one was trained on the bundle (for the templates), its subject file."""
    out = {}
    for d in sorted((Path(folder) / "subjects").glob("*/")):
        info = json.loads((d / "subject.json").read_text(encoding="utf-8"))
        trained = d / "subject.safetensors"
        out[d.name] = {**info, "photos": sorted(d.glob("*.png")), "subject": trained if trained.is_file() else None}
    return out
