"""Sampling speed and memory: seconds per image, tokens per second, peak memory, with and without the KV cache.

    python benchmarks/bench_sample.py                      # tiny random model on the CPU
    python benchmarks/bench_sample.py --size 2b --device cuda --pn 1M --dtype bf16

Weights are random (the architecture, not the checkpoint, decides the speed); text features are random T5-sized
rows, so the T5 encoder is not timed. The VAE decode is included.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import peak_memory, reset_peak, sync  # noqa: E402
from var_core.checkpoint import DTYPES  # noqa: E402
from var_core.infinity.bitvae import BitVAE, BitVAEConfig  # noqa: E402
from var_core.sampling import sample  # noqa: E402
from var_core.schedules import num_tokens, scale_schedule  # noqa: E402
from var_core.infinity.model import Infinity, InfinityConfig  # noqa: E402

SIZES = {
    "tiny": (InfinityConfig(depth=4, embed_dim=128, num_heads=2, block_chunks=2, ffn_hidden=512, bits=16,
                            text_channels=256, text_maxlen=32, text_pool_heads=2),
             BitVAEConfig(d=16, base_ch=32)),
    "2b": (InfinityConfig(), BitVAEConfig(d=32, base_ch=128)),
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


def run(args):
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model, vae = build(args.size, device, dtype, DTYPES[args.vae_dtype])
    schedule = scale_schedule(1.0, args.pn)
    L = num_tokens(schedule)
    g = torch.Generator().manual_seed(1)
    text = [torch.randn(args.text_len, model.config.text_channels, generator=g).to(device) for _ in range(args.batch)]
    print(f"size={args.size} device={device} dtype={args.dtype} vae={args.vae_dtype} pn={args.pn} scales={len(schedule)} "
          f"tokens={L} batch={args.batch} cfg={args.cfg}")
    for use_cache in ([True, False] if args.compare_cache else [True]):
        times = []
        for r in range(args.warmup + args.repeats):
            reset_peak(device)
            sync(device)
            t0 = time.perf_counter()
            images = sample(model, vae, text, schedule, cfg=args.cfg, tau=0.5, seed=r, use_cache=use_cache)
            sync(device)
            if r >= args.warmup:
                times.append(time.perf_counter() - t0)
        sec = sorted(times)[len(times) // 2]
        print(f"  kv_cache={str(use_cache):5}  {sec / args.batch:8.3f} s/image  {sec:8.3f} s/batch  "
              f"{L * args.batch / sec:10.0f} tokens/s  peak {peak_memory(device)}  image {tuple(images.shape)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--vae-dtype", choices=DTYPES, default="fp32", help="the VAE decoder's dtype (load_vae's default: fp32)")
    p.add_argument("--pn", default=None, help="resolution preset (default 0.06M on tiny, 1M on 2b)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compare-cache", dest="compare_cache", action="store_false")
    a = p.parse_args()
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.pn = a.pn or ("1M" if a.size == "2b" else "0.06M")
    run(a)
