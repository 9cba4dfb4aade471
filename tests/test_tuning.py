"""Subject tuning on tiny random models: selection, deltas (full, LoRA on fused projections, placeholder vectors),
losses, distillation, subject files, applying subjects, and the training loop."""
import copy

import pytest
import torch
from PIL import Image

from var_core import sample, scale_schedule
from var_core.checkpoint import CheckpointError
from toyworld.builders import make_trainer, random_transformer, subject_pictures
from var_core.infinity.model import Infinity, InfinityConfig
from var_core.infinity import INFINITY
from var_core.tuning import (ScaleWeights, SubjectDelta, SubjectTrainer, TrainConfig, apply_subjects, encode_prompts,
                             load_subject, prepare_images, save_subject, select_targets)
from var_core.tuning.selection import block_tensor, parse_blocks

SCHEDULE = scale_schedule(1.0, "0.06M")


def randomize(delta: SubjectDelta, seed=0, only=None, scale=0.05) -> SubjectDelta:
    """Give the delta's tensors non-zero values (optionally only those whose key contains one of ``only``)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in delta.tensors.items():
            if only is None or any(o in k for o in only):
                t.copy_(torch.randn(t.shape, generator=g) * scale)
            elif k.startswith("lora_B") or k.startswith("delta"):
                t.zero_()
    return delta


def tf_logits(model, text, bits):
    with torch.no_grad():
        return model.teacher_forced_logits(text, bits, SCHEDULE)


@pytest.fixture(scope="module")
def model():
    return random_transformer().requires_grad_(False)


@pytest.fixture(scope="module")
def text(model):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(5, model.config.text_channels, generator=g), torch.randn(7, model.config.text_channels,
                                                                                  generator=g)]


@pytest.fixture(scope="module")
def bits(model, text):
    return sample(model, None, text, SCHEDULE, seed=0)


# ------------------------------------------------------------------------------------------------ selection
def test_default_selection_is_ca_and_ffn_of_every_block(model):
    targets = select_targets(model)
    assert {n.split(".")[0] for _, n in targets} == {"ca", "ffn"} and {i for i, _ in targets} == set(range(4))
    C, F = model.config.embed_dim, model.config.ffn_hidden
    per_block = (C * C + C) + 2 * C * C + C + (C * C + C) + (C * F + F) + (F * C + C)  # ARBooth's count formula
    delta = SubjectDelta.create(model, "full", placeholder_vectors=0)
    assert delta.num_parameters() == 4 * per_block
    assert len(select_targets(model, "all", "1-2")) == 2 * sum(len(v) for v in INFINITY.tuning_groups.values())
    assert parse_blocks("0-1,3", 4) == (0, 1, 3)
    with pytest.raises(ValueError, match="out of range"):
        parse_blocks("2-9", 4)
    with pytest.raises(ValueError, match="Unknown layer groups"):
        select_targets(model, "attn")


def test_rank16_lora_of_ca_ffn_on_2b_is_tens_of_megabytes():
    with torch.device("meta"):
        big = Infinity(InfinityConfig())
    delta = SubjectDelta.create(big, "lora", rank=16)
    mb = delta.num_parameters() * 4 / 2**20  # fp32 on disk
    assert 10 < mb < 100, mb


# ------------------------------------------------------------------------------------------------ deltas
def test_zero_delta_and_zero_strength_change_nothing(model, text, bits):
    base = tf_logits(model, text, bits)
    fresh = SubjectDelta.create(model, "lora", rank=4)
    assert torch.equal(tf_logits(apply_subjects(model, [(fresh, 1.0)]), text, bits), base)
    trained = randomize(SubjectDelta.create(model, "full"))
    assert not torch.allclose(tf_logits(apply_subjects(model, [(trained, 1.0)]), text, bits), base, atol=1e-3)
    view = apply_subjects(model, [(trained, 0.0)])
    assert torch.equal(tf_logits(view, text, bits), base)
    assert torch.equal(sample(view, None, text, SCHEDULE, seed=5)[-1], sample(model, None, text, SCHEDULE, seed=5)[-1])
    assert model.patch is None  # the base is untouched


def test_lora_on_the_fused_projections_alone_changes_the_output(model, text, bits):
    base = tf_logits(model, text, bits)
    delta = randomize(SubjectDelta.create(model, "lora", groups="all", rank=4), only=("sa.mat_qkv", "ca.mat_kv"))
    nonzero = [k for k, t in delta.tensors.items() if k.startswith("lora_B") and t.abs().sum() > 0]
    assert nonzero and all("mat_qkv" in k or "mat_kv" in k for k in nonzero)
    patched = tf_logits(apply_subjects(model, [(delta, 1.0)]), text, bits)
    assert (patched - base).abs().max() > 1e-3
    # and it is exactly W + (alpha/r)·B·A merged into a copy of the weights
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for i, names in delta.block_names().items():
            for name in names:
                block_tensor(merged, i, name).add_(delta.weight_delta(i, name))
    torch.testing.assert_close(tf_logits(merged, text, bits), patched, atol=1e-5, rtol=0)


def test_several_subjects_add_and_views_chain(model, text, bits):
    a = randomize(SubjectDelta.create(model, "full", groups="ffn"), seed=1)
    b = randomize(SubjectDelta.create(model, "lora", rank=2), seed=2)
    both = tf_logits(apply_subjects(model, [(a, 0.7), (b, 1.0)]), text, bits)
    chained = tf_logits(apply_subjects(apply_subjects(model, [(a, 0.7)]), [(b, 1.0)]), text, bits)
    torch.testing.assert_close(chained, both, atol=0, rtol=0)
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for d, s in ((a, 0.7), (b, 1.0)):
            for i, names in d.block_names().items():
                for name in names:
                    block_tensor(merged, i, name).add_(s * d.weight_delta(i, name))
    torch.testing.assert_close(tf_logits(merged, text, bits), both, atol=1e-5, rtol=0)


def test_per_scale_strength_acts_only_on_its_scales(model, text):
    delta = randomize(SubjectDelta.create(model, "full"), scale=0.2)
    K = len(SCHEDULE)
    forced = sample(model, None, text, SCHEDULE, seed=1)
    _, base = sample(model, None, text, SCHEDULE, forced_codes=forced, return_logits=True)
    strength = [0.0] * (K - 2) + [1.0, 1.0]
    _, mixed = sample(apply_subjects(model, [(delta, strength)]), None, text, SCHEDULE, forced_codes=forced,
                      return_logits=True)
    for k in range(K - 2):
        assert torch.equal(mixed[k], base[k]), k
    assert (mixed[-1] - base[-1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one value per scale"):
        sample(apply_subjects(model, [(delta, [1.0, 0.5])]), None, text, SCHEDULE)


# ------------------------------------------------------------------------------------------------ losses
def test_scale_weights_mean_the_same_at_every_resolution():
    """The default weighting is never uniform: the first 8/13 of the scales weigh 1.0 at every resolution (the
    token-count split of before weighted every scale alike at 128² and 256²)."""
    w = ScaleWeights()
    assert w.scale_weights(scale_schedule(1.0, "1M")) == [1.0] * 8 + [0.5] * 5
    assert w.scale_weights(scale_schedule(1.0, "0.25M")) == [1.0] * 6 + [0.5] * 4
    assert w.scale_weights(scale_schedule(1.0, "0.06M")) == [1.0] * 4 + [0.5] * 3
    assert w.scale_weights(scale_schedule(1.0, "0.015M")) == [1.0] * 3 + [0.5] * 2
    assert w.scale_weights(scale_schedule(0.5, "0.015M"))[-1] == 0.5  # other aspect ratios too
    for bad in (dict(fine=-0.5), dict(coarse=float("nan")), dict(coarse=0.0, fine=0.0), dict(coarse_fraction=1.0),
                dict(per_scale=(1.0, -1.0))):
        with pytest.raises(ValueError):
            ScaleWeights(**bad)
    tw = w.token_weights(scale_schedule(1.0, "1M"))
    assert tw.shape == (10521,) and tw[:921].eq(1).all() and tw[921:].eq(0.5).all()
    assert ScaleWeights(per_scale=(3.0, 2.0)).scale_weights([(1, 1), (2, 2)]) == [3.0, 2.0]
    with pytest.raises(ValueError, match="one value per scale"):
        ScaleWeights(per_scale=(1.0,)).scale_weights([(1, 1), (2, 2)])


def test_distillation_loss_is_a_kl():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    assert INFINITY.distillation(t, t).abs() < 1e-7 and INFINITY.distillation(s, t) > 0
    p, q = t.unflatten(-1, (-1, 2)).softmax(-1), s.unflatten(-1, (-1, 2)).softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(INFINITY.distillation(s, t), expected)
    p, q = t.softmax(-1), s.softmax(-1)  # ARBooth: one softmax over the whole token
    torch.testing.assert_close(INFINITY.distillation(s, t, per_unit=False), (p * (p.log() - q.log())).sum(-1).mean())


# ------------------------------------------------------------------------------------------------ text
def test_placeholder_vectors_replace_the_token_row(toy):
    _, _, enc = toy
    a = SubjectDelta.create(toy[0], "none", placeholder_vectors=3, token="<dog1>")
    b = SubjectDelta.create(toy[0], "none", placeholder_vectors=2, token="<cat1>")
    randomize(a, 1), randomize(b, 2)
    (out,) = encode_prompts(enc, ["a photo of <dog1> and <cat1>"], [a, b])
    (plain,), _ = enc.encode(["a photo of <dog1> and <cat1>"], ["<dog1>", "<cat1>"])  # a photo of <dog1> and <cat1> </s>
    assert plain.shape[0] == 7
    assert out.shape[0] == plain.shape[0] + 2 + 1
    assert torch.equal(out[3:6], a.placeholder) and torch.equal(out[7:9], b.placeholder)
    assert torch.equal(out[:3], plain[:3]) and torch.equal(out[6], plain[4]) and torch.equal(out[9:], plain[6:])
    (same,) = encode_prompts(enc, ["a photo of a dog"], [a, b])
    assert torch.equal(same, enc(["a photo of a dog"])[0])
    with pytest.raises(ValueError, match="same placeholder token"):
        encode_prompts(enc, ["x"], [a, a])


def test_a_thumbnail_sized_photo_is_refused_with_its_size(tmp_path):
    Image.new("RGB", (7, 7)).save(tmp_path / "tiny.png")
    for source in (tmp_path / "tiny.png", Image.new("RGB", (300, 20)), torch.zeros(3, 7, 7)):
        with pytest.raises(ValueError, match=r"Image 1 is \d+x\d+ pixels: too small.*at least 32"):
            prepare_images([Image.new("RGB", (64, 64)), source], (128, 128), "<p>", "dog")


def test_images_of_any_mode_become_rgb_at_the_training_size(tmp_path):
    gray = Image.new("L", (300, 200), 128)
    rgba = Image.new("RGBA", (64, 90), (255, 0, 0, 0))
    gray.save(tmp_path / "g.png")
    data = prepare_images([tmp_path / "g.png", rgba, torch.zeros(3, 40, 50)], (32, 48), "<p>", "dog")
    assert data.images.shape == (3, 3, 32, 48) and data.prompts == ["a photo of <p> dog"] * 3
    assert data.images[1].eq(1).all()  # transparent -> white
    with pytest.raises(ValueError, match="does not contain the placeholder"):
        prepare_images([rgba], (32, 32), "<p>", "dog", captions=["a red square"])
    with pytest.raises(ValueError, match="No training images"):
        prepare_images([], (32, 32), "<p>", "dog")


# ------------------------------------------------------------------------------------------------ files
def test_subject_file_round_trip_is_exact_and_wrong_base_is_refused(model, tmp_path):
    delta = randomize(SubjectDelta.create(model, "lora", rank=4, class_word="dog"))
    path = save_subject(delta, tmp_path / "s.safetensors", model, {"steps": 7})
    back = load_subject(path, model)
    assert back.tensors.keys() == delta.tensors.keys()
    assert all(torch.equal(back.tensors[k], v) for k, v in delta.tensors.items())
    assert (back.mode, back.rank, back.alpha, back.token, back.class_word) == ("lora", 4, 4.0, "<placeholder>", "dog")
    assert back.metadata["training"] == {"steps": 7}
    with pytest.raises(FileExistsError):
        save_subject(delta, path, model)
    other = random_transformer(seed=1)
    with pytest.raises(CheckpointError, match="another base model"):
        load_subject(path, other)
    bf16 = copy.deepcopy(model).cast_blocks(torch.bfloat16)
    load_subject(path, bf16)  # the same checkpoint in bf16 is the same base
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_subject(tmp_path / "junk.safetensors")


# ------------------------------------------------------------------------------------------------ training
def trainer(toy, **kw):
    return make_trainer(toy, **kw)


def test_zero_delta_distillation_loss_and_gradient_are_zero(toy):
    tr = trainer(toy, mode="lora", rank=4)
    kl = tr.prior_loss(2)
    kl.backward()
    assert abs(kl.item()) < 1e-7  # exact up to batch-size-dependent rounding
    assert max(t.grad.abs().max().item() for t in tr.delta.parameters() if t.grad is not None) < 1e-6  # rounding only
    randomize(tr.delta, scale=0.5)
    assert tr.prior_loss(2).item() > 0


def test_the_teacher_is_the_base_itself_no_second_copy_of_the_weights(toy):
    """Prior distillation's teacher is the loaded model (no patch) and the student a view of it: the weights are in
    memory once; the optimizer holds only the delta's fp32 tensors (benchmarks/memory.py)."""
    tr = trainer(toy, mode="lora", rank=4, prior_samples=2)
    model = toy[0]
    assert tr.model is model and model.patch is None and tr.student.patch is not None
    assert all(a is b for a, b in zip(tr.student.parameters(), model.parameters()))
    trained = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert trained == {id(t) for t in tr.delta.tensors.values()}
    assert not any(p.requires_grad for p in model.parameters())


