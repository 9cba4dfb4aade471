"""Subject training in the graph: progress on the node, live previews, Cancel keeps the last checkpoint. The Infinity
node, and the widgets and the run every family's Train Subject shares (Switti's and VAR's are in switti.py, var.py)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import fields

import torch
from comfy_api.latest import io, ui

import var_core
from var_core.images import from_pil, loss_curve, to_pil
from var_core import defaults
from var_core.tuning import ScaleWeights, SubjectTrainer, TrainConfig, load_subject, prepare_images
from var_core.tuning.memory import training_activation_bytes

from . import comfy_env, managed
from .types import (AUTO, CATEGORY, RESOLUTIONS, Model, Prompts, Subject, TextEncoder, Vae, from_image, preset, to_image,
                    zero_means)

LAYERS = {"ca+ffn (ARBooth)": ("ca", "ffn"), "all (sa+ca+ffn)": ("sa", "ca", "ffn"), "ca": ("ca",), "ffn": ("ffn",),
          "sa": ("sa",)}
METHODS = {"LoRA": "lora", "full deltas (ARBooth)": "full", "placeholder vectors only": "none"}
ARBOOTH_WEIGHTS = ScaleWeights()
WEIGHTING = {f"ARBooth: coarse {ARBOOTH_WEIGHTS.coarse:.1f}, fine {ARBOOTH_WEIGHTS.fine:.1f}": ARBOOTH_WEIGHTS,
             "uniform": ScaleWeights(1.0, 1.0)}
METHOD = {f.name: f.default for f in fields(TrainConfig)}  # the method's defaults, stated once (TrainConfig)


def checkpoint_path(class_word: str, seed: int) -> str:
    """output/varbooth_checkpoints/<class>_seed<N>_<00001>.safetensors, a new name for every run, so a later
    training never overwrites an earlier run's checkpoint."""
    folder = comfy_env.checkpoints_directory()
    os.makedirs(folder, exist_ok=True)
    return comfy_env.free_name(folder, f"{comfy_env.safe_name(class_word, 'subject')}_seed{seed}")


def images_input() -> io.Image.Input:
    return io.Image.Input("images", tooltip="1-N photos of the subject (a batch); cropped to the centre.")


def token_input(tooltip: str = "Placeholder token to write in prompts; give each subject its own.") -> io.String.Input:
    return io.String.Input("token", default=METHOD["token"], tooltip=tooltip)


def tuning_inputs(layers: dict, placeholder: io.Int.Input) -> list:
    """The widgets every family's Train Subject has, from steps to prior_weight (``layers``: the family's layer
    choices, the first the default; ``placeholder``: its placeholder_vectors widget)."""
    return [
        zero_means(io.Int.Input("steps", default=0, min=0, max=100000,
                                tooltip=f"Optimizer steps; 0 = auto, the model's own "
                                        f"({defaults.describe('tuning', 'steps')}). The node's text shows the value "
                                        f"used.")),
        zero_means(io.Float.Input("learning_rate", default=0.0, min=0.0, max=1.0, step=1e-6,
                                  tooltip=f"0 = auto, the model's own ({defaults.describe('tuning', 'lr')}). The "
                                          f"node's text shows the value used.")),
        io.Combo.Input("method", options=list(METHODS), default="LoRA",
                       tooltip="LoRA (small files, works on the fused projections) or ARBooth's full deltas."),
        io.Combo.Input("layers", options=list(layers), default=list(layers)[0],
                       tooltip="Which layers of every block are tuned."),
        io.Int.Input("rank", default=METHOD["rank"], min=1, max=512, tooltip="LoRA rank."),
        placeholder,
        io.Combo.Input("scale_weighting", options=list(WEIGHTING), default=list(WEIGHTING)[0],
                       tooltip=f"Loss weight per scale. ARBooth: {ARBOOTH_WEIGHTS.coarse:g} on the first "
                               f"{ARBOOTH_WEIGHTS.coarse_scales(13)} of 13 scales at 1024² (the same share at every "
                               f"resolution), {ARBOOTH_WEIGHTS.fine:g} on the rest; Per-Scale Schedule shows them for "
                               f"a resolution."),
        io.Float.Input("prior_weight", default=METHOD["prior_weight"], min=0.0, max=10.0, step=0.05,
                       tooltip="Prior distillation against the frozen model on 'a photo of {class}' (0 = off)."),
    ]


def run_inputs() -> list:
    return [
        # not named "seed": the frontend gives every "seed" a randomize-after-generate control, and a new random seed
        # on every Run would retrain the subject each time
        io.Int.Input("training_seed", default=0, min=0, max=2**31 - 1,
                     tooltip="Same inputs and seed, same subject (fixed: re-running does not retrain)."),
        io.Int.Input("preview_every", default=100, min=0, max=100000,
                     tooltip="Show a sample of the subject on the node every N steps (0 = never)."),
        io.Combo.Input("resume_from", options=["none"] + comfy_env.list_checkpoints(), default="none", optional=True,
                       tooltip="Continue a checkpoint from output/varbooth_checkpoints with its own settings (only "
                               "'steps' is taken from this node), exactly where it stopped."),
    ]


