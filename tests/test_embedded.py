"""The embedded toy model as shipped (var_core/bundle): small, documented, read by the public loaders, draws the
class and background it is asked for, and learns a held-out subject with the demo's settings while the plain class
prompt keeps drawing the class."""
import pytest

import var_core as vc
from var_core.images import to_pil
from var_core import embedded
from toyworld import following, metrics, world
from var_core.tuning import SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, load_subject, prepare_images

SCHEDULE = vc.scale_schedule(1.0, embedded.PN)
CLASS_MIN = 0.6  # the goal; measured 86.9 % over 480 samples (docs/benchmarks.md; 85-93 % on white and night)
SUBJECT_GAIN = 0.06


@pytest.fixture(scope="module")
def bundle():
    """The shipped model, loaded once for this module (read-only: tuning trains its own delta, never the base)."""
    return embedded.load_models()


def draw(model, vae, encoder, prompt: str, seeds: int, seed: int = 0):
    text = encode_prompts(encoder, [prompt] * seeds, model)
    return to_pil(vc.sample(model, vae, text, SCHEDULE, seed=seed))


def test_the_bundle_is_small_documented_and_free_of_the_font_package():
    files = [p for p in embedded.BUNDLE.rglob("*") if p.is_file() and p.relative_to(embedded.BUNDLE).parts[0] != "work"]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    info = embedded.manifest()
    assert info["world_version"] == world.WORLD_VERSION
    assert info["command"].startswith("python -m toyworld pretrain")
    assert "CC BY-SA 4.0" in (embedded.BUNDLE / "LICENSE.md").read_text()
    subjects = embedded.example_subjects()
    assert all(world.find_member(s["member"]).held_out and len(s["photos"]) == 4 for s in subjects.values())
    assert {n for n, s in subjects.items() if s["subject"]} == {"guide_dog", "teacup"}


def test_the_loaders_read_it_and_the_subjects_fit_it(bundle):
    model, vae, encoder = bundle
    vc.check_compatible(model, vae)
    assert model.config.text_channels == encoder.width
    for info in embedded.example_subjects().values():
        if info["subject"]:
            assert load_subject(info["subject"], model).class_word == info["class_word"]


def test_samples_follow_the_requested_class_and_background(bundle):
    """Every class of the world on two backgrounds, one sample each, read by the world's own measures (plain
    references). The full measurement (docs/benchmarks.md) is larger; this asserts the effect with a margin."""
    cells, _, _ = following.follow(*bundle, embedded.PN, backgrounds=("white", "night"), seed=5, quiet=True)
    rates = following.summary(cells)
    assert rates["class"] >= CLASS_MIN and rates["background"] >= 0.85, rates


def test_the_class_reader_reads_what_the_bundled_tokenizer_gives_back(bundle):
    """Clean world pictures encoded and decoded by the shipped BitVAE keep their class for the world's classifier
    with plain references: the tokenizer shifts colours a little, and the classifier must not read that as another
    class (a global colour histogram did: 63 of these 80 right, 74 % on the prompt-following grid's 480; the cell
    descriptor 74 of 80, 90 %)."""
    _, vae, _ = bundle
    pictures = metrics.clean_pictures(backgrounds=("red", "green", "white", "beach"), seed=4)
    decoded = metrics.tokenizer_roundtrip(vae, SCHEDULE)([p.image for p in pictures])
    right = sum(metrics.class_of(im) == p.meta["objects"][0]["class"] for p, im in zip(pictures, decoded))
    assert right >= 0.85 * len(pictures), f"{right}/{len(pictures)}"


def test_the_demo_tuning_draws_a_held_out_subject_in_new_contexts(bundle):
    """The demo's settings (the model's own, stated in its file) on the guide dog's 4 photos: in contexts the photos never show the
    subject's own glyph is the nearest of all the world's glyphs far more often than for the untuned model asked for
    a dog, the requested background stays, and the plain class prompt still draws a dog, not the subject."""
    model, vae, encoder = bundle
    info = embedded.example_subjects()["guide_dog"]
    member = world.find_member(info["member"])
    config = TrainConfig(class_word="dog").for_model(model)
    data = prepare_images(info["photos"], vc.pixel_size(SCHEDULE), config.token, "dog")
    trainer = SubjectTrainer(model, vae, encoder, data, config)
    trainer.run()
    tuned = apply_subjects(model, [(trainer.delta, 1.0)])
    contexts = ("white", "night")  # neither is in the photos
    assert not {world.detect_background(p) for p in map(_open, info["photos"])} & set(contexts)

    def read(m, noun, n=4):  # over the contexts: subject is the nearest glyph, glyph agreement, background kept
        pictures = {bg: draw(m, vae, encoder, f"a photo of {noun} {world.PHRASES[bg][0]}", n, seed=3)
                    for bg in contexts}
        every = [im for ims in pictures.values() for im in ims]
        return (sum(metrics.nearest_member(im) == member for im in every) / len(every),
                sum(metrics.member_similarity(im, member) for im in every) / len(every),
                sum(metrics.requested_background(im, bg) for bg, ims in pictures.items() for im in ims) / len(every))

    nearest_before, agreement_before, _ = read(model, "a dog")
    nearest_after, agreement_after, background = read(tuned, f"{config.token} dog")
    # measured on white + night: nearest 0 -> 1.0, glyph agreement 0.66 -> 0.81, background 1.0; method benchmark
    # (4 other contexts, 6 subjects): nearest 0.07 -> 0.67, glyph agreement 0.57 -> 0.78 (docs/benchmarks.md)
    assert nearest_after > nearest_before and agreement_after >= agreement_before + SUBJECT_GAIN, \
        (nearest_before, nearest_after, agreement_before, agreement_after)
    assert background >= 0.75
    plain = draw(tuned, vae, encoder, "a photo of a dog on a white background", 8, seed=4)
    assert sum(metrics.nearest_member(im) == member for im in plain) <= 2  # the class prompt is not the subject


def test_the_plain_class_prompt_keeps_its_class_with_the_shipped_subjects(bundle):
    """With each shipped subject file applied (guide dog, teacup: the demo's settings), "a photo of a dog" / "a photo
    of a cup" still draws the class and not the subject. Measured 23 of 32 (the guide dog 7 of 16: after tuning some
    of its dogs come out on orange and break up; the teacup 16 of 16); the untuned model 28 of 32; on the method
    benchmark's six subjects 78 % (docs/benchmarks.md)."""
    model, vae, encoder = bundle
    kept = total = 0
    for info in embedded.example_subjects().values():
        if not info["subject"]:
            continue
        member, word = world.find_member(info["member"]), info["class_word"]
        tuned = apply_subjects(model, [(load_subject(info["subject"], model), 1.0)])
        for seed in (4, 5):
            for image in draw(tuned, vae, encoder, f"a photo of {world.article(word)}", 8, seed=seed):
                read = metrics.nearest_member(image)
                kept += read is not None and read.cls == word and read != member
                total += 1
    assert total == 32 and kept >= 0.5 * total, (kept, total)  # the goal: at least half


def _open(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.convert("RGB")
