"""The toy bundle's pretraining command, end to end at a tiny size: what it writes is read by the public loaders,
it resumes from its checkpoints, and the toy demo runs on what it wrote. (The quality of a fully trained bundle is
measured by benchmarks/prompt_following.py, not here.)"""
import json

import pytest

import var_core as vc
from toyworld.__main__ import main
from var_core.embedded import PN, available, example_subjects, load_models, manifest
from toyworld.world import HELD_OUT, find_member

TINY = ["--vae-steps", "2", "--vae-batch", "2", "--images", "16", "--steps", "2", "--batch", "4", "--depth", "2",
        "--width", "64", "--heads", "2", "--subject-steps", "2", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    assert main(["pretrain", "--out", str(out), *TINY]) == 0
    return out


def test_the_bundle_is_read_by_the_public_loaders(bundle):
    assert available(bundle)
    model, vae, encoder = load_models(bundle)
    assert model.config.depth == 2 and model.config.text_channels == encoder.width
    assert vae.d * vae.token_patch ** 2 == model.config.bits
    images = vc.sample(model, vae, encoder(["a photo of a dog on the beach"]), vc.scale_schedule(1.0, PN), seed=0)
    assert images.shape == (1, 3, 128, 128)
    info = manifest(bundle)
    assert info["command"].startswith("python -m toyworld pretrain") and info["world_version"]
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
    info = manifest(bundle)  # written by the code: every run of each stage, and the final prompt following
    assert info["runs"]["infinity"] == [{"from": 0, "to": 2, "of": 2}, {"from": 2, "to": 3, "of": 3}]
    assert info["settings"]["steps"] == 3 and 0 <= info["final"]["class_following"] <= 1
    # the example subjects follow the new base: tuned again, not left behind with the old fingerprint
    model, _, _ = load_models(bundle)
    from var_core.tuning import load_subject
    for s in example_subjects(bundle).values():
        if s["subject"]:
            load_subject(s["subject"], model)


def test_a_bundle_without_its_work_folder_continues_from_its_weights(bundle, tmp_path):
    """A fresh clone has the bundle but not its stage checkpoints: a longer run continues from the bundle's
    weights (the run says its optimizer state is fresh), and the finished BitVAE is not trained again."""
    import shutil
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("work"))
    before = manifest(copy)
    steps = before["settings"]["steps"]
    args = list(TINY)
    args[args.index("--steps") + 1] = str(steps + 1)
    assert main(["pretrain", "--out", str(copy), *args]) == 0
    info = manifest(copy)
    assert info["runs"]["bitvae"] == before["runs"]["bitvae"]
    assert info["runs"]["infinity"][:-1] == before["runs"]["infinity"]
    last = info["runs"]["infinity"][-1]
    assert (last["from"], last["to"], last["of"]) == (steps, steps + 1, steps + 1) and "fresh optimizer" in last["restart"]
    assert len(info["loss_curve"]["infinity_ce"]) == steps + 1  # the earlier curve, then this run's step
    assert info["training_minutes"]["infinity"] >= before["training_minutes"]["infinity"]


def test_cached_artefacts_follow_what_they_were_made_from(bundle):
    """The encoded dataset is made again when its pictures change; a stage checkpoint of another architecture is
    refused with a message naming both, never loaded half or silently thrown away."""
    from safetensors.torch import load_file
    args = list(TINY)
    args[args.index("--images") + 1] = "12"
    args[args.index("--steps") + 1] = "3"
    with pytest.raises(RuntimeError, match="infinity_state.*delete"):  # its dataset changed under it
        main(["pretrain", "--out", str(bundle), *args])
    assert load_file(str(bundle / "work" / "dataset.safetensors"))["latents"].shape[0] == 12
    with pytest.raises(RuntimeError, match="vae_state.*base_ch"):
        main(["pretrain", "--out", str(bundle), *TINY, "--vae-base-ch", "24"])


def test_only_the_toy_size_is_accepted(tmp_path):
    with pytest.raises(ValueError, match="128x128 bundles only"):
        main(["pretrain", "--out", str(tmp_path), *TINY, "--size", "64"])


def test_the_demo_runs_on_a_bundle(bundle, tmp_path):
    from var_core.cli import main as cli
    out, work = tmp_path / "demo.png", ["--bundle", str(bundle), "--work", str(tmp_path / "w"), "--steps", "2"]
    assert cli(["demo", *work, "--out", str(out)]) == 0
    from PIL import Image
    assert Image.open(out).size == (8 * 128, 3 * (128 + 18))
    assert cli(["demo", *work, "--out", str(out)]) == 2  # refused: the grid exists
