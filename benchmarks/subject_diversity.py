"""Where a tuned subject's samples lose the variety of the base model: diversity and identity per setting.

    python benchmarks/subject_diversity.py                            # the bundled trained subjects, seeds 0,1
    python benchmarks/subject_diversity.py --rows own tau=0.5 tau=1,1,1,0.5,0.5 --sample-seeds 0,1,2
    python benchmarks/subject_diversity.py --subjects lion,dove --cache /tmp/subjects --rank 4

Subjects: ``bundled`` (the bundled trained subject files), or held-out members (a number n: the first of each of
method_toy's first n classes; or comma-separated names) tuned here with the model's own tuning defaults (``--steps``,
``--rank`` change them; ``--cache DIR`` keeps each tuned subject for the next run).
Rows: ``untuned`` (the untuned model drawing the class word in the same contexts: the variety to keep), ``own`` (the
subject with the sampler's settings a user gets: the model's own with a subject applied, defaults.sampling of the
view), or changes of those joined by '+': ``strength=0.7``, ``cfg=2``, ``tau=1.0``, ``tau=1,1,1,0.5,0.5`` (one value
per scale). Contexts and measures as in fast_sampling_quality.py (the subject is the nearest glyph; the requested
background; diversity: 1 - mean pairwise EfficientNet-Lite0 cosine among one prompt's samples); mean over (subject,
context) cells, ± std over --sample-seeds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from benchmarks.fast_sampling_quality import bundled_subjects, table_row  # noqa: E402
from benchmarks.method_toy import (CONTEXTS, PHOTOS, SIZE, EffNetFeatures, background_rate, diversity,  # noqa: E402
                                   nearest_rate, subject_prompt, subjects as held_out)
from toyworld import world  # noqa: E402
from var_core import defaults  # noqa: E402
from var_core.embedded import PN, load_models  # noqa: E402
from var_core.images import to_pil  # noqa: E402
from var_core.tuning import (SubjectDelta, SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, load_subject,  # noqa: E402
                             prepare_images, save_subject)

DEFAULT_ROWS = ("untuned", "own", "tau=0.5", "strength=0.7", "cfg=2")
MEASURES = (("nearest", "subject is the nearest glyph", "{:.1%}"), ("bg", "requested background", "{:.1%}"),
            ("diversity", "diversity", "{:.3f}"))


def parse_row(text: str) -> dict:
    """'untuned', 'own' or 'key=value+key=value' → {"strength", "cfg", "tau"} (None: the sampler's own)."""
    row = {"strength": None if text == "untuned" else 1.0, "cfg": None, "tau": None}
    for item in ([] if text in ("untuned", "own") else text.split("+")):
        key, _, value = item.partition("=")
        if key not in row or not value:
            raise SystemExit(f"row {text!r}: {item!r} is not strength=, cfg= or tau= with a value")
        values = [float(v) for v in value.split(",")]
        row[key] = values if key == "tau" and len(values) > 1 else values[0]
    return row


def tuned_subjects(which: str, model, vae, encoder, args) -> list[dict]:
    """Held-out members tuned with the model's defaults (or loaded from --cache), as bundled_subjects describes them."""
    out = []
    for member in held_out(which):
        photos = world.render_subject_photos(member, PHOTOS, SIZE, seed=0)
        path = args.cache and os.path.join(args.cache, f"{member.name.replace(' ', '_')}-r{args.rank}-s{args.steps}"
                                                       ".safetensors")
        if not (path and os.path.isfile(path)):
            t = time.perf_counter()
            config = TrainConfig(class_word=member.cls, rank=args.rank, steps=args.steps)
            data = prepare_images([p.image for p in photos], (SIZE, SIZE), config.token, config.class_word)
            trainer = SubjectTrainer(model, vae, encoder, data, config)
            trainer.run()
            print(f"  tuned {member.name} ({time.perf_counter() - t:.0f} s)", flush=True)
            if not path:
                out.append({"subject": trainer.delta, "member": member.name, "class_word": member.cls,
                            "seen": {p.meta["background"] for p in photos}})
                continue
            os.makedirs(args.cache, exist_ok=True)
            save_subject(trainer.delta, path, model)
        out.append({"subject": path, "member": member.name, "class_word": member.cls,
                    "seen": {p.meta["background"] for p in photos}})
    return out


def run_row(row, subjects, model, vae, encoder, effnet, args, seed) -> dict[str, float]:
    cells = []
    for info in subjects:
        delta = info["subject"] if isinstance(info["subject"], SubjectDelta) else load_subject(info["subject"],
                                                                                                  model)
        untuned = row["strength"] is None
        view = model if untuned else apply_subjects(model, [(delta, row["strength"])])
        own = defaults.sampling(view, cfg=row["cfg"], tau=row["tau"])  # a view's own: the with-subject settings
        noun = f"a {info['class_word']}" if untuned else f"{delta.token} {info['class_word']}"
        places = [c for c in CONTEXTS if c not in info["seen"]][:args.contexts]
        text = encode_prompts(encoder, [subject_prompt(noun, c) for c in places for _ in range(args.seeds)], view)
        g = torch.Generator(model.device).manual_seed(seed)
        images = to_pil(vc.sample(view, vae, text, vc.scale_schedule(1.0, PN), cfg=own["cfg"], tau=own["tau"],
                                  generator=g))
        member = world.find_member(info["member"])
        for i, place in enumerate(places):
            samples = images[i * args.seeds:(i + 1) * args.seeds]
            cells.append({"nearest": nearest_rate(samples, member), "bg": background_rate(samples, place),
                          "diversity": diversity(effnet, samples)})
    return {key: float(np.mean([c[key] for c in cells])) for key, _, _ in MEASURES}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", default="bundled", help="'bundled', a number, or held-out member names")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=8, help="samples per prompt")
    parser.add_argument("--sample-seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=None, help="tuning steps (default: the model's own)")
    parser.add_argument("--rank", type=int, default=TrainConfig.rank, help="LoRA rank of the subjects tuned here")
    parser.add_argument("--cache", help="keep the subjects tuned here in this folder, and reuse them")
    args = parser.parse_args(argv)
    rows = {text: parse_row(text) for text in args.rows}
    model, vae, encoder = load_models()
    args.steps = defaults.tuning(model, steps=args.steps)["steps"]
    subjects = bundled_subjects() if args.subjects == "bundled" else tuned_subjects(args.subjects, model, vae,
                                                                                    encoder, args)
    effnet = EffNetFeatures()
    seeds = [int(s) for s in args.sample_seeds.split(",")]
    print(f"subjects {[s['member'] for s in subjects]}, {args.contexts} contexts x {args.seeds} samples, seeds {seeds}",
          flush=True)
    results = {text: [] for text in rows}
    for seed in seeds:
        for text, row in rows.items():
            results[text].append(run_row(row, subjects, model, vae, encoder, effnet, args, seed))
            print(f"  seed {seed}, {text}: {results[text][-1]}", flush=True)
    print("\n| sampling | " + " | ".join(title for _, title, _ in MEASURES) + " |\n|---|" + "---:|" * len(MEASURES))
    for text, runs in results.items():
        print(table_row(text, runs, MEASURES))


if __name__ == "__main__":
    main()
