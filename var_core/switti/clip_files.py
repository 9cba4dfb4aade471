"""Switti's CLIP text encoders from single .safetensors files, as ComfyUI keeps them in ``models/text_encoders/``
(``clip_l.safetensors``, ``clip_g.safetensors``): a ``CLIPTextModel``'s weights under transformers' names, with no
config and no tokenizer beside them.

The sizes are read off the tensor shapes. What shapes cannot tell (activation, special token ids, pad token) comes
from the release the slot holds: ``clip_l`` = openai/clip-vit-large-patch14 (Switti's ``text_encoder``),
``clip_g`` = laion/CLIP-ViT-bigG-14-laion2B-39B-b160k (its ``text_encoder_2``). The tokenizer is CLIP's BPE, shipped
in ``clip_tokenizer/`` (the same vocabulary for both). Loading is strict and reads safetensors only.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, check_keys, read_file

TOKENIZER_DIR = Path(__file__).with_name("clip_tokenizer")
VOCAB_SIZE = 49408  # the shipped tokenizer's
MAX_LENGTH = 77  # tokens per prompt, as SwittiPipeline tokenises
HEAD_DIM = 64  # both releases: CLIP-L 768 / 12 heads, bigG 1280 / 20 heads


@dataclass(frozen=True)
class Release:
    """What a slot's release states beyond the tensor shapes (its config.json and tokenizer files)."""
    title: str
    hidden_act: str
    bos_token_id: int
    eos_token_id: int  # CLIP-L's legacy 2 makes transformers pool at argmax(input_ids): the first <|endoftext|>
    pad_token: str


ROLES = {
    "clip_l": Release("CLIP-L text encoder (openai/clip-vit-large-patch14)", "quick_gelu", 0, 2, "<|endoftext|>"),
    # bigG pads with "!" (id 0), a special token: a "!" in a prompt is id 0 too
    "clip_g": Release("OpenCLIP-bigG text encoder (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k)", "gelu", 49406, 49407,
                      "!"),
}

PREFIX = "text_model."
# Kept in these files but not read by CLIPTextModel: CLIP's projection and temperature (ComfyUI's files), and the
# position ids that transformers < 4.31 saved (the model rebuilds them as 0..76).
IGNORED = ("text_projection.weight", "logit_scale", PREFIX + "embeddings.position_ids")
_EXPECTED = (f"'{PREFIX}embeddings.token_embedding.weight', '{PREFIX}encoder.layers.{{i}}.self_attn.q_proj.weight', "
             f"..., '{PREFIX}final_layer_norm.weight' (a transformers CLIPTextModel)")


def load_clip_file(path: str | os.PathLike, role: str, device=None, dtype: torch.dtype | None = None):
    """(CLIPTextModel, CLIPTokenizer) from one .safetensors file. ``role``: "clip_l" (Switti's text_encoder) or
    "clip_g" (its text_encoder_2). ``dtype``: the weights' (default fp32)."""
    # imported here: only the Switti family needs transformers
    from transformers import CLIPTextModel, CLIPTokenizer

    if role not in ROLES:
        raise ValueError(f"Unknown CLIP role {role!r}; use one of {', '.join(ROLES)}.")
    release, path = ROLES[role], Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"'{path}' is not a .safetensors file. A {release.title} is read from safetensors only: "
                              f"a pickled .pt/.bin file could run code when read.")
    tensors = {k: v for k, v in read_file(path).items() if k not in IGNORED}
    # built without memory (meta tensors), then given the file's tensors: no random init of a 700M-weight model
    with torch.device("meta"):
        model = CLIPTextModel(_config(tensors, release, path))
    # transformers 5 drops the text_model. prefix inside the model (its loader renames); the files keep it
    names = {k: k if k.startswith(PREFIX) else PREFIX + k for k in model.state_dict()}
    check_keys({names[k]: v.shape for k, v in model.state_dict().items()}, tensors, path, release.title)
    model.load_state_dict({k: tensors[name] for k, name in names.items()}, strict=True, assign=True)
    for module in model.modules():  # the only buffer no file holds
        if isinstance(getattr(module, "position_ids", None), torch.Tensor) and module.position_ids.is_meta:
            module.position_ids = torch.arange(module.position_ids.shape[-1]).expand((1, -1))
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), pad_token=release.pad_token,
                                              model_max_length=MAX_LENGTH, local_files_only=True)
    return model.to(device=device, dtype=dtype or torch.float32).eval(), tokenizer


def _config(tensors: dict, release: Release, path: Path):
    """The CLIPTextConfig of the weights in ``tensors`` (sizes from their shapes, the rest from the release)."""
    from transformers import CLIPTextConfig

    def shape(name):
        if PREFIX + name not in tensors:
            raise CheckpointError(f"'{path}' is not a {release.title}: it has no '{PREFIX}{name}' "
                                  f"(expected {_EXPECTED}).")
        return tuple(tensors[PREFIX + name].shape)

    vocab_size, hidden = shape("embeddings.token_embedding.weight")
    positions = shape("embeddings.position_embedding.weight")[0]
    intermediate = shape("encoder.layers.0.mlp.fc1.weight")[0]
    layer = re.compile(rf"{re.escape(PREFIX)}encoder\.layers\.(\d+)\.")
    layers = 1 + max(int(m.group(1)) for k in tensors if (m := layer.match(k)))
    if vocab_size != VOCAB_SIZE or positions < MAX_LENGTH or hidden % HEAD_DIM:
        raise CheckpointError(f"'{path}' is not a {release.title}: it has {vocab_size} token embeddings of width "
                              f"{hidden} and {positions} positions; CLIP's tokenizer needs {VOCAB_SIZE} tokens and "
                              f"{MAX_LENGTH} positions, with a width made of {HEAD_DIM}-wide heads.")
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=hidden // HEAD_DIM,
                          max_position_embeddings=positions, hidden_act=release.hidden_act,
                          bos_token_id=release.bos_token_id, eos_token_id=release.eos_token_id,
                          pad_token_id=1)  # both releases' (the model does not read it)
