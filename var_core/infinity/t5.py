"""The frozen T5 text encoder (flan-t5-xl's encoder) and its tokenizer.

Infinity conditions on ``T5EncoderModel(...).last_hidden_state.float()`` of each prompt, tokenised with T5's tokenizer
(``legacy=True``, at most 512 tokens, ``</s>`` appended, no BOS), keeping the rows of the real tokens only (EOS
included). ``TextEncoder`` does exactly that and returns one ``(len_i, C_text)`` fp32 tensor per prompt.

Accepted inputs (nothing is ever downloaded; every Hugging Face call gets ``local_files_only=True``):

* a Hugging Face folder such as a local copy of ``google/flan-t5-xl``: ``config.json``, weights
  (``model*.safetensors`` or ``pytorch_model*.bin``, sharded or not; the decoder half is skipped), and a tokenizer
  (``tokenizer.json`` with ``tokenizer_config.json``; ``spiece.model`` alone needs ``sentencepiece`` + ``protobuf``);
* a single encoder weights file (``.safetensors``, or a ``.bin``/``.pt`` state dict), e.g. from ComfyUI's
  ``models/text_encoders``. The T5 configuration is read off the tensor shapes. The tokenizer comes from
  ``tokenizer_path`` (a folder or a ``tokenizer.json``) or from a tokenizer sitting next to the file.

Weights are read by this module, not by ``from_pretrained``: safetensors lazily (only the encoder tensors of a full
encoder-decoder checkpoint are touched) and pickles only through ``torch.load(weights_only=True)``
(``checkpoint.read_file``), so no checkpoint can run code whatever the installed transformers version.
As ``from_pretrained(torch_dtype=float16)`` does, the modules named in ``T5EncoderModel._keep_in_fp32_modules``
(the feed-forward output ``wo``) stay fp32 when the encoder runs in fp16.
"""
from __future__ import annotations

import collections
import copy
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint import CheckpointError, dtype_named
from .t5_files import (MAX_LENGTH, build_model, canonical_names, infer_config, load_tokenizer, open_tensors,
                       read_config, tokenizer_near, weight_files)

DEFAULT_BATCH_SIZE = 32


