"""What fp8 weight storage (var_core/fp8.py) costs in pictures, on the embedded model, side by side with bf16 blocks
(the default on a GPU) and fp32 (the embedded model's own on the CPU):

    python benchmarks/fp8_quality.py                          # about 10 minutes on 2 CPU cores

* a tuned subject's identity: fast_sampling_quality.py's measures of the bundled example subjects (trained on the
  fp32 base, applied to each variant as a user would), --seeds samples in --contexts new contexts, over --sample-seeds;
* prompt following: prompt_following.py's class and background rates, every class on --backgrounds, --pf-seeds each.
Variants alternate within a seed, so a drift of the machine touches all alike. Everything at the model's own settings.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from benchmarks.fast_sampling_quality import MEASURES, bundled_subjects, run_setting, table_row  # noqa: E402
from benchmarks.method_toy import EffNetFeatures  # noqa: E402
from toyworld import metrics, world  # noqa: E402
from toyworld.following import generate, rates  # noqa: E402
from var_core.embedded import PN, bundle_paths, load_models  # noqa: E402

VARIANTS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": "fp8"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=8, help="samples per subject prompt")
    parser.add_argument("--sample-seeds", default="0,1,2")
    parser.add_argument("--backgrounds", default="red,blue,beach,snow,night")
    parser.add_argument("--pf-seeds", type=int, default=1, help="prompt-following samples per (class, background)")
    args = parser.parse_args(argv)
    _, vae, encoder = load_models()
    models = {name: vc.load_transformer(bundle_paths()["transformer"], "cpu", dtype)
              for name, dtype in VARIANTS.items()}
    effnet, subjects = EffNetFeatures(), bundled_subjects()
    identity = {name: [] for name in models}
    for seed in map(int, args.sample_seeds.split(",")):
        for name, model in models.items():
            identity[name].append(run_setting(vc.Pruning(), subjects, model, vae, encoder, effnet, args, seed))
    print("\n| blocks | " + " | ".join(title for _, title, _ in MEASURES) + " |")
    print("|---|" + "---:|" * len(MEASURES))
    for name, runs in identity.items():
        print(table_row(name, runs, MEASURES))

    backgrounds = tuple(args.backgrounds.split(","))
    jobs = [(c, b, k) for k in range(args.pf_seeds) for c in world.CLASSES for b in backgrounds]
    roundtrip = metrics.tokenizer_roundtrip(vae, vc.scale_schedule(1.0, PN))
    print(f"\nprompt following, {len(jobs)} pictures each\n\n| blocks | requested class | requested background |\n"
          "|---|---:|---:|")
    for name, model in models.items():
        cells = rates(generate(model, vae, encoder, jobs, PN, quiet=True), jobs, roundtrip)
        n = sum(v[0] for v in cells.values())
        print(f"| {name} | {sum(v[2] for v in cells.values()) / n:.1%} | {sum(v[1] for v in cells.values()) / n:.1%} |")


if __name__ == "__main__":
    main()
