"""python -m toyworld pretrain --out DIR [...]: build the toy bundle from scratch (pretrain.py). The demo on a
bundle is the main command's: python -m var_core demo [--bundle DIR]."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields


def main(argv=None) -> int:
    from .pretrain import PretrainConfig, pretrain

    parser = argparse.ArgumentParser(prog="python -m toyworld")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train the toy BitVAE and Infinity on the toy world (resumes in OUT/work)")
    p.add_argument("--out", required=True, help="bundle folder to write (the shipped one: var_core/bundle)")
    for f in fields(PretrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=_parser(f.default), default=f.default)
    args = parser.parse_args(argv)
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    command = "python -m toyworld " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = pretrain(args.out, cfg, command)
    print(f"wrote the bundle to {out}")
    return 0


def _parser(default):
    """argparse type for a config field: '3,3,4' for tuples, yes/no for booleans."""
    if isinstance(default, tuple):
        return lambda text: tuple(int(v) for v in text.split(","))
    if isinstance(default, bool):
        return _yes_no
    return type(default)


def _yes_no(text: str) -> bool:
    value = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
