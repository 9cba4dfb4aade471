"""Switti (yandex-research), sampling only: its loader (transformer folder, VQVAE-Switti, the two CLIP encoders), its
text encoding (prompt and negative prompt) and its sampler with the release's own controls."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

import var_core
from var_core import defaults
from var_core.switti.family import RELEASE_WINDOW

from . import comfy_env
from .loaders import DTYPES, load_transformer, load_vae
from .types import CATEGORY, SwittiConditioning, SwittiModel, SwittiTextEncoder, VQVae, to_image

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
                                   tooltip="Precision of the transformer blocks; auto = bf16 on GPU, fp32 on CPU.")],
            outputs=[SwittiModel.Output(display_name="model", tooltip="The Switti transformer."),
                     VQVae.Output(display_name="vae", tooltip="The VQ-VAE that decodes its codes."),
                     SwittiTextEncoder.Output(display_name="text_encoder", tooltip="CLIP-L and OpenCLIP-bigG.")])

    @classmethod
    def execute(cls, model_name, vae_name, clip_l_name, clip_g_name, dtype):
        model = load_transformer(model_name, dtype, "switti")
        vae = load_vae(vae_name, model)
        # the encoders wait on the offload device (CPU) and visit the GPU only to encode
        with torch.inference_mode(False):
            encoder = var_core.load_text_encoder(
                comfy_env.model_path("text_encoders", clip_l_name), comfy_env.offload_device(),
                torch.float16 if comfy_env.device().type == "cuda" else torch.float32,
                text_encoder_2=comfy_env.model_path("text_encoders", clip_g_name))
        return io.NodeOutput(model, vae, encoder)


def encode(encoder, prompts: list[str]):
    """PromptEmbeds of ``prompts`` on the compute device; the two encoders are there only for this call."""
    parts = (encoder.encoder, encoder.encoder_2)
    for part in parts:
        part.to(comfy_env.device())
    try:
        return encoder(prompts)
    finally:
        for part in parts:
            part.to(comfy_env.offload_device())
        comfy_env.free_memory()


class SwittiTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_SwittiTextEncode", display_name="Switti Text Encode",
            category=f"{CATEGORY}/Switti",
            description="Encodes a prompt and a negative prompt with Switti's CLIP-L and OpenCLIP-bigG.",
            inputs=[SwittiTextEncoder.Input("text_encoder", tooltip="The text encoders from Load Switti."),
                    io.String.Input("text", multiline=True, default="a photo of a red fox in the snow",
                                    tooltip="The prompt; one prompt per line gives a batch of prompts."),
                    io.String.Input("negative", multiline=True, default="",
                                    tooltip="One negative prompt for every prompt (empty: the empty prompt, as "
                                            "Switti's pipeline guides by default).")],
            outputs=[SwittiConditioning.Output(display_name="conditioning",
                                               tooltip="The encoded prompts for the Switti Sampler.")])

    @classmethod
    def execute(cls, text_encoder, text, negative):
        prompts = [line.strip() for line in text.splitlines() if line.strip()] or [""]
        both = encode(text_encoder, prompts + [negative])
        return io.NodeOutput({"positive": both.select(slice(0, len(prompts))), "negative": both.select(len(prompts))})


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
                io.Float.Input("last_scale_temp", default=window["last_scale_temp"] or 0.0, min=0.0, max=10.0,
                               step=0.01, tooltip=f"Temperature of the scales from cfg_stop_scale on; 0 = none (the "
                                                  f"logits as they are). Default {window['last_scale_temp'] or 0:g}: "
                                                  f"{OWN}."),
                io.Boolean.Input("more_smooth", default=window["more_smooth"],
                                 tooltip=f"Gumbel-smoothed soft codes instead of drawn ones, from smooth_start_scale "
                                         f"up to the last guided scale. Default "
                                         f"{'on' if window['more_smooth'] else 'off'}: {OWN}."),
                io.Int.Input("smooth_start_scale", default=window["smooth_start_scale"], min=0, max=64,
                             tooltip=f"With more_smooth: the first smoothed scale. Default "
                                     f"{window['smooth_start_scale']}: {OWN}."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images.")])

    @classmethod
    def execute(cls, model, vae, conditioning, seed, cfg, top_k, top_p, batch_size, cfg_start_scale, cfg_stop_scale,
                last_scale_temp, more_smooth, smooth_start_scale):
        positive = conditioning["positive"]
        cond = positive.select([i for i in range(len(positive)) for _ in range(batch_size)])
        window = dict(cfg_start_scale=cfg_start_scale, cfg_stop_scale=cfg_stop_scale,
                      last_scale_temp=last_scale_temp or None, more_smooth=more_smooth,
                      smooth_start_scale=smooth_start_scale)
        K = len(model.schedule)
        images = var_core.sample(model, vae, cond, negative=conditioning["negative"], cfg=cfg, top_k=top_k,
                                 top_p=top_p, seed=seed, progress=comfy_env.sampling_progress(K), **window)
        text = summary(model, images, cfg, top_k, top_p, window)
        return io.NodeOutput(to_image(images), ui=ui.PreviewText(text))


def summary(model, images, cfg, top_k, top_p, window) -> str:
    """What the run did, from the family's own per-scale plan: '6 scales, 128x128 px, cfg 6 on scales 0-5, ...'."""
    K = len(model.schedule)
    plan = model.family.scale_plan(K, cfg, **window)
    guided = [k for k, p in enumerate(plan) if p.guidance is not None]
    smoothed = [k for k, p in enumerate(plan) if p.smooth is not None]
    tempered = [k for k, p in enumerate(plan) if p.temperature is not None]
    parts = [f"{K} scales, {images.shape[-1]}x{images.shape[-2]} px",
             f"cfg {cfg:g} on scales {guided[0]}-{guided[-1]}" if guided else "no guidance",
             f"top_k {top_k}, top_p {top_p:g}"]
    if tempered:
        parts.append(f"last_scale_temp {window['last_scale_temp']:g} on scales {tempered[0]}-{tempered[-1]}")
    if smoothed:
        parts.append(f"Gumbel-smoothed scales {smoothed[0]}-{smoothed[-1]}")
    return ", ".join(parts)


NODES = [LoadSwitti, SwittiTextEncode, SwittiSampler]
