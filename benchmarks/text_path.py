"""Does the text carry the class? Per-scale cross-entropy of world pictures, teacher-forced, with the right caption,
a caption naming another class (same background), and the null text.

    python benchmarks/text_path.py                                            # the shipped bundle
    python benchmarks/text_path.py --checkpoint var_core/bundle/work/infinity_state.safetensors   # a pretraining run

If "wrong class" costs no more than "right", the transformer does not read the class word, and training longer on
the same recipe will not make it draw classes (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from toyworld import world  # noqa: E402
from toyworld.following import prompt  # noqa: E402
from var_core.infinity import quantizer  # noqa: E402
from var_core.family import Family  # noqa: E402
from var_core.embedded import BUNDLE, PN, load_models  # noqa: E402
from var_core.images import from_pil  # noqa: E402
from var_core.schedules import scale_schedule  # noqa: E402
from var_core.infinity.loss import bitwise_token_loss  # noqa: E402


def per_scale_loss(model, texts, inputs, labels, schedule) -> list[float]:
    with torch.no_grad():
        loss = bitwise_token_loss(model(texts, inputs, schedule), labels)  # (B, L)
    out, start = [], 0
    for h, w in schedule:
        out.append(loss[:, start:start + h * w].mean().item())
        start += h * w
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(BUNDLE), help="its BitVAE and T5 (and transformer, unless --checkpoint)")
    parser.add_argument("--checkpoint", default=None, help="a pretraining stage checkpoint (model.* tensors)")
    parser.add_argument("--split", default="prototypes", choices=world.SPLITS, help="members the pictures show")
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args(argv)

    model, vae, encoder = load_models(args.bundle)
    if args.checkpoint:
        from safetensors.torch import load_file
        tensors = load_file(args.checkpoint)
        model.load_state_dict({k[6:]: v.to(model.dtype) for k, v in tensors.items() if k.startswith("model.")})
    schedule = scale_schedule(1.0, PN)
    classes = list(world.CLASSES)
    pictures = [world.sample_scene(np.random.default_rng([99, i]), n_objects=1, split=args.split)
                for i in range(args.n)]
    latent = vae.encode_latent(torch.cat([from_pil(p.image) for p in pictures]))
    inputs, labels = quantizer.teacher_forcing(latent, schedule, 0.0, None)
    inputs, labels = torch.cat(inputs, 1), Family.flatten_codes(labels)
    truth = [(p.meta["objects"][0]["class"], p.meta["background"]) for p in pictures]
    right = encoder([prompt(c, b) for c, b in truth])
    wrong = encoder([prompt(classes[(classes.index(c) + 7) % len(classes)], b) for c, b in truth])
    null = [model.cfg_uncond[:t.shape[0]] for t in right]
    rows = [per_scale_loss(model, t, inputs, labels, schedule) for t in (right, wrong, null)]
    print(f"{args.n} pictures ({args.split}), {args.checkpoint or args.bundle}")
    print("| scale | right caption | another class | null text |\n|---|---:|---:|---:|")
    for k, (h, w) in enumerate(schedule):
        print(f"| {h}x{w} | {rows[0][k]:.4f} | {rows[1][k]:.4f} | {rows[2][k]:.4f} |")


if __name__ == "__main__":
    main()
