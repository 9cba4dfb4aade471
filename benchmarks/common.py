"""Small helpers shared by the benchmark scripts."""
from __future__ import annotations

import resource
import sys

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> str:
    """Peak GPU memory allocated by torch, or on the CPU the process's peak resident set (includes Python itself)."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:6.2f} GiB"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return f"{rss / (2**30 if sys.platform == 'darwin' else 2**20):6.2f} GiB (process RSS)"
