"""Sampling that skips work: guidance only where asked for, and fine-scale token pruning (var_core/pruning.py), on
every family (Infinity: the tiny parity model; VAR and Switti: the tiny release-layout fixtures)."""
from pathlib import Path

import pytest
import torch

import var_core
from var_core import pruning as prune
from var_core.pruning import Pruning
from var_core.schedules import scale_schedule
from var_core.switti.text import PromptEmbeds

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "tests" / "fixtures" / "var" / "tiny_var"
SWITTI = ROOT / "tests" / "fixtures" / "switti" / "tiny_switti"
SCHEDULE = scale_schedule(1.0, "0.06M")  # 7 scales, the last 16 x 16


def block_inputs(model):
    """Records (rows, tokens) of every call of the first block while it is installed."""
    seen = []
    block = model.blocks[0]
    return seen, block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[:2])))


@pytest.fixture(scope="module")
def var():
    return var_core.load_transformer(VAR / "var_d2.pth"), var_core.load_vae(VAR / "vae_ch32v128z8.pth")


@pytest.fixture(scope="module")
def switti():
    model = var_core.load_transformer(SWITTI / "transformer")
    vae = var_core.load_vae(SWITTI / "vae")
    g = torch.Generator().manual_seed(0)
    c = model.config
    text = PromptEmbeds(torch.randn(2, 7, c.context_dim, generator=g), torch.randn(2, c.pooled_dim, generator=g),
                        torch.ones(2, 7, dtype=torch.bool))
    null = PromptEmbeds(torch.randn(1, 7, c.context_dim, generator=g), torch.randn(1, c.pooled_dim, generator=g),
                        torch.ones(1, 7, dtype=torch.bool))
    return model, vae, (text, null)


# ---- guidance only where it is asked for --------------------------------------------------------------------------
def test_infinity_scales_with_cfg_1_after_the_last_guided_one_run_the_conditional_rows_alone(tiny_model, case_text):
    seen, hook = block_inputs(tiny_model)
    try:
        codes, logits = var_core.sample(tiny_model, None, case_text, SCHEDULE, cfg=[3.0] * 4 + [1.0] * 3, tau=0.5,
                                        seed=1, return_logits=True)
    finally:
        hook.remove()
    assert [rows for rows, _ in seen] == [4] * 4 + [2] * 3  # B = 2: [cond; uncond] while guided, then cond only
    # the conditional rows are what they were with the unconditional rows beside them: the teacher-forced logits
    with torch.no_grad():
        plain = tiny_model.teacher_forced_logits(case_text, codes, SCHEDULE)
    ends = torch.tensor([h * w for h, w in SCHEDULE]).cumsum(0).tolist()
    for k in range(4, 7):
        assert (logits[k] - plain[:, ends[k - 1]:ends[k]] / 0.5).abs().max() <= 1e-4
    seen, hook = block_inputs(tiny_model)
    try:
        var_core.sample(tiny_model, None, case_text, SCHEDULE, cfg=1.0, seed=1)
    finally:
        hook.remove()
    assert [rows for rows, _ in seen] == [2] * 7


def test_a_guidance_window_that_starts_late_keeps_the_unconditional_rows_for_the_cache(tiny_model, case_text):
    seen, hook = block_inputs(tiny_model)
    try:
        var_core.sample(tiny_model, None, case_text, SCHEDULE, cfg=[1.0] * 3 + [3.0] * 2 + [1.0] * 2, seed=1)
    finally:
        hook.remove()
    assert [rows for rows, _ in seen] == [4] * 5 + [2] * 2


# ---- pruning --------------------------------------------------------------------------------------------------------
def test_pivotal_tokens_are_those_farthest_from_their_images_mean():
    tokens = torch.zeros(2, 6, 3)
    tokens[0, [1, 4]] = 5.0
    tokens[1, 5] = -2.0
    tokens[1, 0] = 1.0
    assert prune.pivotal(tokens, 2 / 6).tolist() == [[1, 4], [0, 5]]
    assert prune.pivotal(tokens, 1.0).tolist() == [list(range(6))] * 2


def test_restore_puts_the_kept_outputs_in_place_and_the_previous_scale_elsewhere():
    previous = torch.arange(4.0).view(1, 4, 1)  # a 2 x 2 scale
    kept = torch.full((1, 2, 1), -1.0)
    out = prune.restore(kept, torch.tensor([[0, 15]]), previous, (2, 2), (4, 4))
    assert out.shape == (1, 16, 1) and out[0, 0, 0] == -1 and out[0, 15, 0] == -1
    assert out[0, 5, 0] == 0.75 and out[0, 6, 0] == 1.25  # bilinear between the 2 x 2 values


def test_pruning_settings_are_checked():
    with pytest.raises(ValueError, match="prune_keep"):
        Pruning(2, 0.0)
    with pytest.raises(ValueError, match="prune_scales"):
        Pruning(-1)
    assert Pruning(2, 0.5).keep_at(4, 7) is None and Pruning(2, 0.5).keep_at(5, 7) == 0.5
    assert Pruning(9, 0.5).keep_at(0, 7) is None  # the one-token first scale has nothing to restore from
    assert Pruning(2, 1.0).keep_at(6, 7) is None


