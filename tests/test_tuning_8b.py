"""Subject tuning on a tiny random Infinity-8B-shaped model (2x2 spatially patchified tokens over an f8 VAE): LoRA,
full deltas, placeholder vectors, scale weights and prior distillation train through the patchified path; strength
0 is the base exactly; a subject of a 2B-shaped base is refused by an 8B-shaped one."""
import pytest
import torch

from toyworld.builders import TOY_8B_TRANSFORMER, TOY_8B_VAE, make_trainer, random_transformer, random_vae
from var_core import CheckpointError, sample, scale_schedule
from var_core.tuning import (SubjectDelta, apply_subjects, encode_prompts,
                             load_subject, save_subject)

PN = "0.015M"
SCHEDULE = scale_schedule(1.0, PN)
PROMPT = "a photo of <sks> dog on the beach"
CLASS_PROMPT = "a photo of dog on the beach"


@pytest.fixture(scope="module")
def toy8b(toy):
    """(model, vae, text_encoder): random 8B-shaped transformer and f8 VAE, the toy T5."""
    model = random_transformer(TOY_8B_TRANSFORMER, seed=5).requires_grad_(False)
    assert model.config.token_patch == 2
    return model, random_vae(TOY_8B_VAE, seed=5), toy[2]


def trainer(toy8b, **kw):
    return make_trainer(toy8b, **{"token": "<sks>", "pn": PN, "gradient_checkpointing": False, **kw})


def draw(model, enc, prompt):
    text = encode_prompts(enc, [prompt] * 2, model)
    return sample(model, None, text, SCHEDULE, seed=1, return_logits=True)


def test_lora_with_placeholder_vectors_lowers_the_loss_and_changes_samples(toy8b):
    model, _, enc = toy8b
    tr = trainer(toy8b, mode="lora", rank=8, lr=3e-3, prior_weight=0.0, flip_prob=0.0, steps=30)
    assert tr.delta.placeholder is not None
    history = [tr.step()]
    tr.run(callback=lambda p: history.append(p.parts))
    first, last = history[0]["ce"], sum(h["ce"] for h in history[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    base_bits, _ = draw(model, enc, PROMPT)
    tuned_bits, _ = draw(apply_subjects(model, [(tr.delta, 1.0)]), enc, PROMPT)
    assert any(not torch.equal(a, b) for a, b in zip(base_bits, tuned_bits))


def test_full_delta_with_bsc_scale_weights_and_prior_distillation_trains(toy8b):
    tr = trainer(toy8b, mode="full", lr=1e-3, steps=3, prior_samples=2, flip_prob=0.3)
    assert abs(tr.prior_loss(2).item()) < 1e-6  # a zero delta distils to exactly the base
    parts = [tr.step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(p["loss"])) and "distill" in p for p in parts)
    assert tr.prior_loss(2).item() > 0
    assert any(t.abs().sum() > 0 for k, t in tr.delta.tensors.items() if k.startswith("delta"))


@pytest.mark.parametrize("mode", ["none", "lora", "full"])
def test_strength_zero_is_the_base_model_exactly(toy8b, mode):
    model, vae, enc = toy8b
    delta = SubjectDelta.create(model, mode, placeholder_vectors=3, token="<sks>", class_word="dog")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in delta.tensors.values():
            t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    view = apply_subjects(model, [(delta, 0.0)])
    (bits, logits), (base_bits, base_logits) = draw(view, enc, PROMPT), draw(model, enc, CLASS_PROMPT)
    for a, b in zip(logits + bits, base_logits + base_bits):
        assert torch.equal(a, b)
    full_bits, full_logits = draw(apply_subjects(model, [(delta, 1.0)]), enc, PROMPT)
    assert any(not torch.equal(a, b) for a, b in zip(full_logits, base_logits))


def test_a_subject_of_a_2b_shaped_base_is_refused_by_an_8b_shaped_one(toy, toy8b, tmp_path):
    small, model = toy[0], toy8b[0]
    delta = SubjectDelta.create(small, "lora", rank=2, class_word="dog")
    path = save_subject(delta, tmp_path / "s.safetensors", small)
    with pytest.raises(CheckpointError, match=r"another base model.*bits 16 \(this model: 56\).*16-bit tokens.*"
                                              r"56-bit tokens \(2x2-patchified"):
        load_subject(path, model)
    with pytest.raises(ValueError, match="another base model"):
        apply_subjects(model, [(load_subject(path), 1.0)])
    back = SubjectDelta.create(model, "lora", rank=2, class_word="dog")
    load_subject(save_subject(back, tmp_path / "8b.safetensors", model), model)  # its own base is accepted
