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

    def release_defaults(self, kind):
        return {self.title: RELEASE_SAMPLING} if kind == "sampling" else {}

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
        if not isinstance(cond, PromptEmbeds):
            raise ValueError(f"Switti is text-conditional: give the prompts encoded by its text encoders "
                             f"(PromptEmbeds), not {type(cond).__name__}"
                             + (" (a class label is VAR's condition)." if not isinstance(cond, (str, list)) else "."))
        return cond

    def batch_of(self, cond) -> int:
        return cond.embeds.shape[0]


SWITTI = SwittiFamily()