def infinity(model, text, pruning, **kw):
    return var_core.sample(model, None, text, SCHEDULE, cfg=3.0, tau=0.5, seed=4, return_logits=True,
                           pruning=pruning, **kw)


def var_sample(model, vae, pruning, **kw):
    return var_core.sample(model, vae, [3, 7], seed=5, return_logits=True, return_codes=True, pruning=pruning, **kw)


def switti_sample(model, vae, text, pruning, **kw):
    return var_core.sample(model, vae, text[0], negative=text[1], seed=3, return_logits=True, return_codes=True, pruning=pruning, **kw)


def test_infinity_pruning_computes_the_kept_tokens_only_and_keeping_all_is_the_exact_sampler(tiny_model, case_text):
    exact_codes, exact_logits = infinity(tiny_model, case_text, prune.OFF)
    every = infinity(tiny_model, case_text, Pruning(3, 0.999))  # ceil(0.999 n) = n here: every token kept
    assert all(torch.equal(a, b) for a, b in zip(exact_codes, every[0]))
    assert all(torch.equal(a, b) for a, b in zip(exact_logits, every[1]))
    seen, hook = block_inputs(tiny_model)
    try:
        codes, logits = infinity(tiny_model, case_text, Pruning(2, 0.25))
    finally:
        hook.remove()
    sizes = [h * w for h, w in SCHEDULE]
    assert [n for _, n in seen] == sizes[:5] + [-(-n // 4) for n in sizes[5:]]
    assert all(torch.equal(a, b) for a, b in zip(exact_logits[:5], logits[:5]))  # the coarse scales are exact
    assert [c.shape for c in codes] == [c.shape for c in exact_codes]
    assert not torch.equal(logits[6], exact_logits[6])


def test_infinity_pruning_with_variations_and_without_guidance(tiny_model, case_text, case_bits):
    codes, _ = infinity(tiny_model, case_text, Pruning(2, 0.5), forced_codes=case_bits[:4])
    assert all(torch.equal(codes[k], case_bits[k]) for k in range(4))
    codes, _ = var_core.sample(tiny_model, None, case_text, SCHEDULE, cfg=[3.0] * 5 + [1.0] * 2, seed=4,
                               pruning=Pruning(2, 0.5), return_logits=True)
    assert codes[6].shape == case_bits[6].shape
    with pytest.raises(ValueError, match="KV-cached"):
        var_core.sample(tiny_model, None, case_text, SCHEDULE, pruning=Pruning(2, 0.5), use_cache=False)


def test_var_pruning_keeping_all_is_exact_and_pruning_computes_fewer_tokens(var):
    model, vae = var
    exact = var_sample(model, vae, prune.OFF)
    every = var_sample(model, vae, Pruning(2, 0.999))
    assert torch.equal(exact[0], every[0]) and all(torch.equal(a, b) for a, b in zip(exact[2], every[2]))
    seen, hook = block_inputs(model)
    try:
        pruned = var_sample(model, vae, Pruning(1, 0.3))
    finally:
        hook.remove()
    sizes = [p * p for p in model.config.patch_nums]
    assert [n for _, n in seen] == sizes[:-1] + [-(-sizes[-1] * 3 // 10)]
    assert all(torch.equal(a, b) for a, b in zip(exact[2][:-1], pruned[2][:-1]))
    assert pruned[0].shape == exact[0].shape and not torch.equal(pruned[1][-1], exact[1][-1])


def test_switti_pruning_keeping_all_is_exact_and_pruning_computes_fewer_tokens(switti):
    model, vae, text = switti
    exact = switti_sample(model, vae, text, prune.OFF)
    every = switti_sample(model, vae, text, Pruning(2, 0.999))
    assert torch.equal(exact[0], every[0]) and all(torch.equal(a, b) for a, b in zip(exact[2], every[2]))
    seen, hook = block_inputs(model)
    try:
        pruned = switti_sample(model, vae, text, Pruning(2, 0.5))
    finally:
        hook.remove()
    sizes = [p * p for p in model.config.patch_nums]
    assert [n for _, n in seen] == sizes[:-2] + [-(-n // 2) for n in sizes[-2:]]
    assert pruned[0].shape == exact[0].shape and not torch.equal(pruned[1][-1], exact[1][-1])


def test_switti_ar_pruning_keeping_all_is_exact(switti):
    """Switti-AR (causal by scale, a KV cache): the fixture's weights with the causal mask, as the AR release."""
    from dataclasses import replace
    from var_core.switti.model import Switti, attention_bias, scale_levels
    base, vae, text = switti
    config = replace(base.config, use_ar=True)
    model = Switti(config)
    sd = dict(base.state_dict())
    sd["attn_bias_for_masking"] = attention_bias(scale_levels(config.patch_nums), True).view_as(
        sd["attn_bias_for_masking"])
    model.load_state_dict(sd)
    model.eval().requires_grad_(False)
    exact = switti_sample(model, vae, text, prune.OFF)
    every = switti_sample(model, vae, text, Pruning(2, 0.999))
    assert torch.equal(exact[0], every[0]) and all(torch.equal(a, b) for a, b in zip(exact[2], every[2]))
    pruned = switti_sample(model, vae, text, Pruning(2, 0.5))
    assert pruned[0].shape == exact[0].shape and not torch.equal(pruned[1][-1], exact[1][-1])
