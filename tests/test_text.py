"""The T5 text encoder on tiny random models made on the fly (nothing downloaded, no network)."""
from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

from toyworld.t5 import make_t5, make_tokenizer, t5_config
from var_core.checkpoint import CheckpointError
from var_core.infinity.t5 import TextEncoder, load_text_encoder

PROMPTS = ["a photo of a dog", "", "a cute red cat sitting on the beach at night", "Zebra!", "dog dog"]
TOL = 1e-5


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Offline mode, and any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_t5(tmp_path_factory.mktemp("t5") / "tiny-flan-t5", d_model=32, seed=0)


@pytest.fixture(scope="module")
def encoder(folder):
    return load_text_encoder(folder)


@pytest.fixture(scope="module")
def reference(folder):
    """Features the straightforward way: HF's own loaders, every prompt padded to 512 tokens."""
    from transformers import AutoTokenizer, T5EncoderModel

    tok = AutoTokenizer.from_pretrained(str(folder), legacy=True, model_max_length=512, local_files_only=True)
    model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True).eval()
    enc = tok(PROMPTS, max_length=512, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        feats = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state.float()
    lens = enc["attention_mask"].sum(-1).tolist()
    return [feats[i, :n] for i, n in enumerate(lens)]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = TOL):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert (x - y).abs().max().item() <= tol


# ---------------------------------------------------------------------------------------------- outputs
def test_outputs_match_a_direct_forward_padded_to_512(encoder, reference):
    out = encoder(PROMPTS)
    assert isinstance(out, list) and len(out) == len(PROMPTS)
    tok = encoder.tokenizer
    for prompt, feat in zip(PROMPTS, out):
        ids = tok(prompt)["input_ids"]
        assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
        assert feat.shape == (len(ids), 32) and feat.dtype == torch.float32 and feat.device.type == "cpu"
        assert not feat.is_inference()
    assert out[1].shape == (1, 32)  # "" is just </s>
    _assert_same(out, reference)
    assert encoder.width == 32 and encoder.dtype == torch.float32 and encoder.device == torch.device("cpu")


def test_batching_does_not_change_rows(encoder):
    together = encoder(PROMPTS)
    alone = [encoder(p)[0] for p in PROMPTS]  # a str is one prompt
    _assert_same(together, alone)
    old = encoder.batch_size
    try:
        encoder.batch_size = 2
        _assert_same(encoder(PROMPTS), together)
    finally:
        encoder.batch_size = old
    padded = encoder.tokenize(PROMPTS, padding="max_length")
    assert padded["input_ids"].shape == (len(PROMPTS), 512)
    _assert_same(encoder.encode_ids(padded["input_ids"], padded["attention_mask"]), together)


def test_truncates_at_512_tokens_keeping_eos(encoder):
    long = "a photo of a dog " * 200  # 800 words
    enc = encoder.tokenize([long, "a dog"])
    assert enc["input_ids"].shape == (2, 512)
    assert enc["input_ids"][0, -1].item() == encoder.tokenizer.eos_token_id
    out = encoder([long, "a dog"])
    assert out[0].shape == (512, 32) and out[1].shape == (3, 32)
    _assert_same(out[1:], encoder(["a dog"]))


def test_outputs_can_feed_autograd(encoder):
    feat = encoder(["a dog"])[0]
    w = torch.nn.Parameter(torch.randn(32, 4))
    (feat @ w).sum().backward()
    assert w.grad is not None
    assert all(not p.requires_grad for p in encoder.model.parameters())


def test_fp16_keeps_wo_in_fp32_and_returns_fp32(folder, encoder):
    enc16 = load_text_encoder(folder, dtype="fp16")
    ff = enc16.model.encoder.block[0].layer[1].DenseReluDense
    assert enc16.dtype == torch.float16 and ff.wi_0.weight.dtype == torch.float16
    assert ff.wo.weight.dtype == torch.float32  # like from_pretrained(torch_dtype=float16): T5's _keep_in_fp32_modules
    out = enc16(PROMPTS[:3])
    assert all(o.dtype == torch.float32 for o in out)
    _assert_same(out, encoder(PROMPTS[:3]), tol=2e-2)


def test_to_moves_and_returns_self(folder):
    enc = load_text_encoder(folder, device="cpu")
    assert enc.to("cpu") is enc and enc.device.type == "cpu"
    if torch.cuda.is_available():
        gpu = load_text_encoder(folder, device="cuda")
        assert gpu.dtype == torch.float16
        out = gpu(["a dog"])
        assert out[0].device.type == "cuda" and out[0].dtype == torch.float32
        gpu.to("cpu")
        assert gpu.device.type == "cpu"


