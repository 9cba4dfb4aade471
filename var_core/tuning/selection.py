"""Which block tensors a subject trains: the family's parameter groups (Infinity: sa, ca, ffn) over a range of blocks.

ARBooth's default is the cross-attention and the FFN of every block (1.61 B of Infinity-2B's 2.0 B parameters);
the self-attention, the norms, the AdaLN offsets, the text path and the head stay frozen.
"""
from __future__ import annotations

import re
from typing import Sequence

def parse_groups(groups: str | Sequence[str], available: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """'ca,ffn' / ['ca', 'ffn'] / 'all' -> ('ca', 'ffn') in the order of ``available`` (a family's tuning_groups)."""
    names = [g.strip().lower() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    if "all" in names:
        names = list(available)
    unknown = sorted(set(names) - set(available))
    if unknown or not names:
        raise ValueError(f"Unknown layer groups {unknown or names}: choose from {', '.join(available)} or 'all'.")
    return tuple(g for g in available if g in names)


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


def select_targets(model, groups=None, blocks=None) -> list[tuple[int, str]]:
    """(block index, tensor name inside the block) of every selected tensor, in a stable order; groups None: the
    family's default (ARBooth's ca + ffn on Infinity)."""
    available = model.family.tuning_groups
    groups = parse_groups(groups or model.family.default_groups, available)
    return [(i, name) for i in parse_blocks(blocks, model.config.depth) for g in groups for name in available[g]]


def block_tensor(model, block: int, name: str):
    """The stored tensor ``name`` of block ``block``."""
    return model.blocks[block].get_parameter(name)
