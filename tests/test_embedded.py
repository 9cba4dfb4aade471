"""The embedded toy model as shipped (var_core/bundle): small, documented, read by the public loaders, follows
prompts, and learns a held-out subject while the plain class prompt does not drift towards it."""
import pytest

import var_core as vc
from var_core.images import to_pil
from var_core import embedded
from toyworld import metrics, world
from var_core.tuning import SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, load_subject, prepare_images

SCHEDULE = vc.scale_schedule(1.0, embedded.PN)


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


def test_samples_show_the_requested_background(bundle):
    shown = [metrics.requested_background(im, bg)
             for bg in ("red", "blue", "beach", "snow", "night", "grass")
             for im in draw(*bundle, f"a photo of a cat {world.PHRASES[bg][0]}", seeds=2, seed=1)]
    assert sum(shown) >= 0.75 * len(shown), shown


def test_a_short_tuning_learns_a_held_out_subject_and_leaves_the_class_prompt_alone(bundle):
    model, vae, encoder = bundle
    info = embedded.example_subjects()["guide_dog"]
    member = world.find_member(info["member"])
    config = TrainConfig(class_word="dog", pn=embedded.PN, steps=60, lr=1e-3, embedding_lr=1e-2, seed=0)
    data = prepare_images(info["photos"], vc.pixel_size(SCHEDULE), config.token, "dog")
    trainer = SubjectTrainer(model, vae, encoder, data, config)
    trainer.run()
    tuned = apply_subjects(model, [(trainer.delta, 1.0)])

    def agreement(m, prompts):  # glyph agreement with the subject, over 4 samples of each prompt
        scores = [metrics.member_similarity(im, member) for p in prompts for im in draw(m, vae, encoder, p, 4, seed=3)]
        return sum(scores) / len(scores)

    contexts = ("on a white background", "in the snow")  # neither is in the photos
    before = agreement(model, [f"a photo of a dog {c}" for c in contexts])
    after = agreement(tuned, [f"a photo of {config.token} dog {c}" for c in contexts])
    assert after > before + 0.1, (before, after)  # measured 0.28 -> 0.47
    plain = ["a photo of a dog on a white background"]  # with prior distillation it still draws the base's dog
    assert agreement(tuned, plain) < agreement(model, plain) + 0.05