# ---------------------------------------------------------------------------------------------- other layouts
def test_single_safetensors_file_gives_identical_outputs(folder, encoder, tmp_path):
    weights = tmp_path / "weights" / "flan_t5_xl_encoder.safetensors"
    weights.parent.mkdir()
    shutil.copy(folder / "model.safetensors", weights)
    tok_dir = make_tokenizer(tmp_path / "tokenizer_elsewhere")
    single = load_text_encoder(weights, tokenizer_path=tok_dir)
    assert single.model.config.num_layers == 2 and single.model.config.num_heads == 2
    assert single.model.config.d_kv == 16 and single.model.config.d_ff == 64 and single.model.config.is_gated_act
    for a, b in zip(single(PROMPTS), encoder(PROMPTS)):
        assert torch.equal(a, b)
    # tokenizer.json given directly, without its tokenizer_config.json: same token ids
    lone_json = tmp_path / "lone" / "tokenizer.json"
    lone_json.parent.mkdir()
    shutil.copy(tok_dir / "tokenizer.json", lone_json)
    from_json = load_text_encoder(weights, tokenizer_path=lone_json)
    assert torch.equal(from_json.tokenize(PROMPTS)["input_ids"], encoder.tokenize(PROMPTS)["input_ids"])
    # tokenizer files sitting next to the weights file are found on their own
    make_tokenizer(weights.parent)
    for a, b in zip(load_text_encoder(weights)(PROMPTS), encoder(PROMPTS)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["bare", "prefixed", "embed_tokens_only"])
def test_single_file_key_layouts(folder, encoder, tmp_path, layout):
    sd = load_file(str(folder / "model.safetensors"))
    if layout == "bare":  # no 'encoder.' at all
        sd = {k.removeprefix("encoder."): v for k, v in sd.items()}
    elif layout == "prefixed":  # inside a bigger checkpoint
        sd = {"text_encoders.flan_t5.transformer." + k: v for k, v in sd.items()}
        sd["some_other_model.weight"] = torch.zeros(3)
    else:
        sd["encoder.embed_tokens.weight"] = sd.pop("shared.weight")
    path = tmp_path / f"{layout}.safetensors"
    save_file(sd, str(path))
    make_tokenizer(tmp_path)
    for a, b in zip(load_text_encoder(path)(PROMPTS), encoder(PROMPTS)):
        assert torch.equal(a, b)


