"""Loaders: the Infinity transformer (models/infinity), the BitVAE (models/vae), the T5 encoder (models/text_encoders);
the first choice of each is the embedded toy model shipped in var_core/bundle (no files needed)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

import var_core
from var_core import fp8

from . import comfy_env, managed
from .types import CATEGORY, Model, TextEncoder, Vae

DTYPES = {"auto": None, **fp8.DTYPES}
DTYPE_TOOLTIP = ("Precision of the transformer blocks; auto = bf16 on GPU, fp32 on CPU; fp8 = their linear weights "
                 "stored as fp8 (e4m3, a scale per row) and computed in bf16: half of bf16's memory.")


# Each family's model folder and the node that loads it: a model of another family is sent to its own loader
FAMILIES = {"infinity": (comfy_env.TRANSFORMERS, "Load Infinity (all three)"),
            "switti": (comfy_env.SWITTI, "Load Switti"), "var": (comfy_env.VAR, "Load VAR")}


def load_transformer(name: str, dtype: str, family: str = "infinity") -> managed.VarPatcher:
    """The ``family`` transformer a loader choice names in that family's model folder."""
    folder = FAMILIES[family][0]
    path = comfy_env.model_path(folder, name)
    load_device, offload_device = managed.devices("transformer")
    # auto: bf16 blocks where they compute on CUDA (var_core's own default there), fp32 elsewhere
    blocks = DTYPES[dtype] or (torch.bfloat16 if load_device.type == "cuda" else torch.float32)

    def load():
        with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode; training needs normal tensors
            return var_core.load_transformer(path, offload_device, blocks)
    model = managed.shared(path, ("transformer", blocks), load, lambda m: [m], load_device, offload_device)
    if model.obj.family.name != family:
        own_folder, loader = FAMILIES[model.obj.family.name]
        raise ValueError(f"'{name}' (models/{folder}) is a {model.obj.family.title} model: load it with {loader}, "
                         f"from models/{own_folder}.")
    return model


def load_vae(name: str, model: managed.VarPatcher | None = None) -> managed.VarPatcher:
    """The VAE a loader choice names in models/vae, refused (naming both files) when it does not fit ``model``."""
    path = comfy_env.model_path("vae", name)
    load_device, offload_device = managed.devices("vae")

    def load():
        with torch.inference_mode(False):
            return var_core.load_vae(path, offload_device)
    vae = managed.shared(path, ("vae",), load, lambda v: [v], load_device, offload_device)
    if model is not None:
        var_core.check_compatible(model.obj, vae.obj)
    return vae


def _load_text_encoder(name: str) -> managed.VarPatcher:
    path = comfy_env.model_path("text_encoders", name)
    load_device, offload_device = managed.devices("text_encoder")
    dtype = "fp16" if load_device.type == "cuda" else "fp32"

    def load():
        with torch.inference_mode(False):
            return var_core.load_text_encoder(path, offload_device, dtype)
    return managed.shared(path, ("t5", dtype), load, lambda e: [e.model], load_device, offload_device)


class LoadTransformer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadTransformer", display_name="Load Infinity Transformer", category=f"{CATEGORY}/loaders",
            description="Loads an Infinity transformer (e.g. infinity_2b_reg.pth) from models/infinity.",
            inputs=[io.Combo.Input("model_name", options=comfy_env.model_choices(comfy_env.TRANSFORMERS),
                                   tooltip="The embedded toy model (no download), or a file in models/infinity "
                                           "(.pth as released, or .safetensors), or Infinity-8B's folder of shards "
                                           "(infinity_8b_weights/, listed once)."),
                    io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                   tooltip=DTYPE_TOOLTIP)],
            outputs=[Model.Output(display_name="model", tooltip="The Infinity transformer.")])

    @classmethod
    def execute(cls, model_name, dtype):
        return io.NodeOutput(load_transformer(model_name, dtype))


class LoadVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadVAE", display_name="Load BitVAE", category=f"{CATEGORY}/loaders",
            description="Loads Infinity's BitVAE tokenizer (e.g. infinity_vae_d32reg.pth) from models/vae.",
            inputs=[io.Combo.Input("vae_name", options=comfy_env.model_choices("vae"),
                                   tooltip="The embedded toy model's BitVAE, or a file in models/vae; its bits per "
                                           "token must match the transformer.")],
            outputs=[Vae.Output(display_name="vae", tooltip="The BitVAE (encoder, decoder, bitwise quantizer).")])

    @classmethod
    def execute(cls, vae_name):
        return io.NodeOutput(load_vae(vae_name))


class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadTextEncoder", display_name="Load T5 Text Encoder", category=f"{CATEGORY}/loaders",
            description="Loads flan-t5-xl (a folder, or an encoder .safetensors with its tokenizer beside it) from "
                        "models/text_encoders.",
            inputs=[io.Combo.Input("text_encoder_name", options=comfy_env.model_choices("text_encoders"),
                                   tooltip="The embedded toy model's T5, a folder (name/) like flan-t5-xl/, or a "
                                           "single encoder file.")],
            outputs=[TextEncoder.Output(display_name="text_encoder", tooltip="The frozen T5 encoder.")])

    @classmethod
    def execute(cls, text_encoder_name):
        return io.NodeOutput(_load_text_encoder(text_encoder_name))


class LoadAll(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadAll", display_name="Load Infinity (all three)", category=f"{CATEGORY}/loaders",
            description="Loads the transformer, the BitVAE and the T5 encoder, and checks that they fit together.",
            inputs=[io.Combo.Input("model_name", options=comfy_env.model_choices(comfy_env.TRANSFORMERS),
                                   tooltip="The embedded toy model, or a file in models/infinity."),
                    io.Combo.Input("vae_name", options=comfy_env.model_choices("vae"),
                                   tooltip="The embedded toy model's, or a file in models/vae."),
                    io.Combo.Input("text_encoder_name", options=comfy_env.model_choices("text_encoders"),
                                   tooltip="The embedded toy model's, or a folder or file in "
                                           "models/text_encoders."),
                    io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                   tooltip=DTYPE_TOOLTIP)],
            outputs=[Model.Output(display_name="model", tooltip="The Infinity transformer."),
                     Vae.Output(display_name="vae", tooltip="The BitVAE."),
                     TextEncoder.Output(display_name="text_encoder", tooltip="The T5 encoder.")])

    @classmethod
    def execute(cls, model_name, vae_name, text_encoder_name, dtype):
        model = load_transformer(model_name, dtype)
        vae = load_vae(vae_name, model)
        encoder = _load_text_encoder(text_encoder_name)
        if encoder.obj.width != model.obj.config.text_channels:
            raise ValueError(f"The text encoder '{text_encoder_name}' does not fit the transformer '{model_name}': it "
                             f"gives {encoder.obj.width}-wide features, the transformer reads "
                             f"{model.obj.config.text_channels}-wide ones (Infinity-2B and 8B read flan-t5-xl's 2048).")
        return io.NodeOutput(model, vae, encoder)


NODES = [LoadTransformer, LoadVAE, LoadTextEncoder, LoadAll]
