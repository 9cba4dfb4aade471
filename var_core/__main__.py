"""Command line: python -m var_core {sample,convert,demo} ...  (python -m var_core <command> -h for the flags)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with transformers; degrade to plain text without it
        return lambda k, n: print(f"{desc}: {k}/{n}", file=sys.stderr)
    bar = tqdm(total=total, desc=desc, unit="scale")

    def update(k, n):
        bar.update(k - bar.n)
        if k == n:
            bar.close()
    return update


def _output_paths(out: str, count: int) -> list[Path]:
    out = Path(out)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:02d}{out.suffix or '.png'}") for i in range(count)]


def cmd_sample(args) -> int:
    import var_core as vc
    from var_core.images import load_image, save_png, to_pil

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype] if args.dtype else None
    schedule = vc.scale_schedule(args.aspect, args.pn)
    prompts = [p for p in args.prompt for _ in range(args.batch)]
    paths = _output_paths(args.out, len(prompts))
    clash = [str(p) for p in paths if p.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"Output exists: {', '.join(clash)}; choose another --out or pass --overwrite.")

    model = vc.load_transformer(args.model, device=device, dtype=dtype)
    vae = vc.load_vae(args.vae, device=device)
    vc.check_compatible(model, vae)
    encoder = vc.load_text_encoder(args.text_encoder, device=device)
    text = encoder(prompts)
    negative = encoder([args.negative] * len(prompts)) if args.negative is not None else None
    encoder.to("cpu")  # T5 is only needed once; give its memory back to the sampler
    del encoder
    forced = None
    if args.init_image:
        image = load_image(args.init_image, vc.pixel_size(schedule)).to(device)
        bits = vae.encode_bits(image, schedule)[:args.keep_scales]
        forced = [b.expand(len(prompts), *b.shape[1:]) for b in bits]
    images = vc.sample(model, vae, text, schedule, cfg=args.cfg, tau=args.tau, top_k=args.top_k,
                       top_p=args.top_p, seed=args.seed, negative=negative, forced_bits=forced,
                       progress=_progress(len(schedule), "sampling"))
    for pil, path in zip(to_pil(images), paths):
        save_png(pil, path, overwrite=args.overwrite)
        print(path)
    return 0


def cmd_convert(args) -> int:
    import var_core as vc
    from var_core.checkpoint import read_file, save_safetensors_atomic

    raw = read_file(args.input)
    kind = args.kind if args.kind != "auto" else vc.detect_kind(raw, args.input)
    dtype = DTYPES[args.dtype]
    if kind == "transformer":
        model = vc.load_transformer(raw, dtype=dtype if dtype != torch.float32 else None)
        tensors = dict(model.state_dict())
        if model.special_token is not None:
            tensors["special_token"] = model.special_token
    else:
        tensors = dict(vc.load_vae(raw).state_dict())
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": f"infinity-{kind}", "source": Path(args.input).name, "var_core": vc.__version__}
    out = save_safetensors_atomic(tensors, args.output, metadata=metadata, overwrite=args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(tensors)} tensors, {kind})")
    return 0


def cmd_demo(args) -> int:
    from var_core.toy import make_random_models

    folder = Path(args.models or tempfile.mkdtemp(prefix="var_core_demo_"))
    paths = make_random_models(folder)
    print(f"tiny random models in {folder} (untrained: the image is structured noise)")
    sample_args = build_parser().parse_args([
        "sample", "--model", str(paths["transformer"]), "--vae", str(paths["vae"]),
        "--text-encoder", str(paths["text_encoder"]), "--prompt", args.prompt, "--out", args.out,
        "--pn", "0.06M", "--seed", str(args.seed), "--device", "cpu"] + (["--overwrite"] if args.overwrite else []))
    return cmd_sample(sample_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m var_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="generate images from text")
    s.add_argument("--model", required=True, help="Infinity transformer (.pth or .safetensors)")
    s.add_argument("--vae", required=True, help="BitVAE (.pth or .safetensors)")
    s.add_argument("--text-encoder", required=True, help="flan-t5-xl folder (or encoder .safetensors file)")
    s.add_argument("--prompt", required=True, action="append", help="repeat for several prompts")
    s.add_argument("--negative", default=None, help="negative prompt (default: the model's learned null text)")
    s.add_argument("--out", required=True, help="output PNG (numbered when several images)")
    s.add_argument("--batch", type=int, default=1, help="images per prompt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cfg", type=float, default=4.0)
    s.add_argument("--tau", type=float, default=0.5)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--top-p", type=float, default=0.97)
    s.add_argument("--aspect", default="1.0", help="h/w as a number, 'h:w' (e.g. 3:4) or a template key")
    s.add_argument("--pn", default="1M", help="resolution preset: 0.06M, 0.25M, 0.60M, 1M (or 256/512/768/1024)")
    s.add_argument("--init-image", default=None, help="image for variations: its first scales are kept")
    s.add_argument("--keep-scales", type=int, default=4, help="with --init-image: how many scales to keep")
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", choices=DTYPES, default=None, help="transformer blocks (default bf16 on GPU)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("convert", help="rewrite a checkpoint as safetensors (validated, optionally bf16)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--kind", choices=["auto", "transformer", "vae"], default="auto")
    c.add_argument("--dtype", choices=DTYPES, default="fp32", help="bf16 halves the transformer's blocks")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("demo", help="end-to-end run on a tiny random model the project makes itself")
    d.add_argument("--prompt", default="a photo of a dog")
    d.add_argument("--out", default="demo.png")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--models", default=None, help="folder for the tiny models (default: a temporary folder)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
