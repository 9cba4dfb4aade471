"""fp8 weight storage (var_core/fp8.py): the blocks' linear weights in e4m3 with row scales, computed in bf16. It
loads on every family and holds half of bf16's block bytes; it samples close to bf16 (not equal: 3 significant bits);
subjects of the bf16 or fp32 base apply to it (the fingerprint reads the dequantized values), full-delta merges read
the dequantized weights (strength 0 is the fp8 base exactly), it tunes, and it streams exactly."""
from __future__ import annotations

import torch

import var_core
from var_core import fp8
from var_core.schedules import scale_schedule
from var_core.streaming import stream_blocks
from var_core.tuning import SubjectDelta, apply_subjects
from var_core.tuning.fingerprint import fingerprint, same_base

from fixture_paths import TINY
from test_fast_sampling import SWITTI, VAR

SCHEDULE = scale_schedule(1.0, "0.06M")


def block_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for b in model.blocks for t in b.state_dict().values())


def test_fp8_stores_the_block_weights_in_e4m3_with_row_scales_and_computes_in_bf16():
    bf16 = var_core.load_transformer(TINY / "transformer.pth", dtype=torch.bfloat16)
    model = var_core.load_transformer(TINY / "transformer.pth", dtype="fp8")
    fc1 = model.blocks[0].ffn.fc1
    assert fc1.weight.dtype == fp8.FP8 and fc1.weight_scale.shape == (fc1.out_features,)
    assert model.compute_dtype == torch.bfloat16
    assert block_bytes(model) < 0.6 * block_bytes(bf16)
    # each weight within e4m3's rounding of the bf16 one: 3 significant bits (half a step: 1/16 of the value), and
    # below 2^-6 of the row's scale the subnormals' fixed step (2^-9 of the scale, the row's largest / 448)
    exact = bf16.blocks[0].ffn.fc1.weight.float()
    step = exact.abs().amax(dim=1, keepdim=True) / fp8.E4M3_MAX / 2**10
    assert ((fp8.value(fc1, "weight") - exact).abs() <= exact.abs() / 16 + step).all()


def test_fp8_samples_close_to_bf16_and_takes_the_bf16_bases_subjects(case_text):
    bf16 = var_core.load_transformer(TINY / "transformer.pth", dtype=torch.bfloat16)
    model = var_core.load_transformer(TINY / "transformer.pth", dtype="fp8")
    settings = dict(cfg=3.0, tau=0.5, seed=2)
    ref = var_core.sample(bf16, None, case_text, SCHEDULE, **settings)
    codes = var_core.sample(model, None, case_text, SCHEDULE, **settings)
    same = sum((a == b).float().mean().item() for a, b in zip(ref, codes)) / len(codes)
    assert 0.9 < same < 1.0, same
    assert same_base(fingerprint(bf16), model)
    full = SubjectDelta.create(bf16, "full", token="<s1>", class_word="dog")  # made on the bf16 base
    g = torch.Generator().manual_seed(1)
    for t in full.tensors.values():
        t.data.normal_(0, 0.01, generator=g)
    zero = var_core.sample(apply_subjects(model, [(full, 0.0)]), None, case_text, SCHEDULE, **settings)
    assert all(torch.equal(a, b) for a, b in zip(zero, codes))  # merged from the dequantized weights
    tuned = var_core.sample(apply_subjects(model, [(full, 1.0)]), None, case_text, SCHEDULE, **settings)
    assert not all(torch.equal(a, b) for a, b in zip(tuned, codes))


