"""Reading a T5 encoder's files without ``from_pretrained``: a Hugging Face folder (config, sharded or single
safetensors / bin weights, tokenizer) or a single encoder weights file whose configuration is read off the tensor
shapes. Safetensors are read lazily (only the encoder tensors of a full encoder-decoder checkpoint are touched);
pickles only through ``torch.load(weights_only=True)`` (``checkpoint.read_file``). Used by t5.load_text_encoder.
"""
from __future__ import annotations

import importlib.util
import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open

from ..checkpoint import CheckpointError, read_file


MAX_LENGTH = 512  # T5's, as Infinity tokenises

# Canonical (Hugging Face T5EncoderModel) names this module expects.
_ANCHOR = "block.0.layer.0.SelfAttention.q.weight"
_EXPECTED = ("'shared.weight', 'encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight', "
             "'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', "
             "'encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight', 'encoder.final_layer_norm.weight'")
_STACK_KEY = re.compile(r"^(block\.\d+\..+|final_layer_norm\.weight|embed_tokens\.weight)$")
_SAFETENSORS_FILES = ("model.safetensors.index.json", "model.safetensors")
_BIN_FILES = ("pytorch_model.bin.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


# ---------------------------------------------------------------------- config
def read_config(folder: Path):
    from transformers import T5Config

    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"'{folder}' has no config.json: expected a Hugging Face T5 folder (a local copy of google/flan-t5-xl: "
            f"config.json, model*.safetensors or pytorch_model*.bin, tokenizer.json), or pass the encoder "
            f".safetensors file itself.")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"'{cfg_path}' is not a readable JSON config ({e}).") from e
    model_type = raw.get("model_type")
    if model_type not in ("t5", "mt5"):
        raise CheckpointError(f"'{cfg_path}' describes a {model_type!r} model, not T5 (expected model_type 't5', "
                              f"as in google/flan-t5-xl).")
    return T5Config.from_json_file(str(cfg_path))


