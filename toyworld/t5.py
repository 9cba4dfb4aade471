"""Small random T5 encoders written into folders laid out like google/flan-t5-xl, so the ordinary loader reads them.
Nothing is downloaded.

    make_t5(folder, d_model=64, words=vocabulary())   # the toy bundle's encoder: word-level tokenizer of the world
    make_t5(folder, d_model=32)                        # the tests' encoder: a SentencePiece-like Unigram tokenizer

The encoder stays random and frozen, as flan-t5-xl is frozen for Infinity: its features keep every word distinct, and
the transformer learns to read them. The embedding table has spare rows past the vocabulary, as flan-t5-xl's has
(32128 rows for 32100 tokens), so placeholder tokens get a row of their own (TextEncoder.placeholder_id).

Both tokenizers follow T5's conventions: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, ``</s>`` appended to every
sequence.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

SPARE_ROWS = 8

# The Unigram tokenizer's whole words; any other word falls back to single characters (never to <unk>, unless it
# holds a character outside CHARS).
WORDS = ("a an the of in on at to and with photo picture painting portrait drawing dog cat man woman person bird car "
         "house tree red blue green yellow black white big small sitting standing running on beach park street "
         "forest city night day sunny snowy cute old young").split()
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"


def unigram_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) pairs in T5's id order: <pad>, </s>, <unk>, then the pieces."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -5.0) for w in dict.fromkeys(WORDS)]
    vocab += [(c, -8.0) for c in CHARS]
    return vocab


def make_tokenizer(folder, words: Sequence[str] | None = None) -> Path:
    """tokenizer.json + tokenizer_config.json in ``folder``: word-level over ``words`` (lower-cased, split on whitespace
    and punctuation), or with ``words=None`` a SentencePiece-style Unigram tokenizer that claims flan-t5-xl's
    ``T5Tokenizer`` class, so loading goes through the real model's code path."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram, WordLevel
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if words is None:
        tok = Tokenizer(Unigram(unigram_vocab(), unk_id=2, byte_fallback=False))
        # The same pre-tokenizer/decoder as flan-t5's tokenizer.json (legacy mode).
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    else:
        vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
        for w in words:
            vocab.setdefault(w, len(vocab))
        tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                       special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   model_max_length=512)
    fast.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("backend", None)
    # a class every transformers the requirements allow can name (5.x writes "TokenizersBackend", unknown to 4.x)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if words is None:  # extra_ids=0: no <extra_id_*> sentinels (the real vocabulary has 100; never used here)
        cfg.update(tokenizer_class="T5Tokenizer", extra_ids=0)
        (folder / "special_tokens_map.json").write_text(
            json.dumps({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2), encoding="utf-8")
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder


def t5_config(d_model: int = 32, vocab_size: int | None = None):
    """A 2-layer T5 of width d_model; ``vocab_size`` defaults to the Unigram tokenizer's, padded to a multiple of 8."""
    from transformers import T5Config

    if vocab_size is None:
        vocab_size = -(-len(unigram_vocab()) // 8) * 8
    return T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=2 * d_model, num_layers=2, num_decoder_layers=2,
                    num_heads=2, d_kv=d_model // 2, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                    layer_norm_epsilon=1e-6, tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                    eos_token_id=1)


def make_t5(folder, d_model: int = 32, seed: int = 0, words: Sequence[str] | None = None) -> Path:
    """Write the encoder folder (config.json, model.safetensors, tokenizer); returns ``folder``."""
    from transformers import T5EncoderModel

    folder = Path(folder)
    make_tokenizer(folder, words)
    rows = None if words is None else -(-(len(words) + 3 + SPARE_ROWS) // 8) * 8
    torch.manual_seed(seed)
    model = T5EncoderModel(t5_config(d_model, rows)).eval()
    with torch.no_grad():  # well-scaled random weights: every word keeps a distinct feature
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.fill_(1.0)
            elif "embed_tokens" in name or name == "shared.weight":
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
