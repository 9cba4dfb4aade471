"""What subject tuning must get exactly right: the text it trains on, small LoRA updates next to bf16 weights,
the base model's identity in every dtype, resuming, shared objects left untouched, and every training option."""
import copy
import hashlib
import os
import re
import subprocess
import sys

import pytest
import torch

from var_core import load_text_encoder, load_transformer, sample, scale_schedule
from var_core.family import Family
from var_core.checkpoint import CheckpointError, save_safetensors_atomic
from toyworld import builders
from toyworld.builders import random_transformer, subject_pictures
from var_core.tuning import (SubjectDelta, SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, folder_captions,
                             image_files, load_subject, prepare_images, save_subject, substitute)
from var_core.tuning.apply import SubjectPatch
from var_core.tuning.trainer import state_path

SCHEDULE = scale_schedule(1.0, "0.06M")


def make_trainer(toy, encoder=None, **kw):
    return builders.make_trainer(toy, encoder=encoder, **{"rank": 2, "prior_samples": 4, **kw})


def digest(delta: SubjectDelta) -> str:
    h = hashlib.sha256()
    for k in sorted(delta.tensors):
        h.update(k.encode() + delta.tensors[k].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- 1. the same text
def test_training_feeds_the_transformer_the_text_sampling_feeds_it(toy, toy_paths):
    fresh = load_text_encoder(toy_paths["text_encoder"])  # a new process's first training: nothing added before
    tr = make_trainer(toy, fresh, steps=1)
    with torch.no_grad():
        tr.delta.placeholder.normal_()
    trained_on = substitute(tr.text[0], {p: tr.delta.placeholder for p in tr.positions[0]})
    sampled_with = encode_prompts(fresh, tr.prompts, [tr.delta])[0]  # same batch: T5's arithmetic is the same
    assert tr.positions[0] == [3]  # "a photo of <placeholder> dog": one token
    assert torch.equal(trained_on, sampled_with)
    alone = encode_prompts(fresh, tr.prompts[:1], [tr.delta])[0]  # another batch size: only float rounding differs
    torch.testing.assert_close(alone, trained_on, rtol=1e-5, atol=1e-5)


TRAIN_SCRIPT = """
import hashlib, sys, torch
from var_core import load_text_encoder, load_transformer, load_vae
from var_core.tuning import SubjectTrainer, TrainConfig, prepare_images
sys.path.insert(0, {tests!r})
from test_tuning_exactness import digest
from toyworld.builders import subject_pictures
paths = {paths!r}
model, vae = load_transformer(paths["transformer"]), load_vae(paths["vae"])
enc = load_text_encoder(paths["text_encoder"])
cfg = TrainConfig(class_word="dog", pn="0.06M", rank=2, prior_samples=4, steps=2)
tr = SubjectTrainer(model, vae, enc, prepare_images(list(subject_pictures(2, 256)), (256, 256), cfg.token, "dog"), cfg)
tr.run()
print(digest(tr.delta))
"""


def test_identical_tunings_give_identical_subjects_in_one_process_and_in_two(toy, toy_paths):
    a, b = make_trainer(toy, steps=2), make_trainer(toy, steps=2)
    a.run(), b.run()
    assert digest(a.delta) == digest(b.delta)
    script = TRAIN_SCRIPT.format(tests=os.path.dirname(__file__), paths={k: str(v) for k, v in toy_paths.items()})
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout.split()[-1] == runs[1].stdout.split()[-1] == digest(a.delta)


# ------------------------------------------------------------------------------------------- 4. LoRA precision
def test_a_small_lora_survives_bf16_weights_and_strength_scales_it():
    model = random_transformer()
    bf16 = copy.deepcopy(model).cast_blocks(torch.bfloat16)
    delta = SubjectDelta.create(model, "lora", groups=("ffn",), rank=4, placeholder_vectors=0,
                                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # one Adam step's size: far below half a bf16 ulp of the weights (~2e-3 here)
        delta.tensors["lora_B.1.ffn.fc2.weight"].copy_(torch.randn(128, 4, generator=torch.Generator().manual_seed(1))
                                                       * 1e-4)
    x = torch.randn(2, 5, 512, generator=torch.Generator().manual_seed(2))
    fc2 = bf16.blocks[1].ffn.fc2
    lora_b = delta.tensors["lora_B.1.ffn.fc2.weight"]
    reference = x @ delta.tensors["lora_A.1.ffn.fc2.weight"].T @ lora_b.T  # fp32 (alpha/rank = 1)
    for strength in (1.0, 0.5):
        patch = SubjectPatch(bf16, [(delta, strength)])(1, 0)
        assert not patch.weights and patch.updates["ffn"]["fc2"]  # unmerged: the bf16 weight is not rebuilt
        from var_core.infinity.layers import linear
        with torch.autocast("cpu", dtype=torch.bfloat16):
            base = linear(x, fc2.weight, fc2.bias)
            patched = linear(x, fc2.weight, fc2.bias, patch.updates["ffn"]["fc2"])
        change = patched.float() - base.float()
        assert change.abs().max() > 0
        torch.testing.assert_close(change, strength * reference, rtol=1e-3, atol=2e-7)  # fp32 rounding of the sum
        merged = (fc2.weight.float() + strength * (lora_b @ delta.tensors["lora_A.1.ffn.fc2.weight"])).bfloat16()
        assert (merged != fc2.weight).float().mean() < 0.1  # merging in bf16 rounded away nearly all of the update
    # and through the whole model: the bf16 model's logits move with the tiny LoRA
    text = [torch.randn(5, 32, generator=torch.Generator().manual_seed(3))]
    bits = sample(bf16, None, text, SCHEDULE, seed=0)
    with torch.no_grad():
        plain = bf16.teacher_forced_logits(text, bits, SCHEDULE)
        tuned = apply_subjects(bf16, [(delta, 1.0)]).teacher_forced_logits(text, bits, SCHEDULE)
    assert (tuned - plain).abs().max() > 0


# ------------------------------------------------------------------------------------------- 5. fingerprint
def test_the_base_is_recognised_in_every_dtype_and_another_base_is_not(tmp_path):
    model = random_transformer()
    path = tmp_path / "model.safetensors"
    save_safetensors_atomic(model.state_dict(), path)
    delta = SubjectDelta.create(model, "lora", rank=2)
    subject = save_subject(delta, tmp_path / "s.safetensors", model)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        load_subject(subject, load_transformer(path, dtype=dtype))
    halved = load_transformer(path, dtype=torch.float16).cast_blocks(torch.bfloat16)  # fp16 -> bf16 double rounding
    load_subject(subject, halved)
    fp16_trained = save_subject(delta, tmp_path / "h.safetensors", load_transformer(path, dtype=torch.float16))
    load_subject(fp16_trained, model)
    with pytest.raises(CheckpointError, match="another base model"):
        load_subject(subject, random_transformer(seed=1))
    tweaked = copy.deepcopy(model)
    with torch.no_grad():
        tweaked.blocks[0].ffn.fc1.weight.mul_(1.05)  # a fine-tuned base is another base
    with pytest.raises(CheckpointError, match="another base model"):
        load_subject(subject, tweaked)


def test_the_fingerprint_sees_every_tensor_of_a_wide_base(tmp_path):
    """At widths where a few sampled corners say nothing (the earlier fingerprint read 24 values of 6 tensors), one
    block's FFN scaled x1.05, or every block weight replaced but those corners, is another base; bf16 and fp16
    copies of the same file are the same base; subject files with the earlier fingerprint still load."""
    from var_core.infinity.model import InfinityConfig
    from var_core import embedded
    wide = InfinityConfig(depth=4, embed_dim=512, num_heads=8, block_chunks=2, ffn_hidden=2048, bits=16,
                          text_channels=32, text_maxlen=64, text_pool_heads=1)
    model = random_transformer(wide)
    path = tmp_path / "wide.safetensors"
    save_safetensors_atomic(model.state_dict(), path)
    subject = save_subject(SubjectDelta.create(model, "lora", rank=2), tmp_path / "s.safetensors", model)
    for dtype in (torch.bfloat16, torch.float16):
        load_subject(subject, load_transformer(path, dtype=dtype))
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.blocks[2].ffn.fc2.weight.mul_(1.05)
    replaced = copy.deepcopy(model)
    with torch.no_grad():
        for name, t in replaced.block_chunks.named_parameters():
            if t.dim() == 2:
                corner = t[:8, :8].clone()
                t.copy_(torch.randn_like(t) * t.std())
                t[:8, :8] = corner  # what the earlier fingerprint read of block weights stays
    for other in (scaled, replaced):
        with pytest.raises(CheckpointError, match="another base model than this one"):
            load_subject(subject, other)
    earlier = load_subject(embedded.example_subjects()["guide_dog"]["subject"])
    assert not earlier.metadata["fingerprint"].startswith("v2:")  # the earlier format, accepted by its own test
    load_subject(embedded.example_subjects()["guide_dog"]["subject"],
                 load_transformer(embedded.bundle_paths()["transformer"]))


# ------------------------------------------------------------------------------------------- 6. resume
@pytest.mark.parametrize("kw", [{}, {"mode": "full", "separate_steps": True, "prior_samples": 0, "hflip": True}])
def test_two_steps_then_resume_two_equals_four_steps(toy, tmp_path, kw):
    straight = make_trainer(toy, steps=4, **kw)
    straight.run()
    path = tmp_path / "half.safetensors"
    first = make_trainer(toy, steps=2, **kw)
    first.run(checkpoint_path=path)
    assert state_path(path).is_file()
    model, vae, enc = toy
    data = prepare_images(list(subject_pictures(2, 256)), (256, 256), "<placeholder>", "dog")
    resumed = SubjectTrainer.resume(path, model, vae, enc, data, steps=4)
    assert resumed.step_count == 2 and "optimizer state" in resumed.notes
    resumed.run(checkpoint_path=tmp_path / "full.safetensors")
    assert digest(resumed.delta) == digest(straight.delta)
    assert load_subject(tmp_path / "full.safetensors").metadata["training"]["steps_done"] == 4


def test_resume_takes_the_files_settings_and_refuses_conflicting_ones(toy, tmp_path):
    path = tmp_path / "s.safetensors"
    make_trainer(toy, steps=1, rank=3, lr=2e-4, token="<sks>").run(checkpoint_path=path)
    saved = load_subject(path).metadata["training"]
    config = TrainConfig.resumed(saved, steps=5)
    assert (config.rank, config.lr, config.token, config.mode, config.steps) == (3, 2e-4, "<sks>", "lora", 5)
    assert TrainConfig.resumed(saved, rank=3).rank == 3  # agreeing is fine
    with pytest.raises(ValueError, match=r"rank=8 \(the file has 3\)"):
        TrainConfig.resumed(saved, rank=8)
    os.remove(state_path(path))
    model, vae, enc = toy
    data = prepare_images(list(subject_pictures(2, 256)), (256, 256), "<sks>", "dog")
    assert "optimizer starts afresh" in SubjectTrainer.resume(path, model, vae, enc, data).notes


def test_the_library_never_replaces_a_file_it_was_not_asked_to(toy, tmp_path):
    from var_core.tuning import train_subject
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"a file the user made")
    trainer = make_trainer(toy, steps=1)
    with pytest.raises(FileExistsError, match="already exists"):
        trainer.run(checkpoint_path=path)
    data = prepare_images(list(subject_pictures(2, 256)), (256, 256), "<placeholder>", "dog")
    with pytest.raises(FileExistsError, match="already exists"):
        train_subject(*toy, data, TrainConfig(class_word="dog", pn="0.06M", rank=2, steps=1), checkpoint_path=path)
    assert path.read_bytes() == b"a file the user made" and trainer.step_count == 0
    trainer.run(checkpoint_path=path, overwrite=True)  # asked for
    assert load_subject(path).metadata["training"]["steps_done"] == 1
    model, vae, enc = toy  # resuming a file rewrites that file: it is the training's own
    resumed = SubjectTrainer.resume(path, model, vae, enc, data, steps=2)
    resumed.run(checkpoint_path=path)
    assert load_subject(path).metadata["training"]["steps_done"] == 2


def test_a_damaged_state_or_subject_file_is_named_with_what_to_do(toy, tmp_path):
    """A truncated .state.safetensors and hand-edited subject metadata: a message naming the file and the remedy,
    not a raw SafetensorError / JSONDecodeError / int() traceback."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from var_core.checkpoint import CheckpointError
    path = tmp_path / "s.safetensors"
    make_trainer(toy, steps=1).run(checkpoint_path=path)
    model, vae, enc = toy
    data = prepare_images(list(subject_pictures(2, 256)), (256, 256), "<placeholder>", "dog")
    state = state_path(path)
    state.write_bytes(state.read_bytes()[:200])  # cut short, as by a full disk
    with pytest.raises(CheckpointError, match=rf"'{re.escape(str(state))}' cannot be read .*Delete '.*' to resume"):
        SubjectTrainer.resume(path, model, vae, enc, data, steps=2)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for key, value, says in (("rank", "sixteen", "rank='sixteen', which is not a whole number"),
                             ("training", "{steps: 3", "training='{steps: 3', which is not a JSON object"),
                             ("mode", "lorra", "mode='lorra'")):
        edited = tmp_path / f"edited_{key}.safetensors"
        save_file(tensors, str(edited), metadata={**meta, key: value})
        with pytest.raises(CheckpointError, match=re.escape(f"'{edited}' has the metadata {says}")):
            load_subject(edited)


def test_resume_refuses_other_photos_and_names_what_differs(toy, tmp_path):
    """A resume restores the data order of its checkpoint: it must get the photos (and captions) it was trained on."""
    path = tmp_path / "s.safetensors"
    make_trainer(toy, steps=1).run(checkpoint_path=path)
    model, vae, enc = toy
    same = list(subject_pictures(2, 256))
    cases = {"1 photos given, it was trained on 2": same[:1],
             "photo 2 differs": [same[0], same[1].flip(-1)],
             "photos 1, 2 differ": [p.flip(-2) for p in same]}
    for message, photos in cases.items():
        data = prepare_images(photos, (256, 256), "<placeholder>", "dog")
        with pytest.raises(ValueError, match=message):
            SubjectTrainer.resume(path, model, vae, enc, data, steps=2)
    captions = prepare_images(same, (256, 256), "<placeholder>", "dog",
                              ["a photo of <placeholder> dog", "a photo of <placeholder> dog at night"])
    with pytest.raises(ValueError, match="captions differ"):
        SubjectTrainer.resume(path, model, vae, enc, captions, steps=2)
    data = prepare_images(same, (256, 256), "<placeholder>", "dog")
    assert SubjectTrainer.resume(path, model, vae, enc, data, steps=2).step_count == 1  # the same inputs: fine


def test_gradient_checkpointing_belongs_to_the_training(toy):
    """Two trainings on one shared base: each keeps its own setting, and the base is left as it was."""
    model = toy[0]
    before = model.gradient_checkpointing
    on, off = make_trainer(toy, steps=1, gradient_checkpointing=True), make_trainer(toy, steps=1,
                                                                                   gradient_checkpointing=False)
    assert on.student.gradient_checkpointing and not off.student.gradient_checkpointing
    assert model.gradient_checkpointing == before


def test_gradient_checkpointing_by_default_only_when_a_step_would_not_fit(toy, monkeypatch):
    """Default (None): off when the step's activations fit in the free memory with room to spare, on when not; the
    decision and its two numbers are said (the CLI and the node show it)."""
    from var_core.tuning import memory
    auto = make_trainer(toy, steps=1)
    need = memory.training_activation_bytes(toy[0].config, auto.schedule, 2, toy[0].compute_dtype, False)
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(need / memory.HEADROOM) + 1)
    roomy = make_trainer(toy, steps=1)
    assert not roomy.student.gradient_checkpointing and roomy.checkpointing.startswith("gradient checkpointing off")
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(need / memory.HEADROOM) - 1)
    tight = make_trainer(toy, steps=1)
    assert tight.student.gradient_checkpointing and f"{need / 2**30:.2f} GiB of activations" in tight.checkpointing
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)
    assert make_trainer(toy, steps=1).student.gradient_checkpointing  # unknown: the safe choice


@pytest.mark.parametrize("bad", [dict(prior_weight=-0.5), dict(flip_prob=1.0), dict(flip_prob=-0.1),
                                 dict(weight_decay=-1e-3), dict(grad_clip=float("nan")), dict(warmup_steps=-1),
                                 dict(prior_top_p=0.0), dict(rank=0)])
def test_settings_that_cannot_be_right_are_refused(toy, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} = "):
        TrainConfig(class_word="dog", **bad).check()


def test_the_cli_resume_refuses_a_conflicting_option(toy_paths, tmp_path, capsys):
    from var_core.cli import main
    from var_core.images import save_png, to_pil
    folder = tmp_path / "photos"
    for i, img in enumerate(list(subject_pictures(2, 256))):
        save_png(to_pil(img[None])[0], folder / f"{i}.png")
    base = ["train", "--model", str(toy_paths["transformer"]), "--vae", str(toy_paths["vae"]), "--text-encoder",
            str(toy_paths["text_encoder"]), "--images", str(folder), "--pn", "0.06M"]
    out = tmp_path / "s.safetensors"
    assert main(base + ["--class", "dog", "--out", str(out), "--steps", "1", "--rank", "2"]) == 0
    assert main(base + ["--resume", str(out), "--out", str(out), "--steps", "2", "--rank", "4"]) != 0
    assert "rank=4 (the file has 2)" in capsys.readouterr().err
    assert main(base + ["--resume", str(out), "--out", str(out), "--steps", "2"]) == 0
    assert load_subject(out).rank == 2 and load_subject(out).metadata["training"]["steps_done"] == 2


# ------------------------------------------------------------------------------------------- 7. nothing shared changes
def test_applying_and_training_leave_what_others_hold_untouched(toy):
    model, _, _ = toy
    subject = SubjectDelta.create(model, "lora", rank=2)
    before = {k: v.clone() for k, v in subject.tensors.items()}
    moved = subject.to(torch.device("cpu"), torch.bfloat16)
    assert moved is not subject and all(v.dtype == torch.float32 for v in subject.tensors.values())
    tr = make_trainer(toy, steps=1)
    resumed = SubjectTrainer(*toy, tr.images if hasattr(tr, "images") else
                             prepare_images(list(subject_pictures(2, 256)), (256, 256), "<placeholder>", "dog"),
                             TrainConfig(class_word="dog", pn="0.06M", rank=2, steps=1, prior_weight=0), delta=subject)
    resumed.run()
    assert all(torch.equal(subject.tensors[k], before[k]) for k in before)  # trained a copy
    view = apply_subjects(model, [(subject, 1.0)])
    for call in (lambda: view.to(torch.float64), lambda: view.train(), lambda: view.requires_grad_(True),
                 lambda: view.cast_blocks(torch.bfloat16)):
        with pytest.raises(RuntimeError, match="view of a shared base model"):
            call()
    assert not model.training and model.compute_dtype == torch.float32
    assert view.eval() is view


def test_written_files_have_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temporary file left


# ------------------------------------------------------------------------------------------- 10. every option
def test_the_default_configuration_lowers_the_subjects_loss(toy):
    tr = make_trainer(toy, steps=40, lr=3e-3)  # LoRA, prior distillation on, bitwise self-correction flips on
    assert tr.config.mode == "lora" and tr.config.prior_weight > 0 and tr.config.flip_prob > 0
    with torch.no_grad():
        before = sum(tr.instance_loss([i])[0].item() for i in range(2))
    history = []
    tr.run(callback=lambda p: history.append(p.parts))
    assert all("distill" in h for h in history)
    tr.config.flip_prob = 0.0  # measure without random flips
    tr.generator.manual_seed(0)
    with torch.no_grad():
        after = sum(tr.instance_loss([i])[0].item() for i in range(2))
    assert after < 0.9 * before, (before, after)


def test_separate_steps_take_two_optimizer_steps(toy):
    one, two = make_trainer(toy, steps=1), make_trainer(toy, steps=1, separate_steps=True)
    calls = {"n": 0}
    original = two.optimizer.step

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)
    two.optimizer.step = counting
    one.run(), two.run()
    assert calls["n"] == 2 and digest(one.delta) != digest(two.delta)


def test_token_level_kl_is_arboths_64_way_softmax(toy):
    from var_core.infinity import INFINITY
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    pt, ps = t.softmax(-1), s.softmax(-1)  # one distribution over a token's whole 2d-vector
    expected = (pt * (pt.log() - ps.log())).sum(-1).mean()
    torch.testing.assert_close(INFINITY.distillation(s, t, per_unit=False), expected)
    a, b = make_trainer(toy, steps=1), make_trainer(toy, steps=1, prior_per_bit=False)
    a.run(), b.run()
    assert digest(a.delta) != digest(b.delta)


def test_hflip_trains_on_mirrored_latents(toy):
    tr = make_trainer(toy, steps=1, hflip=True)
    assert tr.flipped is not None and not torch.equal(tr.flipped[0], tr.latents[0])
    plain = make_trainer(toy, steps=1)
    tr.run(), plain.run()
    assert digest(tr.delta) != digest(plain.delta)


def test_grad_clip_bounds_the_update(toy):
    free, clipped = make_trainer(toy, steps=1, mode="full", lr=1.0, weight_decay=0.0), \
        make_trainer(toy, steps=1, mode="full", lr=1.0, weight_decay=0.0, grad_clip=1e-6)
    norms = {}
    for name, tr in (("free", free), ("clipped", clipped)):
        original = tr.optimizer.step

        def record(*a, _tr=tr, _name=name, _orig=original, **k):
            norms[_name] = torch.cat([p.grad.flatten() for p in _tr.delta.parameters() if p.grad is not None]).norm()
            return _orig(*a, **k)
        tr.optimizer.step = record
        tr.run()
    assert norms["clipped"] <= 1e-6 * 1.01 < norms["free"]


def test_warmup_ramps_the_learning_rate(toy):
    tr = make_trainer(toy, steps=4, warmup_steps=4, lr=1e-3)
    lrs = []
    tr.run(callback=lambda p: lrs.append(p.parts["lr"]))
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_folder_captions_become_the_training_prompts(tmp_path):
    from var_core.images import save_png, to_pil
    for i, img in enumerate(list(subject_pictures(2, 256))):
        save_png(to_pil(img[None])[0], tmp_path / f"{i}.png")
    (tmp_path / "0.txt").write_text("a <placeholder> dog on the beach\n")
    files = image_files(tmp_path)
    captions = folder_captions(files)
    data = prepare_images(files, (64, 64), "<placeholder>", "dog", captions)
    assert data.prompts == ["a <placeholder> dog on the beach", "a photo of <placeholder> dog"]


def test_unusable_settings_are_refused_with_actionable_messages(toy):
    for kw, message in (({"class_word": "  "}, "class word is empty"), ({"lr": float("nan")}, "cannot train"),
                        ({"lr": 5.0}, "cannot train"), ({"embedding_lr": -1.0}, "cannot train"),
                        ({"rank": 100000}, "at most 128")):
        with pytest.raises(ValueError, match=message):
            make_trainer(toy, **{"steps": 1, **kw})


def test_placeholder_vectors_only_train_with_distillation_switched_on(toy):
    tr = make_trainer(toy, mode="none", steps=2, prior_weight=0.5)
    history = []
    tr.run(callback=lambda p: history.append(p.parts))
    assert not tr.distills and "distill" not in history[-1]  # nothing it could change: no teacher is run
    assert tr.delta.placeholder.abs().sum() > 0


def test_the_teachers_targets_are_the_samplers_own_logits_equal_to_a_teacher_forced_forward(toy):
    """Unguided (prior_cfg 1), the class samples' targets come from the sampler's logits, with no second forward;
    they are the teacher-forced forward's up to float rounding (seen: 1.7e-6 on logits up to 3.4), at any tau."""
    from var_core.infinity import quantizer
    model = toy[0]
    for tau in (0.5, 0.7):
        tr = make_trainer(toy, prior_tau=tau)
        bits, teacher = tr.teacher_samples(3, torch.Generator().manual_seed(0))
        inputs = quantizer.inputs_from_bits(Family.split_codes(bits, tr.schedule), tr.schedule, 1)
        with torch.no_grad():
            forced = model(tr.prior_text * 3, torch.cat(inputs, 1), tr.schedule).float()
        torch.testing.assert_close(teacher, forced, rtol=0, atol=2e-5)


def test_prior_distillations_class_prompt_is_arbooths_or_ones_own_with_its_article(toy):
    """The teacher's class prompt: ARBooth's "a photo of dog" by default; a template of one's own may take the
    article ("a photo of an owl"); that is the text the teacher and the student are fed."""
    enc = toy[2]
    assert TrainConfig(class_word="dog").class_prompt() == "a photo of dog"
    assert TrainConfig(class_word="owl", prior_prompt="a photo of {article} {class_word}").class_prompt() == \
        "a photo of an owl"
    for template, text in (("a photo of {article} {class_word}", "a photo of a dog"),
                           ("a photo of {class_word}", "a photo of dog")):
        tr = make_trainer(toy, prior_prompt=template)
        torch.testing.assert_close(tr.prior_text[0], enc([text])[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"prior prompt 'a photo of \{cls\}'.*\{class_word\}"):
        TrainConfig(class_word="dog", prior_prompt="a photo of {cls}").check()


def test_guided_prior_distillation_matches_the_guided_predictions(toy):
    """prior_cfg g > 1: the teacher's class samples are drawn with guidance, its targets are the base's guided logits
    g·cond + (1 − g)·uncond on them, and the student's guided logits are matched to them."""
    from var_core.infinity import quantizer
    from var_core.infinity import INFINITY
    model, g = toy[0], 3.0
    tr = make_trainer(toy, prior_cfg=g, prior_samples=2, lr=1e-2)
    tr.step()  # the delta leaves zero: the student differs from the base
    bits, teacher = tr.prior_bank
    inputs = torch.cat(quantizer.inputs_from_bits(Family.split_codes(bits, tr.schedule), tr.schedule, 1), 1)
    text = tr.prior_text * 2
    with torch.no_grad():
        want = g * model(text, inputs, tr.schedule) + (1 - g) * model(model.null_text(text), inputs, tr.schedule)
    torch.testing.assert_close(teacher, want.float(), rtol=1e-5, atol=1e-5)
    state = tr.generator.get_state()
    got = tr.prior_loss(2)
    tr.generator.set_state(state)
    bits, teacher = tr._teacher_batch(2)
    inputs = torch.cat(quantizer.inputs_from_bits(Family.split_codes(bits, tr.schedule), tr.schedule, 1), 1)
    student = g * tr.student(text, inputs, tr.schedule) + (1 - g) * tr.student(model.null_text(text), inputs,
                                                                                 tr.schedule)
    expected = INFINITY.distillation(student, teacher)
    assert expected > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)


def test_the_cli_passes_the_prior_settings_through():
    from var_core.cli import add_train_arguments, training_settings
    import argparse
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    needed = ["--images", "photos", "--out", "dog.safetensors"]
    args = parser.parse_args(needed + ["--prior-cfg", "4", "--prior-prompt", "a photo of {article} {class_word}"])
    given = training_settings(args)
    assert given["prior_cfg"] == 4.0 and given["prior_prompt"] == "a photo of {article} {class_word}"
    assert "prior_cfg" not in training_settings(parser.parse_args(needed))  # not given: the default, or the file's
