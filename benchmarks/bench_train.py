"""Subject-tuning speed and memory: seconds per step and peak memory, LoRA and full-delta modes, with and without
prior distillation.

    python benchmarks/bench_train.py                                  # tiny random model on the CPU
    python benchmarks/bench_train.py --size 2b --device cuda          # Infinity-2B architecture, 512² and 1024²
    python benchmarks/bench_train.py --modes full,lora --reference ~/ARBooth   # side by side with ARBooth's code

Weights are random (the architecture decides speed and memory); the text encoder is a 2-layer T5 of the right width
(T5 runs once before training and is not timed). Frozen blocks are bf16 on the GPU, trainable tensors fp32.
With --reference (a checkout of github.com/jiwoogit/ARBooth), its training iteration runs on the same weights, photos
and batch (reference_arbooth.py), and each distilling row says how its time per step, the first step (the teacher's
sample bank) spread over --iterations, compares.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.bench_sample import SIZES, build  # noqa: E402
from var_core.checkpoint import DTYPES  # noqa: E402
from benchmarks.common import peak_memory, reset_peak, sync  # noqa: E402
from var_core.schedules import pixel_size, scale_schedule  # noqa: E402
from var_core.infinity.t5 import load_text_encoder  # noqa: E402
from toyworld.builders import subject_pictures  # noqa: E402
from toyworld.t5 import make_t5  # noqa: E402
from var_core.tuning import SubjectTrainer, TrainConfig, prepare_images  # noqa: E402


def run(args):
    device = torch.device(args.device)
    model, vae = build(args.size, device, DTYPES[args.dtype], DTYPES[args.dtype])
    encoder = load_text_encoder(make_t5(tempfile.mkdtemp() + "/t5", d_model=model.config.text_channels))
    pns = args.pn.split(",") if args.pn else (["0.25M", "1M"] if args.size == "2b" else ["0.06M"])
    print(f"size={args.size} device={device} frozen blocks={args.dtype} batch={args.batch_size} "
          f"checkpointing={args.checkpointing}")
    for pn in pns:
        size = pixel_size(scale_schedule(1.0, pn))
        data = prepare_images(list(subject_pictures(4, size[0])), size, "<placeholder>", "dog")
        reference = time_reference(args, model, vae, encoder, data, pn) if args.reference else None
        for mode in args.modes.split(","):
            for prior in (0.0, 0.5):
                cfg = TrainConfig(class_word="dog", mode=mode, rank=args.rank, pn=pn, batch_size=args.batch_size,
                                  prior_weight=prior,
                                  gradient_checkpointing={"on": True, "off": False}.get(args.checkpointing),
                                  steps=10**9)
                trainer = None
                try:
                    trainer = SubjectTrainer(model, vae, encoder, data, cfg)
                    reset_peak(device)  # the peak of the whole run, teacher bank included
                    sync(device)
                    t0 = time.perf_counter()
                    trainer.step()  # includes drawing the teacher's sample bank when distilling
                    sync(device)
                    first = time.perf_counter() - t0
                    for _ in range(args.warmup - 1):
                        trainer.step()
                    sync(device)
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        trainer.step()
                    sync(device)
                    sec = (time.perf_counter() - t0) / args.steps
                    run = (first + (args.iterations - 1) * sec) / args.iterations  # the bank, spread over the run
                    versus = f"  {run / reference:.2f}x the reference" if reference and prior else ""
                    print(f"  {pn:>6} {mode:4} distill={prior:<3}  trains {trainer.num_trainable / 1e6:8.1f} M  "
                          f"{sec:6.3f} s/step  first step {first:5.1f} s  {args.iterations} steps "
                          f"{run * args.iterations / 60:5.1f} min ({run:.3f} s/step){versus}  "
                          f"peak {peak_memory(device)}",
                          flush=True)
                except torch.OutOfMemoryError:
                    print(f"  {pn:>6} {mode:4} distill={prior:<3}  out of memory", flush=True)
                finally:
                    del trainer
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()


def time_reference(args, model, vae, encoder, data, pn: str) -> float:
    """Seconds of one iteration of the reference ARBooth code (a checkout at args.reference) on the same weights,
    photos and batch size (reference_arbooth.py)."""
    from benchmarks.reference_arbooth import ReferenceIteration
    images = data.images[:args.batch_size].to(model.device)
    ref = ReferenceIteration(args.reference, model, vae, encoder, images, "dog", pn)
    print(f"  {pn:>6} reference: the same model (largest logit difference {ref.max_logit_difference(model, vae):.1e}"
          f", its bf16 cross-attention)", flush=True)
    for _ in range(args.warmup):
        ref.step()
    sync(model.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        ref.step()
    sync(model.device)
    sec = (time.perf_counter() - t0) / args.steps
    print(f"  {pn:>6} reference ARBooth iteration (CA + FFN full, prior distillation)  trains "
          f"{ref.trainable() / 1e6:8.1f} M  {sec:6.3f} s/step, of which the VAE encoding the photos "
          f"{ref.vae_seconds():.3f} s", flush=True)
    return sec


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="frozen blocks (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--pn", default=None, help="comma-separated presets (default 0.25M,1M on 2b; 0.06M on tiny)")
    p.add_argument("--modes", default="lora,full")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps, the first included (at least 1)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="gradient checkpointing (default auto: the library's, only when memory needs it)")
    p.add_argument("--iterations", type=int, default=500,
                   help="the run the first step (the teacher's bank) is spread over (default: ARBooth's 500)")
    p.add_argument("--reference", metavar="CHECKOUT",
                   help="a checkout of github.com/jiwoogit/ARBooth: time its iteration on the same weights too")
    a = p.parse_args()
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    run(a)
