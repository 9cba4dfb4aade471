"""Switti's text encoders from single .safetensors files (ComfyUI's clip_l / clip_g): tiny CLIPTextModels with CLIP's
real vocabulary, saved once as single files and once as Hugging Face folders with the release configs, must encode
prompts identically; malformed or pickled files are refused, naming the file."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from var_core import load_text_encoder
from var_core.checkpoint import CheckpointError
from var_core.switti.clip_files import TOKENIZER_DIR

transformers = pytest.importorskip("transformers")

# The release configs (openai/clip-vit-large-patch14, laion/CLIP-ViT-bigG-14-laion2B-39B-b160k), at tiny widths.
RELEASES = {
    "clip_l": {"hidden_size": 64, "hidden_act": "quick_gelu", "bos_token_id": 0, "eos_token_id": 2,
               "pad": "<|endoftext|>"},
    "clip_g": {"hidden_size": 128, "hidden_act": "gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad": "!"},
}
PROMPTS = ["a photo of a cat! on a mat", "", "a very long prompt " * 30]


def file_tensors(model) -> dict[str, torch.Tensor]:
    """The weights under the names ComfyUI's files use (transformers 5 drops the text_model. prefix in the model)."""
    return {k if k.startswith("text_model.") else "text_model." + k: v.contiguous() for k, v in
            model.state_dict().items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{role: (single file, HF folder)} holding the same tiny weights."""
    torch.manual_seed(0)
    root, out = tmp_path_factory.mktemp("clip"), {}
    for role, release in RELEASES.items():
        release = dict(release)
        pad, width = release.pop("pad"), release["hidden_size"]
        config = transformers.CLIPTextConfig(vocab_size=49408, intermediate_size=2 * width, num_hidden_layers=2,
                                             num_attention_heads=width // 64, max_position_embeddings=77,
                                             pad_token_id=1, **release)
        model = transformers.CLIPTextModel(config)
        with torch.no_grad():  # weights large enough for the activations and layers to tell apart
            for p in model.parameters():
                p.normal_(0.0, 0.5)
        folder = root / role
        model.save_pretrained(str(folder))
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(TOKENIZER_DIR / name, folder / name)
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
             "unk_token": "<|endoftext|>", "pad_token": pad, "model_max_length": 77}))
        # ComfyUI's files also carry CLIP's projection and temperature, which CLIPTextModel does not use
        extras = {"text_projection.weight": torch.randn(width, width), "logit_scale": torch.tensor(4.6052)}
        save_file({**file_tensors(model), **extras}, str(root / f"{role}.safetensors"))
        out[role] = (root / f"{role}.safetensors", folder)
    return out


@pytest.fixture(scope="module")
def from_files(saved):
    return load_text_encoder(saved["clip_l"][0], text_encoder_2=saved["clip_g"][0])


def test_shipped_vocabulary():
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_files_encode_like_folders(saved, from_files):
    from_folders = load_text_encoder(saved["clip_l"][1], text_encoder_2=saved["clip_g"][1])
    got, want = from_files(PROMPTS), from_folders(PROMPTS)
    assert got.embeds.shape == (3, 77, 64 + 128) and got.pooled.shape == (3, 128)
    assert torch.equal(got.mask, want.mask)
    assert torch.equal(got.pooled, want.pooled)
    assert torch.equal(got.embeds[got.mask], want.embeds[want.mask])
    assert got.mask.sum(1).tolist() == [11, 2, 77]  # SOT, 9 words and marks, EOT; truncated


def test_tokens_match_clip_tokenizer(saved, from_files):
    for role, tokenizer in (("clip_l", from_files.tokenizer), ("clip_g", from_files.tokenizer_2)):
        reference = transformers.CLIPTokenizer.from_pretrained(str(saved[role][1]), local_files_only=True)
        for prompt in PROMPTS:
            ids = tokenizer(prompt, truncation=True, max_length=77, padding="max_length")["input_ids"]
            assert ids == reference(prompt, truncation=True, max_length=77, padding="max_length")["input_ids"]
    cat = "a photo of a cat!"
    ids_l = from_files.tokenizer(cat, max_length=77, padding="max_length")["input_ids"]
    ids_g = from_files.tokenizer_2(cat, max_length=77, padding="max_length")["input_ids"]
    assert ids_l[:9] == [49406, 320, 1125, 539, 320, 2368, 256, 49407, 49407] and ids_l[-1] == 49407
    # bigG's pad token "!" is special (id 0): padding and a "!" in the prompt are both 0
    assert ids_g[:9] == [49406, 320, 1125, 539, 320, 2368, 0, 49407, 0] and ids_g[-1] == 0


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.update({"text_model.extra.weight": torch.zeros(1)}), r"unexpected keys: text_model\.extra"),
    (lambda sd: sd.pop("text_model.encoder.layers.1.mlp.fc2.weight"), r"missing keys: .*layers\.1\.mlp\.fc2"),
    (lambda sd: sd.update({"text_model.encoder.layers.1.mlp.fc2.weight": torch.zeros(64, 64)}),
     r"mis-shaped tensors: .*layers\.1\.mlp\.fc2\.weight: file \(64, 64\)"),
    (lambda sd: sd.update({"text_model.embeddings.token_embedding.weight": torch.zeros(1000, 64)}),
     r"1000 token embeddings"),
])
def test_malformed_file_refused(saved, tmp_path, change, message):
    from safetensors.torch import load_file
    tensors = load_file(str(saved["clip_l"][0]))
    change(tensors)
    path = tmp_path / "broken_clip_l.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=rf"broken_clip_l\.safetensors.*{message}"):
        load_text_encoder(path, text_encoder_2=saved["clip_g"][0])


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_pickle_refused(saved, tmp_path, suffix):
    from safetensors.torch import load_file
    path = tmp_path / f"clip_g{suffix}"
    torch.save(load_file(str(saved["clip_g"][0])), str(path))
    with pytest.raises(CheckpointError, match=rf"clip_g\{suffix}' is not a \.safetensors file"):
        load_text_encoder(saved["clip_l"][0], text_encoder_2=path)
