"""The original class-conditional VAR (FoundationVision; var_d16 ... var_d30 at 256², var_d36 at 512²) as a model
family: an ImageNet class instead of a prompt, guidance ramped over the scales. The demo's defaults are stated here,
once."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..schedules import per_scale
from ..vq.family import VQFamily
from ..vq.sampling import ScalePlan

# demo_sample.ipynb of the release: cfg 4, top-k 900, top-p 0.95, no Gumbel smoothing
RELEASE_SAMPLING = {"cfg": 4.0, "top_k": 900, "top_p": 0.95}


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in label order (label 207 is "golden retriever")."""
    return tuple((Path(__file__).with_name("imagenet_classes.txt")).read_text().splitlines())


class VARFamily(VQFamily):
    name = "var"
    title = "VAR"

    def recognise(self, names):
        if {"class_emb.weight", "pos_1LC", "lvl_1L"} <= names:
            return "transformer"
        return "vae" if self.recognise_vae(names) else None

    def load_transformer(self, source, device=None, dtype=None):
        from .model import load_var
        return load_var(source, device=device, dtype=dtype)

    def load_text_encoder(self, source, device=None, dtype=None, **kwargs):
        raise ValueError("VAR is class-conditional: it has no text encoder. Give an ImageNet class (a number "
                         "0-999 or its name, e.g. 'golden retriever') instead of a prompt.")

    def release_defaults(self, kind):
        return {self.title: RELEASE_SAMPLING} if kind == "sampling" else {}

    def scale_plan(self, K, cfg, **settings):
        """VAR guides every scale with t = cfg·k/(K-1) (0 at the first scale, cfg at the last)."""
        if settings:
            raise TypeError(f"VAR has no sampling settings {sorted(settings)} (those are Switti's).")
        cfgs = per_scale(cfg, K, "cfg")
        if not any(cfgs):
            return [ScalePlan(None)] * K
        return [ScalePlan(c * self.ratio(k, K), ratio=self.ratio(k, K)) for k, c in enumerate(cfgs)]

    def condition(self, model, cond) -> torch.Tensor:
        """Class labels (B,) on the model's device from labels or class names; the label num_classes is the
        unconditional class."""
        if isinstance(cond, torch.Tensor):
            labels = cond.reshape(-1).tolist()
        else:
            labels = [cond] if isinstance(cond, (int, str)) else list(cond)
        n = model.config.num_classes
        out = []
        for label in labels:
            if isinstance(label, str):
                if label not in class_names() or n != len(class_names()):
                    raise ValueError(f"VAR is class-conditional: {label!r} is not one of its {n} class names "
                                     f"(ImageNet's, e.g. 'golden retriever'); give a class, not a prompt.")
                label = class_names().index(label)
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= n:
                raise ValueError(f"Class label {label!r} is not allowed: VAR's labels are whole numbers from 0 to "
                                 f"{n - 1} ({n} = no class, unconditional).")
            out.append(label)
        return torch.tensor(out, dtype=torch.long, device=model.device)

    def batch_of(self, cond) -> int:
        return cond.shape[0]


VAR = VARFamily()
