"""The README's "what fits" table measured on a GPU acting as smaller cards (written for a few minutes on an H100;
not yet run):

    python benchmarks/gpu_memory.py                                   # every row of memory.py --plan
    python benchmarks/gpu_memory.py --models Infinity-2B --cards 8,12

Each model is built with random weights in its released architecture (memory depends on shapes, not values); text
features are random rows of T5's width (the T5 phase is its weights alone on the card, 2.3 GiB in fp16), and tuning
reads prompts with a small random T5 of that width. For every job and card the process's memory is capped at the
card's size (torch.cuda.set_per_process_memory_fraction), the blocks are resident or streamed as memory.py's plan
says (streaming.stream_blocks with the plan's resident count), and the job runs once after a warm-up: peak allocated
memory, seconds, or out-of-memory, beside the prediction; with bf16 blocks, then fp8 (fp8.py). First, for the slowdown: each job uncapped and resident, and
the host-to-device copy rate from pinned memory (the plan assumes 25 GB/s).
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
from benchmarks.memory import BLOCKS, CARDS, GIB, JOBS, MODELS, block_bytes, fit, peak_of  # noqa: E402
from toyworld.builders import subject_pictures  # noqa: E402
from var_core import load_text_encoder, sample  # noqa: E402
from var_core.infinity.bitvae import BitVAE  # noqa: E402
from var_core.fp8 import quantize_blocks  # noqa: E402
from var_core.infinity.model import Infinity  # noqa: E402
from var_core.schedules import pixel_size, scale_schedule  # noqa: E402
from var_core.streaming import stream_blocks  # noqa: E402
from var_core.tuning import SubjectTrainer, TrainConfig, prepare_images  # noqa: E402

DEVICE = torch.device("cuda")


def copy_rate() -> float:
    """Bytes/s of a 1 GiB pinned host-to-device copy."""
    host = torch.empty(GIB, dtype=torch.uint8).pin_memory()
    host.to(DEVICE, non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        host.to(DEVICE, non_blocking=True)
    torch.cuda.synchronize()
    return 3 * GIB / (time.perf_counter() - t0)


def build(name: str):
    """Random weights made on the GPU (fast), blocks in bf16 as loaded on CUDA; non-degenerate where the default
    init is zero."""
    cfg, vcfg = MODELS[name]
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model, vae = Infinity(cfg), BitVAE(vcfg)
    for n, p in model.named_parameters():
        if p.dim() <= 4 and not n.endswith("weight"):
            p.data.normal_(0, 0.02)
    return model.cast_blocks(torch.bfloat16).eval().requires_grad_(False), vae.eval().requires_grad_(False)


def job_runner(job: str, model, vae, encoder):
    """A callable that runs ``job`` once."""
    if job.startswith("sample"):
        pn = "0.25M" if "512" in job else "1M"
        text = [torch.randn(30, model.config.text_channels, device=DEVICE)]
        return lambda: sample(model, vae, text, scale_schedule(1.0, pn), cfg=4.0, tau=0.5, seed=0)
    size = pixel_size(scale_schedule(1.0, "0.25M"))
    data = prepare_images(list(subject_pictures(2, size[0])), size, "<placeholder>", "dog")
    config = TrainConfig(class_word="dog", pn="0.25M", batch_size=2, prior_samples=4, gradient_checkpointing=True,
                         steps=10**9)
    trainer = SubjectTrainer(model, vae, encoder, data, config)
    return trainer.step


def measure(run) -> tuple[float, float] | None:
    """(peak GiB, seconds) of one run after a warm-up, or None when it ran out of memory."""
    try:
        run()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / GIB, time.perf_counter() - t0
    except torch.OutOfMemoryError:
        return None


def main(args) -> None:
    from toyworld.t5 import make_t5
    total = torch.cuda.get_device_properties(DEVICE).total_memory
    print(f"{torch.cuda.get_device_name(DEVICE)}, {total / GIB:.1f} GiB; pinned host-to-device copies "
          f"{copy_rate() / 1e9:.1f} GB/s\n")
    print("| model | blocks | job | card | mode | predicted | measured peak | s | uncapped resident s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, vae = build(name)
        cfg = model.config
        encoder = load_text_encoder(make_t5(tempfile.mkdtemp() + "/t5", d_model=cfg.text_channels), DEVICE)
        for blocks in BLOCKS:  # bf16 first: quantizing is for good
            if blocks == "fp8":
                quantize_blocks(model)
            for job in JOBS:
                peak = peak_of(name, job, blocks)
                model.to(DEVICE)
                resident = measure(job_runner(job, model, vae, encoder))
                for card in map(int, args.cards.split(",")):
                    got = fit(peak, cfg, card, BLOCKS[blocks])
                    row = f"| {name} | {blocks} | {job} | {card} GB |"
                    if got is None:
                        print(f"{row} does not fit (plan) | | | | |", flush=True)
                        continue
                    n, streamed = got
                    predicted = peak - streamed + 2 * block_bytes(cfg, BLOCKS[blocks]) if streamed else peak
                    streaming = stream_blocks(model, DEVICE, n) if streamed else None
                    if streaming is None:
                        model.to(DEVICE)
                    torch.cuda.empty_cache()
                    torch.cuda.set_per_process_memory_fraction(min(1.0, card * GIB / total), DEVICE)
                    got_run = measure(job_runner(job, model, vae, encoder))
                    torch.cuda.set_per_process_memory_fraction(1.0, DEVICE)
                    if streaming is not None:
                        streaming.close()
                    mode = f"stream {cfg.depth - n} of {cfg.depth}" if streamed else "resident"
                    shown = "out of memory" if got_run is None else f"{got_run[0]:.2f} GiB | {got_run[1]:.2f}"
                    print(f"{row} {mode} | {predicted / GIB:.2f} GiB | {shown} | "
                          f"{resident[1] if resident else float('nan'):.2f} |", flush=True)
                    gc.collect()
        del model, vae, encoder
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cards", default=",".join(map(str, CARDS)), help="card sizes in GB (GiB), comma separated")
    main(parser.parse_args())
