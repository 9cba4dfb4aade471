"""docs/cli.md from the parser itself, so the reference cannot drift from --help:

    python -m var_core.clidoc > docs/cli.md
"""
from __future__ import annotations

import argparse
import os

WIDTH = 100  # argparse wraps help to the terminal; the document is made at a fixed width

HEAD = """# Command line

Generated from the parser by `python -m var_core.clidoc > docs/cli.md` (a test checks it is current). Defaults written
"the model's own" come from the loaded model: the family's release values, or what the model file states (the
embedded model states its own).
"""


def document() -> str:
    os.environ["COLUMNS"] = str(WIDTH)
    from .cli.flags import build_parser
    parser = build_parser()
    parts = [HEAD, "```text", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += ["", f"## {name}", "", "```text", command.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(document(), end="")
