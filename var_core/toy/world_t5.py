"""The toy bundle's text encoder: a small random T5 encoder (transformers' T5EncoderModel) with a word-level
tokenizer over the toy world's vocabulary, laid out like a google/flan-t5-xl folder so the ordinary loader reads it.

The encoder stays random and frozen, as flan-t5-xl is frozen for Infinity: its features keep every word distinct, and
the transformer learns to read them. The embedding table has spare rows past the vocabulary, as flan-t5-xl's has, so
placeholder tokens get a row of their own (TextEncoder.placeholder_id).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

SPARE_ROWS = 8


def make_world_tokenizer(folder, words: Sequence[str]) -> Path:
    """tokenizer.json + tokenizer_config.json: <pad>=0, </s>=1, <unk>=2, then ``words``; lower-cased, split on
    whitespace and punctuation, </s> appended (T5's conventions)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder


def make_world_t5(folder, words: Sequence[str], d_model: int = 64, seed: int = 0) -> Path:
    """Write the encoder folder (config.json, model.safetensors, tokenizer); returns ``folder``."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    make_world_tokenizer(folder, words)
    rows = -(-(len(words) + 3 + SPARE_ROWS) // 8) * 8
    config = T5Config(vocab_size=rows, d_model=d_model, d_ff=2 * d_model, num_layers=2, num_decoder_layers=2,
                      num_heads=2, d_kv=d_model // 2, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                      layer_norm_epsilon=1e-6, tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(seed)
    model = T5EncoderModel(config).eval()
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
