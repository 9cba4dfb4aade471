"""Switti (yandex-research; 512² and 1024², each non-AR and AR) as a model family: CLIP-L and OpenCLIP-bigG text,
guidance ramped over a window of scales, a temperature after it, optional Gumbel smoothing. The release defaults are
stated here, once."""
from __future__ import annotations

from ..defaults import check
from ..schedules import per_scale
from ..vq.family import VQFamily
from ..vq.sampling import ScalePlan

# SwittiPipeline.__call__'s defaults: cfg 6 ramped from scale 0 up to (not including) scale 10, top-k 400, top-p 0.95
RELEASE_SAMPLING = {"cfg": 6.0, "top_k": 400, "top_p": 0.95}
RELEASE_WINDOW = {"cfg_start_scale": 0, "cfg_stop_scale": 10, "last_scale_temp": None, "more_smooth": False,
                  "smooth_start_scale": 0}


class SwittiFamily(VQFamily):
    name = "switti"
    title = "Switti"
    release_sampling = RELEASE_SAMPLING
    # ARBooth's selection (cross-attention + FFN) on Switti's projections; every one is an nn.Linear of its own
    tuning_groups = {"sa": ("attn.to_qkv.weight", "attn.proj.weight"),
                     "ca": ("cross_attn.to_q.weight", "cross_attn.to_kv.weight", "cross_attn.proj.weight"),
                     "ffn": ("ffn.gate_proj.weight", "ffn.up_proj.weight", "ffn.down_proj.weight")}
    default_groups = ("ca", "ffn")

    def recognise(self, names):
        if {"text_pooler.weight", "lvl_1L", "word_embed.weight"} <= names:
            return "transformer"
        return "vae" if self.recognise_vae(names) else None

    def load_transformer(self, source, device=None, dtype=None):
        from .model import load_switti
        return load_switti(source, device=device, dtype=dtype)

    def load_text_encoder(self, source, device=None, dtype=None, text_encoder_2=None, **kwargs):
        from .text import load_clip_pair
        if text_encoder_2 is None:
            raise ValueError("Switti reads two text encoders: give the CLIP-L one and the OpenCLIP-bigG one "
                             "(text_encoder_2=...).")
        return load_clip_pair(source, text_encoder_2, device=device, dtype=dtype)


    def scale_plan(self, K, cfg, cfg_start_scale=0, cfg_stop_scale=10, last_scale_temp=None, more_smooth=False,
                   smooth_start_scale=0):
        """Scales start <= k < stop are guided with t = cfg·k/(K-1) (and Gumbel-smoothed from smooth_start_scale
        with more_smooth); the scales from stop on use the conditional logits alone, divided by last_scale_temp."""
        start = check("cfg_start_scale", cfg_start_scale, 0, whole=True)
        stop = check("cfg_stop_scale", cfg_stop_scale, 0, whole=True)
        smooth_start = check("smooth_start_scale", smooth_start_scale, 0, whole=True)
        if last_scale_temp is not None:
            check("last_scale_temp", last_scale_temp, (0.0,))
        cfgs = per_scale(cfg, K, "cfg")
        plan = []
        for k in range(K):
            ratio = self.ratio(k, K)
            inside = start <= k < stop
            plan.append(ScalePlan(
                guidance=cfgs[k] * ratio if inside and any(cfgs) else None,
                temperature=last_scale_temp if k >= stop else None,
                smooth=max(0.27 * (1 - 0.95 * ratio), 0.005) if more_smooth and smooth_start <= k < stop else None,
                ratio=ratio))
        return plan

    def condition(self, model, cond):
        from .text import PromptEmbeds
        parts = cond if isinstance(cond, list) and cond and isinstance(cond[0], PromptEmbeds) else [cond]
        if not all(isinstance(p, PromptEmbeds) for p in parts):
            raise ValueError(f"Switti is text-conditional: give the prompts encoded by its text encoders "
                             f"(PromptEmbeds), not {type(cond).__name__}"
                             + (" (a class label is VAR's condition)." if not isinstance(cond, (str, list)) else "."))
        return cond

    def batch_of(self, cond) -> int:
        return len(cond[0] if isinstance(cond, list) else cond)

    def placeholder_width(self, model) -> int:
        return model.config.context_dim  # CLIP-L's input embedding and bigG's, side by side

    def encode(self, model, encoder, prompts):
        """``prompts`` encoded for ``model``: with subjects applied (a view), each subject's token reads as its
        learned vectors at the scales where its strength is above 0 and as its class word where it is 0, so
        strength 0 is the base drawing the class prompt (on this family the strength between 0 and 1 acts on the
        weight updates; the text reads the subject). Per scale (a list) where the reading changes."""
        from ..tuning.apply import class_reading, entries_of
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        named = [(d, s) for d, s in entries_of(model) if d.placeholder is not None and any(d.token in p for p in prompts)]
        if not named:
            return encoder(prompts)
        readings, per_scale = {}, []
        for k in range(len(model.schedule)):
            on = tuple((s if isinstance(s, (int, float)) else s[k]) > 0 for _, s in named)
            if on not in readings:
                texts = prompts
                for (d, _), o in zip(named, on):
                    texts = texts if o else [class_reading(t, d.token, d.class_word) for t in texts]
                readings[on] = encoder(texts, {d.token: d.placeholder.detach() for (d, _), o in zip(named, on) if o})
            per_scale.append(readings[on])
        return per_scale[0] if len(readings) == 1 else per_scale

    def trainer(self):
        from .tuning import SwittiSubjectTrainer
        return SwittiSubjectTrainer


SWITTI = SwittiFamily()
