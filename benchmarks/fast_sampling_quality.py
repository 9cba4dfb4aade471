"""What the sampler's fast option (fine-scale token pruning, var_core/pruning.py) costs in quality, on the embedded
model, side by side with the exact sampler: a tuned subject's identity and the variety of its samples.

    python benchmarks/fast_sampling_quality.py                       # exact, then --fast 2:0.5,1:0.5
    python benchmarks/fast_sampling_quality.py --fast 2:0.3 --seeds 8 --sample-seeds 0,1,2

Subjects: the bundled trained example subjects (var_core/bundle/subjects/*/subject.safetensors, tuned with the model's
defaults), each drawn in the first ``--contexts`` of method_toy's CONTEXTS that its photos do not show ("a photo of
<guide_dog> dog on the beach", ...), ``--seeds`` samples per prompt, with the base model's own cfg and tau (not its
with-subject ones: the figures in docs/benchmarks.md were measured so, and stay comparable). Measures, as
benchmarks/method_toy.py defines them: the subject is the nearest glyph, glyph agreement, the requested background, and
diversity (1 - mean pairwise EfficientNet-Lite0 cosine among one prompt's samples). Each figure is a mean over
(subject, context) cells, then mean ± std over ``--sample-seeds`` (the spread a different seed gives: a fast option
whose figures stay within the exact sampler's spread costs nothing measurable here). Prompt following (class and
background of plain prompts) is benchmarks/prompt_following.py with --prune-scales / --prune-keep.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from benchmarks.method_toy import (CONTEXTS, EffNetFeatures, background_rate, diversity, glyph_agreement,  # noqa: E402
                                   nearest_rate, subject_prompt)
from toyworld import world  # noqa: E402
from var_core import defaults  # noqa: E402
from var_core.embedded import PN, example_subjects, load_models  # noqa: E402
from var_core.images import to_pil  # noqa: E402
from var_core.tuning import apply_subjects, encode_prompts, load_subject  # noqa: E402

MEASURES = (("nearest", "subject is the nearest glyph ↑", "{:.1%}"), ("glyph", "glyph agreement ↑", "{:.3f}"),
            ("bg", "requested bg ↑", "{:.1%}"), ("diversity", "diversity", "{:.3f}"))


def run_setting(pruning, subjects, model, vae, encoder, effnet, args, seed) -> dict[str, float]:
    cells = []
    for info in subjects:
        delta = load_subject(info["subject"], model)
        view = apply_subjects(model, [(delta, 1.0)])
        member = world.find_member(info["member"])
        places = [c for c in CONTEXTS if c not in info["seen"]][:args.contexts]
        prompts = [subject_prompt(f"{delta.token} {info['class_word']}", c) for c in places]
        text = encode_prompts(encoder, [p for p in prompts for _ in range(args.seeds)], view)
        g = torch.Generator(model.device).manual_seed(seed)
        own = defaults.sampling(model)  # the base's (see above)
        images = to_pil(vc.sample(view, vae, text, vc.scale_schedule(1.0, PN), cfg=own["cfg"], tau=own["tau"],
                                  generator=g, pruning=pruning))
        for i, place in enumerate(places):
            samples = images[i * args.seeds:(i + 1) * args.seeds]
            cells.append({"nearest": nearest_rate(samples, member), "glyph": glyph_agreement(samples, member),
                          "bg": background_rate(samples, place), "diversity": diversity(effnet, samples)})
    return {key: float(np.mean([c[key] for c in cells])) for key, _, _ in MEASURES}


def bundled_subjects() -> list[dict]:
    """The bundled example subjects that were trained (example_subjects), each with the backgrounds its photos show."""
    return [{**info, "seen": {world.detect_background(Image.open(path).convert("RGB")) for path in info["photos"]}}
            for info in example_subjects().values() if info["subject"] is not None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", default="2:0.5,1:0.5", help="pruning settings SCALES:KEEP, comma-separated")
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=8, help="samples per prompt")
    parser.add_argument("--sample-seeds", default="0,1,2", help="one run of every setting per seed")
    args = parser.parse_args(argv)
    settings = [vc.Pruning()] + [vc.Pruning(int(s), float(k)) for s, k in
                                 (item.split(":") for item in args.fast.split(","))]
    seeds = [int(s) for s in args.sample_seeds.split(",")]
    model, vae, encoder = load_models()
    subjects = bundled_subjects()
    effnet = EffNetFeatures()
    print(f"subjects {[s['member'] for s in subjects]}, {args.contexts} contexts x {args.seeds} samples, seeds {seeds}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    results = {}
    for seed in seeds:  # settings alternate within a seed: a drift of the machine touches all alike
        for pruning in settings:
            t0 = time.perf_counter()
            results.setdefault(pruning, []).append(run_setting(pruning, subjects, model, vae, encoder, effnet, args,
                                                               seed))
            print(f"  seed {seed}, {pruning}: {results[pruning][-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| sampler | " + " | ".join(title for _, title, _ in MEASURES) + " |")
    print("|---|" + "---:|" * len(MEASURES))
    for pruning, runs in results.items():
        name = "exact" if not pruning.scales else f"pruned: last {pruning.scales} scales at {pruning.keep:g}"
        print(table_row(name, runs, MEASURES))


def table_row(name: str, runs: list[dict], measures) -> str:
    """'| name | mean ± std over the runs | ... |' for each (key, title, format) of measures."""
    cells = []
    for key, _, fmt in measures:
        values = [r[key] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{fmt.format(statistics.mean(values))} ± {fmt.format(spread)}")
    return f"| {name} | " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