def infer_config(tensors: dict, mapping: dict[str, str], source: Path):
    """A T5Config from the tensor shapes of an encoder-only file."""
    from transformers import T5Config

    def shape(name):
        return tuple(tensors[mapping[name]].shape)

    emb = "shared.weight" if "shared.weight" in mapping else "encoder.embed_tokens.weight"
    bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    for name in (emb, bias, q, "encoder.final_layer_norm.weight"):
        if name not in mapping:
            raise CheckpointError(f"'{source}' is not a complete T5 encoder: '{name}' is missing "
                                  f"(expected {_EXPECTED}).")
    vocab_size, d_model = shape(emb)
    num_buckets, num_heads = shape(bias)
    inner = shape(q)[0]
    layers = {int(m.group(1)) for k in mapping if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    num_layers = max(layers) + 1
    ff = "encoder.block.0.layer.1.DenseReluDense."
    if ff + "wi_0.weight" in mapping:
        d_ff, proj = shape(ff + "wi_0.weight")[0], "gated-gelu"
    elif ff + "wi.weight" in mapping:
        d_ff, proj = shape(ff + "wi.weight")[0], "relu"
    else:
        raise CheckpointError(f"'{source}' is not a complete T5 encoder: no feed-forward weights "
                              f"'{ff}wi_0.weight' / '{ff}wi.weight'.")
    if inner % num_heads:
        raise CheckpointError(f"'{source}': q projection rows ({inner}) are not a multiple of the {num_heads} heads "
                              f"given by relative_attention_bias {shape(bias)}.")
    return T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=inner // num_heads, d_ff=d_ff,
                    num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
                    relative_attention_num_buckets=num_buckets, relative_attention_max_distance=128,
                    feed_forward_proj=proj, layer_norm_epsilon=1e-6, dropout_rate=0.0,
                    tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


# ---------------------------------------------------------------------- weights
class _Lazy:
    """A tensor not read yet: its shape, and how to read it."""

    __slots__ = ("shape", "read")

    def __init__(self, shape, read: Callable[[], torch.Tensor]):
        self.shape = torch.Size(shape)
        self.read = read


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face folder, safetensors preferred."""
    for index_name, single in (_SAFETENSORS_FILES, _BIN_FILES):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"'{index}' is not a valid shard index ({e}).") from e
            files = [folder / f for f in dict.fromkeys(weight_map.values())]
            absent = [str(f.name) for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"'{index}' lists shards that are not in '{folder}': {', '.join(absent)} "
                                      f"(incomplete download?).")
            return files
        if (folder / single).is_file():
            return [folder / single]
    others = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if others:
        return others
    raise CheckpointError(
        f"'{folder}' has no model weights: expected model.safetensors, model-0000x-of-0000y.safetensors with "
        f"model.safetensors.index.json, or pytorch_model*.bin (found: "
        f"{', '.join(sorted(p.name for p in folder.iterdir())[:12]) or 'nothing'}).")


def open_tensors(files: list[Path], stack: ExitStack) -> dict[str, _Lazy]:

    tensors: dict[str, _Lazy] = {}
    for f in files:
        if f.suffix.lower() == ".safetensors":
            try:
                handle = stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
                for k in handle.keys():
                    tensors[k] = _Lazy(handle.get_slice(k).get_shape(), lambda h=handle, k=k: h.get_tensor(k))
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(f"'{f}' is not a readable safetensors file ({e}). It may be truncated: "
                                      f"compare its size with the published one.") from e
        else:  # a pickle: weights_only=True (and mmap for zip files) inside read_file
            state = read_file(f)
            if not isinstance(state, dict):
                raise CheckpointError(f"'{f}' holds a {type(state).__name__}, not a state dict of tensors.")
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    tensors[k] = _Lazy(v.shape, lambda v=v: v)
    return tensors


def canonical_names(tensors: dict, source: Path) -> dict[str, str]:
    """Map canonical names ('shared.weight', 'encoder.…') to the file's names, stripping a common prefix
    ('encoder.' alone, none, or e.g. 'text_encoders.t5.transformer.encoder.'). Decoder tensors are left out."""
    anchors = [k[:-len(_ANCHOR)] for k in tensors if k.endswith(_ANCHOR)]
    anchors = [p for p in anchors if p == "" or p.endswith(".")]
    prefixes = [p for p in anchors if not p.endswith("decoder.")]
    if not prefixes:
        found = ", ".join(list(tensors)[:6]) or "no tensors"
        raise CheckpointError(
            f"'{source}' is not a T5 encoder checkpoint: no tensor named like 'encoder.{_ANCHOR}'. Expected "
            f"{_EXPECTED} (found: {found}{' ...' if len(tensors) > 6 else ''}).")
    if len(prefixes) > 1:
        encoders = [p for p in prefixes if p.endswith("encoder.")]
        if len(encoders) != 1:
            raise CheckpointError(f"'{source}' holds several T5 encoders (prefixes {prefixes}); save the one to use "
                                  f"on its own.")
        prefixes = encoders
    prefix = prefixes[0]
    root = prefix[:-len("encoder.")] if prefix.endswith("encoder.") else prefix

    if any(k.endswith((".scale_weight", ".scale_input")) or k == "scaled_fp8" for k in tensors):
        raise CheckpointError(f"'{source}' holds scaled fp8 weights, which are not supported; use an fp16, bf16 or "
                              f"fp32 copy of the encoder.")
    mapping = {}
    for k in tensors:
        if k.startswith(prefix) and _STACK_KEY.match(k[len(prefix):]):
            mapping["encoder." + k[len(prefix):]] = k
    for k in (root + "shared.weight", "shared.weight"):
        if k in tensors:
            mapping["shared.weight"] = k
            break
    return mapping


def build_model(config, tensors: dict[str, _Lazy], mapping: dict[str, str], dtype: torch.dtype,
                 device: torch.device, source: Path):
    from transformers import T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(config)
    keep_fp32 = set(getattr(T5EncoderModel, "_keep_in_fp32_modules", None) or []) if dtype == torch.float16 else set()
    # named_parameters() lists a tied tensor once, as 'shared.weight'; 'encoder.embed_tokens.weight' is its alias
    expected = {n: p.shape for n, p in model.named_parameters() if n != "encoder.embed_tokens.weight"}

    def source_of(name):
        if name == "shared.weight" and name not in mapping:
            return mapping.get("encoder.embed_tokens.weight")
        return mapping.get(name)

    missing = [n for n in expected if source_of(n) is None]
    unexpected = [mapping[c] for c in mapping if c not in expected and c != "encoder.embed_tokens.weight"]
    wrong = [f"{source_of(n)}: file {tuple(tensors[source_of(n)].shape)}, model {tuple(s)}"
             for n, s in expected.items() if source_of(n) is not None and tensors[source_of(n)].shape != s]
    if missing or unexpected or wrong:
        def show(items, n=6):
            return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")
        parts = [f"{label}: {show(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if items]
        raise CheckpointError(f"'{source}' does not match a T5 encoder with d_model={config.d_model}, "
                              f"{config.num_layers} layers, {config.num_heads} heads: " + " | ".join(parts)
                              + f". Expected {_EXPECTED}.")

    for name in expected:
        target = torch.float32 if keep_fp32 & set(name.split(".")) else dtype
        value = tensors[source_of(name)].read().to(device=device, dtype=target)
        module_name, _, attr = name.rpartition(".")
        model.get_submodule(module_name)._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
    model.set_input_embeddings(model.shared)  # re-tie encoder.embed_tokens to the loaded embedding
    leftover = [n for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"'{source}': tensors not loaded: {', '.join(leftover[:6])}")
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------- tokenizer
def tokenizer_near(weights: Path) -> Path:
    for cand in (weights.parent, weights.parent / "tokenizer", weights.with_suffix("")):
        if cand.is_dir() and any((cand / f).is_file() for f in _TOKENIZER_FILES):
            return cand
    raise CheckpointError(
        f"No tokenizer found for '{weights}': looked for tokenizer.json / spiece.model in '{weights.parent}' and "
        f"'{weights.parent / 'tokenizer'}'. Pass tokenizer_path= (a flan-t5-xl folder, or its tokenizer.json), or "
        f"put flan-t5-xl's tokenizer.json, tokenizer_config.json and special_tokens_map.json next to the file.")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load_tokenizer(src: Path, weights: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not src.exists():
        raise FileNotFoundError(f"Tokenizer '{src}' (for the text encoder '{weights}') does not exist.")
    kwargs = dict(legacy=True, model_max_length=MAX_LENGTH, local_files_only=True)
    try:
        if src.is_file():
            if src.suffix.lower() != ".json":
                raise CheckpointError(f"Tokenizer '{src}': expected a tokenizer.json file or a tokenizer folder.")
            if src.name == "tokenizer.json" and (src.parent / "tokenizer_config.json").is_file():
                tok = AutoTokenizer.from_pretrained(str(src.parent), **kwargs)
            else:
                tok = PreTrainedTokenizerFast(tokenizer_file=str(src), eos_token="</s>", unk_token="<unk>",
                                              pad_token="<pad>", model_max_length=MAX_LENGTH)
        else:
            if not (src / "tokenizer.json").is_file():
                if not (src / "spiece.model").is_file():
                    raise CheckpointError(
                        f"'{src}' has no tokenizer: expected tokenizer.json (with tokenizer_config.json), as in "
                        f"google/flan-t5-xl.")
                lacking = [m for m, mod in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))
                           if not _has_module(mod)]
                if lacking:
                    raise CheckpointError(
                        f"'{src}' has spiece.model but no tokenizer.json. Either copy flan-t5-xl's tokenizer.json "
                        f"into that folder (recommended), or install the converter: pip install {' '.join(lacking)}.")
            tok = AutoTokenizer.from_pretrained(str(src), **kwargs)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as e:  # transformers reports unusable tokenizer files with many exception types
        raise CheckpointError(f"Could not load the tokenizer from '{src}' ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}). Expected flan-t5-xl's "
                              f"tokenizer.json + tokenizer_config.json.") from e
    return _check_tokenizer(tok, src)


def _check_tokenizer(tok, src: Path):
    if tok.pad_token is None:
        tok.pad_token = "<pad>"
    tok.padding_side = "right"
    tok.truncation_side = "right"
    tok.model_max_length = MAX_LENGTH
    if tok.eos_token_id is None:
        raise CheckpointError(f"The tokenizer '{src}' has no EOS token '</s>': not a T5 tokenizer.")
    ids = tok("a", truncation=True, max_length=MAX_LENGTH)["input_ids"]
    if not ids or ids[-1] != tok.eos_token_id:
        raise CheckpointError(f"The tokenizer '{src}' does not append '</s>' to a prompt, as T5's does (its "
                              f"tokenizer.json lacks the post-processor): use flan-t5-xl's tokenizer.json.")
    if tok.bos_token_id is not None and ids[0] == tok.bos_token_id:
        raise CheckpointError(f"The tokenizer '{src}' prepends a BOS token; T5's does not: use flan-t5-xl's "
                              f"tokenizer.json.")
    return tok
