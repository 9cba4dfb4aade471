"""Which block tensors a subject trains: parameter groups (sa, ca, ffn) over a range of blocks.

ARBooth's default is the cross-attention and the FFN of every block (1.61 B of Infinity-2B's 2.0 B parameters);
the self-attention, the norms, the AdaLN offsets, the text path and the head stay frozen.
"""
from __future__ import annotations

import re
from typing import Sequence

from ..infinity.model import Infinity

# Tensor names inside one block, per group (the released checkpoint's names, under block_chunks.{c}.module.{j}.).
GROUPS = {
    "sa": ("sa.mat_qkv.weight", "sa.q_bias", "sa.v_bias", "sa.scale_mul_1H11", "sa.proj.weight", "sa.proj.bias"),
    "ca": ("ca.mat_q.weight", "ca.mat_q.bias", "ca.mat_kv.weight", "ca.v_bias", "ca.proj.weight", "ca.proj.bias"),
    "ffn": ("ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias"),
}
DEFAULT_GROUPS = ("ca", "ffn")


def parse_groups(groups: str | Sequence[str]) -> tuple[str, ...]:
    """'ca,ffn' / ['ca', 'ffn'] / 'all' -> ('ca', 'ffn') in canonical order."""
    names = [g.strip().lower() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    if "all" in names:
        names = list(GROUPS)
    unknown = sorted(set(names) - set(GROUPS))
    if unknown or not names:
        raise ValueError(f"Unknown layer groups {unknown or names}: choose from {', '.join(GROUPS)} or 'all'.")
    return tuple(g for g in GROUPS if g in names)


def parse_blocks(blocks: str | Sequence[int] | None, depth: int) -> tuple[int, ...]:
    """None / 'all' -> every block; '0-15' or '0-7,24-31' -> those blocks (inclusive); a list of ints as is."""
    if blocks is None or (isinstance(blocks, str) and blocks.strip().lower() in ("", "all")):
        return tuple(range(depth))
    if isinstance(blocks, str):
        out = []
        for part in blocks.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise ValueError(f"Block range {blocks!r}: write it like '0-15' or '0-7,24-31'.")
            lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
            out.extend(range(lo, hi + 1))
        blocks = out
    chosen = sorted(set(int(b) for b in blocks))
    bad = [b for b in chosen if not 0 <= b < depth]
    if bad or not chosen:
        raise ValueError(f"Blocks {bad or 'none'} are out of range: this model has blocks 0-{depth - 1}.")
    return tuple(chosen)


def select_targets(model: Infinity, groups=DEFAULT_GROUPS, blocks=None) -> list[tuple[int, str]]:
    """(block index, tensor name inside the block) of every selected tensor, in a stable order."""
    groups = parse_groups(groups)
    return [(i, name) for i in parse_blocks(blocks, model.config.depth) for g in groups for name in GROUPS[g]]


def block_tensor(model: Infinity, block: int, name: str):
    """The stored tensor ``name`` of block ``block``."""
    return model.blocks[block].get_parameter(name)
