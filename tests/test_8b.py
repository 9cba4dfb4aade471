"""Infinity-8B's files and its spatial-patchify path: reference parity on the 8B-shaped golden fixture (sharded
weights, f8/d14 VAE, 2x2 patchified 56-bit tokens; tests/fixtures/infinity/tiny_8b_square/README.md) and
self-consistency of tiny random 8B-shaped models on other templates. Nothing here knows the fixture's sizes: every
size comes from the checkpoint (token_patch, bits) and the schedule."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fixture_paths import TINY_8B
from var_core import CheckpointError, check_compatible, load_transformer, load_vae, sample
from var_core.family import Family
from var_core.infinity import quantizer
from var_core.sampling import variation_codes
from var_core.schedules import pixel_size, scale_schedule

META = json.loads((TINY_8B / "meta.json").read_text())
WEIGHTS = TINY_8B / META["files"]["transformer"]
SCHEDULE = scale_schedule(META["h_div_w_template"], META["pn"])
K = len(SCHEDULE)


@pytest.fixture(scope="module")
def case():
    return load_file(str(TINY_8B / "case.safetensors"))


@pytest.fixture(scope="module")
def text(case):
    return list(case["text_feats"].split(case["text_lens"].tolist()))


@pytest.fixture(scope="module")
def model():
    return load_transformer(WEIGHTS)


@pytest.fixture(scope="module")
def vae():
    return load_vae(TINY_8B / "vae.pth")


@pytest.fixture(scope="module")
def bits(case):
    """The transformer-layout (patchified) bits of every scale."""
    return [case[f"bits_s{k}"] for k in range(K)]


def vae_grid(model):
    return quantizer.vae_schedule(SCHEDULE, model.config.token_patch)


# ---------------------------------------------------------------------------------------------------- files
def test_shard_folder_loads_strictly_every_key_used(model):
    index = json.loads((WEIGHTS / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(model.state_dict()) == set(index)
    for shard in set(index.values()):
        for key, value in load_file(str(WEIGHTS / shard)).items():
            assert torch.equal(model.state_dict()[key], value), key
    cfg = model.config
    assert (cfg.bits, cfg.token_patch, cfg.vae_bits) == (META["model"]["d_vae"], 2, META["vae"]["codebook_dim"])
    assert (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.block_chunks, cfg.ffn_hidden, cfg.text_channels,
            cfg.text_maxlen, cfg.text_pool_heads) == tuple(META["model"][k] for k in (
                "depth", "embed_dim", "num_heads", "block_chunks", "ffn_hidden", "text_channels", "text_maxlen",
                "text_pool_heads"))


def test_one_shard_stands_for_its_folder(model):
    """File pickers (ComfyUI's) list the shards, not the folder: picking any shard loads the whole model."""
    shard = sorted(WEIGHTS.glob("model-*.safetensors"))[-1]
    again = load_transformer(shard)
    assert again.config == model.config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_f8_d14_vae_infers_its_architecture(vae):
    v = META["vae"]
    assert (vae.d, vae.patch_size, vae.token_patch) == (v["codebook_dim"], v["patch_size"], 2)
    assert vae.config.base_ch == v["base_ch"] and list(vae.config.ch_mult) == v["ch_mult"]
    assert vae.config.num_res_blocks == v["num_res_blocks"]
    assert len(vae.decoder.up[0].block) == v["decoder_res_blocks_per_level"]


def test_missing_shard_and_missing_key_name_file_and_key(tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(WEIGHTS, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).rename(tmp_path / "away.safetensors")
    with pytest.raises(CheckpointError, match=shard):
        load_transformer(folder)
    (tmp_path / "away.safetensors").rename(folder / shard)
    index["weight_map"]["block_chunks.9.module.0.sa.proj.weight"] = shard  # the index names a key no shard holds
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"(?s)" + shard + ".*block_chunks\\.9\\.module\\.0\\.sa\\.proj"):
        load_transformer(folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        load_transformer(folder)


def test_mismatched_pairs_are_refused_naming_both_files(model, vae, tiny_model, tiny_vae):
    for m, v in ((tiny_model, vae), (model, tiny_vae)):
        with pytest.raises(CheckpointError) as e:
            check_compatible(m, v)
        assert str(v.source) in str(e.value) and str(m.source) in str(e.value)
    check_compatible(model, vae)
    check_compatible(tiny_model, tiny_vae)


def test_convert_handles_the_shard_folder(tmp_path, model):
    from var_core.cli import main
    out = tmp_path / "8b.safetensors"
    assert main(["convert", str(WEIGHTS), str(out)]) == 0
    again = load_transformer(out)
    assert again.config == model.config and again.config.token_patch == 2
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


# ---------------------------------------------------------------------------------------------------- parity
def test_vae_encode_in_its_own_layout_and_patchify_match_reference(model, vae, case, bits):
    latent = vae.encode_latent(case["images"])
    assert (latent - case["vae_latent"]).abs().max() <= 1e-4
    vae_bits = vae.encode_bits(case["images"], vae_grid(model))
    p = model.config.token_patch
    for k in range(K):
        assert torch.equal(vae_bits[k], case[f"vae_bits_s{k}"]), k
        assert torch.equal(quantizer.patchify(vae_bits[k], p), bits[k]), k
        assert torch.equal(quantizer.unpatchify(bits[k], p), case[f"vae_bits_s{k}"]), k
    assert torch.equal(Family.flatten_codes(bits), case["gt_bits"])


def test_summed_codes_teacher_forcing_and_decode_match_reference(model, vae, case, bits):
    p = model.config.token_patch
    summed = quantizer.summed_codes(bits, SCHEDULE, p)
    assert (summed - case["vae_summed_codes"]).abs().max() <= 1e-6
    vae_bits = [case[f"vae_bits_s{k}"] for k in range(K)]
    assert (quantizer.summed_codes(vae_bits, vae_grid(model)) - case["vae_summed_codes"]).abs().max() <= 1e-6
    inputs = torch.cat(quantizer.inputs_from_bits(bits, SCHEDULE, p), dim=1)
    assert (inputs - case["x_wo_prefix"]).abs().max() <= 1e-6
    forced, labels = quantizer.teacher_forcing(case["vae_latent"], SCHEDULE, patch=p)
    assert torch.equal(Family.flatten_codes(labels), case["gt_bits"])
    assert (torch.cat(forced, 1) - case["x_wo_prefix"]).abs().max() <= 1e-6
    assert (vae.decode_latent(case["vae_summed_codes"]) - case["vae_decoded"]).abs().max() <= 2e-4
    assert (vae.decode_bits(vae_bits, vae_grid(model)) - case["vae_decoded"]).abs().max() <= 2e-4


def test_teacher_forced_logits_match_reference(model, case, text, bits):
    with torch.no_grad():
        cond = model.teacher_forced_logits(text, bits, SCHEDULE)
        null = model.teacher_forced_logits(model.null_text(text), bits, SCHEDULE)
        direct = model(text, case["x_wo_prefix"], SCHEDULE)
    assert (cond - case["logits_tf"]).abs().max() <= 1e-4
    assert (null - case["logits_tf_null"]).abs().max() <= 1e-4
    assert (direct - case["logits_tf"]).abs().max() <= 1e-4


def test_kv_cached_cfg_sampler_matches_reference(model, vae, case, text, bits):
    got_bits, logits = sample(model, None, text, SCHEDULE, cfg=3.0, tau=0.5, top_k=900, top_p=0.97,
                              forced_codes=bits, return_logits=True)
    for k in range(K):
        assert (logits[k] - case[f"ar_logits_s{k}"]).abs().max() <= 5e-4, k
        assert torch.equal(got_bits[k], bits[k]), k
    _, plain = sample(model, None, text, SCHEDULE, cfg=1.0, tau=1.0, forced_codes=bits, return_logits=True)
    for k in range(K):
        assert (plain[k] - case[f"ar_plain_logits_s{k}"]).abs().max() <= 1e-4, k
    images = sample(model, vae, text, SCHEDULE, cfg=3.0, tau=0.5, forced_codes=bits)
    assert (images - case["ar_image"]).abs().max() <= 2e-4
    as_uint8 = ((images + 1) / 2 * 255).to(torch.uint8).permute(0, 2, 3, 1).flip(-1)  # the reference's BGR
    assert (as_uint8.int() - case["ar_image_uint8_bgr"].int()).abs().max() <= 1


def test_variation_bits_are_the_patchified_encoding(model, vae, case, bits):
    forced = variation_codes(vae, case["images"][:1], SCHEDULE, 3, batch=2)
    assert len(forced) == 3
    for k, f in enumerate(forced):
        assert f.shape == (2, *bits[k].shape[1:]) and torch.equal(f[1], bits[k][0]), k


# ---------------------------------------------------------------------------------------------------- random 8B-shaped
@pytest.fixture(scope="module")
def toy8b(tmp_path_factory):
    """A tiny random 8B-shaped transformer, written as release-style shards and loaded back, and its f8 VAE."""
    from toyworld.builders import TOY_8B_TRANSFORMER, TOY_8B_VAE, random_transformer, random_vae, save_shards
    folder = tmp_path_factory.mktemp("toy8b") / "weights"
    save_shards(random_transformer(TOY_8B_TRANSFORMER, seed=3).state_dict(), folder, shards=3)
    return load_transformer(folder), random_vae(TOY_8B_VAE, seed=3)


def test_patchify_puts_bit_c_of_pixel_dy_dx_at_channel_4c_2dy_dx():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (2, 6, 10, 5), generator=g, dtype=torch.uint8)  # a 3x5 token grid, d = 5
    t = quantizer.patchify(x, 2)
    assert t.shape == (2, 3, 5, 20)
    for c, dy, dx in ((0, 0, 0), (4, 1, 0), (2, 0, 1), (3, 1, 1)):
        assert torch.equal(t[:, :, :, 4 * c + 2 * dy + dx], x[:, dy::2, dx::2, c])
    assert torch.equal(quantizer.unpatchify(t, 2), x)
    assert quantizer.patchify(x, 1) is x and quantizer.unpatchify(x, 1) is x


@pytest.mark.parametrize("aspect", [0.5, 1.333])
def test_random_8b_shaped_model_is_self_consistent_on_non_square_templates(toy8b, aspect):
    model, vae = toy8b
    check_compatible(model, vae)
    p, d = model.config.token_patch, model.config.bits
    assert p == vae.token_patch == 2 and d == 4 * vae.d
    schedule = scale_schedule(aspect, "0.015M")
    assert any(h != w for h, w in schedule)
    grid = quantizer.vae_schedule(schedule, p)
    g = torch.Generator().manual_seed(0)
    text = [torch.randn(5, model.config.text_channels, generator=g),
            torch.randn(9, model.config.text_channels, generator=g)]

    bits, logits = sample(model, None, text, schedule, cfg=2.5, tau=0.7, seed=0, return_logits=True)
    assert [tuple(b.shape) for b in bits] == [(2, h, w, d) for h, w in schedule]
    _, full = sample(model, None, text, schedule, cfg=2.5, tau=0.7, forced_codes=bits, return_logits=True,
                     use_cache=False)
    for a, b in zip(logits, full):  # KV cache == recomputing the whole prefix
        assert (a - b).abs().max() <= 1e-4
    _, plain = sample(model, None, text, schedule, cfg=1.0, tau=1.0, forced_codes=bits, return_logits=True)
    with torch.no_grad():
        tf = model.teacher_forced_logits(text, bits, schedule)
    assert (torch.cat(plain, 1) - tf).abs().max() <= 1e-4  # KV-cached sampler == teacher-forced forward
    for b in bits:  # the sampled tokens round-trip through the VAE layout
        assert torch.equal(quantizer.patchify(quantizer.unpatchify(b, p), p), b)

    images = sample(model, vae, text, schedule, cfg=2.5, tau=0.7, seed=0)
    assert images.shape == (2, 3, *pixel_size(schedule))
    assert torch.equal(images, vae.decode_bits([quantizer.unpatchify(b, p) for b in bits], grid))

    # the VAE's bits on its own grid, patchified, are the teacher-forcing labels of the transformer
    encoded = vae.encode_bits(images[:1], grid)
    assert [tuple(b.shape[1:3]) for b in encoded] == grid
    _, labels = quantizer.teacher_forcing(vae.encode_latent(images[:1]), schedule, patch=p)
    assert all(torch.equal(quantizer.patchify(a, p), b) for a, b in zip(encoded, labels))

    keep = 2  # a variation keeps the first scales of the image and samples the rest
    forced = variation_codes(vae, images[:1], schedule, keep, batch=2)
    varied = sample(model, None, text, schedule, seed=1, forced_codes=forced)
    for k in range(keep):
        assert torch.equal(varied[k], forced[k]) and torch.equal(forced[k][0], labels[k][0])
    assert not torch.equal(varied[-1], sample(model, None, text, schedule, seed=2, forced_codes=forced)[-1])


def test_cli_samples_varies_and_trains_on_an_8b_shaped_shard_folder(toy_paths, tmp_path, capsys):
    from PIL import Image
    from toyworld.builders import TOY_8B_TRANSFORMER, TOY_8B_VAE, random_transformer, random_vae, save_shards
    from var_core.cli import main
    from var_core.checkpoint import save_safetensors_atomic
    weights = save_shards(random_transformer(TOY_8B_TRANSFORMER, seed=7).state_dict(), tmp_path / "w8b")
    vae = save_safetensors_atomic(random_vae(TOY_8B_VAE, seed=7).state_dict(), tmp_path / "vae_f8.safetensors")
    files = ["--model", str(weights), "--vae", str(vae), "--text-encoder", str(toy_paths["text_encoder"]),
             "--pn", "0.015M", "--device", "cpu"]

    def run(name, *extra, prompt="a photo of a dog"):
        return main(["sample", *files, "--prompt", prompt, "--out", str(tmp_path / f"{name}.png"), "--seed", "1",
                     "--aspect", "2:3", *extra])
    assert run("a") == 0 and run("b") == 0
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()
    assert run("v", "--init-image", str(tmp_path / "a.png"), "--keep-scales", "2", "--seed", "5") == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(tmp_path / "a.png").save(photos / "0.png")
    out = tmp_path / "s.safetensors"
    assert main(["train", *files, "--images", str(photos), "--class", "dog", "--out", str(out), "--steps", "1",
                 "--rank", "2"]) == 0
    assert run("s", "--subject", str(out), prompt="a photo of <placeholder> dog") == 0
    wrong = main(["sample", *files[:2], "--vae", str(toy_paths["vae"]), *files[4:], "--prompt", "x", "--out",
                  str(tmp_path / "x.png")])
    assert wrong == 2 and str(weights) in capsys.readouterr().err
