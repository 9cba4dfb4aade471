"""The toy bundle's pretraining command, end to end at a tiny size: what it writes is read by the public loaders,
it resumes from its checkpoints, and the toy demo runs on what it wrote. (The quality of a fully trained bundle is
measured by benchmarks/prompt_following.py, not here.)"""
import json

import pytest

import var_core as vc
from var_core.toy.__main__ import main
from var_core.toy.embedded import PN, available, bundle_paths, example_subjects, manifest
from var_core.toy.world import HELD_OUT, find_member

TINY = ["--vae-steps", "2", "--vae-batch", "2", "--images", "16", "--steps", "2", "--batch", "4", "--depth", "2",
        "--width", "64", "--heads", "2", "--subject-steps", "2", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    assert main(["pretrain", "--out", str(out), *TINY]) == 0
    return out


def test_the_bundle_is_read_by_the_public_loaders(bundle):
    assert available(bundle)
    paths = bundle_paths(bundle)
    model, vae = vc.load_transformer(paths["transformer"]), vc.load_vae(paths["vae"])
    encoder = vc.load_text_encoder(paths["text_encoder"])
    assert model.config.depth == 2 and model.config.text_channels == encoder.width and vae.d == model.config.bits
    images = vc.sample(model, vae, encoder(["a photo of a dog on the beach"]), vc.scale_schedule(1.0, PN), seed=0)
    assert images.shape == (1, 3, 128, 128)
    info = manifest(bundle)
    assert info["command"].startswith("python -m var_core.toy pretrain") and info["world_version"]
    assert len(info["loss_curve"]["infinity_ce"]) == 2 and info["settings"]["steps"] == 2
    assert info["device"] == "cpu" and set(info["training_minutes"]) == {"bitvae", "infinity"}
    subjects = example_subjects(bundle)
    assert all(find_member(s["member"]) in HELD_OUT and len(s["photos"]) == 4 for s in subjects.values())
    trained = {name: s["subject"] for name, s in subjects.items() if s["subject"]}
    assert set(trained) == {"guide_dog", "teacup"}
    from var_core.tuning import load_subject
    assert load_subject(trained["teacup"], model).token == "<teacup>"


def test_pretraining_resumes_from_its_checkpoints(bundle):
    state = json.loads((bundle / "work" / "infinity_state.json").read_text())
    assert state["step"] == 2 and state["seconds"] > 0
    before = state["seconds"]
    args = list(TINY)
    args[args.index("--steps") + 1] = "3"
    assert main(["pretrain", "--out", str(bundle), *args]) == 0
    state = json.loads((bundle / "work" / "infinity_state.json").read_text())
    assert state["step"] == 3 and len(state["history"]["ce"]) == 3  # continued, not restarted
    assert state["seconds"] > before  # training time adds up over the runs that built the checkpoint


def test_the_demo_runs_on_a_bundle(bundle, tmp_path):
    from var_core.__main__ import main as cli
    out, work = tmp_path / "demo.png", ["--bundle", str(bundle), "--work", str(tmp_path / "w"), "--steps", "2"]
    assert cli(["demo", *work, "--out", str(out)]) == 0
    from PIL import Image
    assert Image.open(out).size == (8 * 128, 3 * (128 + 18))
    assert cli(["demo", *work, "--out", str(out)]) == 2  # refused: the grid exists
