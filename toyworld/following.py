"""Prompt following of a model on the toy world: sample "a photo of a {class} {phrase}" and read back whether the
picture shows the requested background and class (metrics.py). Used by benchmarks/prompt_following.py, by
pretraining (the bundle manifest's final figures) and by the tests on the shipped bundle."""
from __future__ import annotations

import sys

import torch
from PIL import Image

import var_core as vc
from var_core.images import to_pil

from . import metrics, world


def prompt(cls: str, background: str) -> str:
    return f"a photo of {world.article(cls)} {world.PHRASES[background][0]}"


def generate(model, vae, text_encoder, jobs, pn: str, batch: int = 48, cfg: float | None = None,
             tau: float | None = None, seed: int = 0, quiet: bool = False, pruning: vc.Pruning = vc.Pruning()
             ) -> list[Image.Image]:
    """One picture per job (class, background, k), in order; batch i is drawn with seed (seed, i). cfg / tau: the
    model's own by default; pruning: the sampler's fast option (off by default)."""
    schedule = vc.scale_schedule(1.0, pn)
    features = text_encoder([prompt(c, b) for c, b, _ in jobs])
    out = []
    for i in range(0, len(jobs), batch):
        g = torch.Generator(model.device).manual_seed(seed * 100_003 + i)
        out += to_pil(vc.sample(model, vae, features[i:i + batch], schedule, cfg=cfg, tau=tau, generator=g,
                                   pruning=pruning))
        if not quiet:
            print(f"  sampled {len(out)}/{len(jobs)}", file=sys.stderr, flush=True)
    return out


def rates(pictures, jobs, roundtrip) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(class, background) -> (pictures, on the requested background, showing the requested class, showing it by
    the references matched to ``roundtrip``)."""
    cells: dict[tuple[str, str], list[int]] = {}
    for image, (cls, background, _) in zip(pictures, jobs):
        n, bg_ok, cls_ok, matched_ok = cells.setdefault((cls, background), [0, 0, 0, 0])
        detected = world.detect_background(image)
        cells[cls, background] = [n + 1, bg_ok + (detected == background),
                                  cls_ok + (metrics.class_of(image, detected) == cls),
                                  matched_ok + (roundtrip is not None
                                                and metrics.class_of(image, detected, roundtrip) == cls)]
    return {k: tuple(v) for k, v in cells.items()}


def summary(cells, keys=None) -> dict[str, float]:
    """Rates over the (class, background) cells of ``rates`` (all cells by default): background, class, matched."""
    keys = list(cells) if keys is None else keys
    n = max(1, sum(cells[k][0] for k in keys))
    return {name: sum(cells[k][i] for k in keys) / n for i, name in ((1, "background"), (2, "class"), (3, "matched"))}


def follow(model, vae, text_encoder, pn: str, classes=None, backgrounds=None, seeds: int = 1, seed: int = 0,
           roundtrip=None, **sampling) -> tuple[dict, list[Image.Image], list]:
    """Sample every (class, background, k) and read it back: (rates' cells, pictures, jobs)."""
    classes = tuple(classes or world.CLASSES)
    backgrounds = tuple(backgrounds or world.BACKGROUNDS)
    jobs = [(c, b, k) for k in range(seeds) for c in classes for b in backgrounds]
    pictures = generate(model, vae, text_encoder, jobs, pn, seed=seed, **sampling)
    return rates(pictures, jobs, roundtrip), pictures, jobs
