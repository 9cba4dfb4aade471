"""The transformer: exact checkpoint layout, shape-inferred architecture, strict safe loading, reference parity."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from fixture_paths import TINY
from var_core import CheckpointError, load_transformer
from var_core.family import Family
from var_core.infinity import quantizer
from var_core.schedules import scale_schedule
from toyworld.builders import random_transformer
from var_core.infinity.model import Infinity, InfinityConfig

SCHEDULE = scale_schedule(1.0, "0.06M")


def test_full_2b_layout_has_the_released_keys_and_parameter_count():
    with torch.device("meta"):
        model = Infinity(InfinityConfig())
    sd = model.state_dict()
    assert len(sd) == 694
    params = sum(p.numel() for p in model.parameters())
    assert params == 2_204_564_032
    buffers = {n.rsplit(".", 1)[-1] for n, _ in model.named_buffers()}
    assert buffers == {"zero_k_bias"}
    assert tuple(sd["block_chunks.7.module.3.sa.mat_qkv.weight"].shape) == (6144, 2048)
    assert tuple(sd["text_proj_for_sos.ca.mat_q"].shape) == (1, 16, 128)
    assert tuple(sd["cfg_uncond"].shape) == (512, 2048)
    assert tuple(sd["head.weight"].shape) == (64, 2048)


def test_tiny_fixture_loads_strictly_with_inferred_config(tiny_model):
    ref = torch.load(TINY / "transformer.pth", weights_only=True)
    assert set(tiny_model.state_dict()) == set(ref)
    cfg = tiny_model.config
    assert (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.block_chunks, cfg.bits, cfg.text_channels,
            cfg.text_maxlen, cfg.ffn_hidden, cfg.text_pool_heads) == (4, 128, 2, 2, 16, 256, 32, 512, 2)
    for k, v in ref.items():
        assert torch.equal(tiny_model.state_dict()[k], v), k


@pytest.mark.parametrize("cfg", [
    InfinityConfig(depth=6, embed_dim=96, num_heads=3, block_chunks=3, ffn_hidden=384, bits=8, text_channels=64,
                   text_maxlen=20, text_pool_heads=1),
    InfinityConfig(depth=2, embed_dim=64, num_heads=4, block_chunks=1, ffn_hidden=256, bits=12, text_channels=128,
                   text_maxlen=8, text_pool_heads=4, num_levels=13),
])
def test_other_architectures_round_trip_through_files(cfg, tmp_path):
    model = random_transformer(cfg)
    path = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_transformer(path)
    assert loaded.config == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_teacher_forced_logits_match_reference(tiny_model, case, case_text, case_bits):
    with torch.no_grad():
        logits = tiny_model(case_text, case["x_wo_prefix"], SCHEDULE)
        null = tiny_model(tiny_model.null_text(case_text), case["x_wo_prefix"], SCHEDULE)
        from_bits = tiny_model.teacher_forced_logits(case_text, case_bits, SCHEDULE)
    assert logits.shape == (2, 521, 32)
    assert (logits - case["logits_tf"]).abs().max() <= 1e-4
    assert (null - case["logits_tf_null"]).abs().max() <= 1e-4
    assert (from_bits - case["logits_tf"]).abs().max() <= 1e-4


def test_teacher_forcing_inputs_and_labels_match_reference(case, case_bits):
    inputs, labels = quantizer.teacher_forcing(case["vae_latent"], SCHEDULE, flip_prob=0.0)
    for got, want in zip(labels, case_bits):
        assert torch.equal(got, want)
    assert torch.equal(Family.flatten_codes(labels), case["gt_bits"])
    assert (torch.cat(inputs, 1) - case["x_wo_prefix"]).abs().max() <= 1e-6
    assert (torch.cat(quantizer.inputs_from_bits(case_bits, SCHEDULE), 1) - case["x_wo_prefix"]).abs().max() <= 1e-6
    assert (quantizer.summed_codes(case_bits, SCHEDULE) - case["vae_summed_codes"]).abs().max() <= 1e-6


def test_block_causal_mask_hides_later_scales(tiny_model, case, case_text):
    """Changing the inputs of the last scale must not change any logit of earlier scales."""
    x = case["x_wo_prefix"].clone()
    x2 = x.clone()
    x2[:, -256:] += 1.0
    with torch.no_grad():
        a, b = tiny_model(case_text, x, SCHEDULE), tiny_model(case_text, x2, SCHEDULE)
    assert torch.equal(a[:, :265], b[:, :265])
    assert (a[:, 265:] - b[:, 265:]).abs().max() > 1e-3


# --- loading: wrappers, strictness, safety ------------------------------------------------------------------------
def _sd():
    return torch.load(TINY / "transformer.pth", weights_only=True)


def test_wrapped_checkpoints_load(tmp_path, tiny_model):
    sd = _sd()
    torch.save({"trainer": {"gpt_fsdp": sd, "config": {}}, "epoch": 1}, tmp_path / "train.pth")
    assert not load_transformer(tmp_path / "train.pth").config.lvl_embed_per_chunk
    special = torch.randn(4, 256)
    torch.save({"model": {**sd, "special_token": special}, "iter": 500}, tmp_path / "arbooth.pth")
    arbooth = load_transformer(tmp_path / "arbooth.pth")
    assert arbooth.config.lvl_embed_per_chunk and torch.equal(arbooth.special_token, special)


def test_missing_unexpected_and_misshaped_keys_are_named():
    sd = _sd()
    del sd["block_chunks.1.module.0.ffn.fc2.bias"]
    sd["block_chunks.0.module.0.sa.extra"] = torch.zeros(3)
    sd["head.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as e:
        load_transformer(sd)
    msg = str(e.value)
    assert "block_chunks.1.module.0.ffn.fc2.bias" in msg and "sa.extra" in msg and "head.bias" in msg


def test_truncated_and_foreign_files_are_refused(tmp_path):
    data = (TINY / "transformer.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pth").write_text("hello")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes()[:-4])
    for name in ["cut.pth", "notes.pth", "other.safetensors", "cut.safetensors", "missing.pth"]:
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(CheckpointError, match=name.split(".")[0]):
            load_transformer(tmp_path / name)
        assert sorted(os.listdir(tmp_path)) == before


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"pos_start": _Evil()}, f)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_transformer(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_vae_file_is_not_taken_for_a_transformer():
    with pytest.raises(CheckpointError, match="not an Infinity transformer"):
        load_transformer(TINY / "vae.pth")


def test_bf16_blocks_keep_text_path_and_head_in_fp32(case, case_text):
    model = load_transformer(TINY / "transformer.pth", dtype=torch.bfloat16)
    assert model.compute_dtype == torch.bfloat16
    assert model.head.weight.dtype == torch.float32 and model.cfg_uncond.dtype == torch.float32
    with torch.no_grad():
        logits = model(case_text, case["x_wo_prefix"], SCHEDULE)
    assert logits.dtype == torch.float32
    assert (logits - case["logits_tf"]).abs().max() < 0.5  # bf16 rounding only, values up to ~6


@pytest.mark.parametrize("per_scale", [True, False])
def test_block_causal_attention_equals_the_masked_attention(per_scale, monkeypatch):
    from var_core.infinity import layers as transformer
    from var_core.infinity.layers import block_causal_attention, scale_levels
    monkeypatch.setattr(transformer, "PER_SCALE_MIN_TOKENS", 0 if per_scale else 10**9)
    schedule = [(1, 1), (2, 2), (3, 4), (5, 5)]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 42, 8, generator=g) for _ in range(3))  # 1 + 4 + 12 + 25 tokens
    level = scale_levels(schedule)
    mask = level[:, None] >= level[None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    got = block_causal_attention(q, k, v, tuple(h * w for h, w in schedule))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
