"""Sampling speed and memory: seconds per image, tokens per second, peak memory, with and without the KV cache.

    python benchmarks/bench_sample.py                      # tiny random model on the CPU
    python benchmarks/bench_sample.py --size 2b --device cuda --pn 1M --dtype bf16 --no-compare-cache --per-scale
    python benchmarks/bench_sample.py --reference /tmp/infinity_ref --size 2b-narrow --threads 1 --reps 3

Weights are random (the architecture, not the checkpoint, decides the speed); text features are random T5-sized
rows, so the T5 encoder is not timed. The VAE decode is included.

Sizes: tiny (4 blocks of width 128, 16 bits, T5 width 256; 0.06M); 2b (Infinity-2B; 1M); 2b-narrow: Infinity-2B's
layout (8 chunks, head dim 128, FFN 4x, 32 bits, T5 width 2048, 16 text-pool heads, 512 null-text rows) at width 256
(2 heads) and depth 16 (2 blocks a chunk), with a d32 BitVAE of base width 32; 1M (1024², 13 scales). Depth 16, not
32: at 32 one run of our exact sampler took 85 s of CPU time on one thread (attention over the 10521 tokens dominates).

With --reference CHECKOUT (a checkout of github.com/FoundationVision/Infinity): the official sampler
(reference_infinity.py: its own classes, loaded with the same random weights) and ours side by side on the same text,
fp32, batch --batch. Rows: the reference, ours exact, ours with each --fast pruning (var_core.Pruning(scales, keep)).
Both sides: cfg on every scale, guided on the logits, tau, top-k, top-p (default 4, 0.5, 0, 0.97, the 2B release's;
the reference's tools/reproduce.py has cfg 3 and top-k 900, which keeps both outcomes of a two-way bit: the same work).
Timed: from the T5 features to the codes (transformer and sampler); --decode adds the BitVAE decode on both sides.
  1. Check that the two are the same model: the reference draws greedily (top-k 1), ours is forced to its codes, and
     the share of bits where our logits choose as it did is printed (this reference run compiles its fused norm).
     The sampled draws are not compared: both draw from the same seed, but their random streams differ.
  2. FLOPs per image of each row: matrix products, attention and convolutions, counted by torch.utils.flop_counter
     on one run (CPU attention by its formula, which torch registers for the CUDA kernels only; the reference's
     compiled norm runs eagerly meanwhile).
  3. --warmup untimed rounds, then --reps repetitions, each running every row once, the order rotated by one row each
     repetition. A row's ratio is the median (and range) over repetitions of its time / the reference's in the same
     repetition, of wall-clock and of process CPU time (steadier on a shared machine); s/image is the median
     wall-clock.
  4. --kernels: one more run of each row under torch.profiler: its time in attention kernels, in matrix products and
     in the rest. The exact sampler computes the reference's attention and matrix products (the same FLOPs), so the
     reference's time in them bounds how far any exact sampler's ratio goes down on this machine; so does its FLOPs
     at the machine's fastest fp32 rate, measured last (a 2048² matrix product, the last scale's attention call).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import peak_memory, reset_peak, sync  # noqa: E402
from var_core.checkpoint import DTYPES  # noqa: E402
from var_core.infinity.bitvae import BitVAE, BitVAEConfig  # noqa: E402
from var_core.sampling import sample  # noqa: E402
from var_core.schedules import num_tokens, scale_schedule  # noqa: E402
from var_core.infinity.model import Infinity, InfinityConfig  # noqa: E402
from var_core.pruning import Pruning  # noqa: E402

SIZES = {
    "tiny": (InfinityConfig(depth=4, embed_dim=128, num_heads=2, block_chunks=2, ffn_hidden=512, bits=16,
                            text_channels=256, text_maxlen=32, text_pool_heads=2),
             BitVAEConfig(d=16, base_ch=32)),
    "2b": (InfinityConfig(), BitVAEConfig(d=32, base_ch=128)),
    "2b-narrow": (InfinityConfig(depth=16, embed_dim=256, num_heads=2, ffn_hidden=1024),
                  BitVAEConfig(d=32, base_ch=32)),
}


def build(size: str, device, dtype, vae_dtype):
    tcfg, vcfg = SIZES[size]
    torch.manual_seed(0)
    with torch.device(device):
        model = Infinity(tcfg)
        vae = BitVAE(vcfg)
    for name, p in model.named_parameters():  # non-degenerate values where the default init is all zero
        if p.dim() <= 4 and not name.endswith("weight"):
            p.data.normal_(0, 0.02)
    model.cast_blocks(dtype).eval().requires_grad_(False)
    return model, vae.to(vae_dtype).eval().requires_grad_(False)


def random_text(args, model):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(args.text_len, model.config.text_channels, generator=g).to(args.device)
            for _ in range(args.batch)]


def settings(args) -> dict:
    return dict(cfg=args.cfg, tau=args.tau, top_k=args.top_k, top_p=args.top_p)


def run(args):
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model, vae = build(args.size, device, dtype, DTYPES[args.vae_dtype])
    schedule = scale_schedule(1.0, args.pn)
    L = num_tokens(schedule)
    text = random_text(args, model)
    print(f"size={args.size} device={device} dtype={args.dtype} vae={args.vae_dtype} pn={args.pn} scales={len(schedule)} "
          f"tokens={L} batch={args.batch} cfg={args.cfg}")
    runs = [(True, p) for p in [Pruning()] + args.fast] + ([(False, Pruning())] if args.compare_cache else [])
    for use_cache, pruning in runs:
        times = []
        for r in range(args.warmup + args.repeats):
            reset_peak(device)
            sync(device)
            t0 = time.perf_counter()
            images = sample(model, vae, text, schedule, **settings(args), seed=r, use_cache=use_cache, pruning=pruning)
            sync(device)
            if r >= args.warmup:
                times.append(time.perf_counter() - t0)
        sec = sorted(times)[len(times) // 2]
        fast = f"{pruning.scales} finest at {pruning.keep:g}" if pruning.scales else "exact"
        print(f"  kv_cache={str(use_cache):5} {fast:18} {sec / args.batch:8.3f} s/image  {sec:8.3f} s/batch  "
              f"{L * args.batch / sec:10.0f} tokens/s  peak {peak_memory(device)}  image {tuple(images.shape)}")
    if args.per_scale:
        print_per_scale(model, text, schedule, args, device)


def print_per_scale(model, text, schedule, args, device) -> None:
    """Milliseconds of each scale of the exact cached sampler (median over --reps, the device synchronised at every
    scale). Scales whose time does not grow with their tokens are bound by launching kernels, not by computing."""
    times = [[] for _ in schedule]
    for r in range(args.warmup + args.repeats):
        marks = []

        def mark(done, total):
            sync(device)
            marks.append(time.perf_counter())
        sync(device)
        marks.append(time.perf_counter())
        sample(model, None, text, schedule, **settings(args), seed=r, progress=mark)
        if r >= args.warmup:
            for k in range(len(schedule)):
                times[k].append(marks[k + 1] - marks[k])
    print("| scale | h x w | tokens | ms |")
    print("|---:|---|---:|---:|")
    for k, (h, w) in enumerate(schedule):
        print(f"| {k} | {h}x{w} | {h * w} | {statistics.median(times[k]) * 1e3:.2f} |")


# ------------------------------------------------------------------------------ side by side with the reference
# attention on the CPU, by its formula (torch registers it for the CUDA kernels only): QK^T and AV
def attention_flops(q, k, v, *_, **__) -> int:
    """QK^T and AV of shapes q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv)."""
    return 2 * math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}


def count_flops(fn) -> int:
    """FLOPs of one call fn(0): matrix products, attention, convolutions (the reference's compiled norm runs eagerly
    meanwhile: torch.compile refuses a dispatch mode)."""
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as c:
        fn(0)
    return c.get_total_flops()


# the kernels an exact sampler cannot skip: the same attention and matrix products on the same FLOPs
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def kernel_seconds(fn, device) -> dict:
    """Seconds of one call fn(0) in attention kernels, in matrix products and in all, by torch.profiler (self time
    of each op: on the CPU its host time, on a GPU its device time)."""
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn(0)
        sync(device)
    seconds = {"attention": 0.0, "matmul": 0.0, "all": 0.0}
    for e in prof.key_averages():
        if e.device_type != DeviceType.CPU:  # a GPU kernel's own row: its time is already its op's device time
            continue
        t = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6
        seconds["all"] += t
        if any(a in e.key for a in ATTENTION_OPS):
            seconds["attention"] += t
        elif e.key in MATMUL_OPS:
            seconds["matmul"] += t
    return seconds


def kernel_rates(model, schedule, rows: int, device) -> dict:
    """This machine's fp32 GFLOP/s in a 2048² matrix product and in the attention of the last scale (its queries over
    every key: the sampler's largest call)."""
    c, n, total = model.config, schedule[-1][0] * schedule[-1][1], num_tokens(schedule)
    a = torch.randn(2048, 2048, device=device)
    q = torch.randn(rows, c.num_heads, n, c.head_dim, device=device)
    kv = torch.randn(rows, c.num_heads, total, c.head_dim, device=device)
    calls = {"matrix product": (lambda: a @ a, 2 * 2048 ** 3),
             "attention": (lambda: F.scaled_dot_product_attention(q, kv, kv),
                           attention_flops(q.shape, kv.shape, kv.shape))}
    rates = {}
    for name, (fn, flop) in calls.items():
        fn()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        rates[name] = flop / (time.perf_counter() - t0) / 1e9
    return rates


