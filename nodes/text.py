"""Text encoding: prompts -> the pack's conditioning, read for the subjects applied to the model given (their
strengths are blended in at sampling, so a per-scale schedule needs no second encoding)."""
from __future__ import annotations

from comfy_api.latest import io

from var_core.tuning import read_prompts

from . import managed

from .types import CATEGORY, Conditioning, Model, Prompts, TextEncoder


def encode(text_encoder, prompts: list[str], model=None):
    """Every reading of the prompts the applied subjects of ``model`` (a patcher) can need
    (tuning.apply.read_prompts), with the text encoder where ComfyUI loads it."""
    (encoder,) = managed.use(text_encoder)
    return read_prompts(encoder, prompts, [subject for subject, _ in model.subjects] if model is not None else ())


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_TextEncode", display_name="Infinity Text Encode", category=f"{CATEGORY}/conditioning",
            description="Encodes a prompt with T5 (use one for the positive and one for the negative prompt). "
                        "Write a subject's placeholder token (e.g. <placeholder>) where the subject goes.",
            inputs=[TextEncoder.Input("text_encoder", tooltip="The T5 encoder from a loader."),
                    io.String.Input("text", multiline=True, default="a photo of a dog",
                                    tooltip="The prompt; one prompt per line gives a batch of prompts."),
                    Prompts.Input("prompt_list", optional=True,
                                  tooltip="Optional: a list of prompts (e.g. Proxy-Tuning Prompts) used instead "
                                          "of the text."),
                    Model.Input("model", optional=True,
                                tooltip="The model with subjects applied (Apply Subject): their placeholder tokens "
                                        "in the prompt are read as the subjects. Needed when a prompt names one.")],
            outputs=[Conditioning.Output(display_name="conditioning",
                                         tooltip="Encoded prompts for the Infinity sampler.")])

    @classmethod
    def execute(cls, text_encoder, text, prompt_list=None, model=None):
        prompts = list(prompt_list) if prompt_list else \
            [line.strip() for line in text.splitlines() if line.strip()] or [""]
        return io.NodeOutput({"prompts": prompts, "text": encode(text_encoder, prompts, model)})


NODES = [TextEncode]
