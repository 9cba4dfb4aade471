"""The samplers' fast option, the same on every family: fine-scale token pruning (var_core/pruning.py)."""
from __future__ import annotations

from comfy_api.latest import io

from var_core.pruning import Pruning


def inputs() -> list:
    return [io.Int.Input("prune_scales", default=Pruning.scales, min=0, max=16, optional=True,
                         tooltip=f"Faster: the finest N scales compute only part of their tokens (those with the "
                                 f"most detail); the others are taken from the scale before. 0 = off, the exact "
                                 f"sampler. Default {Pruning.scales}."),
            io.Float.Input("prune_keep", default=Pruning.keep, min=0.05, max=1.0, step=0.05, optional=True,
                           tooltip=f"With prune_scales: the fraction of each such scale's tokens computed. Default "
                                   f"{Pruning.keep:g}.")]


def summary(pruning: Pruning, K: int) -> str:
    """', scales 5-6 pruned to 50% of their tokens' (empty when off)."""
    pruned = [k for k in range(K) if pruning.keep_at(k, K) is not None]
    if not pruned:
        return ""
    where = f"scale {pruned[0]}" if len(pruned) == 1 else f"scales {pruned[0]}-{pruned[-1]}"
    return f", {where} pruned to {pruning.keep:.0%} of their tokens"