def caption_inputs() -> list:
    return [
        Prompts.Input("caption_list", optional=True,
                      tooltip="Optional: one caption per image as a list (Proxy-Tuning Prompts' captions); overrides "
                              "the captions text."),
        io.String.Input("captions", multiline=True, default="", optional=True,
                        tooltip="Optional: one prompt per image, one per line, each with the token (e.g. for "
                                "generated proxy images). Empty: 'a photo of <token> <class>'."),
    ]


def caption_lines(caption_list, captions: str) -> list[str] | None:
    return list(caption_list) if caption_list else \
        [c.strip() for c in (captions or "").splitlines() if c.strip()] or None


def configure(model, resume_from: str, steps: int, groups: tuple[str, ...], *, class_word: str, token: str,
              method: str, rank: int, placeholder_vectors: int, learning_rate: float, scale_weighting: str,
              prior_weight: float, training_seed: int, pn: str | None = None,
              gradient_checkpointing: bool | None = None) -> tuple[TrainConfig, str | None]:
    """The training's settings from the node's widgets (0 and "auto": the model's own), or, resuming, the
    checkpoint's own (only steps from the node); and the checkpoint to resume (None: a new training)."""
    resume = None if resume_from in (None, "", "none") else \
        os.path.join(comfy_env.checkpoints_directory(), resume_from)
    if resume is not None:
        return TrainConfig.resumed(load_subject(resume).metadata.get("training", {}), steps or None,
                                   gradient_checkpointing=gradient_checkpointing), resume
    return TrainConfig(class_word=class_word.strip(), token=token.strip(), mode=METHODS[method], groups=groups,
                       rank=rank, placeholder_vectors=placeholder_vectors,
                       steps=steps or None, lr=learning_rate or None,  # 0 and "auto": the model's own
                       scale_weights=WEIGHTING[scale_weighting], prior_weight=prior_weight, seed=training_seed, pn=pn,
                       gradient_checkpointing=gradient_checkpointing).for_model(model), None


def training_memory(model, config: TrainConfig) -> int:
    """What a training step needs beyond the weights, with gradient checkpointing (what a streamed model, or a tight
    card, trains with): the library's memory model, for ComfyUI to free."""
    schedule = model.family.tuning_schedule(model, config.aspect, config.pn)
    return training_activation_bytes(model.config, schedule, config.batch_size, model.compute_dtype, True)


def make_trainer(model, vae, text_encoder, images, config: TrainConfig, resume: str | None, captions=None,
                 gradient_checkpointing: bool | None = None) -> SubjectTrainer:
    """The family's trainer on the photos (an IMAGE batch) at the size the family trains at; call it outside
    inference mode, with the text encoder on the compute device."""
    size = var_core.pixel_size(model.family.tuning_schedule(model, config.aspect, config.pn))
    data = prepare_images(list(from_image(images)), size, config.token, config.class_word, captions,
                          require_token=config.placeholder_vectors > 0)
    if resume is not None:
        return SubjectTrainer.resume(resume, model, vae, text_encoder, data, config.steps,
                                     gradient_checkpointing=gradient_checkpointing)
    return SubjectTrainer(model, vae, text_encoder, data, config)


def run_training(trainer: SubjectTrainer, preview_every: int, use: str) -> io.NodeOutput:
    """Train to the configured steps with progress (and previews) on the node; Cancel stops after the current step,
    keeping the checkpoint in output/varbooth_checkpoints. The subject, its loss curve, and the node's text ending
    with ``use`` (how to draw the subject). Call it outside inference mode."""
    config = trainer.config
    if trainer.distills and config.prior_samples > 0:  # the first step's wait, shown as its own progress
        logging.info("VARBooth: drawing %d class samples for prior distillation", config.prior_samples)
        prior = comfy_env.progress_bar(config.prior_samples)
        trainer.draw_prior_bank(lambda done, total: prior.update_absolute(done, total))
    bar = comfy_env.progress_bar(config.steps)
    history: dict[str, list[float]] = {"total": [], "CE": []}

    def report(p):
        history["total"].append(p.parts["loss"])
        history["CE"].append(p.parts["ce"])
        if "distill" in p.parts:
            history.setdefault("distill", []).append(p.parts["distill"])
        preview = None
        if p.preview is not None:  # sent at its own size: the frontend labels a preview with the size it is sent at
            image = to_pil(p.preview)[0]
            preview = ("JPEG", image, max(image.size))
        bar.update_absolute(p.step, p.total, preview)
    path = checkpoint_path(config.class_word, config.seed)  # reserved only once the inputs are good
    t0 = time.perf_counter()
    try:  # a Cancel is raised from ComfyUI's progress hook inside report(), or seen by should_stop
        trainer.run(callback=report, should_stop=comfy_env.interrupted, checkpoint_path=path,
                    overwrite=True, preview_every=preview_every)  # the name reserved for this run
        comfy_env.raise_if_interrupted()
    except comfy_env.Interrupted:
        logging.warning("VARBooth: training cancelled after %d steps; checkpoint kept at %s", trainer.step_count, path)
        raise  # the checkpoint is written (run() saves on every exit); tell ComfyUI
    summary = training_summary(trainer, history, time.perf_counter() - t0, path, use)
    curve = to_image(from_pil(loss_curve(history)))
    return io.NodeOutput(trainer.delta, curve, ui=ui.PreviewText(summary))