def test_fp8_streams_exactly_and_loads_on_the_codebook_families(case_text):
    model = var_core.load_transformer(TINY / "transformer.pth", dtype="fp8")
    codes = var_core.sample(model, None, case_text, SCHEDULE, cfg=3.0, tau=0.5, seed=2)
    streaming = stream_blocks(model, torch.device("cpu"), resident=1)
    try:
        assert all(torch.equal(a, b) for a, b in zip(codes, var_core.sample(model, None, case_text, SCHEDULE, cfg=3.0,
                                                                             tau=0.5, seed=2)))
    finally:
        streaming.close()
    assert all(torch.equal(a, b) for a, b in zip(codes, var_core.sample(model, None, case_text, SCHEDULE, cfg=3.0,
                                                                         tau=0.5, seed=2)))  # fp8's own call is back
    var, vae = var_core.load_transformer(VAR / "var_d2.pth", dtype="fp8"), var_core.load_vae(VAR / "vae_ch32v128z8.pth")
    assert var.blocks[0].attn.mat_qkv.weight.dtype == fp8.FP8 and var.compute_dtype == torch.bfloat16
    images = var_core.sample(var, vae, [1, 3], cfg=4.0, seed=5)
    assert images.shape[0] == 2 and torch.isfinite(images).all()
    # Switti reads its blocks' AdaLN and text projections before the blocks run: those calls see the values too
    switti, vae = var_core.load_transformer(SWITTI / "transformer", dtype="fp8"), var_core.load_vae(SWITTI / "vae")
    bf16 = var_core.load_transformer(SWITTI / "transformer", dtype=torch.bfloat16)
    assert switti.blocks[0].ada_lin[1].weight.dtype == fp8.FP8
    c = switti.config
    pooled, words = torch.randn(2, c.embed_dim), torch.randn(2, 7, c.context_dim)
    with torch.no_grad(), switti.autocast():
        for call, args in (("modulation", (pooled, None)), ("context_kv", (words,))):
            ours, theirs = getattr(switti.blocks[0], call)(*args), getattr(bf16.blocks[0], call)(*args)
            for a, b in zip(*((t,) if torch.is_tensor(t) else t for t in (ours, theirs))):
                assert (a.float() - b.float()).norm() < 0.1 * b.float().norm(), call  # e4m3: a few % per weight
    text = var_core.PromptEmbeds(torch.randn(2, 7, c.context_dim), torch.randn(2, c.pooled_dim),
                                 torch.ones(2, 7, dtype=torch.bool))
    images = var_core.sample(switti, vae, text, negative=text, cfg=4.0, seed=5)
    assert images.shape[0] == 2 and torch.isfinite(images).all()


def test_a_subject_tunes_on_an_fp8_base(toy_paths):
    from test_tuning_exactness import make_trainer
    parts = (var_core.load_transformer(toy_paths["transformer"], dtype="fp8"), var_core.load_vae(toy_paths["vae"]),
             var_core.load_text_encoder(toy_paths["text_encoder"]))
    trainer = make_trainer(parts, steps=3, prior_samples=0, prior_weight=0.0)
    before = {k: t.detach().clone() for k, t in trainer.delta.tensors.items()}
    trainer.run()
    assert all(torch.isfinite(t).all() for t in trainer.delta.tensors.values())
    assert any(not torch.equal(before[k], t) for k, t in trainer.delta.tensors.items())
    assert parts[0].blocks[0].ffn.fc1.weight.dtype == fp8.FP8  # the base is left as it was


def test_the_bundled_subjects_older_fingerprints_accept_the_fp8_base_and_refuse_another():
    from var_core.embedded import bundle_paths, example_subjects
    from var_core.tuning import load_subject
    from var_core.tuning.fingerprint import same_base
    subject = load_subject(example_subjects()["guide_dog"]["subject"])
    known = subject.metadata["fingerprint"]
    assert not known.startswith("v2:")  # the format of 24 values, compared within fp8's rounding for an fp8 base
    model = var_core.load_transformer(bundle_paths()["transformer"], dtype="fp8")
    assert same_base(known, model)
    other = var_core.load_transformer(bundle_paths()["transformer"], dtype="fp8")
    fc1 = other.blocks[0].ffn.fc1
    fc1.weight_scale.mul_(1.2)  # a base whose block weights differ by 20 %
    assert not same_base(known, other)
