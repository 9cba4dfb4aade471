"""Measures read off pictures of the toy world: did a generated picture come out on the background and with the class
its prompt asked for, and how much does its object look like a given member's glyph.

    requested_background(image, "beach")   # True when detect_background finds the beach
    class_of(image)                        # "dog": the class of the nearest member reference
    class_of(image, roundtrip=tokenizer_roundtrip(vae, schedule))   # ... of references that went through the VAE
    member_similarity(image, "poodle")     # glyph agreement with the poodle, about -0.3 .. 1 (1: the same pixels)

All three work from the world's own reading of pictures (world.detect_background, world.object_mask) and a fixed,
hand-made glyph descriptor, with no learned model, so they mean the same thing for every model they judge.

The glyph descriptor of an object (its object_mask, cut to the mask's bounding square, the object centred), two
unit vectors over 16 x 16 cells, scale- and position-free (the cut is square and resized):
  * shape: the object's coverage of each cell;
  * colour: (2·colour - 1)·coverage of each cell: what colour the object has where.
The similarity of two descriptors is 0.7·(shape cosine) + 0.3·(colour cosine). Colour enters only per cell: an
earlier descriptor weighted a global colour histogram 0.7, which read clean pictures as well (99 %) but misread a
quarter of clean pictures that had passed through the v3 tokenizer (its small colour shifts move histogram bins;
docs/benchmarks.md, "The glyph classifier").

A member's reference is its glyph pasted at the centre (long side 0.7 of the frame, the middle of the world's
0.55-0.85) onto a fixed render of the same background, read back by the same object_mask as the generated picture,
so that what the mask loses on that background (black outlines on a black or night background) it loses on both
sides. References are made for every member of every class, training and held-out (156), once per background
(cached).

Tokenizer-matched references (``roundtrip``): the same reference pictures, passed through a tokenizer's encode and
decode first (tokenizer_roundtrip), so that what the tokenizer loses (fine detail, exact colours) it loses on both
sides too. A generator can only draw what its tokenizer can decode: matched references separate "the transformer did
not draw the class" from "the tokenizer cannot show it". Members whose glyph the round trip wipes out on a background
(nothing left to read) are left out of that background's matched references.

Ceiling (what the measures give on clean single-object world pictures, the same reading on real glyphs):
``python -m toyworld.metrics --n 300`` prints it (world v2): background 100 %, class 98.7 %, member 98.0 %; the 480
clean pictures of benchmarks/prompt_following.py's default grid (20 classes x 8 backgrounds x 3, training members):
class 98.3 %, and 90.0 % after the shipped BitVAE's round trip (``python benchmarks/classifier.py`` for every
background). The few misses on clean pictures are on yellow, desert and beach (89-96 %), where world.object_mask
loses the parts of an object coloured like its background.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from . import world

GRID = 16  # cells per side
SHAPE_WEIGHT = 0.7  # the rest is the colour cells' (chosen on tokenizer round trips of clean pictures)
REFERENCE_SIDE = 0.7  # a reference glyph's long side over the frame (the middle of the world's 0.55-0.85)
REFERENCE_SIZE = 128
REFERENCE_SEED = 0  # the background render the references are pasted on

Roundtrip = Callable[[list[Image.Image]], list[Image.Image]]  # pictures in, the same pictures as a tokenizer gives them


@dataclass(frozen=True)
class GlyphDescriptor:
    shape: np.ndarray  # (GRID²,) unit vector
    colours: np.ndarray  # (3·GRID²,) unit vector

    def similarity(self, other: "GlyphDescriptor") -> float:
        return float(SHAPE_WEIGHT * self.shape @ other.shape + (1 - SHAPE_WEIGHT) * self.colours @ other.colours)


def _cells(a: np.ndarray) -> np.ndarray:
    """Mean of a (side, side) float array over GRID x GRID cells."""
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((GRID, GRID), Image.Resampling.BOX))


def describe(image: Image.Image, mask: np.ndarray) -> GlyphDescriptor | None:
    """The glyph descriptor of the masked object (mask: (H, W) bool), or None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    rgb = np.asarray(image.convert("RGB"), np.float32)[r0:r1, c0:c1] / 255
    m = mask[r0:r1, c0:c1].astype(np.float32)
    side = max(r1 - r0, c1 - c0)
    square = np.zeros((side, side, 4), np.float32)  # the object centred in its bounding square
    y, x = (side - (r1 - r0)) // 2, (side - (c1 - c0)) // 2
    square[y:y + r1 - r0, x:x + c1 - c0, 0] = m
    square[y:y + r1 - r0, x:x + c1 - c0, 1:] = (2 * rgb - 1) * m[..., None]
    shape, colours = _cells(square[..., 0]).ravel(), np.stack([_cells(square[..., i]) for i in (1, 2, 3)]).ravel()
    return GlyphDescriptor(_unit(shape), _unit(colours))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


