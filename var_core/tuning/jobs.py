"""Jobs files for ``python -m var_core train-many``: several subjects to train, one ``train`` command each.

A job is a table of ``train``'s flags without their dashes: ``images``, ``class``, ``out`` (and ``token``), plus any
other setting, e.g. ``steps``, ``rank``, ``batch_size`` (or ``batch-size``), ``hflip = true``, ``groups = ["ca", "ffn"]``.
The file is JSON lines (one job per line), a JSON list of jobs, or TOML with ``[[jobs]]`` tables (or a JSON object
with a "jobs" list). Relative paths are relative to the current directory, as on the command line.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

ALIASES = {"class_word": "class"}
REQUIRED = ("images", "out")


def read_jobs(path) -> list[dict]:
    """The jobs listed in ``path`` (.jsonl, .json or .toml), each a dict of train settings."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Jobs file '{path}' does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            jobs = tomllib.loads(text).get("jobs")
        elif path.suffix.lower() == ".jsonl":
            jobs = [json.loads(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        else:
            jobs = json.loads(text)
            jobs = jobs.get("jobs") if isinstance(jobs, dict) else jobs
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"Jobs file '{path}' cannot be read: {e}.") from None
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) for j in jobs):
        raise ValueError(f"Jobs file '{path}' lists no jobs: write one JSON object per line (.jsonl), a JSON list of "
                         f"objects (.json), or [[jobs]] tables (.toml), each with images, class and out.")
    return jobs


def job_arguments(job: dict, known_flags) -> list[str]:
    """``train``'s command-line arguments for ``job``; ``known_flags``: train's option strings (e.g. '--batch-size').
    True means a bare flag, False or None leaves it out, a list is comma separated."""
    missing = [k for k in REQUIRED if k not in job]
    if missing:
        raise ValueError(f"Job {json.dumps(job)} has no {' or '.join(missing)}.")
    argv = []
    for key, value in job.items():
        flag = "--" + ALIASES.get(key, key).replace("_", "-")
        if flag not in known_flags:
            raise ValueError(f"Job setting {key!r} is not a flag of `python -m var_core train` (see its -h).")
        if value is None or value is False:
            continue
        argv.append(flag)
        if value is not True:
            argv.append(",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return argv
