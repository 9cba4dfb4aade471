"""BitVAE: parity with the reference's golden outputs, key forms, config inference and error messages."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from var_core.infinity import quantizer
from var_core.infinity.bitvae import BitVAE, BitVAEConfig, load_vae
from var_core.checkpoint import CheckpointError
from var_core.schedules import scale_schedule

from fixture_paths import TINY  # noqa: E402
SCHEDULE = scale_schedule(1.0, "0.06M")  # (1,2,4,6,8,12,16)^2: 256x256 images


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(TINY / "case.safetensors"))


@pytest.fixture(scope="module")
def raw_sd() -> dict[str, torch.Tensor]:
    return torch.load(TINY / "vae.pth", map_location="cpu", weights_only=True)["vae"]


@pytest.fixture(scope="module")
def vae() -> BitVAE:
    return load_vae(TINY / "vae.pth")


def stored_bits(golden):
    return [golden[f"bits_s{k}"] for k in range(len(SCHEDULE))]


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------------
def test_fixture_config_is_inferred(vae):
    assert vae.d == 16
    assert vae.config == BitVAEConfig(d=16, base_ch=32, ch_mult=(1, 2, 4, 4, 4), num_res_blocks=2)
    assert vae.patch_size == 16
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    assert vae.source == str(TINY / "vae.pth")


def test_state_dict_keys_are_the_released_ones(vae, raw_sd):
    ignored = {"quantizer.lfq.mask", "quantize.lfq.mask"}
    assert set(vae.state_dict()) == set(raw_sd) - ignored
    for key, value in vae.state_dict().items():
        assert torch.equal(value, raw_sd[key]), key


def test_encode_latent_matches_reference(vae, golden):
    latent = vae.encode_latent(golden["images"])
    assert latent.dtype == torch.float32 and latent.shape == golden["vae_latent"].shape
    assert max_diff(latent, golden["vae_latent"]) <= 1e-4


def test_bits_and_code_sums_from_stored_latent(golden):
    bits = quantizer.latent_to_bits(golden["vae_latent"], SCHEDULE)
    for k, b in enumerate(bits):
        assert b.dtype == torch.uint8 and torch.equal(b, golden[f"bits_s{k}"]), f"scale {k}"
    assert max_diff(quantizer.summed_codes(stored_bits(golden), SCHEDULE), golden["vae_summed_codes"]) <= 1e-6


def test_encode_bits_from_images_is_exact(vae, golden):
    bits = vae.encode_bits(golden["images"], SCHEDULE)
    assert len(bits) == len(SCHEDULE)
    for k, b in enumerate(bits):
        assert torch.equal(b, golden[f"bits_s{k}"]), f"scale {k}"


def test_decode_latent_matches_reference(vae, golden):
    images = vae.decode_latent(golden["vae_summed_codes"])
    assert images.shape == golden["vae_decoded"].shape
    assert max_diff(images, golden["vae_decoded"]) <= 2e-4
    assert images.min() >= -1 and images.max() <= 1


def test_decode_bits_matches_reference(vae, golden):
    assert max_diff(vae.decode_bits(stored_bits(golden), SCHEDULE), golden["vae_decoded"]) <= 2e-4


# ---------------------------------------------------------------------------------------------------------------------
def flat_form(sd):
    """The other key form the reference's loader accepts: `x.conv.weight` -> `x.weight`, `x.norm.bias` -> `x.bias`."""
    return {re.sub(r"\.(conv|norm)\.(weight|bias)$", r".\2", k): v for k, v in sd.items()}


def test_flat_key_form_loads_to_the_same_model(vae, raw_sd, golden):
    flat = flat_form(raw_sd)
    assert "encoder.conv_in.weight" in flat and "encoder.down.0.downsample.conv.weight" in flat
    assert "encoder.down.1.block.0.nin_shortcut.weight" in flat and "decoder.norm_out.bias" in flat
    other = load_vae({"vae": flat})
    assert other.config == vae.config
    for key, value in vae.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    codes = golden["vae_summed_codes"][:1, :, :4, :4]
    assert torch.equal(other.decode_latent(codes), vae.decode_latent(codes))


@pytest.mark.parametrize("cfg", [BitVAEConfig(d=8, base_ch=32, ch_mult=(1, 2, 2, 2, 2)),
                                 BitVAEConfig(d=12, base_ch=48, ch_mult=(1, 2, 4, 4), num_res_blocks=1)])
def test_other_configs_round_trip_through_their_state_dict(cfg):
    torch.manual_seed(0)
    model = BitVAE(cfg).eval()
    loaded = load_vae({"vae": dict(model.state_dict())})
    assert loaded.config == cfg and loaded.d == cfg.d
    images = torch.rand(1, 3, 2 * cfg.patch_size, 3 * cfg.patch_size) * 2 - 1
    latent = loaded.encode_latent(images)
    assert latent.shape == (1, cfg.d, 2, 3)
    assert torch.equal(latent, model.encode_latent(images))
    assert loaded.decode_latent(latent).shape == images.shape


def test_half_precision_load_returns_fp32_outputs(raw_sd):
    half = load_vae(raw_sd, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    latent = half.encode_latent(torch.zeros(1, 3, 32, 32))
    assert latent.dtype == torch.float32 and latent.shape == (1, 16, 2, 2)
    assert half.decode_latent(latent).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------------
def test_missing_key_is_named(raw_sd):
    sd = dict(raw_sd)
    del sd["decoder.up.2.block.1.conv2.conv.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.up\.2\.block\.1\.conv2\.conv\.bias"):
        load_vae({"vae": sd})


def test_misshaped_key_is_named(raw_sd):
    sd = dict(raw_sd)
    sd["encoder.mid.block_1.norm2.norm.weight"] = torch.ones(64)
    with pytest.raises(CheckpointError, match=r"encoder\.mid\.block_1\.norm2\.norm\.weight: file \(64,\)"):
        load_vae({"vae": sd})


def test_unexpected_keys_are_named_but_mask_buffers_are_ignored(raw_sd):
    extra = {"discriminator.conv.weight": torch.zeros(1), "quantizer.lfq.project_in.weight": torch.zeros(1)}
    sd = dict(raw_sd, **extra)
    with pytest.raises(CheckpointError) as info:
        load_vae(sd)
    message = str(info.value)
    assert "discriminator.conv.weight" in message and "quantizer.lfq.project_in.weight" in message
    assert "mask" not in message


def test_non_vae_state_dict_is_refused():
    with pytest.raises(CheckpointError, match="not a BitVAE checkpoint"):
        load_vae({"pos_start": torch.zeros(1, 1, 8)})


def test_wrong_image_size_names_the_expected_size(vae):
    with pytest.raises(ValueError, match="256x256"):
        vae.encode_bits(torch.zeros(1, 3, 128, 128), SCHEDULE)
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode_latent(torch.zeros(1, 3, 40, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode_latent(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode_latent(torch.zeros(1, 4, 32, 32))


def test_bad_bits_are_refused(vae, golden):
    bits = stored_bits(golden)
    with pytest.raises(ValueError, match="6 scales but the schedule has 7"):
        vae.decode_bits(bits[:-1], SCHEDULE)
    with pytest.raises(ValueError, match="scale 3"):
        vae.decode_bits(bits[:3] + [bits[3][:, :5]] + bits[4:], SCHEDULE)
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\)"):
        vae.decode_latent(torch.zeros(1, 8, 4, 4))
