"""How far subject tuning's gradients on a bf16 or fp16 base are from the same step on the fp32 base.

The same random Infinity-layout model (scaled down in width and depth) is loaded in fp32, bf16 and fp16; one LoRA
training step (prior distillation on) computes the delta's gradients from the same photos and random streams.
Printed per dtype: the relative L2 error against fp32 and the share of gradient entries that are exactly zero where
fp32's are not (underflow), for fp16 with the trainer's loss scaling (its default) and without it.

    python benchmarks/grad_precision.py [--pn 0.25M] [--width 512] [--depth 4]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld.builders import compare_gradients, first_step_gradients, random_transformer, random_vae  # noqa: E402
from toyworld.t5 import make_t5  # noqa: E402
from var_core import load_text_encoder, load_transformer  # noqa: E402
from var_core.checkpoint import save_safetensors_atomic  # noqa: E402
from var_core.infinity.model import InfinityConfig  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pn", default="0.25M")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    config = InfinityConfig(depth=args.depth, embed_dim=args.width, num_heads=args.width // 64, block_chunks=2,
                            ffn_hidden=4 * args.width, bits=32, text_channels=64, text_maxlen=64, text_pool_heads=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_safetensors_atomic(random_transformer(config).state_dict(), path)
        make_t5(Path(folder) / "t5", d_model=64)
        encoder = load_text_encoder(Path(folder) / "t5")
        from var_core.infinity.bitvae import BitVAEConfig
        vae = random_vae(BitVAEConfig(d=32, base_ch=32))
        reference = first_step_gradients(load_transformer(path), vae, encoder, args.pn)
        print(f"width {args.width}, depth {args.depth}, {args.pn}, LoRA rank 8, one step, torch {torch.__version__}")
        print("| base dtype | loss scaling | relative error vs fp32 | gradients lost to zero |\n|---|---|---|---|")
        for name, dtype, scaled in (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                                    ("fp16", torch.float16, True)):
            error, lost = compare_gradients(reference, first_step_gradients(load_transformer(path, dtype=dtype), vae,
                                                                             encoder, args.pn, scaled))
            print(f"| {name} | {'yes (default)' if scaled else 'no'} | {100 * error:.2f} % | {100 * lost:.2f} % |")


if __name__ == "__main__":
    main()
