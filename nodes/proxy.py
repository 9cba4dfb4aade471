"""Proxy-Tuning in the graph: context prompts for a model that knows the subject, and captions to train on."""
from __future__ import annotations

from comfy_api.latest import io, ui

from var_core.tuning import DEFAULT_TOKEN
from var_core.tuning.proxy import CONTEXTS, proxy_prompts

from .types import CATEGORY, Prompts


class ProxyPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_ProxyPrompts", display_name="Proxy-Tuning Prompts", category=f"{CATEGORY}/subjects",
            description="N context prompts for a model that already draws the subject (e.g. SD, SDXL or Flux with "
                        "your DreamBooth LoRA: give 'each_prompt' to its CLIP Text Encode), and the same contexts as "
                        "captions with the placeholder, for Train Subject's caption_list.",
            inputs=[io.String.Input("subject_phrase", default="sks dog",
                                    tooltip="How the supervising model names the subject (its trigger words)."),
                    io.String.Input("class_word", default="dog", tooltip="The subject's class."),
                    io.String.Input("token", default=DEFAULT_TOKEN, tooltip="The placeholder to train."),
                    io.Int.Input("count", default=8, min=1, max=256, tooltip="How many prompts (contexts cycle)."),
                    io.String.Input("contexts", multiline=True, default="\n".join(CONTEXTS),
                                    tooltip="One context per line, e.g. 'on the beach'.")],
            outputs=[Prompts.Output(display_name="prompts", tooltip="For the supervising model."),
                     Prompts.Output(display_name="captions", tooltip="For Train Subject (caption_list)."),
                     io.String.Output(display_name="each_prompt", is_output_list=True,
                                      tooltip="The same prompts one at a time, for ComfyUI's own nodes (CLIP Text "
                                              "Encode ...): each node after it runs once per prompt, in order; "
                                              "Rebatch Images (batch_size >= count) gathers their pictures into one "
                                              "batch, in the captions' order.")])

    @classmethod
    def execute(cls, subject_phrase, class_word, token, count, contexts):
        prompts, captions = proxy_prompts(subject_phrase, class_word, token, count, contexts.splitlines())
        shown = "\n".join(f"{p}  ->  {c}" for p, c in zip(prompts, captions))
        return io.NodeOutput(prompts, captions, prompts, ui=ui.PreviewText(shown))


NODES = [ProxyPrompts]
