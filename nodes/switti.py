"""Switti (yandex-research): its loader (transformer folder, VQVAE-Switti, the two CLIP encoders), its text encoding
(prompt and negative prompt, read for the applied subjects), its sampler with the release's own controls (and the
Per-Scale Schedule, variations), and its subjects: Apply Subject (Switti), Train Subject (Switti)."""
from __future__ import annotations

import os

import torch
from comfy_api.latest import io, ui

import var_core
from var_core import defaults
from var_core.memory import sampling_bytes
from var_core.pruning import Pruning
from var_core.sampling import KEEP_SCALES
from var_core.switti.family import RELEASE_WINDOW
from var_core.tuning import entries_of, with_strength_schedule

from . import comfy_env, managed, pruning
from .codebook import optional_inputs, scheduled, variation
from .loaders import DTYPE_TOOLTIP, DTYPES, load_transformer, load_vae
from .schedule import listed
from .subjects import APPLY, apply_inputs, apply_subject
from .training import (LAYERS, METHOD, caption_inputs, caption_lines, configure, images_input, make_trainer,
                       run_inputs, run_training, subject_outputs, token_input, training_memory, tuning_inputs)
from .types import CATEGORY, SwittiConditioning, SwittiModel, SwittiTextEncoder, VQVae, to_image, zero_means

OWN = "Switti's own (its release setting)"


def _release(key: str):
    return defaults.shared("sampling", key, "switti")


class LoadSwitti(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        encoders = comfy_env.list_folder_models("text_encoders")
        return io.Schema(
            node_id="VARBooth_LoadSwitti", display_name="Load Switti", category=f"{CATEGORY}/Switti",
            description="Loads a Switti transformer, its VQ-VAE and its two CLIP text encoders, and checks that the "
                        "VAE fits the transformer.",
            inputs=[io.Combo.Input("model_name", options=comfy_env.list_folder_models(comfy_env.SWITTI, files=False),
                                   tooltip="A Switti folder in models/switti (config.json + model.safetensors, as "
                                           "downloaded from yresearch/Switti, Switti-AR, Switti-1024 or "
                                           "Switti-1024-AR)."),
                    io.Combo.Input("vae_name", options=comfy_env.list_folder_models("vae"),
                                   tooltip="The VQVAE-Switti folder (yresearch/VQVAE-Switti) in models/vae."),
                    io.Combo.Input("clip_l_name", options=encoders,
                                   tooltip="CLIP-L: the openai/clip-vit-large-patch14 folder in models/text_encoders, "
                                           "or its single .safetensors file (ComfyUI's clip_l.safetensors)."),
                    io.Combo.Input("clip_g_name", options=encoders,
                                   tooltip="OpenCLIP-bigG: the laion/CLIP-ViT-bigG-14-laion2B-39B-b160k folder in "
                                           "models/text_encoders, or its single .safetensors file (ComfyUI's "
                                           "clip_g.safetensors)."),
                    io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                   tooltip=DTYPE_TOOLTIP)],
            outputs=[SwittiModel.Output(display_name="model", tooltip="The Switti transformer."),
                     VQVae.Output(display_name="vae", tooltip="The VQ-VAE that decodes its codes."),
                     SwittiTextEncoder.Output(display_name="text_encoder", tooltip="CLIP-L and OpenCLIP-bigG.")])

    @classmethod
    def execute(cls, model_name, vae_name, clip_l_name, clip_g_name, dtype):
        model = load_transformer(model_name, dtype, "switti")
        vae = load_vae(vae_name, model)
        clip_l, clip_g = (comfy_env.model_path("text_encoders", n) for n in (clip_l_name, clip_g_name))
        load_device, offload_device = managed.devices("text_encoder")
        dtype = torch.float16 if load_device.type == "cuda" else torch.float32

        def load():
            with torch.inference_mode(False):
                return var_core.load_text_encoder(clip_l, offload_device, dtype, text_encoder_2=clip_g)
        encoder = managed.shared(clip_l, ("clip", os.path.realpath(clip_g), dtype), load,
                                 lambda e: [e.encoder, e.encoder_2], load_device, offload_device)
        return io.NodeOutput(model, vae, encoder)


