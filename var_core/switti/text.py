"""Switti's text path: a CLIP-L and an OpenCLIP-bigG text encoder, read exactly as SwittiPipeline.encode_prompt does.

Each encoder is a Hugging Face ``CLIPTextModel`` with its ``CLIPTokenizer`` in one folder (a local copy of
openai/clip-vit-large-patch14 and of laion/CLIP-ViT-bigG-14-laion2B-39B-b160k), or its weights alone in one
.safetensors file as ComfyUI keeps them (clip_l / clip_g; see clip_files.py). Nothing is ever downloaded.
A prompt is padded (or truncated) to 77 tokens by each tokenizer; the model conditions on
  embeds = CLIP-L last_hidden_state || bigG last_hidden_state   (the last layer, after the final LayerNorm)
  pooled = bigG pooler_output                                   (the hidden state at the EOS token, unprojected)
  mask   = bigG's attention mask                                (True = real token)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError

MAX_LENGTH = 77  # tokens per prompt, start and end tokens included
# Characters that are one token each in CLIP's byte-level vocabulary (and rare in prompts): a subject's token is
# written as K of them, whose input embeddings become its K learned vectors. Never a new id: CLIP-L pools at the
# largest id (its end token), which a new id would overtake.
SPARE = ("~", "^", "`", "|")  # one byte each: one token, at a fixed id


@dataclass
class PromptEmbeds:
    """Encoded prompts, one row each. Padded positions carry (meaningless) non-zero features; ``mask`` says which
    positions are real."""
    embeds: torch.Tensor  # (B, T, D_ctx) f32
    pooled: torch.Tensor  # (B, D_pool) f32
    mask: torch.Tensor  # (B, T) bool, True = real token

    def __post_init__(self):
        self.mask = self.mask.bool()
        if self.embeds.dim() != 3 or self.pooled.dim() != 2 or self.mask.dim() != 2:
            raise ValueError(f"PromptEmbeds needs embeds (B, T, D), pooled (B, D) and mask (B, T); got "
                             f"{tuple(self.embeds.shape)}, {tuple(self.pooled.shape)}, {tuple(self.mask.shape)}.")
        if not self.embeds.shape[0] == self.pooled.shape[0] == self.mask.shape[0]:
            raise ValueError(f"PromptEmbeds fields have different batch sizes: {self.embeds.shape[0]}, "
                             f"{self.pooled.shape[0]}, {self.mask.shape[0]}.")
        if self.mask.shape[1] != self.embeds.shape[1]:
            raise ValueError(f"PromptEmbeds mask covers {self.mask.shape[1]} tokens but embeds have "
                             f"{self.embeds.shape[1]}.")

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def select(self, rows: int | slice | Sequence[int] | torch.Tensor) -> PromptEmbeds:
        """The given rows (an int keeps its row as a batch of one)."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        return PromptEmbeds(self.embeds[rows], self.pooled[rows], self.mask[rows])

    def expand(self, batch: int) -> PromptEmbeds:
        """``batch`` rows: a single prompt repeated (how the null prompt meets a batch), or these rows unchanged."""
        if len(self) == batch:
            return self
        if len(self) != 1:
            raise ValueError(f"Cannot spread {len(self)} prompts over a batch of {batch}: give 1 or {batch}.")
        return PromptEmbeds(self.embeds.expand(batch, -1, -1), self.pooled.expand(batch, -1),
                            self.mask.expand(batch, -1))

    def to(self, device: torch.device | str | None) -> PromptEmbeds:
        return PromptEmbeds(self.embeds.to(device), self.pooled.to(device), self.mask.to(device))

    @staticmethod
    def cat(parts: Sequence[PromptEmbeds]) -> PromptEmbeds:
        """The rows of every part, in order (all parts must have the same token count and widths)."""
        shapes = {(p.embeds.shape[1:], p.pooled.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"Cannot stack prompts of different shapes (tokens x width, pooled width): "
                             f"{sorted((tuple(e), tuple(p)) for e, p in shapes)}.")
        return PromptEmbeds(torch.cat([p.embeds for p in parts]), torch.cat([p.pooled for p in parts]),
                            torch.cat([p.mask for p in parts]))


class ClipPair:
    """The two frozen CLIP text encoders and their tokenizers. ``pair(prompts)`` -> PromptEmbeds (fp32)."""

    def __init__(self, encoder, tokenizer, encoder_2, tokenizer_2, source: tuple[str, str] | None = None):
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.encoder_2 = encoder_2.eval().requires_grad_(False)
        self.tokenizer_2 = tokenizer_2
        self.source = source  # the two folders or files, for messages

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def width(self) -> int:
        """CLIP-L's width; a subject's vectors are CLIP-L's input embeddings, then bigG's, side by side."""
        return self.encoder.config.hidden_size

    def __call__(self, prompts: str | list[str], subjects: dict[str, torch.Tensor] | None = None) -> PromptEmbeds:
        """The prompts' embeddings; ``subjects`` (token -> (K, width of both encoders) vectors): each token in a
        prompt is read as its K learned input embeddings (differentiable in them: subject tuning)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        subjects = subjects or {}
        if len(subjects) > len(SPARE):
            raise ValueError(f"At most {len(SPARE)} subjects can be named in one prompt.")
        clash = sorted({c for p in prompts for c in SPARE[:len(subjects)] if c in p})
        if clash:
            raise ValueError(f"With a subject applied, a prompt cannot contain {' or '.join(map(repr, clash))}: "
                             f"Switti's encoders read those characters as the subject's learned vectors.")
        for spare, (token, vectors) in zip(SPARE, subjects.items()):
            prompts = [p.replace(token, " " + " ".join([spare] * vectors.shape[0]) + " ") for p in prompts]
        with torch.set_grad_enabled(any(v.requires_grad for v in subjects.values())):
            split = [(spare, v[:, :self.width], v[:, self.width:]) for spare, v in zip(SPARE, subjects.values())]
            hidden, _, _ = self._encode(self.encoder, self.tokenizer, prompts, [(c, a) for c, a, _ in split])
            hidden_2, pooled, mask = self._encode(self.encoder_2, self.tokenizer_2, prompts,
                                                  [(c, b) for c, _, b in split])
        return PromptEmbeds(torch.cat([hidden, hidden_2], dim=-1), pooled, mask)

    def _encode(self, encoder, tokenizer, prompts: list[str], vectors=()) -> tuple[torch.Tensor, ...]:
        tokens = tokenizer(prompts, truncation=True, max_length=MAX_LENGTH, padding="max_length", return_tensors="pt")
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        table = encoder.get_input_embeddings()
        replaced = [(tokenizer.convert_tokens_to_ids(spare + "</w>"), v) for spare, v in vectors]

        def learned(module, args, out):  # the spare token's embedding -> the subject's vectors, in turn
            for spare_id, v in replaced:
                at = ids == spare_id
                order = (at.cumsum(dim=1) - 1) % v.shape[0]  # the i-th spare token of a row gets vector i mod K
                out = torch.where(at[..., None], v.to(out)[order], out)
            return out
        handle = table.register_forward_hook(learned) if replaced else None
        try:
            out = encoder(input_ids=ids, attention_mask=mask)
        finally:
            if handle is not None:
                handle.remove()
        return out.last_hidden_state.float(), out.pooler_output.float(), mask.bool()


def _load_part(path: str | os.PathLike, role: str, device, dtype):
    """One encoder with its tokenizer: from a file (``role`` says which release it is) or from a folder."""
    if Path(path).is_file():
        from .clip_files import load_clip_file
        return load_clip_file(path, role, device, dtype)
    return _load_folder(path, device, dtype)


def _load_folder(folder: str | os.PathLike, device, dtype):
    # imported here: only the Switti family needs transformers
    from transformers import CLIPTextModel, CLIPTokenizer

    if not Path(folder).exists():
        raise CheckpointError(f"'{folder}' does not exist: give a CLIP text encoder folder or its .safetensors file.")
    if not (Path(folder) / "config.json").is_file():
        raise CheckpointError(f"'{folder}' is not a CLIP text encoder folder: it has no config.json. Give a local "
                              f"copy of the Hugging Face folder (CLIPTextModel weights and CLIPTokenizer files), "
                              f"or the encoder's single .safetensors file (ComfyUI's clip_l / clip_g).")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        # safetensors only: a pickled .bin could run code when read
        model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"'{folder}' could not be read as a CLIP text encoder with its tokenizer "
                              f"({type(e).__name__}: {first_line}).") from e
    return model.to(device=device, dtype=dtype), tokenizer


def load_clip_pair(path: str | os.PathLike, text_encoder_2: str | os.PathLike, device=None,
                   dtype: torch.dtype | None = None) -> ClipPair:
    """The CLIP-L encoder from ``path`` and the OpenCLIP-bigG one from ``text_encoder_2``: each a folder holding its
    model and tokenizer, or a single .safetensors file of the model's weights (ComfyUI's clip_l / clip_g; the
    tokenizer ships with var_core). ``dtype``: the encoders' weights (default fp32); outputs are always fp32."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.float32
    encoder, tokenizer = _load_part(path, "clip_l", device, dtype)
    encoder_2, tokenizer_2 = _load_part(text_encoder_2, "clip_g", device, dtype)
    return ClipPair(encoder, tokenizer, encoder_2, tokenizer_2, source=(str(path), str(text_encoder_2)))
