"""The command line, end to end on tiny random models the project makes itself."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY
from var_core import load_transformer, load_vae
from var_core.__main__ import main
from var_core.bitvae import BitVAEConfig
from var_core.checkpoint import save_safetensors_atomic
from var_core.toy import make_random_models, random_vae

ROOT = Path(__file__).resolve().parents[1]


def _sample_args(toy_paths, out, *extra):
    return ["sample", "--model", str(toy_paths["transformer"]), "--vae", str(toy_paths["vae"]), "--text-encoder",
            str(toy_paths["text_encoder"]), "--prompt", "a photo of a dog", "--out", str(out), "--pn", "0.06M",
            "--device", "cpu", *extra]


def test_sample_writes_a_png_and_is_reproducible(toy_paths, tmp_path):
    assert main(_sample_args(toy_paths, tmp_path / "a.png", "--seed", "3")) == 0
    assert main(_sample_args(toy_paths, tmp_path / "b.png", "--seed", "3")) == 0
    assert main(_sample_args(toy_paths, tmp_path / "c.png", "--seed", "4", "--aspect", "3:4")) == 0
    a, b, c = (Image.open(tmp_path / f"{n}.png") for n in "abc")
    assert a.size == (256, 256) and c.size == (320, 240)  # 3:4 (h:w) -> template 0.75 at 0.06M: 15x20 tokens, 240x320 px
    assert a.tobytes() == b.tobytes()


def test_sample_never_overwrites_and_batches_are_numbered(toy_paths, tmp_path, capsys):
    out = tmp_path / "x.png"
    out.write_bytes(b"mine")
    assert main(_sample_args(toy_paths, out)) == 2
    assert out.read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
    assert main(_sample_args(toy_paths, tmp_path / "many.png", "--batch", "2", "--negative", "blurry")) == 0
    assert sorted(p.name for p in tmp_path.glob("many_*.png")) == ["many_00.png", "many_01.png"]


def test_variations_keep_the_coarse_scales(toy_paths, tmp_path):
    assert main(_sample_args(toy_paths, tmp_path / "src.png", "--seed", "1")) == 0
    assert main(_sample_args(toy_paths, tmp_path / "var.png", "--seed", "9", "--init-image", str(tmp_path / "src.png"),
                             "--keep-scales", "7")) == 0
    # keeping every scale reproduces the source up to one VAE round trip of an untrained VAE
    assert (tmp_path / "var.png").exists()


def test_convert_transformer_and_vae_to_safetensors(tmp_path):
    out = tmp_path / "t.safetensors"
    assert main(["convert", str(TINY / "transformer.pth"), str(out)]) == 0
    a, b = load_transformer(TINY / "transformer.pth"), load_transformer(out)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    half = tmp_path / "t16.safetensors"
    assert main(["convert", str(TINY / "transformer.pth"), str(half), "--dtype", "bf16"]) == 0
    assert half.stat().st_size < 0.75 * out.stat().st_size
    assert load_file(half)["block_chunks.0.module.0.ffn.fc1.weight"].dtype == torch.bfloat16
    assert load_transformer(half).compute_dtype == torch.float32  # on CPU the default compute dtype stays fp32
    vae_out = tmp_path / "v.safetensors"
    assert main(["convert", str(TINY / "vae.pth"), str(vae_out)]) == 0
    va, vb = load_vae(TINY / "vae.pth"), load_vae(vae_out)
    assert all(torch.equal(va.state_dict()[k], v) for k, v in vb.state_dict().items())
    assert main(["convert", str(TINY / "vae.pth"), str(vae_out)]) == 2  # exists: refused


def test_mismatched_vae_is_refused_naming_both_files(toy_paths, tmp_path, capsys):
    vae8 = tmp_path / "vae_d8.safetensors"
    save_safetensors_atomic(random_vae(BitVAEConfig(d=8, base_ch=32)).state_dict(), vae8)
    args = _sample_args(toy_paths, tmp_path / "o.png")
    args[args.index("--vae") + 1] = str(vae8)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "vae_d8.safetensors" in err and "toy_infinity.safetensors" in err and "8 bits" in err and "16" in err
    assert not (tmp_path / "o.png").exists()


def test_demo_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "var_core", "demo", "--out", str(tmp_path / "demo.png"),
                           "--models", str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "demo.png").size == (256, 256)