def test_a_tiny_model_overfits_two_images(toy):
    tr = trainer(toy, mode="lora", rank=16, lr=3e-3, prior_weight=0.0, flip_prob=0.0, steps=60)
    first = tr.step()
    history = [first]
    tr.run(callback=lambda p: history.append(p.parts))
    last = history[-5:]
    assert sum(h["ce"] for h in last) / 5 < 0.8 * first["ce"], (first, last)
    assert min(h["bit_acc"] for h in last) > first["bit_acc"] + 0.12, (first, last)  # seen: 0.49 -> 0.66


def test_training_is_reproducible_and_reports_what_it_trains(toy):
    a, b = trainer(toy, steps=3, rank=2), trainer(toy, steps=3, rank=2)
    assert a.num_trainable == a.delta.num_parameters() > 0
    a.run(), b.run()
    assert all(torch.equal(a.delta.tensors[k], b.delta.tensors[k]) for k in a.delta.tensors)
    assert any(a.delta.tensors[k].abs().sum() > 0 for k in a.delta.tensors if k.startswith("lora_B"))


def test_cancel_keeps_a_loadable_checkpoint_and_resume_continues(toy, tmp_path):
    path = tmp_path / "subject.safetensors"
    tr = trainer(toy, steps=50, rank=2, separate_steps=True, prior_samples=0)  # ARBooth: fresh teacher samples
    calls = []
    finished = tr.run(should_stop=lambda: len(calls) >= 3, callback=calls.append, checkpoint_path=path,
                      checkpoint_every=2)
    assert not finished and tr.step_count == 3
    saved = load_subject(path, toy[0])
    assert saved.metadata["training"]["steps_done"] == 3
    assert all(torch.equal(saved.tensors[k], tr.delta.tensors[k].detach()) for k in saved.tensors)
    model, vae, enc = toy
    again = SubjectTrainer(model, vae, enc, prepare_images(list(subject_pictures(2, 256)), (256, 256), "<placeholder>", "dog"),
                           TrainConfig(class_word="dog", pn="0.06M", steps=5, rank=2), delta=saved, start_step=3)
    assert again.run(checkpoint_path=path, overwrite=True) and again.step_count == 5  # its own file, given back
    assert load_subject(path).metadata["training"]["steps_done"] == 5


