"""var_core: a dependency-light, checkpoint-compatible engine for the Infinity visual-autoregressive model.

Public API (stable names used by the CLI, the ComfyUI nodes and outside checks):
    load_transformer, load_vae, load_text_encoder, scale_schedule, sample, check_compatible, ...
"""
from __future__ import annotations

__version__ = "0.1.0"

from .infinity.bitvae import BitVAE, load_vae
from .checkpoint import CheckpointError, check_compatible
from .sampling import sample
from .schedules import PRESETS, TEMPLATE_KEYS, nearest_template, pixel_size, scale_schedule
from .infinity.loss import bit_accuracy, bitwise_cross_entropy, teacher_forcing_batch
from .infinity.model import Infinity, InfinityConfig, load_transformer


def load_text_encoder(path, device=None, dtype=None, **kwargs):
    """Frozen T5 encoder; calling it on a list of prompts gives one (len_i, C_text) tensor per prompt.

    Imported lazily: transformers is heavy and only this function needs it.
    """
    from .infinity.t5 import load_text_encoder as load
    return load(path, device=device, dtype=dtype, **kwargs)


def detect_kind(state_dict, source="the given file") -> str:
    """'transformer' or 'vae', from the tensor names (also inside the known wrappers)."""
    keys = set(state_dict)
    for wrapper in ("vae", "model", "trainer"):
        inner = state_dict.get(wrapper) if hasattr(state_dict, "get") else None
        if isinstance(inner, dict):
            keys |= set(inner) | {k for v in inner.values() if isinstance(v, dict) for k in v}
    if any(k.endswith("pos_start") for k in keys):
        return "transformer"
    if any(k.startswith("encoder.") or k.startswith("decoder.") for k in keys):
        return "vae"
    raise CheckpointError(f"{source} is neither an Infinity transformer nor a BitVAE checkpoint.")


__all__ = ["BitVAE", "CheckpointError", "Infinity", "InfinityConfig", "PRESETS", "TEMPLATE_KEYS", "bit_accuracy",
           "bitwise_cross_entropy", "check_compatible", "detect_kind", "load_text_encoder", "load_transformer",
           "load_vae", "nearest_template", "pixel_size", "sample", "scale_schedule", "teacher_forcing_batch"]
