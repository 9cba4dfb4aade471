"""The pack's own ComfyUI socket types and small conversions between ComfyUI and var_core conventions."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from var_core import defaults
from var_core.schedules import ASPECT_LABELS, RESOLUTION_LABELS, resolve_preset, template_key

Model = io.Custom("VAR_MODEL")  # var_core Infinity (or a view of it with subjects applied)
Vae = io.Custom("VAR_VAE")  # var_core BitVAE
TextEncoder = io.Custom("VAR_TEXT_ENCODER")  # var_core TextEncoder (T5)
Conditioning = io.Custom("VAR_CONDITIONING")  # {"prompts": [str], "text": tuning.apply.PromptReadings}
Subject = io.Custom("VAR_SUBJECT")  # var_core SubjectDelta of any family (applying one to another family is refused)
Prompts = io.Custom("VAR_PROMPTS")  # [str]: a list of prompts or captions (Proxy-Tuning)
Schedule = io.Custom("VAR_SCHEDULE")  # {"cfg"|"tau"|"strength": (coarse, fine, switch) or [per-scale values]}
# The codebook families: their own sockets, so that no Infinity node takes them (nor they an Infinity model)
SwittiModel = io.Custom("VAR_SWITTI_MODEL")  # var_core Switti (or a view of it with subjects applied)
SwittiTextEncoder = io.Custom("VAR_SWITTI_TEXT_ENCODER")  # var_core ClipPair (CLIP-L + OpenCLIP-bigG)
# {"positive": PromptEmbeds (a row per prompt), "negative", "prompts", "reads": {token: read as the subject (else its
# class word)} of the applied subjects they name, "as_class": the prompts with all of them read as their class words}
SwittiConditioning = io.Custom("VAR_SWITTI_CONDITIONING")
ClassModel = io.Custom("VAR_CLASS_MODEL")  # var_core VAR (class-conditional, ImageNet; or a view with subjects)
VQVae = io.Custom("VAR_VQVAE")  # var_core VQVAE: Switti's and VAR's multi-scale codebook VAE

CATEGORY = "VARBooth"
AUTO = "auto (the model's own)"
# "auto" first (the loaded model's native resolution), then the toy preset (the embedded model's 128²), then Infinity's
RESOLUTIONS = [AUTO, *RESOLUTION_LABELS]
ASPECTS = list(ASPECT_LABELS)
DEFAULT_RESOLUTION = AUTO
DEFAULT_ASPECT = ASPECTS[0]


def zero_means(widget, meaning: str = AUTO):
    """A number widget whose 0 stands for ``meaning``: the pack's frontend extension (web/varbooth.js) shows that word
    on the widget instead of the 0 (the saved value stays 0)."""
    widget.extra_dict["varbooth_zero"] = meaning
    return widget


def preset(label: str, model=None) -> str | None:
    """'1M (1024²)' -> '1M'; "auto" -> ``model``'s native preset (None without a model); anything else is refused."""
    if label == AUTO:
        return defaults.sampling(model)["pn"] if model is not None else None
    return resolve_preset(label)


def aspect(label: str) -> str:
    """'0.75 (h/w) 1184×896' -> '0.75'; anything that is not a template, its label or a ratio is refused."""
    return template_key(label)


def to_image(images: torch.Tensor) -> torch.Tensor:
    """var_core (B, 3, H, W) in [-1, 1] -> ComfyUI IMAGE (B, H, W, 3) in [0, 1] on the CPU."""
    return ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().contiguous()


def from_image(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> (B, 3, H, W) in [-1, 1] (alpha dropped, gray expanded)."""
    x = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].expand(*image.shape[:-1], 3)
    return x.permute(0, 3, 1, 2).float() * 2 - 1
