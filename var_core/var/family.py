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
    release_sampling = RELEASE_SAMPLING
    # a subject: its own class vector (the learned placeholder) and updates of the layers the class acts through:
    # the AdaLN projection that reads the class (VAR's only conditioning path) and the FFN
    tuning_groups = {"ada": ("ada_lin.1.weight",), "ffn": ("ffn.fc1.weight", "ffn.fc2.weight"),
                     "attn": ("attn.proj.weight",)}
    default_groups = ("ada", "ffn")

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


    def placeholder_width(self, model) -> int:
        return model.config.embed_dim  # a class embedding

    def placeholder_count(self, asked: int) -> int:
        return min(asked, 1)  # one class vector

    def trainer(self):
        from .tuning import VARSubjectTrainer
        return VARSubjectTrainer

    def scale_plan(self, K, cfg, **settings):
        """VAR guides every scale with t = cfg·k/(K-1) (0 at the first scale, cfg at the last)."""
        if settings:
            raise TypeError(f"VAR has no sampling settings {sorted(settings)} (those are Switti's).")
        cfgs = per_scale(cfg, K, "cfg")
        if not any(cfgs):
            return [ScalePlan(None)] * K
        return [ScalePlan(c * self.ratio(k, K), ratio=self.ratio(k, K)) for k, c in enumerate(cfgs)]

    def condition(self, model, cond):
        """Class labels (B,) on the model's device from labels or class names (the label num_classes is the
        unconditional class); rows naming an applied subject's token read as its class vector, blended with its
        class word's embedding by its strength (0: the class exactly): then (B, C) embeddings, or one such per scale
        for a per-scale strength."""
        from ..tuning.apply import entries_of  # (tuning imports the families)
        items = cond.reshape(-1).tolist() if isinstance(cond, torch.Tensor) else \
            [cond] if isinstance(cond, (int, str)) else list(cond)
        subjects = {d.token: (d, s) for d, s in entries_of(model) if d.placeholder is not None}
        rows = [subjects.get(item) if isinstance(item, str) else None for item in items]
        labels = torch.tensor([0 if r else self.class_label(model, item) for r, item in zip(rows, items)],
                              dtype=torch.long, device=model.device)
        if not any(rows):
            return labels
        K = len(model.schedule)
        base = model.class_emb(labels)
        out = []
        for k in range(K):
            vectors = []
            for i, row in enumerate(rows):
                if row is None:
                    vectors.append(base[i])
                    continue
                delta, strength = row
                s = strength if isinstance(strength, (int, float)) else strength[k]
                s = min(1.0, max(0.0, float(s)))  # above 1 only the weight updates grow
                own = model.class_emb.weight[self.class_label(model, delta.class_word)]
                vectors.append(s * delta.placeholder[0].to(own) + (1 - s) * own)
            out.append(torch.stack(vectors))
        return out if any(not torch.equal(out[0], o) for o in out[1:]) else out[0]

    def class_label(self, model, label) -> int:
        """The label of a class given as its number (207, "207") or ImageNet name."""
        n = model.config.num_classes
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        if isinstance(label, str):
            if label not in class_names() or n != len(class_names()):
                raise ValueError(f"VAR is class-conditional: {label!r} is not one of its {n} class names "
                                 f"(ImageNet's, e.g. 'golden retriever') nor the token of an applied subject; give a "
                                 f"class, not a prompt.")
            return class_names().index(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= n:
            raise ValueError(f"Class label {label!r} is not allowed: VAR's labels are whole numbers from 0 to "
                             f"{n - 1} ({n} = no class, unconditional).")
        return label

    def batch_of(self, cond) -> int:
        return (cond[0] if isinstance(cond, list) else cond).shape[0]


VAR = VARFamily()