def test_full_encoder_decoder_checkpoint_uses_the_encoder_only(tmp_path):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(1)
    full = T5ForConditionalGeneration(t5_config()).eval()
    full.save_pretrained(str(tmp_path), safe_serialization=True)
    make_tokenizer(tmp_path)
    enc = load_text_encoder(tmp_path)
    ids = enc.tokenize(PROMPTS[:3])
    with torch.no_grad():
        ref = full.encoder(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    lens = ids["attention_mask"].sum(-1).tolist()
    _assert_same(enc(PROMPTS[:3]), [ref[i, :n] for i, n in enumerate(lens)])
    single = load_text_encoder(tmp_path / "model.safetensors")  # decoder tensors ignored when inferring the config
    assert single.model.config.num_layers == 2
    _assert_same(single(PROMPTS[:3]), enc(PROMPTS[:3]), tol=0)


def test_pytorch_bin_folder(folder, encoder, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(folder / name, tmp_path / name)
    torch.save(load_file(str(folder / "model.safetensors")), tmp_path / "pytorch_model.bin")
    for a, b in zip(load_text_encoder(tmp_path)(PROMPTS), encoder(PROMPTS)):
        assert torch.equal(a, b)


def test_pickle_with_code_is_refused(folder, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    torch.save({"shared.weight": torch.zeros(2), "evil": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_text_encoder(tmp_path)


class _Evil:
    pass


# ---------------------------------------------------------------------------------------------- errors
def test_missing_path():
    with pytest.raises(FileNotFoundError, match="nowhere/flan-t5-xl"):
        load_text_encoder("/nowhere/flan-t5-xl")


def test_bad_prompts(encoder):
    with pytest.raises(ValueError, match="no prompts"):
        encoder([])
    with pytest.raises(TypeError, match="prompt 1"):
        encoder(["a dog", 3])
    with pytest.raises(TypeError):
        encoder(None)


def test_weights_file_that_is_not_t5(tmp_path):
    bad = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 3, 3, 3), "conv_in.bias": torch.zeros(4)}, str(bad))
    make_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match=r"unet\.safetensors.*not a T5 encoder") as err:
        load_text_encoder(bad)
    assert "encoder.block.0.layer.0.SelfAttention.q.weight" in str(err.value)


def test_incomplete_t5_file(folder, tmp_path):
    sd = load_file(str(folder / "model.safetensors"))
    del sd["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    make_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors.*missing: encoder\.block\.1\.layer\.1"):
        load_text_encoder(path)


def test_folder_errors(folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_text_encoder(empty)
    shutil.copy(folder / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_text_encoder(empty)
    shutil.copy(folder / "model.safetensors", empty / "model.safetensors")
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_text_encoder(empty)


def test_single_file_without_tokenizer(folder, tmp_path):
    path = tmp_path / "enc.safetensors"
    shutil.copy(folder / "model.safetensors", path)
    with pytest.raises(CheckpointError, match="tokenizer_path"):
        load_text_encoder(path)


def test_spiece_model_without_sentencepiece_says_what_to_do(folder, tmp_path):
    from var_core.infinity.t5_files import _has_module

    if _has_module("sentencepiece") and _has_module("google.protobuf"):
        pytest.skip("sentencepiece and protobuf are installed: the conversion would run")
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "spiece.model").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"tokenizer\.json.*pip install"):
        load_text_encoder(tmp_path)


def test_tokenizer_larger_than_embedding_is_refused(folder, tmp_path):
    sd = load_file(str(folder / "model.safetensors"))
    sd["shared.weight"] = sd["shared.weight"][:50].clone()
    path = tmp_path / "small_vocab.safetensors"
    save_file(sd, str(path))
    make_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_text_encoder(path)


# ---------------------------------------------------------------------------------------------- placeholder hook
def test_placeholder_tokens_are_one_token_and_never_change_the_shared_tokenizer(folder):
    enc = load_text_encoder(folder)
    vocab, size = dict(enc.tokenizer.get_vocab()), len(enc.tokenizer)
    prompt = "a photo of <placeholder> dog"
    assert enc.tokenize(prompt)["input_ids"].shape[1] > 6  # unknown to the tokenizer: split into pieces
    (feats,), (rows,) = enc.encode(prompt, ["<placeholder>"])
    assert rows == {"<placeholder>": [3]} and feats.shape == (6, 32)  # a, photo, of, <placeholder>, dog, </s>
    ids = enc.tokenize(prompt, tokens=["<placeholder>"])["input_ids"][0]
    assert ids[3].item() == enc.placeholder_id == size  # the first spare embedding row
    assert enc.tokenizer.get_vocab() == vocab and len(enc.tokenizer) == size  # others' tokenizer is unchanged
    # a prompt's features depend on its text only, not on which other placeholders are in use
    (with_other,), (rows2,) = enc.encode(prompt, ["<placeholder>", "<cat1>"])
    assert torch.equal(with_other, feats) and rows2 == {"<placeholder>": [3], "<cat1>": []}
    (two,), (rows3,) = enc.encode("<cat1> and <placeholder>", ["<placeholder>", "<cat1>"])
    assert rows3 == {"<cat1>": [0], "<placeholder>": [2]}
    with pytest.raises(ValueError, match="one word"):
        enc.encode(prompt, ["<two words>"])


def test_tokenizer_copies_for_placeholders_are_bounded_and_die_with_the_encoder(folder):
    import gc
    import weakref
    enc = load_text_encoder(folder)
    (first,), _ = enc.encode("a photo of <t0> dog", ["<t0>"])
    for i in range(3 * TextEncoder.TOKENIZER_COPIES):  # a user trying many subjects in one session
        enc.encode("a photo of dog", [f"<t{i}>"])
    assert len(enc._token_tokenizers) == TextEncoder.TOKENIZER_COPIES
    (again,), _ = enc.encode("a photo of <t0> dog", ["<t0>"])  # dropped and made again: the same reading
    assert torch.equal(again, first)
    copies = [weakref.ref(t) for t in enc._token_tokenizers.values()]
    del enc
    gc.collect()
    assert all(c() is None for c in copies)


def test_is_a_text_encoder(encoder):
    assert isinstance(encoder, TextEncoder)
    assert "width=32" in repr(encoder)
    assert json.loads((encoder.source / "config.json").read_text())["d_model"] == 32


def test_the_embedded_models_text_encoder_loads_with_every_allowed_transformers():
    """The bundle's tokenizer names a class every transformers in requirements.txt knows (5.x's own name for it,
    TokenizersBackend, is unknown to 4.x): CI runs this file on transformers 4.40 too."""
    from var_core import embedded, load_text_encoder
    encoder = load_text_encoder(embedded.bundle_paths()["text_encoder"])
    (features,) = encoder(["a photo of a dog on the beach"])
    assert features.shape == (9, encoder.width)  # 7 words, "on the", and </s>: one row per word-level token
