"""Does the toy model draw what its prompt asks for? Rates of the requested background and the requested class.

    python benchmarks/prompt_following.py                                # the embedded bundle, 36 classes x 8 x 3
    python benchmarks/prompt_following.py --bundle /tmp/smoke --classes 4 --seeds 1 --grid /tmp/pf.png

For every class of the toy world, every background of ``--backgrounds`` (plain colours and scenes) and ``--seeds``
samples each, the prompt "a photo of a {class} {phrase}" (phrase: the background's first caption phrase, "on the
beach", "on a red background") is sampled from the bundle (by default with the model's own cfg and tau, top-p 0.97: what
a user gets). Each
picture is read back with the world's own measures (toyworld/metrics.py):

* requested background: world.detect_background finds the asked-for background;
* requested class: metrics.class_of, the class of the nearest of the 240 member references by the glyph descriptor;
* requested class, matched: the same against tokenizer-matched references (the references after the bundle's BitVAE
  encoded and decoded them, metrics.tokenizer_roundtrip): whether the transformer drew the class as well as its
  tokenizer can show one.

The same measures on clean world pictures of the same (class, background) grid (a training member of the class,
rendered by the world itself) give their ceiling: what a model that drew perfect world pictures would score; the
clean pictures after the BitVAE's round trip give the ceiling of a perfect transformer behind this tokenizer, against
plain references (what the class figure can reach) and matched ones.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from var_core.images import grid  # noqa: E402
from toyworld import metrics, world  # noqa: E402
from toyworld.following import generate, rates  # noqa: E402
from var_core import defaults  # noqa: E402
from var_core.embedded import BUNDLE, PN, load_models  # noqa: E402

DEFAULT_BACKGROUNDS = ("red", "blue", "white", "black", "beach", "snow", "desert", "night")


def table(generated, clean, clean_roundtrip, classes, backgrounds) -> list[str]:
    def total(cells, keys, i):
        n = sum(cells[k][0] for k in keys)
        return sum(cells[k][i] for k in keys) / max(1, n)

    def row(name, keys, bold=""):
        cols = [total(generated, keys, 1), total(generated, keys, 2), total(generated, keys, 3),
                total(clean, keys, 2), total(clean_roundtrip, keys, 2), total(clean_roundtrip, keys, 3)]
        return f"| {bold}{name}{bold} | " + " | ".join(f"{bold}{v:.1%}{bold}" for v in cols) + " |"

    lines = ["| background | requested background | requested class | requested class, matched | "
             "class on clean world pictures | class on clean pictures through the BitVAE | ... matched |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [row(b, [(c, b) for c in classes]) for b in backgrounds]
    lines.append(row("all", [(c, b) for c in classes for b in backgrounds], "**"))
    return lines


def class_line(generated, classes, backgrounds) -> str:
    """Requested-class rate per class (plain references), best first."""
    per = {c: sum(generated[c, b][2] for b in backgrounds) / sum(generated[c, b][0] for b in backgrounds)
           for c in classes}
    ranked = sorted(per.items(), key=lambda kv: -kv[1])
    return "per class (plain references): " + ", ".join(f"{c} {r:.0%}" for c, r in ranked)


def save_grid(pictures, jobs, backgrounds, path, rows: int = 12) -> None:
    """The first picture of each (class, background) for the first ``rows`` classes: classes down, backgrounds
    across."""
    first = {}
    for image, (cls, b, k) in zip(pictures, jobs):
        first.setdefault((cls, b), image)
    classes = list(dict.fromkeys(c for c, _, _ in jobs))[:rows]
    grid([(c, [first[c, b] for b in backgrounds]) for c in classes], pictures[0].width, label=0).save(path)
    print(f"grid: {path} (rows: {', '.join(classes)}; columns: {', '.join(backgrounds)})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(BUNDLE), help="folder with infinity.safetensors, bitvae.safetensors, "
                                                              "t5/ (default: the embedded bundle)")
    parser.add_argument("--backgrounds", default=",".join(DEFAULT_BACKGROUNDS),
                        help="comma-separated, or 'all' (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=0, help="only the first N classes (default: all 36)")
    parser.add_argument("--seeds", type=int, default=3, help="samples per (class, background)")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's own")
    parser.add_argument("--tau", type=float, default=None, help="default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prune-scales", type=int, default=vc.Pruning.scales,
                        help="the sampler's fast option (default %(default)s: off, the exact sampler)")
    parser.add_argument("--prune-keep", type=float, default=vc.Pruning.keep, help="default %(default)s")
    parser.add_argument("--grid", help="write a PNG grid of samples here")
    parser.add_argument("--write", help="write the table (markdown, with the command, machine and date) here")
    args = parser.parse_args(argv)

    backgrounds = world.BACKGROUNDS if args.backgrounds == "all" else tuple(args.backgrounds.split(","))
    unknown = [b for b in backgrounds if b not in world.BACKGROUNDS]
    if unknown:
        parser.error(f"unknown backgrounds {unknown}; the world has {', '.join(world.BACKGROUNDS)}")
    classes = tuple(world.CLASSES)[:args.classes or None]
    jobs = [(c, b, k) for k in range(args.seeds) for c in classes for b in backgrounds]
    print(f"{len(classes)} classes x {len(backgrounds)} backgrounds x {args.seeds} seeds = {len(jobs)} pictures; "
          f"bundle {args.bundle}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    model, vae, text_encoder = load_models(args.bundle)
    own = defaults.sampling(model, cfg=args.cfg, tau=args.tau)  # what a user gets unless told otherwise
    args.cfg, args.tau = own["cfg"], own["tau"]
    pruning = vc.Pruning(args.prune_scales, args.prune_keep)
    pictures = generate(model, vae, text_encoder, jobs, PN, args.batch, args.cfg, args.tau, args.seed,
                        pruning=pruning)
    t_sample = time.perf_counter() - t0
    roundtrip = metrics.tokenizer_roundtrip(vae, vc.scale_schedule(1.0, PN))
    generated = rates(pictures, jobs, roundtrip)
    clean_pictures = [p.image for p in metrics.clean_pictures(classes, backgrounds, per_cell=args.seeds,
                                                               seed=args.seed)]
    clean_jobs = [(c, b, k) for c in classes for b in backgrounds for k in range(args.seeds)]  # clean_pictures' order
    clean = rates(clean_pictures, clean_jobs, roundtrip)
    clean_roundtrip = rates(roundtrip(clean_pictures), clean_jobs, roundtrip)
    t_total = time.perf_counter() - t0

    lines = table(generated, clean, clean_roundtrip, classes, backgrounds)
    print("\n".join(lines))
    print(class_line(generated, classes, backgrounds))
    print(f"{t_sample:.0f} s to load and sample, {t_total:.0f} s in all")
    if args.grid:
        save_grid(pictures, jobs, backgrounds, args.grid)
    if args.write:
        given = argv if argv is not None else sys.argv[1:]
        command = shlex.join(["python", "benchmarks/prompt_following.py", *given])
        head = [f"`{command}` — {os.cpu_count()}-core CPU, torch {torch.__version__}, "
                f"{datetime.date.today().isoformat()}, {t_total / 60:.1f} min. Prompts \"a photo of a {{class}} "
                f"{{phrase}}\" for {len(classes)} classes x {len(backgrounds)} backgrounds x {args.seeds} seeds "
                f"(CFG {args.cfg:g}, tau {args.tau:g}, {pruning}); measures of toyworld/metrics.py.", ""]
        with open(args.write, "w", encoding="utf-8") as f:
            f.write("\n".join(head + lines + ["", class_line(generated, classes, backgrounds), ""]))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
