"""Block streaming (var_core/streaming.py) gives the resident model's outputs exactly, on every family, with subjects
applied and in tuning; each block computes with a copy of its weights (made per call, here a CPU copy), never with the
stored tensors, and the stored tensors are back in place after."""
from __future__ import annotations

import pytest
import torch

import var_core
from var_core.schedules import scale_schedule
from var_core.streaming import stream_blocks
from var_core.tuning import SubjectDelta, apply_subjects

from fixture_paths import TINY
from test_fast_sampling import VAR

SCHEDULE = scale_schedule(1.0, "0.06M")


def watch_weights(model):
    """Records, per call of the first block's first layer with weights (inside the block's call), whether it
    computed with the stored weight."""
    layer = next(m for m in model.blocks[0].modules() if m is not model.blocks[0] and m._parameters)
    name = next(iter(layer._parameters))
    stored = layer._parameters[name]
    seen = []
    hook = layer.register_forward_pre_hook(lambda m, args: seen.append(m._parameters[name] is stored))
    return seen, hook, stored


def randomized_subject(model, mode):
    subject = SubjectDelta.create(model, mode, rank=2, token="<s1>", class_word="dog")
    g = torch.Generator().manual_seed(1)
    for t in subject.tensors.values():
        t.data.normal_(0, 0.05, generator=g)
    return subject


@pytest.mark.parametrize("mode", [None, "lora", "full"])
def test_infinity_streamed_samples_exactly_the_resident_models_codes(case_text, mode):
    model = var_core.load_transformer(TINY / "transformer.pth")
    if mode:
        model = apply_subjects(model, [(randomized_subject(model, mode), 0.8)])
    settings = dict(cfg=3.0, tau=0.5, seed=2, return_logits=True)
    codes, logits = var_core.sample(model, None, case_text, SCHEDULE, **settings)
    streaming = stream_blocks(model, torch.device("cpu"))
    seen, hook, stored = watch_weights(model)
    try:
        streamed, streamed_logits = var_core.sample(model, None, case_text, SCHEDULE, **settings)
    finally:
        hook.remove()
        streaming.close()
    assert all(torch.equal(a, b) for a, b in zip(codes, streamed))
    assert all(torch.equal(a, b) for a, b in zip(logits, streamed_logits))
    assert seen and not any(seen)  # every call computed with a copy
    assert streaming.copies == len(model.blocks) * len(SCHEDULE)
    assert any(p is stored for p in model.blocks[0].parameters()) and "forward" not in model.blocks[0].__dict__


def test_codebook_families_stream_exactly():
    from test_fast_sampling import switti as make_switti
    switti, switti_vae, (text, null) = make_switti.__wrapped__()
    var, var_vae = var_core.load_transformer(VAR / "var_d2.pth"), var_core.load_vae(VAR / "vae_ch32v128z8.pth")
    for model, vae, cond, kw in ((switti, switti_vae, text, dict(negative=null)), (var, var_vae, [1, 3], {})):
        images = var_core.sample(model, vae, cond, cfg=4.0, seed=5, **kw)
        streaming = stream_blocks(model, torch.device("cpu"))
        try:
            assert torch.equal(var_core.sample(model, vae, cond, cfg=4.0, seed=5, **kw), images)
        finally:
            streaming.close()
        # once per scale, and once per other call that reads a block's weights while conditioning (modulations,
        # Switti's text keys and values): all of them must see the device copies
        calls = len(type(model.blocks[0]).weight_calls) - 1
        assert calls > 0 and streaming.copies == len(model.blocks) * (len(model.schedule) + calls)


def test_tuning_streamed_with_gradient_checkpointing_learns_exactly_what_resident_tuning_learns(toy_paths):
    from test_tuning_exactness import digest, make_trainer

    def parts():
        return (var_core.load_transformer(toy_paths["transformer"]), var_core.load_vae(toy_paths["vae"]),
                var_core.load_text_encoder(toy_paths["text_encoder"]))
    resident = make_trainer(parts(), steps=2, gradient_checkpointing=True)
    resident.run()
    streamed_parts = parts()
    streaming = stream_blocks(streamed_parts[0], torch.device("cpu"))
    streamed = make_trainer(streamed_parts, steps=2, gradient_checkpointing=True)
    streamed.run()
    streaming.close()
    assert digest(streamed.delta) == digest(resident.delta)
    assert streaming.copies > 2 * len(streamed_parts[0].blocks)  # the backward pass copied the blocks again


def test_the_blocks_that_fit_stay_resident_and_only_the_others_are_copied(case_text):
    from var_core.streaming import resident_blocks
    model = var_core.load_transformer(TINY / "transformer.pth")
    codes = var_core.sample(model, None, case_text, SCHEDULE, cfg=3.0, tau=0.5, seed=2)
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    block = sum(t.numel() * t.element_size() for t in model.blocks[0].state_dict().values())
    n = len(model.blocks)
    # what fits beside the rest of the model and two blocks in flight
    assert [resident_blocks(model, total - k * block) for k in range(n)] == [max(0, n - 2 - k) for k in range(n)]
    resident = resident_blocks(model, total - block)
    assert 0 < resident < n
    streaming = stream_blocks(model, torch.device("cpu"), resident)
    try:
        assert streaming.device_bytes <= total - block
        assert all(torch.equal(a, b) for a, b in zip(codes, var_core.sample(model, None, case_text, SCHEDULE, cfg=3.0,
                                                                             tau=0.5, seed=2)))
    finally:
        streaming.close()
    assert streaming.copies == (len(model.blocks) - resident) * len(SCHEDULE)
