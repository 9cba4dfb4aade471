"""Data-parallel subject tuning: seconds per step alone and under torchrun, and the bytes all-reduced per step.

    python benchmarks/bench_data_parallel.py                                          # 1 process, tiny random model
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_data_parallel.py        # the same global batch on 2
    python benchmarks/bench_data_parallel.py --volume-only                            # Infinity-2B's LoRA, no training

The tiny model is toyworld/builders' random one at 256² (0.06M), LoRA on ca+ffn, prior distillation on (a bank of 4
class samples, drawn before timing). Each step is timed between barriers; the median is printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from toyworld.builders import make_random_models, subject_pictures  # noqa: E402
from var_core import load_text_encoder, load_transformer, load_vae  # noqa: E402
from var_core.infinity.model import Infinity, InfinityConfig  # noqa: E402
from var_core.tuning import SubjectDelta, SubjectTrainer, TrainConfig, distributed, prepare_images  # noqa: E402


def allreduced_bytes(delta: SubjectDelta) -> int:
    """What Ranks.sum_gradients all-reduces per optimizer step: every trainable tensor's fp32 gradient."""
    return 4 * delta.num_parameters()


def infinity_2b_volume(rank: int = 16, groups=("ca", "ffn")) -> None:
    with torch.device("meta"):  # the architecture only: no weights are allocated
        model = Infinity(InfinityConfig())
    delta = SubjectDelta.create(model, "lora", groups, None, rank, None, 4)
    n, volume = delta.num_parameters(), allreduced_bytes(delta)
    print(f"Infinity-2B LoRA rank {rank} on {'+'.join(groups)} of {model.config.depth} blocks + 4 placeholder vectors: "
          f"{len(delta.tensors)} tensors, {n:,} trainable numbers, {volume / 1e6:.1f} MB ({volume / 2**20:.1f} MiB) "
          f"all-reduced per step in fp32")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--volume-only", action="store_true")
    args = p.parse_args()
    if args.volume_only:
        return infinity_2b_volume()
    ranks = distributed.start(torch.device("cpu"))
    folder = os.path.join(tempfile.gettempdir(), f"bench_data_parallel_{os.environ.get('TORCHELASTIC_RUN_ID', os.getpid())}")
    if ranks.is_main:
        os.makedirs(folder, exist_ok=True)
        make_random_models(folder)
    ranks.barrier()
    paths = make_random_models(folder)  # (the paths of what rank 0 wrote)
    model, vae = load_transformer(paths["transformer"]), load_vae(paths["vae"])
    images = prepare_images(list(subject_pictures(args.batch_size, 256)), (256, 256), "<placeholder>", "dog")
    config = TrainConfig(class_word="dog", pn="0.06M", batch_size=args.batch_size, steps=args.steps, prior_samples=4)
    trainer = SubjectTrainer(model, vae, load_text_encoder(paths["text_encoder"]), images, config, ranks=ranks)
    trainer.draw_prior_bank()
    times = []
    for _ in range(args.steps):
        ranks.barrier()
        t0 = time.perf_counter()
        trainer.step()
        ranks.barrier()
        times.append(time.perf_counter() - t0)
    if ranks.is_main:
        print(f"{ranks.world_size} process(es), {torch.get_num_threads()} thread(s) each, global batch "
              f"{args.batch_size}: median {statistics.median(times[2:]):.3f} s/step over steps 3-{args.steps}; "
              f"{trainer.num_trainable:,} trainable numbers, {allreduced_bytes(trainer.delta) / 1e3:.1f} kB "
              f"all-reduced per step")
    distributed.stop()


if __name__ == "__main__":
    main()
