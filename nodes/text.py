"""Text encoding: prompts -> the pack's conditioning (raw T5 features; placeholders are resolved at sampling)."""
from __future__ import annotations

from comfy_api.latest import io

from . import comfy_env
from .types import CATEGORY, Conditioning, Prompts, TextEncoder


def encode(text_encoder, prompts: list[str], subjects=()) -> list:
    """T5 features on the compute device; T5 visits the GPU only for this call."""
    from var_core.tuning import encode_prompts
    text_encoder.to(comfy_env.device())
    try:
        return encode_prompts(text_encoder, prompts, subjects)
    finally:
        text_encoder.to(comfy_env.offload_device())
        comfy_env.free_memory()


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
                                          "of the text.")],
            outputs=[Conditioning.Output(display_name="conditioning",
                                         tooltip="Encoded prompts for the Infinity sampler.")])

    @classmethod
    def execute(cls, text_encoder, text, prompt_list=None):
        prompts = list(prompt_list) if prompt_list else \
            [line.strip() for line in text.splitlines() if line.strip()] or [""]
        return io.NodeOutput({"prompts": prompts, "text": encode(text_encoder, prompts), "encoder": text_encoder})


NODES = [TextEncode]
