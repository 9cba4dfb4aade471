"""Conversions between image files / PIL images and (B, 3, H, W) tensors in [-1, 1], and atomic PNG writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .checkpoint import write_atomic


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB PIL images (rounded, not truncated)."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def from_pil(image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Any PIL image (RGBA, grayscale, EXIF-rotated, ...) -> (1, 3, H, W) in [-1, 1].

    With size=(H, W), the image is scaled so it covers the size (LANCZOS) and centre-cropped to it.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent areas become white, not black
    image = image.convert("RGB")
    if size is not None:
        image = ImageOps.fit(image, (size[1], size[0]), method=Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return (arr.permute(2, 0, 1)[None].float() / 127.5) - 1


def load_image(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im.load()
            return from_pil(im, size)
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not read image '{path}': {e}") from e


def save_png(image: Image.Image, path, overwrite: bool = False) -> Path:
    """Write a PNG atomically; refuse to replace an existing file unless asked."""
    return write_atomic(path, lambda tmp: image.save(tmp, format="PNG"), overwrite)
