"""What the Switti and VAR samplers share: the Per-Scale Schedule read for a model that samples its own scales, and
variations of an init image."""
from __future__ import annotations

from comfy_api.latest import io

import var_core
from var_core import defaults
from var_core.images import fit_tensor
from var_core.sampling import KEEP_SCALES, variation_codes
from var_core.tuning import with_strength_schedule

from . import pruning
from .schedule import resolve
from .types import Schedule, from_image


def optional_inputs() -> list:
    return [Schedule.Input("schedule", optional=True,
                           tooltip="Per-scale cfg (overrides the cfg widget; 0 in the schedule = the model's own) "
                                   "and subject strength, one value per scale of the model. Its tau must stay 0: "
                                   "this family has no temperature."),
            io.Image.Input("init_image", optional=True,
                           tooltip="Variations: keep the first scales of this image and sample the rest."),
            io.Int.Input("keep_scales", default=KEEP_SCALES, min=0, max=16, optional=True,
                         tooltip="With init_image: how many coarse scales to keep (more = closer to it)."),
            *pruning.inputs()]


def scheduled(schedule: dict | None, model, cfg: float) -> tuple[float | list[float], object, list[float] | None]:
    """The cfg to sample with (the widget's, or the schedule's list), the model with the schedule's subject strengths
    (each applied subject's strength times the scale's factor), and those factors (None without a schedule)."""
    if not schedule:
        return cfg, model, None
    K = len(model.schedule)
    if any(resolve(schedule, "tau", None, K)):  # refused, as the CLI refuses --tau for these families
        raise ValueError(f"{model.family.title} has no tau (temperature): set the schedule's tau values to 0.")
    own = defaults.sampling(model)["cfg"]  # the schedule's 0, as for Infinity: the model's own
    cfgs = [own if v == 0 else v for v in resolve(schedule, "cfg", None, K)]
    factors = resolve(schedule, "strength", [1.0] * K, K)
    return cfgs, with_strength_schedule(model, factors), factors


def variation(vae, model, init_image, keep_scales: int, batch: int):
    """forced_codes keeping the first ``keep_scales`` scales of ``init_image`` (fitted to the model's size), or
    None without one."""
    if init_image is None:
        return None
    pixels = fit_tensor(from_image(init_image[:1]), var_core.pixel_size(model.schedule)).to(vae.device)
    return variation_codes(vae, pixels, model.schedule, keep_scales, batch, model.family)

