"""Fixed-seed outputs of the embedded model, recorded before the family-seam refactor: sampled codes (plain, with a
bundled subject at a per-scale strength, and a variation) must stay bit-identical and a tuned subject's first losses
equal to 1e-6 (relative; 1e-8 absolute for the distillation loss, 0 at the first step): the thread count changes the
order of fp32 sums (one thread instead of two moves the losses by about 3e-10 relative and the codes not at all), as
another CPU's kernels may. A refactor that changes any of these changed behaviour.

Record again (only for an intended change of behaviour, and say so in the commit):
PYTHONPATH=. python tests/test_regression.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import var_core as vc
from var_core import embedded
from var_core.sampling import variation_codes
from var_core.tuning import SubjectTrainer, TrainConfig, apply_subjects, encode_prompts, load_subject, prepare_images

FIXTURE = Path(__file__).with_name("fixtures") / "regression" / "embedded.safetensors"
PROMPTS = ["a photo of a dog on the beach", "a photo of a car at night"]
SUBJECT_PROMPT = "a photo of <guide_dog> dog in the snow"
TRAIN_STEPS = 3


def outputs() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    model, vae, encoder = embedded.load_models()
    schedule = vc.scale_schedule(1.0, embedded.PN)
    out: dict[str, torch.Tensor] = {}

    def bits(name, m, prompts, **kwargs):
        text = encode_prompts(encoder, prompts, m)
        for k, b in enumerate(vc.sample(m, None, text, schedule, **kwargs)):
            out[f"{name}.{k}"] = b.contiguous()

    bits("plain", model, PROMPTS, seed=7)
    bits("plain_topk_cfg", model, PROMPTS, seed=3, cfg=[6, 6, 4, 1, 1], tau=0.8, top_k=1)
    subjects = embedded.example_subjects()
    dog = load_subject(subjects["guide_dog"]["subject"], model)
    bits("subject", apply_subjects(model, [(dog, [1.0, 1.0, 0.6, 0.3, 0.0])]), [SUBJECT_PROMPT], seed=11)
    image = vc.sample(model, vae, encode_prompts(encoder, PROMPTS[:1], model), schedule, seed=5)
    forced = variation_codes(vae, image, schedule, 2, 2)
    bits("variation", model, PROMPTS[:1] * 2, seed=13, forced_codes=forced)

    info = subjects["teacup"]
    config = TrainConfig(class_word=info["class_word"], pn=embedded.PN, steps=TRAIN_STEPS, lr=1e-3,
                         embedding_lr=1e-2, prior_samples=4, seed=0)
    images = prepare_images(info["photos"], vc.pixel_size(schedule), config.token, config.class_word)
    trainer = SubjectTrainer(model, vae, encoder, images, config)
    losses = {}
    for step in range(TRAIN_STEPS):
        for key, value in trainer.step().items():
            losses[f"step{step}.{key}"] = value
    return out, losses


def record() -> None:
    tensors, losses = outputs()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURE), metadata={"losses": json.dumps(losses)})
    print(f"wrote {FIXTURE}: {len(tensors)} code tensors, {len(losses)} loss values")


def test_the_embedded_model_samples_and_tunes_exactly_as_recorded():
    tensors, losses = outputs()
    with safe_open(str(FIXTURE), framework="pt") as f:
        recorded = {k: f.get_tensor(k) for k in f.keys()}
        recorded_losses = json.loads(f.metadata()["losses"])
    assert sorted(tensors) == sorted(recorded)
    different = [k for k in recorded if not torch.equal(tensors[k], recorded[k])]
    assert not different, f"sampled codes changed: {different}"
    assert sorted(losses) == sorted(recorded_losses)
    moved = {k: (recorded_losses[k], losses[k]) for k in recorded_losses
             if not math.isclose(losses[k], recorded_losses[k], rel_tol=1e-6, abs_tol=1e-8)}
    assert not moved, f"tuning losses changed (recorded, now): {moved}"


if __name__ == "__main__":
    record()
