"""The class-conditional VAR (FoundationVision, ImageNet): its loader (var_d*.pth and its VAE), its sampler, which
draws an ImageNet class chosen by name or by label, or an applied subject by its token (with the Per-Scale Schedule,
variations), and its subjects, each a class of its own: Apply Subject (VAR), Train Subject (VAR)."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

import var_core
from var_core import defaults
from var_core.memory import sampling_bytes
from var_core.pruning import Pruning
from var_core.sampling import KEEP_SCALES
from var_core.var.family import class_names

from . import comfy_env, managed, pruning
from .codebook import optional_inputs, scheduled, variation
from .loaders import DTYPE_TOOLTIP, DTYPES, load_transformer, load_vae
from .schedule import listed
from .subjects import APPLY, apply_inputs, apply_subject
from .training import (METHOD, configure, images_input, make_trainer, run_inputs, run_training, subject_outputs,
                       token_input, training_memory, tuning_inputs)
from .types import CATEGORY, ClassModel, VQVae, to_image

OWN = "VAR's own (the release demo's setting)"
DEFAULT_CLASS = "golden retriever"
BY_NAME = -1  # class_label's "use class_name"
# the layers the class acts through (AdaLN, FFN) by default, as the library's VAR tuning
LAYERS = {"ada+ffn (the class's path)": ("ada", "ffn"), "all (ada+ffn+attn)": ("ada", "ffn", "attn"),
          "ada": ("ada",), "ffn": ("ffn",), "attn": ("attn",)}


def _release(key: str):
    return defaults.shared("sampling", key, "var")


class LoadVAR(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadVAR", display_name="Load VAR", category=f"{CATEGORY}/VAR",
            description="Loads a class-conditional VAR transformer and its VQ-VAE, and checks that they fit.",
            inputs=[io.Combo.Input("model_name", options=comfy_env.list_files(comfy_env.VAR),
                                   tooltip="A VAR transformer in models/var: var_d16.pth ... var_d36.pth "
                                           "(FoundationVision/var)."),
                    io.Combo.Input("vae_name", options=comfy_env.list_folder_models("vae"),
                                   tooltip="VAR's VQ-VAE in models/vae: vae_ch160v4096z32.pth (FoundationVision/var)."),
                    io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                   tooltip=DTYPE_TOOLTIP)],
            outputs=[ClassModel.Output(display_name="model", tooltip="The VAR transformer."),
                     VQVae.Output(display_name="vae", tooltip="The VQ-VAE that decodes its codes.")])

    @classmethod
    def execute(cls, model_name, vae_name, dtype):
        model = load_transformer(model_name, dtype, "var")
        return io.NodeOutput(model, load_vae(vae_name, model))


class VARSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_VARSampler", display_name="VAR Sampler", category=f"{CATEGORY}/VAR",
            description="Generates images of one ImageNet class, scale by scale, at the model's own resolution.",
            inputs=[
                ClassModel.Input("model", tooltip="The VAR transformer."),
                VQVae.Input("vae", tooltip="Its VQ-VAE."),
                io.Combo.Input("class_name", options=list(class_names()), default=DEFAULT_CLASS,
                               tooltip="The ImageNet class to draw (used when class_label is -1)."),
                io.Int.Input("class_label", default=BY_NAME, min=BY_NAME, max=len(class_names()),
                             tooltip="-1: the class named above. Otherwise the class by its label, 0 to 999 "
                                     "(for a model trained on n classes: 0 to n-1; n = no class, unconditional)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="The same seed, class, batch size and device give the same images (one seed "
                                     "draws the whole batch)."),
                io.Float.Input("cfg", default=_release("cfg"), min=0.0, max=30.0, step=0.1,
                               tooltip=f"Classifier-free guidance on the logits, ramped from 0 at the first scale to "
                                       f"cfg at the last; 0 = none. Default {_release('cfg'):g}: {OWN}."),
                io.Int.Input("top_k", default=_release("top_k"), min=0, max=100000,
                             tooltip=f"Keep the top_k most likely codes of each token (0 = all). Default "
                                     f"{_release('top_k')}: {OWN}."),
                io.Float.Input("top_p", default=_release("top_p"), min=0.0, max=1.0, step=0.01,
                               tooltip=f"Nucleus filter on each token's codes (1 = off). Default "
                                       f"{_release('top_p'):g}: {OWN}."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images of the class."),
                io.String.Input("subject_token", default="", optional=True,
                                tooltip="Draw a subject applied to the model (Apply Subject (VAR)) instead of the "
                                        "class: its token, e.g. <placeholder>. Empty: the class above."),
                *optional_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images.")])

    @classmethod
    def execute(cls, model, vae, class_name, class_label, seed, cfg, top_k, top_p, batch_size, subject_token="",
                schedule=None, init_image=None, keep_scales=KEEP_SCALES, prune_scales=Pruning.scales,
                prune_keep=Pruning.keep):
        # a subject is drawn by giving its token as the class
        label = (subject_token or "").strip() or class_label_of(class_name, class_label)
        fast = Pruning(prune_scales, prune_keep)
        base = managed.view(model)
        model, vae = managed.use(model, vae, memory=sampling_bytes(base, base.schedule, batch_size,
                                                                  cfg > 0 or schedule is not None))
        cfg, model, factors = scheduled(schedule, model, cfg)
        K = len(model.schedule)
        images = var_core.sample(model, vae, [label] * batch_size, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                                 forced_codes=variation(vae, model, init_image, keep_scales, batch_size),
                                 progress=comfy_env.sampling_progress(K), pruning=fast)
        text = (f"{K} scales, {images.shape[-1]}x{images.shape[-2]} px, {_shown(model, label)}, "
                f"cfg {listed(cfg if isinstance(cfg, list) else [cfg])}, top_k {top_k}, top_p {top_p:g}"
                f"{pruning.summary(fast, K)}")
        if factors is not None and set(factors) != {1.0}:
            text += f", subject strength x{listed(factors)}"
        if init_image is not None:
            text += f", the first {keep_scales} scales kept from init_image"
        return io.NodeOutput(to_image(images), ui=ui.PreviewText(text))


def class_label_of(class_name: str, class_label: int):
    return class_name if class_label == BY_NAME else class_label


def _shown(model, label) -> str:
    """'class 207 (golden retriever)': the label drawn, and its ImageNet name where the model has ImageNet's classes."""
    names = class_names()
    if isinstance(label, str) and label not in names:  # an applied subject's token (var_core.sample refuses any other)
        return f"subject {label}"
    label = names.index(label) if isinstance(label, str) else label
    if label == model.config.num_classes:
        return "no class (unconditional)"
    return f"class {label}" + (f" ({names[label]})" if model.config.num_classes == len(names) else "")


class ApplyVARSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_ApplyVARSubject", display_name="Apply Subject (VAR)", category=f"{CATEGORY}/VAR",
            description=APPLY + " Draw the subject by giving its token to the VAR Sampler (subject_token).",
            inputs=apply_inputs(ClassModel, "Scales the weight changes and blends the subject's class vector (1) "
                                            "with its class word's class (0): 0 = the base model drawing that "
                                            "class, exactly. Above 1 only the weights grow."),
            outputs=[ClassModel.Output(display_name="model", tooltip="The model with this subject added.")])

    @classmethod
    def execute(cls, model, subject, strength):
        return apply_subject(model, subject, strength)


class TrainVARSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_TrainVARSubject", display_name="Train Subject (VAR)", category=f"{CATEGORY}/VAR",
            description="Teaches VAR a subject from a few photos, as a class of its own (a learned class vector that "
                        "starts as its ImageNet class, and the layers the class acts through), at the model's own "
                        "resolution. Progress and previews show on the node; Cancel stops after the current step and "
                        "keeps the last checkpoint in output/varbooth_checkpoints. Re-queuing with the same inputs "
                        "does not train again.",
            inputs=[
                ClassModel.Input("model", tooltip="The base VAR transformer (without subjects applied)."),
                VQVae.Input("vae", tooltip="Its VQ-VAE (turns the photos into codes)."),
                images_input(),
                io.Combo.Input("class_name", options=list(class_names()), default=DEFAULT_CLASS,
                               tooltip="The subject's ImageNet class (used when class_label is -1): where its class "
                                       "vector starts, and what strength 0 draws."),
                io.Int.Input("class_label", default=BY_NAME, min=BY_NAME, max=len(class_names()) - 1,
                             tooltip="-1: the class named above. Otherwise the class by its label, 0 to 999 (for a "
                                     "model trained on n classes: 0 to n-1)."),
                token_input("The subject's token: give it to the VAR Sampler (subject_token) to draw the subject; "
                            "give each subject its own."),
                *tuning_inputs(LAYERS, io.Int.Input(
                    "placeholder_vectors", default=min(METHOD["placeholder_vectors"], 1), min=0, max=1,
                    tooltip="1: a learned class vector (the subject as a class of its own); 0: none (the tuned "
                            "layers alone, drawn as its class).")),
                *run_inputs(),
            ],
            outputs=subject_outputs())

    @classmethod
    def execute(cls, model, vae, images, class_name, class_label, token, steps, learning_rate, method, layers, rank,
                placeholder_vectors, scale_weighting, prior_weight, training_seed, preview_every, resume_from="none"):
        base = managed.view(model)
        config, resume = configure(base, resume_from, steps, LAYERS[layers],
                                   class_word=str(class_label_of(class_name, class_label)), token=token,
                                   method=method, rank=rank, placeholder_vectors=placeholder_vectors,
                                   learning_rate=learning_rate, scale_weighting=scale_weighting,
                                   prior_weight=prior_weight, training_seed=training_seed)
        with torch.inference_mode(False):
            model, vae = managed.use(model, vae, train=True, memory=training_memory(base, config))
            trainer = make_trainer(model, vae, None, images, config, resume)  # class-conditional: no text encoder
            use = f"use it: Apply Subject (VAR), then give the VAR Sampler subject_token {trainer.config.token}" \
                if trainer.delta.placeholder is not None else \
                f"use it: Apply Subject (VAR), then draw its class ({trainer.config.class_word})"
            return run_training(trainer, preview_every, use)


NODES = [LoadVAR, VARSampler, ApplyVARSubject, TrainVARSubject]
