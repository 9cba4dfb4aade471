"""Conversions between image files / PIL images and (B, 3, H, W) tensors in [-1, 1], and atomic PNG writing."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

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


def fit_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) in [-1, 1], any size -> (B, 3, *size): scaled to cover, centre-cropped (as from_pil)."""
    t = image if image.dim() == 4 else image[None]
    if t.shape[1] != 3:
        raise ValueError(f"An image tensor must be (3, H, W) or (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}.")
    h, w = t.shape[-2:]
    if (h, w) == tuple(size):
        return t.float()
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    t = torch.nn.functional.interpolate(t.float(), size=(nh, nw), mode="bicubic", antialias=True,
                                        align_corners=False).clamp(-1, 1)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return t[:, :, top:top + size[0], left:left + size[1]]


def loss_curve(history: dict[str, list[float]], size: tuple[int, int] = (320, 512)) -> Image.Image:
    """A line plot (PIL, no matplotlib) of each named series over steps, with a legend of names and last values.

    The y axis is logarithmic when every value is positive, so a distillation loss a hundred times smaller than
    the cross-entropy is as readable as it is; otherwise linear.
    """
    h, w = size
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    left, top, bottom = 48, 8, h - 40
    series = {k: [v for v in vals if v == v and abs(v) != float("inf")] for k, vals in history.items()}
    values = [v for vals in series.values() for v in vals]
    draw.rectangle([left, top, w - 8, bottom], outline="black")
    if not values:
        return img
    log = min(values) > 0
    f = math.log10 if log else (lambda v: v)
    lo, hi = f(min(values)), f(max(values))
    hi = hi if hi > lo else lo + 1.0  # flat curves still draw
    for frac in (0.0, 0.5, 1.0):  # three labelled ticks
        y = bottom - (bottom - top) * frac
        value = lo + (hi - lo) * frac
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((2, y - 6), f"{10 ** value if log else value:.3g}", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (name, vals) in enumerate(series.items()):
        n = max(len(vals) - 1, 1)
        pts = [(left + (w - 8 - left) * j / n, bottom - (bottom - top) * (f(v) - lo) / (hi - lo))
               for j, v in enumerate(vals)]
        if len(pts) > 1:
            draw.line(pts, fill=colours[i % 4], width=2)
        if vals:
            x = left + 4 + 130 * i
            draw.line([(x, bottom + 13), (x + 14, bottom + 13)], fill=colours[i % 4], width=3)
            draw.text((x + 18, bottom + 6), f"{name} {vals[-1]:.4f}", fill=colours[i % 4])
    steps = max(len(v) for v in series.values())
    draw.text((left, h - 14), f"{steps} steps" + (", log scale" if log else ""), fill="black")
    return img


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


def grid(rows: list[tuple[str, list[Image.Image]]], tile: int = 128, label: int = 18) -> Image.Image:
    """Rows of square tiles, each row under its caption (label=0: no captions)."""
    width = max(len(images) for _, images in rows) * tile
    sheet = Image.new("RGB", (width, len(rows) * (tile + label)), "white")
    pen = ImageDraw.Draw(sheet)
    for r, (caption, images) in enumerate(rows):
        y = r * (tile + label)
        if label:
            pen.text((4, y + 3), caption, fill="black")
        for c, im in enumerate(images):
            sheet.paste(im.convert("RGB").resize((tile, tile)), (c * tile, y + label))
    return sheet
