"""How well does the world's glyph classifier (toyworld/metrics.py) read pictures whose truth is known: clean world
pictures, and the same pictures after the bundle's BitVAE encoded and decoded them (what a perfect transformer behind
this tokenizer would draw), against plain references? And how does that depend on metrics.SHAPE_WEIGHT?

    python benchmarks/classifier.py                  # the embedded bundle's tokenizer, 3 x 560 pictures (~4 min)
    python benchmarks/classifier.py --per-cell 1 --weights 0.7

Picture sets (single objects, every class x every one of the 14 backgrounds x --per-cell): "selection" (seed 1) and
"validation" (seed 2) of training members (what a class prompt draws), "held-out" (seed 3) of all members, where the
member itself is also read (what the subject measures need). Reported per shape weight: class rate on clean and on
round-tripped pictures, and member rate on round-tripped held-out pictures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from toyworld import metrics, world  # noqa: E402
from var_core.embedded import BUNDLE, PN, load_models  # noqa: E402

SETS = (("selection", 1, "train"), ("validation", 2, "train"), ("held-out", 3, "all"))


def describe(images) -> list:
    """(background, glyph descriptor or None) of each image: what the classifier reads, whatever its weights."""
    out = []
    for image in images:
        background = world.detect_background(image)
        out.append((background, metrics.describe_object(image, background)))
    return out


def read(described, pictures) -> tuple[float, float]:
    """(class rate, member rate) of the classifier (at the current SHAPE_WEIGHT) on described images, whose truth is
    the pictures' meta."""
    classes = members = 0
    for (background, d), p in zip(described, pictures):
        nearest, truth = metrics.nearest_to(d, background), p.meta["objects"][0]
        classes += nearest is not None and nearest.cls == truth["class"]
        members += nearest is not None and nearest.name == truth["member"]
    return classes / len(pictures), members / len(pictures)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(BUNDLE), help="whose BitVAE makes the round trip (default: embedded)")
    parser.add_argument("--per-cell", type=int, default=2, help="pictures per (class, background) in each set")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
                        help="shape weights to read with (comma-separated)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    _, vae, _ = load_models(args.bundle)
    roundtrip = metrics.tokenizer_roundtrip(vae, vc.scale_schedule(1.0, PN))
    sets = []
    for name, seed, split in SETS:
        pictures = metrics.clean_pictures(backgrounds=world.BACKGROUNDS, per_cell=args.per_cell, seed=seed,
                                          split=split)
        with torch.no_grad():
            decoded = roundtrip([p.image for p in pictures])
        sets.append((name, pictures, describe([p.image for p in pictures]), describe(decoded)))
    print(f"{len(sets[0][1])} pictures per set; bundle {args.bundle}; metrics.SHAPE_WEIGHT = {metrics.SHAPE_WEIGHT}")
    print("| shape weight | " + " | ".join(f"{n}: class, clean | {n}: class, round trip" for n, _, _, _ in sets)
          + " | held-out: member, round trip |")
    print("|---:" * (2 * len(sets) + 2) + "|")
    default = metrics.SHAPE_WEIGHT
    try:
        for w in map(float, args.weights.split(",")):
            metrics.SHAPE_WEIGHT = w  # References.similarities reads it at call time; descriptors do not
            cells, member = [], 0.0
            for _, pictures, clean, decoded in sets:
                class_rt, member = read(decoded, pictures)  # member: kept from the last set, the held-out one
                cells += [read(clean, pictures)[0], class_rt]
            print(f"| {w:g} | " + " | ".join(f"{c:.1%}" for c in cells) + f" | {member:.1%} |", flush=True)
    finally:
        metrics.SHAPE_WEIGHT = default
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
