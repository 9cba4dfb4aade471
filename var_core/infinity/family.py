"""Infinity (FoundationVision; 2B and 8B) as a model family: bitwise tokens from a BitVAE, T5 text, CFG on the
logits, every bit drawn on its own. The defaults of the released models are stated here, once."""
from __future__ import annotations

import json

import torch
from safetensors import safe_open

from ..checkpoint import CheckpointError, describe_source
from ..family import Family
from ..schedules import resolve_preset
from . import quantizer
from .loss import bit_accuracy, bitwise_kl, bitwise_token_loss

# Sampling as released (token_patch -> settings): Infinity-2B's infer.sh; Infinity-8B's notebook (a patchified model).
# "pn" is the resolution preset the released models sample at. A model file's metadata overrides any of them.
RELEASE_SAMPLING = {1: {"cfg": 4.0, "tau": 0.5, "top_k": 0, "top_p": 0.97, "pn": "1M"},
                    2: {"cfg": 3.0, "tau": 1.0, "top_k": 0, "top_p": 0.97, "pn": "1M"}}
# Subject tuning of a released model: ARBooth's 500 steps at 512²; learning rates by mode (ARBooth's for full deltas;
# LoRA and the zero-initialised placeholder vectors, which pass through an RMSNorm, need larger steps to move within a
# few hundred iterations).
RELEASE_TUNING = {"pn": "0.25M", "steps": 500, "lr": {"lora": 1e-4, "full": 2.34375e-5, "none": 0.0},
                  "embedding_lr": 1e-3}
# A model file's metadata keys that override these (all strings; "tuning" is JSON of RELEASE_TUNING's keys;
# "with_subject" is JSON of sampling settings that replace the others while a subject is applied).
SAMPLING_METADATA = {"native_pn": "pn", "cfg": "cfg", "tau": "tau", "top_k": "top_k", "top_p": "top_p"}


def file_defaults(source) -> dict:
    """{"sampling": {...}, "tuning": {...}, "with_subject": {...}} a safetensors model file states in its metadata
    (the embedded model states all three); empty for files that say nothing."""
    out = {"sampling": {}, "tuning": {}, "with_subject": {}}
    if not isinstance(source, str) or not source.endswith(".safetensors"):
        return out
    with safe_open(source, framework="pt") as f:
        meta = f.metadata() or {}
    try:
        for key, name in SAMPLING_METADATA.items():
            if key in meta:
                out["sampling"][name] = resolve_preset(meta[key]) if name == "pn" else \
                    int(meta[key]) if name == "top_k" else float(meta[key])
        tuning = json.loads(meta.get("tuning") or "{}")
        unknown = set(tuning) - set(RELEASE_TUNING)
        if not isinstance(tuning, dict) or unknown:
            raise ValueError(f"unknown tuning settings {sorted(unknown)}")
        if "pn" in tuning:
            tuning["pn"] = resolve_preset(tuning["pn"])
        out["tuning"] = tuning
        with_subject = json.loads(meta.get("with_subject") or "{}")
        unknown = set(with_subject) - (set(SAMPLING_METADATA.values()) - {"pn"})
        if not isinstance(with_subject, dict) or unknown:
            raise ValueError(f"unknown sampling settings {sorted(unknown)} in with_subject")
        out["with_subject"] = {k: int(v) if k == "top_k" else float(v) for k, v in with_subject.items()}
    except (ValueError, TypeError) as e:
        shown = ", ".join(f"{k}={meta[k]!r}" for k in (*SAMPLING_METADATA, "tuning", "with_subject") if k in meta)
        raise CheckpointError(f"'{source}' has the metadata {shown}, which this library cannot read ({e}): expected "
                              f"a resolution preset (native_pn), numbers, and tuning and with-subject settings as "
                              f"JSON.") from None
    return out


