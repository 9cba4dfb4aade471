"""Subject tuning on VAR (tests/fixtures/var/tiny_var, a tiny model in the release layout) with the machinery of
every family: the subject is a learned class vector plus LoRA / full deltas of the layers the class acts through,
its file records family and base, strength 0 is the base exactly, several subjects and per-scale strengths apply."""
from pathlib import Path

import pytest
import torch

import var_core
from toyworld.builders import subject_pictures
from var_core.cli import main
from var_core.images import to_pil
from var_core.tuning import SubjectTrainer, TrainConfig, apply_subjects, load_subject, prepare_images

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "tests" / "fixtures" / "var" / "tiny_var"
SWITTI = ROOT / "tests" / "fixtures" / "switti" / "tiny_switti"
SETTINGS = dict(class_word="3", token="<sks>", rank=4, lr=3e-3, embedding_lr=3e-2, prior_samples=4, batch_size=2)


@pytest.fixture(scope="module")
def var():
    return var_core.load_transformer(VAR / "var_d2.pth"), var_core.load_vae(VAR / "vae_ch32v128z8.pth")


@pytest.fixture(scope="module")
def images():
    return prepare_images(list(subject_pictures(3, 128)), (128, 128), "<sks>", "3")


@pytest.fixture(scope="module")
def trained(var, images):
    """(trainer, the subject's loss on its photos before training) after 30 steps."""
    model, vae = var
    trainer = SubjectTrainer(model, vae, None, images, TrainConfig(steps=30, **SETTINGS))
    with torch.no_grad():
        before = trainer.instance_loss(list(range(3)))[0].item()
    trainer.run()
    return trainer, before


def test_the_subject_is_learned(trained):
    trainer, before = trained
    assert type(trainer).__name__ == "VARSubjectTrainer"
    with torch.no_grad():
        after = trainer.instance_loss(list(range(3)))[0].item()
    assert after < 0.7 * before, (before, after)  # the base's own class 3 does not fit the photos; the subject does


def test_the_subject_file_records_family_and_base_and_is_refused_elsewhere(trained, var, tmp_path):
    trainer, _ = trained
    path = trainer.save(tmp_path / "s.safetensors")
    subject = load_subject(path, var[0])
    assert subject.metadata["family"] == "var" and torch.equal(subject.placeholder, trainer.delta.placeholder.cpu())
    other = var_core.load_transformer(VAR / "var_d2.pth")
    with torch.no_grad():
        other.blocks[1].ffn.fc2.weight.mul_(1.05)
    with pytest.raises(ValueError, match="another base model"):
        load_subject(path, other)
    with pytest.raises(ValueError, match="'var' family; this base is Switti"):
        load_subject(path, var_core.load_transformer(SWITTI / "transformer"))


def test_strength_zero_is_the_base_drawing_the_class_and_strength_changes_the_picture(trained, var):
    trainer, _ = trained
    model, vae = var
    subject = trainer.delta.to("cpu", copy=True).requires_grad_(False)
    base = var_core.sample(model, vae, [3, 3], seed=5, return_logits=True)
    off = var_core.sample(apply_subjects(model, [(subject, 0.0)]), vae, ["<sks>", 3], seed=5, return_logits=True)
    on = var_core.sample(apply_subjects(model, [(subject, 1.0)]), vae, ["<sks>", 3], seed=5, return_logits=True)
    assert torch.equal(base[0], off[0]) and all(torch.equal(a, b) for a, b in zip(base[1], off[1]))
    assert not torch.equal(on[0][0], base[0][0])
    per_scale = var_core.sample(apply_subjects(model, [(subject, [1.0, 1.0, 0.0, 0.0])]), vae, ["<sks>"], seed=5,
                                return_logits=True)[1]
    assert not torch.equal(per_scale[1], base[1][1][:1]) and not torch.equal(per_scale[3], on[1][3][:1])


def test_two_subjects_apply_at_once(trained, var):
    trainer, _ = trained
    model, vae = var
    a = trainer.delta.to("cpu", copy=True).requires_grad_(False)
    b = trainer.delta.to("cpu", copy=True).requires_grad_(False)
    b.token = "<other>"
    both = apply_subjects(model, [(a, 1.0), (b, 0.5)])
    images = var_core.sample(both, vae, ["<sks>", "<other>"], seed=1)
    assert images.shape == (2, 3, 128, 128)