def print_kernels(rows: dict, device, batch: int, reference_s: float, reference_gflop: float, rates: dict) -> None:
    """Where each row's time goes, and the floor under an exact sampler: it computes the reference's attention and
    matrix products (the same FLOPs), which take what they take in the reference's kernels, and at best the
    reference's FLOPs at this machine's fastest measured rate."""
    seconds = {name: kernel_seconds(fn, device) for name, fn in rows.items()}
    print("\nkernel time per image (one profiled run of each row; self time of the ops; the ratio is to the "
          "reference's median s/image above)")
    print("| row | attention s | matrix products s | the rest s | attention + matrix products / reference |")
    print("|---|---:|---:|---:|---:|")
    for name, s in seconds.items():
        rest = s["all"] - s["attention"] - s["matmul"]
        print(f"| {name} | {s['attention'] / batch:.3f} | {s['matmul'] / batch:.3f} | {rest / batch:.3f} | "
              f"{(s['attention'] + s['matmul']) / batch / reference_s:.2f}x |")
    best = max(rates.values())
    print(f"this machine, fp32: {', '.join(f'{k} {v:.0f} GFLOP/s' for k, v in rates.items())} (attention: the last "
          f"scale's call); the reference's {reference_gflop:.1f} GFLOP at {best:.0f} GFLOP/s take "
          f"{reference_gflop / best:.3f} s = {reference_gflop / best / reference_s:.2f}x the reference: no exact "
          f"sampler is faster here")


