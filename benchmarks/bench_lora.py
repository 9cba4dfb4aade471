"""What running LoRA unmerged costs or saves against merging it into the weights on every block call.

    python benchmarks/bench_lora.py                       # a mid-size model on the CPU (fp32 and bf16 blocks)
    python benchmarks/bench_lora.py --device cuda --size 2b --pn 0.25M --dtypes bf16

Three ways to sample (seconds per image, CFG 4, VAE decode included) and to train (seconds per step, LoRA r16 on
ca+ffn of every block, no prior distillation): the base alone; the LoRA as an unmerged low-rank path (what the
library does); the same LoRA merged, W + s·B·A rebuilt in fp32 and rounded to the blocks' dtype for every block at
every scale (what it did before; kept here only to compare). Weights are random: speed depends on shapes only.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.bench_sample import build  # noqa: E402
from benchmarks.common import sync  # noqa: E402
from var_core.checkpoint import DTYPES  # noqa: E402
from var_core.family import Family  # noqa: E402
from var_core.sampling import sample  # noqa: E402
from var_core.schedules import scale_schedule  # noqa: E402
from var_core.infinity.loss import bitwise_cross_entropy  # noqa: E402
from var_core.infinity.layers import BlockPatch  # noqa: E402
from var_core.infinity.model import InfinityConfig  # noqa: E402
from var_core.tuning import SubjectDelta, apply_subjects  # noqa: E402
from var_core.tuning.apply import SubjectPatch  # noqa: E402
from var_core.infinity import quantizer  # noqa: E402
from benchmarks import bench_sample  # noqa: E402

bench_sample.SIZES["mid"] = (InfinityConfig(depth=8, embed_dim=512, num_heads=8, block_chunks=2, ffn_hidden=2048,
                                            bits=16, text_channels=256, text_maxlen=32, text_pool_heads=2),
                             bench_sample.SIZES["tiny"][1])


class MergedLoRA(SubjectPatch):
    """The former way: every LoRA merged into its weight (fp32, rounded to the stored dtype) at every block call."""

    def __call__(self, block, scale_index):
        target, merged = self.model.blocks[block], {}
        for delta, strength in self.entries:
            s = self.strength_at(strength, scale_index)
            for name in delta.block_names().get(block, ()):
                base = merged.get(name, target.get_parameter(name).float())
                merged[name] = base + s * delta.low_rank(block, name, 1.0).merged()
        weights = {n: w.to(target.get_parameter(n).dtype) for n, w in merged.items()}
        return BlockPatch(weights, {}) if weights else None


def timed(fn, device, repeats):
    """Median seconds of ``repeats`` calls after one warm-up (the median resists a busy machine)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run(args):
    device = torch.device(args.device)
    schedule = scale_schedule(1.0, args.pn)
    print(f"size={args.size} device={device} pn={args.pn} scales={len(schedule)} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    print(f"{'blocks':>6} {'what':>10} {'base':>9} {'unmerged':>9} {'merged':>9}   (seconds)")
    for name in args.dtypes.split(","):
        model, vae = build(args.size, device, DTYPES[name], torch.float32)
        delta = SubjectDelta.create(model, "lora", rank=16, placeholder_vectors=0,
                                    generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for k, t in delta.tensors.items():
                if k.startswith("lora_B"):
                    t.normal_(0, 1e-3)
        delta = delta.to(device)
        unmerged = apply_subjects(model, [(delta, 1.0)])
        merged = apply_subjects(model, [(delta, 1.0)])
        merged.patch = MergedLoRA(model, [(delta, 1.0)])
        g = torch.Generator().manual_seed(1)
        text = [torch.randn(12, model.config.text_channels, generator=g).to(device)]

        def sampler(m):
            return lambda: sample(m, vae, text, schedule, cfg=4.0, seed=0)
        row = [timed(sampler(m), device, args.repeats) for m in (model, unmerged, merged)]
        print(f"{name:>6} {'sample':>10} " + " ".join(f"{v:9.3f}" for v in row))

        bits = sample(model, None, text * 2, schedule, seed=0)
        bits = [b.clone() for b in bits]
        inputs = torch.cat(quantizer.inputs_from_bits(bits, schedule), 1)
        labels = Family.flatten_codes(bits)
        delta.requires_grad_(True)

        def step(m):
            def go():
                loss = bitwise_cross_entropy(m(text * 2, inputs, schedule), labels)
                if loss.requires_grad:
                    loss.backward()
            return go
        row = [timed(step(m), device, args.repeats) for m in (model, unmerged, merged)]
        delta.requires_grad_(False)
        print(f"{name:>6} {'train step':>10} " + " ".join(f"{v:9.3f}" for v in row) + "   (base: forward only)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid", choices=["tiny", "mid", "2b"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--pn", default="0.06M")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=3)
    run(p.parse_args())


if __name__ == "__main__":
    main()
