"""The command line: python -m var_core {sample,train,train-many,convert,demo} (flags.py declares every flag)."""
from __future__ import annotations

import sys

import torch

from .flags import add_train_arguments, build_parser, training_settings
from .sample import parse_subject_arg


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["add_train_arguments", "build_parser", "main", "parse_subject_arg", "training_settings"]