def test_an_arbooth_checkpoint_brings_its_placeholder_vectors(model, tmp_path, toy):
    from var_core import load_transformer
    from var_core.tuning import arbooth_subject
    assert arbooth_subject(model) is None
    sd = dict(toy[0].state_dict())
    sd["special_token"] = torch.randn(4, toy[0].config.text_channels)
    torch.save({"model": sd}, tmp_path / "arbooth.pth")
    loaded = load_transformer(tmp_path / "arbooth.pth")
    subject = arbooth_subject(loaded)
    assert torch.equal(subject.placeholder, sd["special_token"]) and subject.num_parameters() == 4 * 32
    view = apply_subjects(loaded, [(subject, 1.0)])
    (text,) = encode_prompts(toy[2], ["a photo of <placeholder> dog"], view)
    assert torch.equal(text[3:7], sd["special_token"])


def test_a_subject_file_records_its_family_and_another_family_refuses_it(toy, tmp_path):
    from safetensors import safe_open
    model = toy[0]
    delta = SubjectDelta.create(model, "lora", rank=2, placeholder_vectors=1)
    path = save_subject(delta, tmp_path / "s.safetensors", model)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["family"] == "infinity"
    loaded = load_subject(path, model)
    assert loaded.metadata["family"] == "infinity"
    loaded.metadata["family"] = "switti"
    with pytest.raises(ValueError, match="trained on a base of the 'switti' family; this base is Infinity"):
        apply_subjects(model, [(loaded, 1.0)])
    del loaded.metadata["family"]  # files written before families existed are Infinity's
    apply_subjects(model, [(loaded, 1.0)])


