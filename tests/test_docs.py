"""One source for every default: the CLI reference is the parser's own text, every flag the docs name exists, and each
command run with no optional flags uses the settings the model states (the demo once trained 150 steps while the
embedded model and the README said 300, and nothing noticed)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from var_core import defaults, embedded
from var_core.cli import main
from var_core.cli.flags import build_parser
from var_core.clidoc import document

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# flags of other programs the docs mention: torchrun, pip, ComfyUI, the test bench's scripts
OTHER_PROGRAMS = {"--nproc_per_node", "--nnodes", "--max-restarts", "--rdzv-id", "--rdzv-endpoint", "--rdzv-backend",
                  "--index-url", "--extra-index-url", "--cpu", "--lowvram", "--novram", "--highvram",
                  "--reserve-vram", "--thumbnails", "--variants", "--vae-steps", "--plan"}


def commands() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


def test_the_cli_reference_is_the_parser_itself():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == document(), \
        "docs/cli.md is stale: python -m var_core.clidoc > docs/cli.md"


def test_every_flag_the_docs_name_exists():
    flags = commands()
    everywhere = set().union(*flags.values())
    wrong = []
    for doc in DOCS:
        if doc.name.startswith("benchmarks"):  # measurements quote the commands of their day
            continue
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"python -m var_core (\S+)([^`\n]*)", text):  # a command: its own flags
            if m[1] in flags:
                wrong += [f"{doc.name}: {m[1]} {f}" for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", m[2])
                          if f not in flags[m[1]]]
        wrong += [f"{doc.name}: {f}" for f in re.findall(r"(?<![\w#-])--[a-z][\w-]*", text)
                  if f not in everywhere | OTHER_PROGRAMS]
    assert not wrong, wrong


def test_help_states_the_defaults_the_code_uses(capsys):
    for argv, needles in ((["train", "-h"], [defaults.describe("tuning", k) for k in ("steps", "lr", "pn")]),
                          (["sample", "-h"], [defaults.describe("sampling", k) for k in ("cfg", "tau", "pn")])):
        with pytest.raises(SystemExit):
            main(argv)
        shown = " ".join(capsys.readouterr().out.split())
        assert all(n in shown for n in needles), (argv, needles)
    model_file = embedded.bundle_paths()["transformer"]
    from safetensors import safe_open
    with safe_open(str(model_file), framework="pt") as f:
        stated = json.loads(f.metadata()["tuning"])
    assert "300 for the embedded model" in defaults.describe("tuning", "steps") and stated["steps"] == 300


class Stop(Exception):
    """Raised where a command would start its long work, after it chose its settings."""


@pytest.fixture
def used(monkeypatch):
    """What a training command resolved: the TrainConfig its trainer got (the run itself is cut short)."""
    from var_core.tuning import SubjectTrainer
    seen = {}

    def stop(self, *args, **kwargs):
        seen["config"] = self.config
        raise Stop
    monkeypatch.setattr(SubjectTrainer, "draw_prior_bank", stop)
    monkeypatch.setattr(SubjectTrainer, "run", stop)
    return seen


def own_tuning() -> dict:
    return defaults.tuning(embedded.load_models()[0])


def test_demo_with_no_flags_tunes_with_the_embedded_models_own_settings(used, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(Stop):
        main(["demo", "--out", str(tmp_path / "demo.png")])
    own = own_tuning()
    c = used["config"]
    assert (c.steps, c.lr, c.embedding_lr, c.pn) == (own["steps"], own["lr"], own["embedding_lr"], own["pn"])
    assert c.steps == 300  # what the docs and the bundled subjects were measured with


def test_train_with_no_optional_flags_uses_the_models_own_settings(used, tmp_path, capsys):
    photos = embedded.example_subjects()["teacup"]["photos"][0].parent
    with pytest.raises(Stop):
        main(["train", "--images", str(photos), "--class", "cup", "--out", str(tmp_path / "cup.safetensors")])
    own = own_tuning()
    c = used["config"]
    assert (c.steps, c.lr, c.embedding_lr, c.pn) == (own["steps"], own["lr"], own["embedding_lr"], own["pn"])
    assert c.groups == ("ca", "ffn") and c.rank == 16  # the family's layers, the method's rank
    err = capsys.readouterr().err
    assert f"{own['steps']} steps" in err and "the model's own" in err


def test_train_many_jobs_use_the_models_own_settings(used, tmp_path):
    photos = embedded.example_subjects()["teacup"]["photos"][0].parent
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"images": str(photos), "class": "cup", "out": str(tmp_path / "cup.safetensors")}))
    assert main(["train-many", str(jobs)]) == 1  # the job "failed" where Stop cut it short
    assert used["config"].steps == own_tuning()["steps"]


def test_sample_with_no_optional_flags_uses_the_models_own_settings(tmp_path, capsys):
    assert main(["sample", "--prompt", "a photo of a dog", "--out", str(tmp_path / "dog.png")]) == 0
    own = defaults.sampling(embedded.load_models()[0])
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("cfg ")][0]
    assert line.startswith(f"cfg {own['cfg']:g}, tau {own['tau']:g}, top_k {own['top_k']}, top_p {own['top_p']:g}, "
                           f"pn {own['pn']}"), line
    assert "cfg, tau, top_k, top_p, pn: the model's own" in line


def test_without_torch_the_command_says_what_to_install_in_one_line():
    import subprocess
    import sys
    from var_core import NEEDS_TORCH
    blocked = "import sys; sys.modules['torch'] = None; sys.argv = {argv!r}; import var_core"
    as_command = subprocess.run([sys.executable, "-c", blocked.format(argv=["-m"])], capture_output=True, text=True,
                                cwd=ROOT)
    assert as_command.returncode == 1 and as_command.stderr.strip() == NEEDS_TORCH
    as_library = subprocess.run([sys.executable, "-c", blocked.format(argv=[""])], capture_output=True, text=True,
                                cwd=ROOT)
    assert as_library.returncode == 1 and as_library.stderr.strip().endswith(f"ModuleNotFoundError: {NEEDS_TORCH}")


def test_the_readmes_memory_table_is_the_memory_models_plan():
    from benchmarks.memory import readme_table
    assert readme_table() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "README.md's 'what fits' table is stale: python benchmarks/memory.py --plan prints it"
