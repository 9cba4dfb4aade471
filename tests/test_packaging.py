"""The wheel carries what the library needs: built from this checkout, installed into a fresh virtual environment
and used from another folder, the embedded model loads and the demo's photos are there (no clone needed)."""
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info beside the sources
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "var_core", source / "var_core",
                    ignore=shutil.ignore_patterns("__pycache__", "work", "*.tmp"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_holds_the_bundle_and_nothing_of_the_test_bench(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("infinity.safetensors", "bitvae.safetensors", "manifest.json", "t5/config.json",
                 "t5/tokenizer.json", "subjects/guide_dog/0.png", "subjects/guide_dog/subject.safetensors"):
        assert f"var_core/bundle/{part}" in names, part
    assert not [n for n in names if n.startswith(("toyworld/", "tests/", "var_core/bundle/work/"))]


def test_installed_from_the_wheel_the_embedded_model_runs_elsewhere(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    # torch & co. from this environment (no download): its site-packages after the new one's (a .pth file)
    new_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(new_site, "parent_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    code = ("import var_core, var_core.embedded as e\n"
            "assert 'site-packages' in var_core.__file__, var_core.__file__\n"
            "model, vae, t5 = e.load_models()\n"
            "photos = e.example_subjects()['guide_dog']['photos']\n"
            "print(len(photos), model.config.depth, e.manifest()['world_version'])\n")
    done = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "4"