def subject_outputs() -> list:
    return [Subject.Output(display_name="subject", tooltip="The trained subject (save it, or apply it)."),
            io.Image.Output(display_name="loss_curve", tooltip="The losses over the steps.")]


class TrainSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_TrainSubject", display_name="Train Subject (ARBooth)", category=f"{CATEGORY}/subjects",
            description="Teaches the model a subject from a few photos. Progress and previews show on the node; "
                        "Cancel stops after the current step and keeps the last checkpoint in "
                        "output/varbooth_checkpoints. Re-queuing with the same inputs does not train again.",
            inputs=[
                Model.Input("model", tooltip="The base transformer (without subjects applied)."),
                Vae.Input("vae", tooltip="The BitVAE (turns the photos into bit labels)."),
                TextEncoder.Input("text_encoder", tooltip="The T5 encoder (runs once, before training)."),
                images_input(),
                io.String.Input("class_word", default="dog", tooltip="The subject's class, e.g. dog, backpack."),
                token_input(),
                *tuning_inputs(LAYERS, io.Int.Input(
                    "placeholder_vectors", default=METHOD["placeholder_vectors"], min=0, max=16,
                    tooltip="Learned vectors that replace the token's T5 output (0 = none).")),
                io.Combo.Input("resolution", options=RESOLUTIONS, default=AUTO,
                               tooltip=f"Training resolution; auto = the model's own "
                                       f"({defaults.describe('tuning', 'pn')})."),
                *run_inputs(),
                *caption_inputs(),
                io.Boolean.Input("gradient_checkpointing", default=True, optional=True,
                                 tooltip="Recompute activations in the backward pass (much less memory, slower) when "
                                         "a step would not fit in the free memory without it; off: never."),
            ],
            outputs=subject_outputs())

    @classmethod
    def execute(cls, model, vae, text_encoder, images, class_word, token, steps, learning_rate, method, layers, rank,
                placeholder_vectors, scale_weighting, prior_weight, resolution, training_seed, preview_every,
                resume_from="none", caption_list=None, captions="", gradient_checkpointing=True):
        checkpointing = None if gradient_checkpointing else False  # on: when memory needs it
        base = managed.view(model)
        config, resume = configure(base, resume_from, steps, LAYERS[layers], class_word=class_word, token=token,
                                   method=method, rank=rank, placeholder_vectors=placeholder_vectors,
                                   learning_rate=learning_rate, scale_weighting=scale_weighting,
                                   prior_weight=prior_weight, training_seed=training_seed,
                                   pn=None if resolution == AUTO else preset(resolution),
                                   gradient_checkpointing=checkpointing)
        with torch.inference_mode(False):
            model, vae, encoder = managed.use(model, vae, text_encoder, train=True,
                                              memory=training_memory(base, config))
            trainer = make_trainer(model, vae, encoder, images, config, resume,
                                   caption_lines(caption_list, captions), checkpointing)
            managed.unload(text_encoder)  # T5 runs once, before training
            return run_training(trainer, preview_every,
                                f"use it: Apply Subject, then write '{trainer.config.token} "
                                f"{trainer.config.class_word}' in a prompt")


def training_summary(trainer, history: dict[str, list[float]], seconds: float, path: str, use: str) -> str:
    """What the node shows: steps, time, final losses, where the checkpoint is (and what a resume restored)."""
    losses = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if v)
    c = trainer.config
    size = c.pn or "x".join(map(str, var_core.pixel_size(trainer.schedule)))  # Switti, VAR: their own size, no preset
    lines = [f"{trainer.step_count}/{c.steps} steps in {seconds:.1f} s ({losses or 'no new steps'})",
             f"at {size}, learning rate {c.lr:g}, placeholder {c.embedding_lr:g}",
             trainer.checkpointing,
             f"checkpoint: {path}",
             use]
    if trainer.notes:
        lines.append(trainer.notes)
    return "\n".join(lines)


NODES = [TrainSubject]