class InfinityFamily(Family):
    name = "infinity"
    title = "Infinity"
    # tensor names inside one block, per group (the released checkpoint's, under block_chunks.{c}.module.{j}.)
    tuning_groups = {
        "sa": ("sa.mat_qkv.weight", "sa.q_bias", "sa.v_bias", "sa.scale_mul_1H11", "sa.proj.weight", "sa.proj.bias"),
        "ca": ("ca.mat_q.weight", "ca.mat_q.bias", "ca.mat_kv.weight", "ca.v_bias", "ca.proj.weight", "ca.proj.bias"),
        "ffn": ("ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias"),
    }
    default_groups = ("ca", "ffn")  # ARBooth's selection

    # ------------------------------------------------------------------ files
    def recognise(self, names):
        if any(k.endswith("pos_start") for k in names) and any("block_chunks." in k for k in names):
            return "transformer"
        if any(k.startswith(("block_chunks.", "word_embed.")) for k in names):
            return "transformer"  # one shard of Infinity-8B's folder
        if any(k.startswith(("encoder.", "decoder.", "vae.encoder.", "vae.decoder.")) for k in names) and \
                not any("text_model" in k or ".layer.0.SelfAttention" in k for k in names):
            return "vae"
        return None

    # the loaders' modules import this one (their classes carry INFINITY): imported when called
    def load_transformer(self, source, device=None, dtype=None):
        from .model import load_transformer
        return load_transformer(source, device, dtype)

    def load_vae(self, source, device=None, dtype=None):
        from .bitvae import load_vae
        vae = load_vae(source, device)
        return vae if dtype is None else vae.to(dtype)

    def load_text_encoder(self, source, device=None, dtype=None, **kwargs):
        from .t5 import load_text_encoder  # transformers is heavy: only this needs it
        return load_text_encoder(source, device=device, dtype=dtype, **kwargs)

    def check_compatible(self, model, vae) -> None:
        """Its bits per latent pixel times the latent pixels per token (2x2 for an f8 VAE, spatial patchify) must be
        the transformer's token width, and the transformer must read its tokens in that layout."""
        if getattr(vae, "family", self) is not self:
            raise CheckpointError(f"The VAE {describe_source(vae.source)} is a {vae.family.title} VAE; the "
                                  f"transformer {describe_source(model.source)} is an Infinity model.")
        patch = vae.token_patch
        if vae.d * patch ** 2 != model.config.bits or patch != model.config.token_patch:
            layout = f"{vae.d} bits per latent pixel" + (
                f" and {patch}x{patch} latent pixels per token (f{vae.patch_size}, spatial patchify): "
                f"{vae.d * patch ** 2} bits per token" if patch > 1 else f" (f{vae.patch_size}, one pixel per token)")
            want = f"{model.config.bits} bits per token" + (
                f" ({model.config.token_patch}x{model.config.token_patch} pixels of {model.config.vae_bits} bits)"
                if model.config.token_patch > 1 else "")
            raise CheckpointError(
                f"The VAE {describe_source(vae.source)} does not fit the transformer {describe_source(model.source)}: "
                f"the VAE has {layout}, the transformer expects {want}. Use the VAE released with this transformer "
                f"(Infinity-2B: infinity_vae_d32reg.pth, d=32, f16; Infinity-8B: infinity_vae_d56_f8_14_patchify.pth, "
                f"d=14, f8).")

    # ------------------------------------------------------------------ defaults
    def sampling_defaults(self, model) -> dict:
        from ..tuning.apply import subject_applied  # (tuning builds on the models: imported when used)
        own = {**RELEASE_SAMPLING[min(model.config.token_patch, 2)], **model.file_defaults["sampling"]}
        return {**own, **model.file_defaults["with_subject"]} if subject_applied(model) else own

    def release_defaults(self, kind):
        if kind == "sampling":
            return {"Infinity-2B": RELEASE_SAMPLING[1], "Infinity-8B": RELEASE_SAMPLING[2]}
        return {"Infinity": RELEASE_TUNING}

    def file_defaults(self, source):
        return file_defaults(source)

    def tuning_defaults(self, model) -> dict:
        return {**RELEASE_TUNING, **model.file_defaults["tuning"]}

    # ------------------------------------------------------------------ codes: bits, summed as BSQ codes
    code_dtype = torch.uint8

    def code_shape(self, model, hw):
        return (*hw, model.config.bits)

    def code_sum(self, model, schedule):
        return quantizer.CodeSum(schedule, model.config.token_patch)

    def decode(self, vae, sums) -> torch.Tensor:
        return vae.decode_latent(sums.total)

    def image_codes(self, vae, images, schedule):
        patch = vae.token_patch  # the VAE quantises on its own grid; the transformer reads its token layout
        return [quantizer.patchify(b, patch) for b in vae.encode_bits(images, quantizer.vae_schedule(schedule, patch))]

    def teacher_forcing(self, vae, latent, schedule, flip_prob=0.0, generator=None):
        inputs, labels = quantizer.teacher_forcing(latent, schedule, flip_prob, generator, vae.token_patch)
        return torch.cat(inputs, dim=1), self.flatten_codes(labels)

    def inputs_from_codes(self, model, codes, schedule):
        bits = self.split_codes(codes, schedule)
        return torch.cat(quantizer.inputs_from_bits(bits, schedule, model.config.token_patch), dim=1)

    # ------------------------------------------------------------------ prediction: two logits per bit
    def draw(self, logits, top_k, top_p, generator):
        """Every bit independently from its 2-way softmax after top-k/top-p filtering: logits (B, l, 2d) -> bits
        (B, l, d) uint8. With two outcomes, top-k=1 is greedy and top-k >= 2 (or 0) keeps both; top-p keeps the most
        likely outcomes whose probabilities reach top_p, so it drops the less likely one when its probability is
        <= 1 - top_p (always when 0 < top_p <= 0.5: greedy); top_p 0 or 1 is no filter, as in the reference's
        sample_with_top_k_top_p_ (its default is 0)."""
        p1 = logits.float().unflatten(-1, (-1, 2)).softmax(-1)[..., 1]
        if top_k == 1:
            p1 = (p1 > 0.5).float()
        elif 0 < top_p < 1:
            less_likely = torch.minimum(p1, 1 - p1)
            p1 = torch.where(less_likely <= 1 - top_p, (p1 >= 0.5).float(), p1)
        u = torch.rand(p1.shape, generator=generator, device=p1.device if generator is None else generator.device)
        return (u.to(p1.device) < p1).to(torch.uint8)

    def token_loss(self, logits, labels):
        return bitwise_token_loss(logits, labels)

    def accuracy(self, logits, labels):
        return bit_accuracy(logits, labels)

    def distillation(self, student, teacher, per_unit=True):
        return bitwise_kl(student, teacher, per_bit=per_unit)


INFINITY = InfinityFamily()


@torch.no_grad()
def teacher_forcing_batch(vae, images: torch.Tensor, schedule, flip_prob: float = 0.0,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) in [-1, 1] -> (inputs (B, L-1, d) fp32, labels (B, L, d) uint8).

    flip_prob > 0 enables Bitwise Self-Correction (each scale flips bits with a probability drawn from
    {0, 0.01, ..., flip_prob}; Infinity trains with 0.3); 0 is exact and deterministic. ``schedule`` is the
    transformer's; labels are in its token layout (patchified when the VAE is f8, as Infinity-8B's).
    """
    return INFINITY.teacher_forcing(vae, vae.encode_latent(images), schedule, flip_prob, generator)
