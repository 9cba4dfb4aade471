"""The install path users take: ComfyUI-Manager (comfyui-manager 4.3 from PyPI, in the test ComfyUI's venv; its CLI
cm-cli, since ComfyUI 0.3.75 has no --enable-manager) installs this repository from a git URL, offline (no registry
lookup), with the pack's requirements and without touching torch; ComfyUI then starts with the pack and runs a
template on the embedded model."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import COMFY, COMFY_PYTHON, ROOT, _require_comfyui, running_comfy
from workflows import api_twins, saved_images


def _torch_version() -> str:
    return subprocess.run([str(COMFY_PYTHON), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_comfyui_manager_installs_the_pack_and_a_template_runs(tmp_path):
    _require_comfyui()
    cm_cli = COMFY_PYTHON.parent / "cm-cli"
    if not cm_cli.exists():
        pytest.fail("comfyui-manager is not in the test ComfyUI's venv: run bash tests/comfyui/install.sh")
    comfy_dir = tmp_path / "ComfyUI"  # a ComfyUI of its own: the Manager writes into its custom_nodes
    shutil.copytree(COMFY, comfy_dir, ignore=shutil.ignore_patterns("custom_nodes", "user", "output", "input"))
    (comfy_dir / "custom_nodes").mkdir()
    repo = tmp_path / "comfyui-varbooth.git"  # what the pack's git URL serves: the committed repository
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(repo)], check=True)
    torch_before = _torch_version()
    proc = subprocess.run([str(cm_cli), "install", f"file://localhost{repo}", "--mode", "cache", "--exit-on-fail"],
                          env={"COMFYUI_PATH": str(comfy_dir), "PATH": str(COMFY_PYTHON.parent) + ":/usr/bin:/bin",
                               "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "[INSTALLED]" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    pack = comfy_dir / "custom_nodes" / "comfyui-varbooth"
    assert (pack / "__init__.py").is_file() and (pack / "var_core" / "bundle" / "infinity.safetensors").is_file()
    assert "requirements.txt" in proc.stdout or "pip" in proc.stdout  # the Manager ran the pack's install step
    assert _torch_version() == torch_before  # the Manager never touches torch

    with running_comfy(tmp_path / "comfyui.log", comfy_dir, comfy_dir=comfy_dir) as server:
        images = saved_images(server.url, api_twins()["text_to_image"])
    assert len(images) == 4 and all(im.size == (128, 128) for im in images)


def _validate(folder, home) -> subprocess.CompletedProcess:
    comfy_cli = COMFY_PYTHON.parents[2] / "comfy-cli" / "bin" / "comfy"
    if not comfy_cli.exists():
        pytest.fail("comfy-cli is not installed: run bash tests/comfyui/install.sh")
    return subprocess.run([str(comfy_cli), "--skip-prompt", "node", "validate"], cwd=folder, capture_output=True,
                          text=True, timeout=300, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


def test_the_comfy_registry_validator_accepts_the_pack(tmp_path):
    """comfy-cli's `comfy node validate` (what publishing to the Comfy Registry runs) on a clone: pyproject.toml's
    [project] and [tool.comfy] parse, and ruff's security rules find nothing; a broken pyproject is refused."""
    _require_comfyui()
    clone = tmp_path / "pack"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    proc = _validate(clone, tmp_path)
    said = proc.stdout + proc.stderr  # rich prints some lines to each
    assert proc.returncode == 0 and "All validation checks passed" in said and "Security warnings" not in said, said
    pyproject = clone / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "', 'version = "" # was "', 1))
    broken = _validate(clone, tmp_path)
    said = broken.stdout + broken.stderr
    assert broken.returncode != 0 and "version is empty" in said, said
