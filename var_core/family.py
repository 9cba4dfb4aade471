"""The model-family seam: what the library needs from one kind of next-scale-prediction model.

A family (Infinity; Switti; the class-conditional VAR) is one object, ``model.family`` of every model
it loads. The sampler, subject tuning, subject files, the CLI and the nodes speak only to this interface, so a new
family is a new folder beside ``var_core/infinity/``, not an ``if`` in each of them. docs/architecture.md explains
each part.

    family_of(path, "transformer")  # the family whose files these are, recognised from the tensor names
    family_named("infinity")        # the family a subject file records
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

import torch

from .checkpoint import CheckpointError, describe_source, tensor_names


class Family(ABC):
    name: str  # recorded in subject files: a subject of one family is refused by another
    title: str  # how messages name it
    tuning_groups: dict[str, tuple[str, ...]]  # layer group -> tensor names inside one block (selective tuning)
    default_groups: tuple[str, ...]  # the groups subject tuning trains unless told otherwise

    # ------------------------------------------------------------------ files
    @abstractmethod
    def recognise(self, names: set[str]) -> str | None:
        """'transformer', 'vae' or None, from a checkpoint's tensor names (wrappers included)."""

    @abstractmethod
    def load_transformer(self, source, device=None, dtype=None):
        """The transformer, strictly, with the architecture read from the file; ``model.family`` is this family."""

    @abstractmethod
    def load_vae(self, source, device=None, dtype=None):
        """The multi-scale tokenizer's autoencoder."""

    @abstractmethod
    def load_text_encoder(self, source, device=None, dtype=None, **kwargs):
        """The conditioning encoder: called on prompts, one (len_i, C) tensor per prompt."""

    @abstractmethod
    def check_compatible(self, model, vae) -> None:
        """Refuse a VAE that does not make this transformer's tokens, naming both files."""

    # ------------------------------------------------------------------ defaults
    @abstractmethod
    def sampling_defaults(self, model) -> dict:
        """{"cfg", "tau", "top_k", "top_p", "pn"} the model samples with unless the user says otherwise: the family's
        release values for this variant, overridden by the model file's own metadata, and while a subject is applied
        (``model`` a view) by the file's with-subject settings."""

    @abstractmethod
    def release_defaults(self, kind: str) -> dict[str, dict]:
        """{variant title: settings} of the released models, ``kind`` "sampling" or "tuning" (for help texts)."""

    @abstractmethod
    def file_defaults(self, source) -> dict:
        """{"sampling": {...}, "tuning": {...}, "with_subject": {...}} a model file states in its metadata (empty
        when it says nothing)."""

    @abstractmethod
    def tuning_defaults(self, model) -> dict:
        """The TrainConfig settings ({"pn", "steps", "lr", "embedding_lr"}) that suit this model where the user gives
        none: the family's, overridden by the model file's own metadata (the embedded model states its own)."""

    def tuning_schedule(self, model, aspect, pn) -> list[tuple[int, int]]:
        """The scales subject tuning trains on (Infinity: any aspect and resolution preset)."""
        from .schedules import scale_schedule
        return scale_schedule(aspect, pn)

    # ------------------------------------------------------------------ codes (the multi-scale tokenizer)
    code_dtype: torch.dtype  # of one scale's codes (Infinity: uint8 bits; a codebook: int64 indices)

    @abstractmethod
    def code_shape(self, model, hw: tuple[int, int]) -> tuple[int, ...]:
        """The shape of one image's codes of an (h, w) scale (Infinity: (h, w, bits))."""

    @abstractmethod
    def code_sum(self, model, schedule):
        """The running sum of the scales sampled so far: ``add(codes)`` of one scale (B, h, w, ...),
        ``tokens_at(hw)`` the next scale's input tokens, ``total`` the decoder's input."""

    @abstractmethod
    def decode(self, vae, sums) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] from a finished code_sum."""

    @abstractmethod
    def image_codes(self, vae, images: torch.Tensor, schedule) -> list[torch.Tensor]:
        """Per-scale codes of images (B, 3, H, W), in the transformer's token layout (variations)."""

    @abstractmethod
    def teacher_forcing(self, vae, latent: torch.Tensor, schedule, flip_prob: float = 0.0,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A latent of ``vae`` -> (inputs (B, L-1, ·) of scales 1..K-1, labels (B, L, ·)), with the family's own
        self-correction noise at ``flip_prob``."""

    @abstractmethod
    def inputs_from_codes(self, model, codes: torch.Tensor, schedule) -> torch.Tensor:
        """Teacher-forced inputs (B, L-1, ·) from flat codes (B, L, ·) of every scale (no noise)."""

    @staticmethod
    def flatten_codes(codes: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale codes (B, h_k, w_k, ...) -> (B, L, ...), scales in order, tokens row-major."""
        return torch.cat([c.flatten(1, 2) for c in codes], dim=1)

    @staticmethod
    def split_codes(flat: torch.Tensor, schedule) -> list[torch.Tensor]:
        out, start = [], 0
        for h, w in schedule:
            out.append(flat[:, start:start + h * w].unflatten(1, (h, w)))
            start += h * w
        return out

    # ------------------------------------------------------------------ prediction
    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
        """Classifier-free guidance on (temperature-scaled) logits."""
        return cfg * cond + (1 - cfg) * uncond

    @abstractmethod
    def draw(self, logits: torch.Tensor, top_k: int, top_p: float,
             generator: torch.Generator | None) -> torch.Tensor:
        """One scale's codes (B, l, ...) from its logits (B, l, ·)."""

    def placeholder_width(self, model) -> int:
        """The width of a subject's learned vectors (Infinity: T5's features)."""
        return model.config.text_channels

    @abstractmethod
    def token_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy (B, L)."""

    @abstractmethod
    def accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The share of predictions whose most likely value is the label."""

    @abstractmethod
    def distillation(self, student: torch.Tensor, teacher: torch.Tensor, per_unit: bool = True) -> torch.Tensor:
        """Mean KL(teacher ‖ student) over tokens; ``per_unit``: each independently drawn unit (a bit, a code) its
        own distribution, as the family samples them."""


def families() -> list[Family]:
    # imported here: each family imports this module for its base class. The codebook families come first: their
    # tensor names are recognised exactly, Infinity's by prefixes they share (word_embed., encoder.)
    from .infinity import INFINITY
    from .switti.family import SWITTI
    from .var.family import VAR
    return [VAR, SWITTI, INFINITY]


def family_named(name: str) -> Family:
    for family in families():
        if family.name == name:
            return family
    raise CheckpointError(f"Unknown model family {name!r}; this library knows {', '.join(f.name for f in families())}.")


def recognise(names: Iterable[str], source="the given file") -> tuple[Family, str]:
    """(family, 'transformer' | 'vae') of a checkpoint with these tensor names."""
    names = set(names)
    for family in families():
        kind = family.recognise(names)
        if kind is not None:
            return family, kind
    known = ", ".join(f"{f.title} transformer or VAE" for f in families())
    raise CheckpointError(f"{describe_source(source, capital=True)} is not a checkpoint this library knows ({known}): "
                          f"none of its tensor names fit (first: {', '.join(sorted(names)[:4])}).")


def family_of(source, kind: str) -> Family:
    """The family of the ``kind`` ('transformer' or 'vae') checkpoint at ``source`` (a path or a state dict)."""
    family, found = recognise(tensor_names(source), source)
    if found != kind:
        what = {"vae": "VAE"}.get(found, found)
        raise CheckpointError(f"{describe_source(source, capital=True)} is not {_a(family.title)} {kind} checkpoint: "
                              f"it holds {_a(family.title)} {what}; give it where {_a(what)} is expected.")
    return family

def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word