def test_the_cli_trains_a_var_subject_and_samples_it(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, picture in enumerate(to_pil(subject_pictures(2, 160))):
        picture.save(photos / f"{i}.png")
    model, vae, out = str(VAR / "var_d2.pth"), str(VAR / "vae_ch32v128z8.pth"), tmp_path / "s.safetensors"
    assert main(["train", "--model", model, "--vae", vae, "--images", str(photos), "--class", "3", "--token", "<sks>",
                 "--out", str(out), "--steps", "3", "--prior-samples", "2", "--device", "cpu"]) == 0
    assert f"--subject {out} --class '<sks>'" in capsys.readouterr().out
    assert main(["sample", "--model", model, "--vae", vae, "--subject", str(out), "--class", "<sks>", "--out",
                 str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "s.png").is_file()


@pytest.fixture(scope="module")
def switti():
    return (var_core.load_transformer(SWITTI / "transformer"), var_core.load_vae(SWITTI / "vae"),
            var_core.load_text_encoder(SWITTI / "text_encoder", text_encoder_2=SWITTI / "text_encoder_2"))


@pytest.fixture(scope="module")
def switti_trained(switti):
    model, vae, encoder = switti
    images = prepare_images(list(subject_pictures(3, 160)), (128, 128), "<sks>", "dog")
    trainer = SubjectTrainer(model, vae, encoder, images, TrainConfig(steps=30, **{**SETTINGS, "class_word": "dog"}))
    with torch.no_grad():
        before = trainer.instance_loss(list(range(3)))[0].item()
    trainer.run()
    return trainer, before


def test_switti_learns_the_subject_through_both_text_encoders(switti_trained):
    trainer, before = switti_trained
    assert type(trainer).__name__ == "SwittiSubjectTrainer" and trainer.sizes == [(160, 160)] * 3
    with torch.no_grad():
        after = trainer.instance_loss(list(range(3)))[0].item()
    assert after < 0.7 * before, (before, after)
    width = trainer.encoder.width  # the vectors moved in both encoders' input embeddings
    start = trainer._class_word_embedding()
    moved = (trainer.delta.placeholder.detach() - start).abs()
    assert moved[:, :width].max() > 1e-3 and moved[:, width:].max() > 1e-3


def test_switti_strength_zero_is_the_base_drawing_the_class_prompt(switti_trained, switti):
    trainer, _ = switti_trained
    model, vae, encoder = switti
    subject = trainer.delta.to("cpu", copy=True).requires_grad_(False)
    null = encoder([""])

    def draw(m, prompt):
        text = m.family.encode(m, encoder, [prompt])
        return var_core.sample(m, vae, text, negative=null, seed=3, return_logits=True)
    base = draw(model, "a photo of dog")
    off = draw(apply_subjects(model, [(subject, 0.0)]), "a photo of <sks> dog")
    on = draw(apply_subjects(model, [(subject, 1.0)]), "a photo of <sks> dog")
    assert torch.equal(base[0], off[0]) and all(torch.equal(a, b) for a, b in zip(base[1], off[1]))
    assert not torch.equal(base[0], on[0])
    half = draw(apply_subjects(model, [(subject, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])]), "a photo of <sks> dog")
    assert torch.equal(half[1][0], on[1][0]) and torch.equal(half[1][2], on[1][2])  # the same first scales
    assert not torch.equal(half[1][5], on[1][5])


def test_a_switti_subject_is_refused_by_var(switti_trained, var, tmp_path):
    trainer, _ = switti_trained
    path = trainer.save(tmp_path / "s.safetensors")
    assert load_subject(path, trainer.model).metadata["family"] == "switti"
    with pytest.raises(ValueError, match="'switti' family; this base is VAR"):
        load_subject(path, var[0])


def test_the_cli_trains_a_switti_subject_and_samples_it(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, picture in enumerate(to_pil(subject_pictures(2, 160))):
        picture.save(photos / f"{i}.png")
    files = ["--model", str(SWITTI / "transformer"), "--vae", str(SWITTI / "vae"), "--text-encoder",
             str(SWITTI / "text_encoder"), "--text-encoder-2", str(SWITTI / "text_encoder_2"), "--device", "cpu"]
    out = tmp_path / "s.safetensors"
    assert main(["train", *files, "--images", str(photos), "--class", "dog", "--token", "<sks>", "--out", str(out),
                 "--steps", "2", "--prior-samples", "2"]) == 0
    assert main(["sample", *files, "--subject", f"{out}:0.8", "--prompt", "a photo of <sks> dog", "--out",
                 str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize("family", ["switti", "var"])
def test_gradient_checkpointing_gives_the_same_gradients_with_a_subject(family, switti, var):
    """The subject's updates are on inside the recomputed blocks too (they are switched on per call)."""
    model, vae, encoder = switti if family == "switti" else (*var, None)
    word = "dog" if family == "switti" else "3"
    images = prepare_images(list(subject_pictures(2, 160)), (128, 128), "<sks>", word)

    def gradients(on):
        config = TrainConfig(steps=1, gradient_checkpointing=on, **{**SETTINGS, "class_word": word, "prior_weight": 0.0})
        trainer = SubjectTrainer(model, vae, encoder, images, config)
        with torch.no_grad():  # a non-zero LoRA B, so the A factors get gradients too
            for k, t in trainer.delta.tensors.items():
                if k.startswith("lora_B"):
                    t.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        trainer.instance_loss([0, 1])[0].backward()
        return trainer.checkpointing, {k: t.grad.clone() for k, t in trainer.delta.tensors.items()}
    (off_note, off), (on_note, on) = gradients(False), gradients(True)
    assert "off" in off_note and "on" in on_note
    assert all(torch.allclose(off[k], on[k], rtol=1e-5, atol=1e-7) for k in off)
    assert all(off[k].abs().sum() > 0 for k in off)
