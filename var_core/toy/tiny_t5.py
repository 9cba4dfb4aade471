"""A tiny random T5 encoder with a working tokenizer, written into a folder laid out like google/flan-t5-xl.

Nothing is downloaded: the tokenizer is a small Unigram model built with the ``tokenizers`` library (T5's
conventions: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, SentencePiece-style ``▁`` word prefixes, ``</s>`` appended to
every sequence) and the encoder is ``T5EncoderModel`` with random weights from a fixed seed.

    make_tiny_t5(folder, d_model=32, seed=0) -> folder

The folder holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``tokenizer_config.json`` (whose
``tokenizer_class`` is ``T5Tokenizer``, like the real one), so ``AutoTokenizer.from_pretrained(folder,
local_files_only=True)`` and ``T5EncoderModel.from_pretrained(folder, local_files_only=True)`` both load it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

# Whole words get their own piece; any other word falls back to single characters (never to <unk>, unless it holds a
# character outside CHARS).
WORDS = ("a an the of in on at to and with photo picture painting portrait drawing dog cat man woman person bird car "
         "house tree red blue green yellow black white big small sitting standing running on beach park street "
         "forest city night day sunny snowy cute old young").split()
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"


def tiny_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) pairs in T5's id order: <pad>, </s>, <unk>, then the pieces."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -5.0) for w in dict.fromkeys(WORDS)]
    vocab += [(c, -8.0) for c in CHARS]
    return vocab


def make_tiny_tokenizer(folder) -> Path:
    """Write tokenizer.json + tokenizer_config.json (+ special_tokens_map.json) into ``folder``."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(Unigram(tiny_vocab(), unk_id=2, byte_fallback=False))
    # The same pre-tokenizer/decoder/post-processor as flan-t5's tokenizer.json (legacy mode).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   model_max_length=512)
    fast.save_pretrained(str(folder))
    # Claim the T5 class, as flan-t5-xl's tokenizer_config.json does, so loading goes through the same code path.
    # extra_ids=0: no <extra_id_*> sentinels (the real vocabulary has 100; the text encoder never uses them).
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(tokenizer_class="T5Tokenizer", extra_ids=0, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
               model_max_length=512)
    cfg.pop("backend", None)
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2), encoding="utf-8")
    return folder


def tiny_config(d_model: int = 32, vocab_size: int | None = None):
    from transformers import T5Config

    if vocab_size is None:
        vocab_size = -(-len(tiny_vocab()) // 8) * 8  # padded like flan-t5's 32128 > 32100 tokenizer entries
    return T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                    d_kv=16, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                    tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def make_tiny_t5(folder, d_model: int = 32, seed: int = 0) -> Path:
    """Write a tiny random flan-t5-like encoder folder (config, safetensors weights, tokenizer); returns ``folder``."""
    from transformers import T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_tiny_tokenizer(folder)
    torch.manual_seed(seed)
    model = T5EncoderModel(tiny_config(d_model)).eval()
    with torch.no_grad():  # the default init is tiny for some tensors; give every weight a visible random value
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