def object_pixels(image: Image.Image, background: str) -> np.ndarray:
    """world.object_mask without the specks it keeps (stars, flakes, grain up to about 4 px across, which would
    stretch the object's bounding square across the frame): only mask parts that hold a 5 x 5 square (at 128 px),
    and what joins them inside the mask, are kept; the whole mask when no part does (a thin object)."""
    mask = world.object_mask(image, background)
    k = 2 * max(1, round(image.width / 64)) + 1
    core = np.asarray(Image.fromarray(mask).filter(ImageFilter.MinFilter(k)))
    return world.reach(core, mask) if core.any() else mask


def describe_object(image: Image.Image, background: str | None = None) -> GlyphDescriptor | None:
    """The descriptor of the object in a picture, on its named background (default: the detected one)."""
    background = background or world.detect_background(image)
    return describe(image, object_pixels(image, background))


def reference_picture(member: world.Member | str, background: str, size: int = REFERENCE_SIZE) -> Image.Image:
    """The member's glyph at the centre of a fixed render of the background: what its reference is read from."""
    picture = world.render_background(background, size, REFERENCE_SEED)
    sprite = world.glyph(member)
    k = REFERENCE_SIDE * size / max(sprite.size)
    w, h = max(1, round(sprite.width * k)), max(1, round(sprite.height * k))
    sprite = sprite.resize((w, h), Image.Resampling.LANCZOS)
    picture.paste(sprite, ((size - w) // 2, (size - h) // 2), sprite)
    return picture


@dataclass(frozen=True)
class References:
    members: tuple[world.Member, ...]
    shapes: np.ndarray  # (members, GRID²)
    colours: np.ndarray  # (members, 3·GRID²)

    def similarities(self, d: GlyphDescriptor) -> np.ndarray:
        """The descriptor's similarity to every member's reference, (members,)."""
        return SHAPE_WEIGHT * self.shapes @ d.shape + (1 - SHAPE_WEIGHT) * self.colours @ d.colours


_MATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # roundtrip -> {background: References}


def references(background: str, roundtrip: Roundtrip | None = None) -> References:
    """The references of every member of every class (training and held-out) on the background; with ``roundtrip``,
    of the reference pictures after it (cached per roundtrip object while it lives: make it once, pass the same one;
    dropping it frees the cache and the tokenizer it holds)."""
    if roundtrip is None:
        return _plain_references(background)
    cache = _MATCHED.setdefault(roundtrip, {})
    if background not in cache:
        cache[background] = _references(background, roundtrip)
    return cache[background]


@functools.cache
def _plain_references(background: str) -> References:
    return _references(background, None)


def _references(background: str, roundtrip: Roundtrip | None) -> References:
    members = world.members("all")
    pictures = [reference_picture(m, background) for m in members]
    if roundtrip is not None:
        pictures = roundtrip(pictures)
    kept, described = [], []
    for m, picture in zip(members, pictures):
        d = describe_object(picture, background)
        if d is None and roundtrip is None:
            raise ValueError(f"The glyph of {m.name} cannot be told from the {background} background.")
        if d is not None:
            kept.append(m)
            described.append(d)
    return References(tuple(kept), np.stack([d.shape for d in described]), np.stack([d.colours for d in described]))


def tokenizer_roundtrip(vae, schedule, batch: int = 32) -> Roundtrip:
    """Pictures -> the same pictures encoded to bits by ``vae`` (a BitVAE) and decoded again, on the grids it
    quantises on for the transformer ``schedule`` (twice as fine for a patchified, f8 VAE)."""
    import torch
    from var_core.images import from_pil, to_pil
    from var_core.infinity.quantizer import vae_schedule
    grids = vae_schedule(schedule, vae.token_patch)

    def roundtrip(pictures: list[Image.Image]) -> list[Image.Image]:
        out = []
        for i in range(0, len(pictures), batch):
            images = torch.cat([from_pil(p) for p in pictures[i:i + batch]])
            out += to_pil(vae.decode_bits(vae.encode_bits(images, grids), grids))
        return out
    return roundtrip


# ---------------------------------------------------------------------------------------------------- the measures
def requested_background(image: Image.Image, background: str) -> bool:
    """Whether the picture shows the background its prompt asked for (by world.detect_background)."""
    if background not in world.BACKGROUNDS:
        raise ValueError(f"Unknown background {background!r}; the world has {', '.join(world.BACKGROUNDS)}.")
    return world.detect_background(image) == background


def nearest_member(image: Image.Image, background: str | None = None,
                   roundtrip: Roundtrip | None = None) -> world.Member | None:
    """The member whose reference the picture's object is most similar to (None: no object found); ``roundtrip``:
    among tokenizer-matched references."""
    background = background or world.detect_background(image)
    return nearest_to(describe_object(image, background), background, roundtrip)


def nearest_to(d: GlyphDescriptor | None, background: str, roundtrip: Roundtrip | None = None) -> world.Member | None:
    """nearest_member for an object already described on ``background`` (None: no object)."""
    if d is None:
        return None
    refs = references(background, roundtrip)
    return refs.members[int(refs.similarities(d).argmax())]


def class_of(image: Image.Image, background: str | None = None, roundtrip: Roundtrip | None = None) -> str | None:
    """The class the picture's object shows: that of the nearest member reference among all members of all classes
    (None: no object found). background: the picture's background name (default: detected); roundtrip: compare
    with tokenizer-matched references."""
    member = nearest_member(image, background, roundtrip)
    return member.cls if member is not None else None


def member_similarity(image: Image.Image, member: world.Member | str, background: str | None = None) -> float:
    """Glyph agreement: the similarity of the picture's object to the member's reference on the picture's background
    (about -0.3 to 1; 0.0 when no object is found). The world's own measure of subject fidelity."""
    background = background or world.detect_background(image)
    d = describe_object(image, background)
    if d is None:
        return 0.0
    refs = references(background)
    return float(refs.similarities(d)[refs.members.index(world.find_member(member))])


# ----------------------------------------------------------------------------------------------------- the ceiling
def clean_pictures(classes=None, backgrounds=None, per_cell: int = 1, seed: int = 0, split: str = "train"):
    """Single-object world pictures, ``per_cell`` for every (class, background): the clean counterpart of a
    prompt-following run. split "train": members pretraining drew (what a class prompt should give)."""
    pool = world.members(split)
    out = []
    for i, cls in enumerate(classes or world.CLASSES):
        members = [m for m in world.CLASSES[cls] if m in pool]
        for j, background in enumerate(backgrounds or world.BACKGROUNDS):
            for k in range(per_cell):
                out.append(world.sample_scene(np.random.default_rng([seed, i, j, k]), members=members,
                                              background=background, n_objects=1))
    return out


def ceiling(pictures, roundtrip: Roundtrip | None = None) -> dict[str, float]:
    """How often the measures read clean world pictures right: rates of "background", "class" and "member".
    roundtrip: read the pictures after it, against matched references (what a perfect generator behind that
    tokenizer would score)."""
    background = class_ = member = 0
    images = roundtrip([p.image for p in pictures]) if roundtrip is not None else [p.image for p in pictures]
    for p, image in zip(pictures, images):
        truth = p.meta["objects"][0]
        detected = world.detect_background(image)
        nearest = nearest_member(image, detected, roundtrip)
        background += detected == p.meta["background"]
        class_ += nearest is not None and nearest.cls == truth["class"]
        member += nearest is not None and nearest.name == truth["member"]
    n = max(1, len(pictures))
    return {"background": background / n, "class": class_ / n, "member": member / n}


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="How often the toy-world measures read clean pictures right.")
    parser.add_argument("--n", type=int, default=400, help="pictures (single object, any member, any background)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    pictures = [world.sample_scene(np.random.default_rng([args.seed, i]), split="all", n_objects=1)
                for i in range(args.n)]
    print(f"{args.n} clean single-object pictures (all members, all backgrounds):",
          ", ".join(f"{k} {v:.1%}" for k, v in ceiling(pictures).items()))
    for b in world.BACKGROUNDS:
        on = [p for p in pictures if p.meta["background"] == b]
        if on:
            print(f"  {b:>7} ({len(on):3d}): class {ceiling(on)['class']:.0%}")


if __name__ == "__main__":
    main()
