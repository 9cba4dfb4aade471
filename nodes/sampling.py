"""The Infinity sampler node: text -> image, with per-scale control and image variations."""
from __future__ import annotations

import re

from comfy_api.latest import io, ui

import var_core
from var_core import defaults
from var_core.images import fit_tensor
from var_core.memory import sampling_bytes
from var_core.pruning import Pruning
from var_core.sampling import KEEP_SCALES, variation_codes
from var_core.schedules import per_scale
from var_core.tuning import blend, entries_of, subjects_of, with_strength_schedule

from . import comfy_env, managed, pruning
from .schedule import OWN, OWN_TAU, listed, resolve, unused_fine_values
from .types import (ASPECTS, CATEGORY, Conditioning, DEFAULT_ASPECT, DEFAULT_RESOLUTION, Model, RESOLUTIONS,
                    Schedule, Vae, aspect, from_image, preset, to_image, zero_means)


def conditioning_text(cond: dict, model) -> list:
    """The conditioning's features for ``model``: its readings blended with the model's subject strengths."""
    return blend(cond["text"], entries_of(model))


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_Sampler", display_name="Infinity Sampler", category=f"{CATEGORY}/sampling",
            description="Generates images scale by scale (KV cache, CFG on logits, per-bit top-k/top-p).",
            inputs=[
                Model.Input("model", tooltip="The transformer, with subjects applied or not."),
                Vae.Input("vae", tooltip="The BitVAE that decodes the bits."),
                Conditioning.Input("positive", tooltip="What to draw (Infinity Text Encode)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="The same seed, prompt, batch size and device give the same images (one seed "
                                     "draws the whole batch: an image depends on the batch size)."),
                io.Combo.Input("aspect_ratio", options=ASPECTS, default=DEFAULT_ASPECT,
                               tooltip="One of Infinity's 15 templates (h/w, and its size at 1024²)."),
                io.Combo.Input("resolution", options=RESOLUTIONS, default=DEFAULT_RESOLUTION,
                               tooltip="Resolution preset: the number of scales (13 at 1024²). auto = the resolution "
                                       "the loaded model was trained at (128² for the embedded toy model, 1M for "
                                       "Infinity-2B)."),
                zero_means(io.Float.Input("cfg", default=0.0, min=0.0, max=30.0, step=0.1,
                                          tooltip=f"Classifier-free guidance on the logits; {OWN} (the schedule "
                                                  f"input overrides it).")),
                zero_means(io.Float.Input("tau", default=0.0, min=0.0, max=5.0, step=0.01,
                                          tooltip=f"Sampling temperature; {OWN_TAU} (the schedule input overrides "
                                                  f"it).")),
                io.Int.Input("top_k", default=defaults.shared("sampling", "top_k", "infinity"), min=0, max=10000,
                             tooltip="Per-bit top-k filter (0 = off)."),
                io.Float.Input("top_p", default=defaults.shared("sampling", "top_p", "infinity"), min=0.0, max=1.0, step=0.01,
                               tooltip="Per-bit nucleus filter (1 = off)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per prompt."),
                Conditioning.Input("negative", optional=True,
                                   tooltip="Negative prompt (default: the model's learned null text)."),
                Schedule.Input("schedule", optional=True, tooltip="Per-scale cfg, tau and subject strength."),
                io.Image.Input("init_image", optional=True,
                               tooltip="Variations: keep the first scales of this image and sample the rest."),
                io.Int.Input("keep_scales", default=KEEP_SCALES, min=0, max=16, optional=True,
                             tooltip="With init_image: how many coarse scales to keep (more = closer to it)."),
                *pruning.inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images.")])

    @classmethod
    def execute(cls, model, vae, positive, seed, aspect_ratio, resolution, cfg, tau, top_k, top_p, batch_size,
                negative=None, schedule=None, init_image=None, keep_scales=KEEP_SCALES,
                prune_scales=Pruning.scales, prune_keep=Pruning.keep):
        base = managed.view(model)  # its settings, before ComfyUI loads it
        var_core.check_compatible(base, vae.obj)
        fast = Pruning(prune_scales, prune_keep)
        scales = var_core.scale_schedule(aspect(aspect_ratio), preset(resolution, base))
        K = len(scales)
        strengths = resolve(schedule, "strength", [1.0] * K, K)
        own = defaults.sampling(with_strength_schedule(base, strengths))  # (a subject acting: the with-subject settings)
        # 0 on a widget or in a schedule: the model's own value, scale by scale
        cfgs, taus = ([own[key] if v == 0 else v for v in per_scale(resolve(schedule, key, value, K), K, key)]
                      for key, value in (("cfg", cfg), ("tau", tau)))
        rows = len(positive["prompts"]) * batch_size
        model, vae = managed.use(model, vae, memory=sampling_bytes(base, scales, rows, any(c != 1 for c in cfgs)))
        model = with_strength_schedule(model, strengths)
        text = [t for t in conditioning_text(positive, model) for _ in range(batch_size)]
        neg = None
        if negative is not None:
            neg_text = conditioning_text(negative, model)
            if len(neg_text) not in (1, len(positive["prompts"])):
                raise ValueError(f"{len(neg_text)} negative prompts for {len(positive['prompts'])} prompts: give one, "
                                 f"or one per prompt.")
            neg = [neg_text[i if len(neg_text) > 1 else 0] for i in range(len(positive["prompts"]))
                   for _ in range(batch_size)]
        forced = None
        if init_image is not None:
            pixels = fit_tensor(from_image(init_image[:1]), var_core.pixel_size(scales)).to(vae.device)
            forced = variation_codes(vae, pixels, scales, keep_scales, len(text))
        images = var_core.sample(model, vae, text, scales, cfg=cfgs, tau=taus, top_k=top_k, top_p=top_p, seed=seed,
                                 negative=neg, forced_codes=forced, progress=comfy_env.sampling_progress(K),
                                 pruning=fast)
        notes = [f"{K} scales, {'x'.join(map(str, var_core.pixel_size(scales)))} px, cfg {listed(cfgs)}, "
                 f"tau {listed(taus)}{pruning.summary(fast, K)}"] + \
            unused_fine_values(schedule, K) + beyond_training(model, scales, aspect_ratio) + \
            token_warnings(positive["prompts"], model)
        return io.NodeOutput(to_image(images), ui=ui.PreviewText("\n".join(notes)))


def beyond_training(model, scales, aspect_ratio: str) -> list[str]:
    """A warning when the resolution has more scales than the model's own: its finer scales were never trained."""
    own = defaults.sampling(model)["pn"]
    trained = var_core.scale_schedule(aspect(aspect_ratio), own)
    if len(scales) <= len(trained):
        return []
    h, w = var_core.pixel_size(trained)
    return [f"warning: this model was trained at {own} ({h}x{w} px here); scales {len(trained)}-{len(scales) - 1} of "
            f"this resolution were never trained and draw noise (resolution auto: the model's own)"]


def token_warnings(prompts: list[str], model) -> list[str]:
    """A <token> in a prompt that no applied subject provides, and an applied subject whose token no prompt names."""
    tokens = {s.token for s in subjects_of(model) if s.placeholder is not None}
    written = {t for p in prompts for t in re.findall(r"<[^<>\s]+>", p)}
    out = [f"warning: {t} is in the prompt but no applied subject has that token (it is read as plain text)"
           for t in sorted(written - tokens)]
    out += [f"warning: the applied subject {t} is not named in any prompt (write {t} where it goes)"
            for t in sorted(tokens - written)]
    return out


NODES = [Sampler]