def test_an_fp16_base_trains_with_loss_scaling(toy, toy_paths, tmp_path):
    """fp16 activations' gradients underflow without loss scaling: the trainer scales the loss on an fp16 base (only
    there), its gradients are then nearer the fp32 base's, and the scale is part of the resumable state."""
    from safetensors.torch import load_file
    from toyworld.builders import compare_gradients, first_step_gradients
    from var_core import load_transformer
    from var_core.tuning.trainer import state_path
    _, vae, enc = toy
    half = load_transformer(toy_paths["transformer"], dtype=torch.float16)
    assert make_trainer((half, vae, enc)).scaler is not None
    assert make_trainer(toy).scaler is None
    assert make_trainer((load_transformer(toy_paths["transformer"], dtype=torch.bfloat16), vae, enc)).scaler is None
    reference = first_step_gradients(toy[0], vae, enc, "0.06M")
    scaled, _ = compare_gradients(reference, first_step_gradients(half, vae, enc, "0.06M"))
    unscaled, _ = compare_gradients(reference, first_step_gradients(half, vae, enc, "0.06M", scaled=False))
    assert scaled < 0.5 * unscaled, (scaled, unscaled)
    path = tmp_path / "half.safetensors"
    make_trainer((half, vae, enc), steps=1, rank=2, prior_samples=2).run(checkpoint_path=path)
    assert load_file(state_path(path))["scaler"][0] > 1