class TextEncoder:
    """Frozen T5 encoder + tokenizer. Calling it on a list of prompts returns one (len_i, C_text) fp32 tensor per
    prompt, padding removed, EOS kept.

    Prompts are batched (``batch_size`` at a time, similar lengths together) and padded to the longest prompt of each
    batch; thanks to the attention mask this gives the same rows as padding every prompt to 512 tokens.
    The returned tensors are ordinary tensors (not inference tensors), on the encoder's device.
    """

    TOKENIZER_COPIES = 4  # tokenizers kept that know a set of placeholder tokens (one per set of subjects used)

    def __init__(self, model, tokenizer, source=None, max_length: int = MAX_LENGTH,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        # private copies of the tokenizer that know placeholder tokens: the TOKENIZER_COPIES most recently used
        self._token_tokenizers: collections.OrderedDict[tuple[str, ...], object] = collections.OrderedDict()

    # ------------------------------------------------------------------ properties
    @property
    def width(self) -> int:
        """C_text: the feature width (2048 for flan-t5-xl)."""
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (of the embedding and attention weights; ``wo`` stays fp32 under fp16)."""
        return self.model.get_input_embeddings().weight.dtype

    def __repr__(self) -> str:
        c = self.model.config
        return (f"TextEncoder(source={str(self.source)!r}, width={self.width}, layers={c.num_layers}, "
                f"heads={c.num_heads}, device={self.device}, dtype={self.dtype})")

    # ------------------------------------------------------------------ API
    def to(self, device) -> "TextEncoder":
        """Move the encoder (dtypes unchanged); returns self."""
        self.model.to(torch.device(device))
        return self

    def tokenize(self, prompts: Sequence[str] | str, padding: bool | str = "longest", tokens: Sequence[str] = ()):
        """Token ids and attention mask (CPU ``torch.long``), as the encoder sees them: ``</s>`` appended, truncated
        to ``max_length`` (the EOS is kept on truncation), right-padded with ``<pad>`` (``padding="max_length"`` pads
        to ``max_length``). Returns a ``BatchEncoding`` with ``input_ids`` and ``attention_mask``.

        ``tokens``: placeholder tokens (e.g. ``"<placeholder>"``) to read as single tokens. Each is fed to T5 as the
        same id, ``placeholder_id``, whatever other placeholders are in use, so a prompt's ids depend on its text
        only. The encoding then also holds ``token_positions``: per prompt, {token: [row, ...]}. The tokenizer that
        others hold is never changed (a private copy knows the tokens)."""
        prompts = _check_prompts(prompts)
        tok = self._tokenizer_knowing(tokens)
        enc = tok(prompts, max_length=self.max_length, padding=padding, truncation=True,
                  return_tensors="pt", return_attention_mask=True, return_token_type_ids=False)
        if tokens:
            ids = enc["input_ids"]
            token_ids = {t: tok.convert_tokens_to_ids(t) for t in tokens}
            enc["token_positions"] = [{t: (row == i).nonzero().flatten().tolist() for t, i in token_ids.items()}
                                      for row in ids]
            enc["input_ids"] = torch.where(torch.isin(ids, torch.tensor(list(token_ids.values()))),
                                           self.placeholder_id, ids)
        return enc

    def __call__(self, prompts: Sequence[str] | str) -> list[torch.Tensor]:
        return self.encode(prompts)[0]

    def encode(self, prompts: Sequence[str] | str, tokens: Sequence[str] = ()):
        """Features of every prompt (see ``__call__``) and, per prompt, {token: rows} of the placeholder ``tokens``
        (see ``tokenize``): training and sampling both come here, so they see the same text."""
        enc = self.tokenize(prompts, tokens=tokens)
        positions = enc["token_positions"] if tokens else [{} for _ in range(enc["input_ids"].shape[0])]
        return self.encode_ids(enc["input_ids"], enc["attention_mask"]), positions

    @property
    def placeholder_id(self) -> int:
        """The id every placeholder token is fed to T5 as: the first id past the tokenizer's vocabulary (flan-t5-xl:
        32100, one of the 28 spare rows of its 32128-row embedding table)."""
        pid, rows = len(self.tokenizer), self.model.get_input_embeddings().weight.shape[0]
        if pid >= rows:
            raise ValueError(f"This text encoder's tokenizer fills all {rows} rows of its embedding table, so there "
                             f"is no free row for a placeholder token; use a T5 whose table is larger than its "
                             f"vocabulary (flan-t5-xl has 28 spare rows).")
        return pid

    def _tokenizer_knowing(self, tokens: Sequence[str]):
        tokens = tuple(sorted(set(tokens)))
        if not tokens:
            return self.tokenizer
        for t in tokens:
            if not t or any(c.isspace() for c in t):
                raise ValueError(f"A placeholder token must be one word without spaces, e.g. '<sks>'; got {t!r}.")
        if tokens not in self._token_tokenizers:
            tok = copy.deepcopy(self.tokenizer)
            tok.add_tokens(list(tokens), special_tokens=True)  # known to this copy only
            self._token_tokenizers[tokens] = tok
            while len(self._token_tokenizers) > self.TOKENIZER_COPIES:
                self._token_tokenizers.popitem(last=False)
        self._token_tokenizers.move_to_end(tokens)
        return self._token_tokenizers[tokens]

    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder on right-padded token ids; one (len_i, C_text) fp32 tensor per row (len_i = mask sum)."""
        lens = attention_mask.sum(-1).tolist()
        order = sorted(range(len(lens)), key=lambda i: -lens[i])  # similar lengths share a batch: less padding
        out: list[torch.Tensor | None] = [None] * len(lens)
        device = self.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(max(lens[i] for i in idx), 1)
            ids = input_ids[idx, :width].to(device)
            mask = attention_mask[idx, :width].to(device)
            with torch.inference_mode():
                feats = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            for row, i in enumerate(idx):
                # clone() outside inference mode: a normal tensor that autograd may save (e.g. for a trained
                # projection taking it as input), and the padded batch buffer can be freed.
                out[i] = feats[row, :lens[i]].clone()
        return out  # type: ignore[return-value]


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a str or a list of str, not {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("no prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, not a str")
    return list(prompts)


# ====================================================================== loading
def load_text_encoder(path, device=None, dtype=None, tokenizer_path=None, max_length: int = MAX_LENGTH,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> TextEncoder:
    """Load a frozen T5 encoder and its tokenizer from a local folder or a single weights file (see module doc).

    device: default cpu. dtype: default fp16 on CUDA, fp32 elsewhere (also accepts "fp16", "bf16", "fp32").
    tokenizer_path: a tokenizer folder or tokenizer.json; default the folder itself, or for a single file the
    tokenizer next to it.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Text encoder '{path}' does not exist. Expected a local flan-t5-xl folder (config.json, model weights, "
            f"tokenizer.json) or a T5 encoder .safetensors file.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = _resolve_dtype(dtype, device)

    with ExitStack() as stack:
        if path.is_dir():
            config = read_config(path)
            files = weight_files(path)
            tensors = open_tensors(files, stack)
            mapping = canonical_names(tensors, path)
            tok_source = Path(tokenizer_path).expanduser() if tokenizer_path is not None else path
        else:
            tensors = open_tensors([path], stack)
            mapping = canonical_names(tensors, path)
            config = infer_config(tensors, mapping, path)
            tok_source = (Path(tokenizer_path).expanduser() if tokenizer_path is not None
                          else tokenizer_near(path))
        tokenizer = load_tokenizer(tok_source, path)
        model = build_model(config, tensors, mapping, dtype, device, path)

    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise CheckpointError(
            f"The tokenizer '{tok_source}' has {len(tokenizer)} tokens but the encoder '{path}' only {vocab} "
            f"embedding rows: they do not belong together (flan-t5-xl: 32100 tokens, 32128 rows).")
    return TextEncoder(model, tokenizer, source=path, max_length=max_length, batch_size=batch_size)


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        return dtype_named(dtype)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"The text encoder runs in float16, bfloat16 or float32, not {dtype}")
    return dtype
