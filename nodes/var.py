"""The class-conditional VAR (FoundationVision, ImageNet), sampling only: its loader (var_d*.pth and its VAE) and its
sampler, which draws an ImageNet class chosen by name or by label."""
from __future__ import annotations

from comfy_api.latest import io, ui

import var_core
from var_core import defaults
from var_core.var.family import class_names

from . import comfy_env
from .loaders import DTYPES, load_transformer, load_vae
from .types import CATEGORY, ClassModel, VQVae, to_image

OWN = "VAR's own (the release demo's setting)"
DEFAULT_CLASS = "golden retriever"
BY_NAME = -1  # class_label's "use class_name"


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
                                   tooltip="Precision of the transformer blocks; auto = bf16 on GPU, fp32 on CPU.")],
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
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images.")])

    @classmethod
    def execute(cls, model, vae, class_name, class_label, seed, cfg, top_k, top_p, batch_size):
        label = class_name if class_label == BY_NAME else class_label
        K = len(model.schedule)
        images = var_core.sample(model, vae, [label] * batch_size, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                                 progress=comfy_env.sampling_progress(K))
        text = (f"{K} scales, {images.shape[-1]}x{images.shape[-2]} px, {_shown(model, label)}, cfg {cfg:g}, "
                f"top_k {top_k}, top_p {top_p:g}")
        return io.NodeOutput(to_image(images), ui=ui.PreviewText(text))


def _shown(model, label) -> str:
    """'class 207 (golden retriever)': the label drawn, and its ImageNet name where the model has ImageNet's classes."""
    names = class_names()
    label = names.index(label) if isinstance(label, str) else label
    if label == model.config.num_classes:
        return "no class (unconditional)"
    return f"class {label}" + (f" ({names[label]})" if model.config.num_classes == len(names) else "")


NODES = [LoadVAR, VARSampler]
