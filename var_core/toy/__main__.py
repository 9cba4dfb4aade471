"""python -m var_core.toy pretrain --out DIR [...]: build the toy bundle from scratch (pretrain.py);
python -m var_core.toy demo [--bundle DIR] [--out demo.png]: teach it a held-out subject and show the result (demo.py)."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields


def main(argv=None) -> int:
    from .pretrain import PretrainConfig, pretrain

    parser = argparse.ArgumentParser(prog="python -m var_core.toy")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train the toy BitVAE and Infinity on the toy world (resumes in OUT/work)")
    p.add_argument("--out", required=True, help="bundle folder to write (the shipped one: var_core/toy/bundle)")
    for f in fields(PretrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    d = sub.add_parser("demo", help="teach a bundle a held-out subject from 4 photos; one grid PNG of the results")
    d.add_argument("--bundle", default=None, help="bundle folder (default var_core/toy/bundle)")
    d.add_argument("--subject", default="guide_dog")
    d.add_argument("--steps", type=int, default=150)
    d.add_argument("--out", default="demo.png")
    d.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import DemoConfig, run_demo
        out = run_demo(args.out, DemoConfig(subject=args.subject, steps=args.steps), args.bundle,
                       overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    command = "python -m var_core.toy " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = pretrain(args.out, cfg, command)
    print(f"wrote the bundle to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
