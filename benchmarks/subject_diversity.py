"""Where a tuned subject's samples lose the variety of the base model: diversity and identity per sampling setting.

    python benchmarks/subject_diversity.py                   # the bundled trained subjects, seeds 0,1
    python benchmarks/subject_diversity.py --sample-seeds 0,1,2 --seeds 8

Rows: the untuned model drawing the class word in the same contexts (the variety to keep), then the subject applied
with the model's own sampling settings (what a user gets), and one setting changed at a time: a lower subject
strength, a higher temperature (tau), a lower cfg. Subjects, contexts and measures as in fast_sampling_quality.py
(the subject is the nearest glyph; diversity: 1 - mean pairwise EfficientNet-Lite0 cosine among one prompt's
samples); mean over (subject, context) cells, ± std over --sample-seeds.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from benchmarks.fast_sampling_quality import bundled_subjects, table_row  # noqa: E402
from benchmarks.method_toy import CONTEXTS, EffNetFeatures, diversity, nearest_rate, subject_prompt  # noqa: E402
from toyworld import world  # noqa: E402
from var_core import defaults  # noqa: E402
from var_core.embedded import PN, load_models  # noqa: E402
from var_core.images import to_pil  # noqa: E402
from var_core.tuning import apply_subjects, encode_prompts, load_subject  # noqa: E402

# (row name, strength (None: the untuned model and the class word), cfg, tau (None: the model's own))
ROWS = (("untuned model, class word", None, None, None), ("subject, the model's own settings", 1.0, None, None),
        ("subject, strength 0.7", 0.7, None, None), ("subject, tau 1.0", 1.0, None, 1.0),
        ("subject, cfg 2", 1.0, 2.0, None))


def run_row(row, subjects, model, vae, encoder, effnet, args, seed) -> dict[str, float]:
    _, strength, cfg, tau = row
    own = defaults.sampling(model, cfg=cfg, tau=tau)
    cells = []
    for info in subjects:
        delta = load_subject(info["subject"], model)
        view = model if strength is None else apply_subjects(model, [(delta, strength)])
        noun = f"a {info['class_word']}" if strength is None else f"{delta.token} {info['class_word']}"
        places = [c for c in CONTEXTS if c not in info["seen"]][:args.contexts]
        text = encode_prompts(encoder, [subject_prompt(noun, c) for c in places for _ in range(args.seeds)], view)
        g = torch.Generator(model.device).manual_seed(seed)
        images = to_pil(vc.sample(view, vae, text, vc.scale_schedule(1.0, PN), cfg=own["cfg"], tau=own["tau"],
                                  generator=g))
        member = world.find_member(info["member"])
        for i in range(len(places)):
            samples = images[i * args.seeds:(i + 1) * args.seeds]
            cells.append({"nearest": nearest_rate(samples, member), "diversity": diversity(effnet, samples)})
    return {key: float(np.mean([c[key] for c in cells])) for key in ("nearest", "diversity")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=8, help="samples per prompt")
    parser.add_argument("--sample-seeds", default="0,1")
    args = parser.parse_args(argv)
    model, vae, encoder = load_models()
    subjects, effnet = bundled_subjects(), EffNetFeatures()
    seeds = [int(s) for s in args.sample_seeds.split(",")]
    print(f"subjects {[s['member'] for s in subjects]}, {args.contexts} contexts x {args.seeds} samples, seeds {seeds}",
          flush=True)
    results = {row[0]: [] for row in ROWS}
    for seed in seeds:
        for row in ROWS:
            results[row[0]].append(run_row(row, subjects, model, vae, encoder, effnet, args, seed))
            print(f"  seed {seed}, {row[0]}: {results[row[0]][-1]}", flush=True)
    print("\n| sampling | subject is the nearest glyph | diversity |\n|---|---:|---:|")
    for name, runs in results.items():
        print(table_row(name, runs, (("nearest", "", "{:.1%}"), ("diversity", "", "{:.3f}"))))


if __name__ == "__main__":
    main()