def reads(model, prompts: list[str]) -> dict[str, bool]:
    """How ``prompts`` read each subject applied to ``model`` that they name: as the subject (its strength above 0)
    or as its class word (0), as family.encode reads them."""
    return {d.token: s > 0 for d, s in entries_of(model)
            if d.placeholder is not None and any(d.token in p for p in prompts)}


class SwittiTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_SwittiTextEncode", display_name="Switti Text Encode",
            category=f"{CATEGORY}/Switti",
            description="Encodes a prompt and a negative prompt with Switti's CLIP-L and OpenCLIP-bigG. Write a "
                        "subject's placeholder token (e.g. <placeholder>) where the subject goes.",
            inputs=[SwittiTextEncoder.Input("text_encoder", tooltip="The text encoders from Load Switti."),
                    io.String.Input("text", multiline=True, default="a photo of a red fox in the snow",
                                    tooltip="The prompt; one prompt per line gives a batch of prompts."),
                    io.String.Input("negative", multiline=True, default="",
                                    tooltip="One negative prompt for every prompt (empty: the empty prompt, as "
                                            "Switti's pipeline guides by default)."),
                    SwittiModel.Input("model", optional=True,
                                      tooltip="The model with subjects applied (Apply Subject (Switti)): their "
                                              "placeholder tokens in the prompt are read as the subjects. Needed "
                                              "when a prompt names one.")],
            outputs=[SwittiConditioning.Output(display_name="conditioning",
                                               tooltip="The encoded prompts for the Switti Sampler.")])

    @classmethod
    def execute(cls, text_encoder, text, negative, model=None):
        prompts = [line.strip() for line in text.splitlines() if line.strip()] or [""]
        n = len(prompts)
        model = managed.view(model) if model is not None else None
        read = reads(model, prompts) if model is not None else {}
        (encoder,) = managed.use(text_encoder)
        # the prompts and the negative in one batch, each read for the subjects at their strengths
        both = model.family.encode(model, encoder, prompts + [negative]) if read else encoder(prompts + [negative])
        # the prompts with every subject read as its class word: a schedule's scales at strength 0
        as_class = model.family.encode(with_strength_schedule(model, [0.0] * len(model.schedule)), encoder,
                                       prompts + [negative]).select(slice(0, n)) if any(read.values()) else None
        return io.NodeOutput({"positive": both.select(slice(0, n)), "negative": both.select(n), "prompts": prompts,
                              "reads": read, "as_class": as_class})


class SwittiSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        window = RELEASE_WINDOW
        return io.Schema(
            node_id="VARBooth_SwittiSampler", display_name="Switti Sampler", category=f"{CATEGORY}/Switti",
            description="Generates images scale by scale at the model's own resolution (Switti's guidance window, "
                        "top-k/top-p per token, optional Gumbel smoothing).",
            inputs=[
                SwittiModel.Input("model", tooltip="The Switti transformer."),
                VQVae.Input("vae", tooltip="Its VQ-VAE."),
                SwittiConditioning.Input("conditioning", tooltip="The prompts (Switti Text Encode)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="The same seed, prompts, batch size and device give the same images (one seed "
                                     "draws the whole batch)."),
                io.Float.Input("cfg", default=_release("cfg"), min=0.0, max=30.0, step=0.1,
                               tooltip=f"Classifier-free guidance on the logits, ramped from 0 at the first scale to "
                                       f"cfg at the last, on the scales from cfg_start_scale up to cfg_stop_scale; "
                                       f"0 = none. Default {_release('cfg'):g}: {OWN}."),
                io.Int.Input("top_k", default=_release("top_k"), min=0, max=100000,
                             tooltip=f"Keep the top_k most likely codes of each token (0 = all). Default "
                                     f"{_release('top_k')}: {OWN}."),
                io.Float.Input("top_p", default=_release("top_p"), min=0.0, max=1.0, step=0.01,
                               tooltip=f"Nucleus filter on each token's codes (1 = off). Default "
                                       f"{_release('top_p'):g}: {OWN}."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per prompt."),
                io.Int.Input("cfg_start_scale", default=window["cfg_start_scale"], min=0, max=64,
                             tooltip=f"The first guided scale. Default {window['cfg_start_scale']}: {OWN}."),
                io.Int.Input("cfg_stop_scale", default=window["cfg_stop_scale"], min=0, max=64,
                             tooltip=f"Guidance stops at this scale: from it on the prompt alone is read (half the "
                                     f"work), its logits divided by last_scale_temp. Default "
                                     f"{window['cfg_stop_scale']}: {OWN}."),
                zero_means(io.Float.Input(
                    "last_scale_temp", default=window["last_scale_temp"] or 0.0, min=0.0, max=10.0, step=0.01,
                    tooltip=f"Temperature of the scales from cfg_stop_scale on; 0 = none (the logits as they are). "
                            f"Default {window['last_scale_temp'] or 0:g}: {OWN}."), "none"),
                io.Boolean.Input("more_smooth", default=window["more_smooth"],
                                 tooltip=f"Gumbel-smoothed soft codes instead of drawn ones, from smooth_start_scale "
                                         f"up to the last guided scale. Default "
                                         f"{'on' if window['more_smooth'] else 'off'}: {OWN}."),
                io.Int.Input("smooth_start_scale", default=window["smooth_start_scale"], min=0, max=64,
                             tooltip=f"With more_smooth: the first smoothed scale. Default "
                                     f"{window['smooth_start_scale']}: {OWN}."),
                *optional_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images.")])

    @classmethod
    def execute(cls, model, vae, conditioning, seed, cfg, top_k, top_p, batch_size, cfg_start_scale, cfg_stop_scale,
                last_scale_temp, more_smooth, smooth_start_scale, schedule=None, init_image=None,
                keep_scales=KEEP_SCALES, prune_scales=Pruning.scales, prune_keep=Pruning.keep):
        fast = Pruning(prune_scales, prune_keep)
        base = managed.view(model)
        rows = [i for i in range(len(conditioning["prompts"])) for _ in range(batch_size)]
        model, vae = managed.use(model, vae, memory=sampling_bytes(base, base.schedule, len(rows),
                                                                      cfg > 0 or schedule is not None))
        read = reads(model, conditioning["prompts"])
        if read != conditioning["reads"]:
            raise ValueError(f"The prompts were encoded reading {_readings(conditioning['reads'])}, but the sampler's "
                             f"model reads {_readings(read)}: encode them with the model you sample (connect Apply "
                             f"Subject (Switti)'s model to Switti Text Encode's model input).")
        cfg, model, factors = scheduled(schedule, model, cfg)
        cond = conditioning["positive"].select(rows)
        if factors is not None and conditioning["as_class"] is not None and 0 in factors:
            # where the schedule's strength is 0 the prompts read every subject as its class word (family.encode)
            as_class = conditioning["as_class"].select(rows)
            cond = [cond if f > 0 else as_class for f in factors]
        window = dict(cfg_start_scale=cfg_start_scale, cfg_stop_scale=cfg_stop_scale,
                      last_scale_temp=last_scale_temp or None, more_smooth=more_smooth,
                      smooth_start_scale=smooth_start_scale)
        K = len(model.schedule)
        images = var_core.sample(model, vae, cond, negative=conditioning["negative"], cfg=cfg, top_k=top_k,
                                 top_p=top_p, seed=seed, forced_codes=variation(vae, model, init_image, keep_scales,
                                                                                len(rows)),
                                 progress=comfy_env.sampling_progress(K), pruning=fast, **window)
        text = summary(model, images, cfg, top_k, top_p, window) + pruning.summary(fast, K)
        if factors is not None and set(factors) != {1.0}:
            text += f", subject strength x{listed(factors)}"
        if init_image is not None:
            text += f", the first {keep_scales} scales kept from init_image"
        return io.NodeOutput(to_image(images), ui=ui.PreviewText(text))


def _readings(read: dict[str, bool]) -> str:
    return ", ".join(f"{t} as {'the subject' if on else 'its class word'}" for t, on in read.items()) or "no subject"


def summary(model, images, cfg, top_k, top_p, window) -> str:
    """What the run did, from the family's own per-scale plan: '6 scales, 128x128 px, cfg 6 on scales 0-5, ...'."""
    K = len(model.schedule)
    plan = model.family.scale_plan(K, cfg, **window)
    guided = [k for k, p in enumerate(plan) if p.guidance is not None]
    smoothed = [k for k, p in enumerate(plan) if p.smooth is not None]
    tempered = [k for k, p in enumerate(plan) if p.temperature is not None]
    parts = [f"{K} scales, {images.shape[-1]}x{images.shape[-2]} px",
             f"cfg {listed(cfg if isinstance(cfg, list) else [cfg])} on scales {guided[0]}-{guided[-1]}"
             if guided else "no guidance",
             f"top_k {top_k}, top_p {top_p:g}"]
    if tempered:
        parts.append(f"last_scale_temp {window['last_scale_temp']:g} on scales {tempered[0]}-{tempered[-1]}")
    if smoothed:
        parts.append(f"Gumbel-smoothed scales {smoothed[0]}-{smoothed[-1]}")
    return ", ".join(parts)


class ApplySwittiSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_ApplySwittiSubject", display_name="Apply Subject (Switti)",
            category=f"{CATEGORY}/Switti", description=APPLY,
            inputs=apply_inputs(SwittiModel, "Scales the weight changes; the prompt reads the subject's learned "
                                             "vectors wherever the strength is above 0 and the class word where it "
                                             "is 0: 0 = the base model drawing the prompt with the class word, "
                                             "exactly. Encode the prompt with this model (Switti Text Encode)."),
            outputs=[SwittiModel.Output(display_name="model", tooltip="The model with this subject added.")])

    @classmethod
    def execute(cls, model, subject, strength):
        return apply_subject(model, subject, strength)


class TrainSwittiSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_TrainSwittiSubject", display_name="Train Subject (Switti)",
            category=f"{CATEGORY}/Switti",
            description="Teaches Switti a subject from a few photos, at its own resolution: a placeholder token "
                        "learned in both CLIP encoders and the chosen layers. Progress and previews show on the "
                        "node; Cancel stops after the current step and keeps the last checkpoint in "
                        "output/varbooth_checkpoints. Re-queuing with the same inputs does not train again.",
            inputs=[
                SwittiModel.Input("model", tooltip="The base Switti transformer (without subjects applied)."),
                VQVae.Input("vae", tooltip="Its VQ-VAE (turns the photos into codes)."),
                SwittiTextEncoder.Input("text_encoder",
                                        tooltip="CLIP-L and OpenCLIP-bigG: they read the placeholder at every step, "
                                                "so they stay on the compute device while training."),
                images_input(),
                io.String.Input("class_word", default="dog", tooltip="The subject's class, e.g. dog, backpack."),
                token_input(),
                *tuning_inputs(LAYERS, io.Int.Input(
                    "placeholder_vectors", default=METHOD["placeholder_vectors"], min=0, max=16,
                    tooltip="Learned input embeddings that replace the token in both CLIP encoders (0 = none).")),
                *run_inputs(),
                *caption_inputs(),
                io.Boolean.Input("gradient_checkpointing", default=True, optional=True,
                                 tooltip="Recompute activations in the backward pass (much less memory, slower) where "
                                         "the trainer needs it (the node's text says what it chose); off: never."),
            ],
            outputs=subject_outputs())

    @classmethod
    def execute(cls, model, vae, text_encoder, images, class_word, token, steps, learning_rate, method, layers, rank,
                placeholder_vectors, scale_weighting, prior_weight, training_seed, preview_every, resume_from="none",
                caption_list=None, captions="", gradient_checkpointing=True):
        checkpointing = None if gradient_checkpointing else False  # on: the trainer's choice
        base = managed.view(model)
        config, resume = configure(base, resume_from, steps, LAYERS[layers], class_word=class_word,
                                   token=token, method=method, rank=rank, placeholder_vectors=placeholder_vectors,
                                   learning_rate=learning_rate, scale_weighting=scale_weighting,
                                   prior_weight=prior_weight, training_seed=training_seed,
                                   gradient_checkpointing=checkpointing)
        with torch.inference_mode(False):
            # the encoders read the placeholder at every step
            model, vae, text_encoder = managed.use(model, vae, text_encoder, train=True,
                                                   memory=training_memory(base, config))
            trainer = make_trainer(model, vae, text_encoder, images, config, resume,
                                   caption_lines(caption_list, captions), checkpointing)
            return run_training(trainer, preview_every,
                                f"use it: Apply Subject (Switti), then write '{trainer.config.token} "
                                f"{trainer.config.class_word}' in a prompt (Switti Text Encode with that model)")


NODES = [LoadSwitti, SwittiTextEncode, SwittiSampler, ApplySwittiSubject, TrainSwittiSubject]
