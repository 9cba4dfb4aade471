"""var_core: a dependency-light, checkpoint-compatible engine for scale-wise (next-scale prediction) image models.

Public API (stable names used by the CLI, the ComfyUI nodes and outside checks):
    load_transformer, load_vae, load_text_encoder, scale_schedule, sample, check_compatible, ...
The loaders recognise a file's family from its tensor names (family.py): Infinity, Switti and the class-conditional
VAR.
"""
from __future__ import annotations

import sys

__version__ = "0.1.0"
NEEDS_TORCH = ("var_core needs PyTorch: pip install -r requirements-cpu.txt (a clone, on a CPU), or the torch build "
               "for your GPU from https://pytorch.org, then pip install -r requirements.txt")
try:
    import torch  # noqa: F401  (before the modules that need it, so a missing torch is one clear line)
except ModuleNotFoundError:
    if sys.argv[:1] == ["-m"]:  # python -m var_core ...: the message alone, no traceback
        sys.exit(NEEDS_TORCH)
    raise ModuleNotFoundError(NEEDS_TORCH) from None

from . import fp8
from .checkpoint import CheckpointError
from .family import Family, family_of, family_named, recognise
from .checkpoint import tensor_names
from .infinity.bitvae import BitVAE
from .infinity.family import teacher_forcing_batch
from .infinity.loss import bit_accuracy, bitwise_cross_entropy
from .infinity.model import Infinity, InfinityConfig
from .pruning import Pruning
from .sampling import sample
from .schedules import PRESETS, TEMPLATE_KEYS, nearest_template, pixel_size, scale_schedule


def load_transformer(path_or_state_dict, device=None, dtype=None):
    """The transformer of whichever family the file is (strict; architecture from the tensor shapes). ``dtype``: its
    blocks' (default bf16 on CUDA, fp32 elsewhere), or "fp8": their linear weights stored in fp8 (fp8.py), loaded in
    bf16 on the CPU, quantized, then moved to ``device``."""
    family = family_of(path_or_state_dict, "transformer")
    if dtype not in ("fp8", fp8.FP8):
        return family.load_transformer(path_or_state_dict, device, dtype)
    model = family.load_transformer(path_or_state_dict, "cpu", torch.bfloat16)
    fp8.quantize_blocks(model)
    return model.to(device or "cpu")


def load_vae(path_or_state_dict, device=None, dtype=None):
    """The VAE (multi-scale tokenizer) of whichever family the file is."""
    return family_of(path_or_state_dict, "vae").load_vae(path_or_state_dict, device, dtype)


def load_text_encoder(path, device=None, dtype=None, family: Family | str | None = None, **kwargs):
    """The frozen text encoder(s) a family conditions on: Infinity's T5 (called on a list of prompts: one
    (len_i, C_text) tensor per prompt), or Switti's CLIP-L with its OpenCLIP-bigG as ``text_encoder_2`` (called on a
    list of prompts: PromptEmbeds). ``family``: whose encoder (default: Switti's when text_encoder_2 is given, else
    Infinity's)."""
    if kwargs.get("text_encoder_2", 0) is None:
        del kwargs["text_encoder_2"]
    default = "switti" if "text_encoder_2" in kwargs else "infinity"
    family = family_named(family) if isinstance(family, str) else family or family_named(default)
    return family.load_text_encoder(path, device=device, dtype=dtype, **kwargs)


def check_compatible(model, vae) -> None:
    """Refuse a VAE that does not make the transformer's tokens, with a message naming both files."""
    model.family.check_compatible(model, vae)


def __getattr__(name):  # the text side of Switti imports transformers: only when it is asked for
    if name == "PromptEmbeds":
        from .switti.text import PromptEmbeds
        return PromptEmbeds
    raise AttributeError(f"module 'var_core' has no attribute {name!r}")


def detect_kind(state_dict, source="the given file") -> str:
    """'transformer' or 'vae', from the tensor names (also inside the known wrappers)."""
    return recognise(tensor_names(state_dict), source)[1]


__all__ = ["BitVAE", "CheckpointError", "Family", "Infinity", "InfinityConfig", "PRESETS", "PromptEmbeds", "Pruning", "TEMPLATE_KEYS",
           "bit_accuracy", "bitwise_cross_entropy", "check_compatible", "detect_kind", "family_of", "load_text_encoder",
           "load_transformer", "load_vae", "nearest_template", "pixel_size", "sample", "scale_schedule",
           "teacher_forcing_batch"]