def agreement(ref, model, text, schedule, args) -> str:
    """The share of bits where ours, forced to the reference's greedy codes, chooses as the reference did."""
    greedy = {**settings(args), "top_k": 1}
    theirs = ref.codes(text, seed=0, **greedy)
    _, logits = sample(model, None, text, schedule, forced_codes=theirs, return_logits=True, **greedy)
    same = [(x.unflatten(-1, (-1, 2)).argmax(-1) == c.flatten(1, 2)).sum().item() for x, c in zip(logits, theirs)]
    worst = min(n / c.numel() for n, c in zip(same, theirs))
    return (f"the same model: ours forced to the reference's greedy codes chooses as it did on "
            f"{sum(same) / sum(c.numel() for c in theirs):.3%} of the bits (the lowest scale {worst:.3%})")


def time_rotating(rows: dict, reps: int, device) -> tuple[dict, dict]:
    """{row: [wall s]}, {row: [CPU s]}: every repetition runs every row once, the order rotated by one each time."""
    names = list(rows)
    wall, cpu = {n: [] for n in names}, {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            rows[name](r)
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def side_by_side(args):
    from benchmarks.reference_infinity import ReferenceSampler
    device = torch.device(args.device)
    model, vae = build(args.size, device, torch.float32, torch.float32)
    schedule = scale_schedule(1.0, args.pn)
    text = random_text(args, model)
    ref = ReferenceSampler(args.reference, model, vae, schedule)
    c = model.config
    print(f"size={args.size} (depth {c.depth}, width {c.embed_dim}, {c.num_heads} heads, {c.bits} bits, T5 width "
          f"{c.text_channels}; VAE base width {vae.config.base_ch}) device={device} fp32 threads="
          f"{torch.get_num_threads()} pn={args.pn} scales={len(schedule)} tokens={num_tokens(schedule)} "
          f"batch={args.batch} {settings(args)} decode={args.decode}", flush=True)
    print("  " + agreement(ref, model, text, schedule, args), flush=True)
    rows = {"reference": lambda seed: ref(text, **settings(args), seed=seed, decode=args.decode)}
    for p in [Pruning()] + args.fast:
        name = f"ours, {p.scales} finest scales at {p.keep:g}" if p.scales else "ours, exact"
        rows[name] = lambda seed, p=p: sample(model, vae if args.decode else None, text, schedule, **settings(args),
                                              seed=seed, pruning=p)
    flops = {name: count_flops(fn) / args.batch for name, fn in rows.items()}
    for _ in range(args.warmup):
        for fn in rows.values():
            fn(0)
    wall, cpu = time_rotating(rows, args.repeats, device)
    ratios = {clock: {n: [t / r for t, r in zip(times[n], times["reference"])] for n in rows}
              for clock, times in (("wall", wall), ("cpu", cpu))}
    shown = lambda x: f"{statistics.median(x):.2f}x ({min(x):.2f}–{max(x):.2f})"  # noqa: E731
    print(f"\n{args.size}, {args.pn}, batch {args.batch}, {args.repeats} repetitions after {args.warmup} warm-up, "
          f"{torch.get_num_threads()} threads, {'with' if args.decode else 'without'} the VAE decode")
    print("| row | s/image | / reference, wall (range) | / reference, CPU (range) | GFLOP/image | FLOPs / reference |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in rows:
        print(f"| {n} | {statistics.median(wall[n]) / args.batch:.3f} | {shown(ratios['wall'][n])} | "
              f"{shown(ratios['cpu'][n])} | {flops[n] / 1e9:.1f} | {flops[n] / flops['reference']:.2f} |")
    if args.kernels:
        print_kernels(rows, device, args.batch, statistics.median(wall["reference"]) / args.batch,
                      flops["reference"] / 1e9, kernel_rates(model, schedule, 2 * args.batch, device))


def fast_list(text: str) -> list[Pruning]:
    """"2:0.5,3:0.3" -> [Pruning(2, 0.5), Pruning(3, 0.3)]."""
    return [Pruning(int(s), float(k)) for s, k in (item.split(":") for item in text.split(",") if item)]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default bf16 on GPU, fp32 on CPU (--reference: fp32)")
    p.add_argument("--vae-dtype", choices=DTYPES, default="fp32", help="the VAE decoder's dtype (load_vae's default: fp32)")
    p.add_argument("--pn", default=None, help="resolution preset (default 0.06M on tiny, 1M on 2b and 2b-narrow)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.97)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", "--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-compare-cache", dest="compare_cache", action="store_false")
    p.add_argument("--per-scale", action="store_true",
                   help="also time every scale of the exact sampler (without --reference): where kernel launches bind")
    p.add_argument("--reference", metavar="CHECKOUT",
                   help="a checkout of github.com/FoundationVision/Infinity: its sampler and ours side by side (fp32)")
    p.add_argument("--fast", type=fast_list, default="2:0.5,3:0.3",
                   help="with --reference, the pruned rows of ours as scales:keep,... (default 2:0.5,3:0.3)")
    p.add_argument("--decode", action="store_true", help="with --reference, time the VAE decode on both sides too")
    p.add_argument("--kernels", action="store_true",
                   help="with --reference, also profile one run of each row: time in attention, matrix products, rest")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.pn = a.pn or ("1M" if a.size.startswith("2b") else "0.06M")
    side_by_side(a) if a.reference else run(a)
