"""The settings of one subject tuning (ARBooth's method and ours), validated in one place. The settings that
depend on the model (resolution, steps, learning rates, layer groups) are None until ``for_model`` fills them with
the model's own (var_core.defaults)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .. import defaults
from .delta import MODES
from .losses import ScaleWeights
from .placeholder import DEFAULT_TOKEN


@dataclass
class TrainConfig:
    class_word: str = "object"
    token: str = DEFAULT_TOKEN
    # what is trained
    mode: str = "lora"  # "lora", "full" (ARBooth) or "none" (placeholder vectors only)
    groups: tuple[str, ...] | None = None  # None: the family's (ARBooth's ca + ffn on Infinity)
    blocks: str | None = None  # e.g. "0-15"; None = all
    rank: int = 16
    alpha: float | None = None  # default = rank
    placeholder_vectors: int = 4  # 0 = no learned embedding
    # optimisation
    steps: int | None = None  # None: the model's own (defaults.tuning), as pn, lr and embedding_lr
    batch_size: int = 2
    lr: float | None = None
    embedding_lr: float | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.005
    betas: tuple[float, float] = (0.9, 0.97)
    grad_clip: float = 0.0  # 0 = off
    gradient_checkpointing: bool | None = None  # None: only when a step would not fit without it (memory.py)
    # data and loss
    pn: str | None = None  # a resolution preset: "0.25M" = 512², "1M" = 1024²
    aspect: float | str = 1.0
    hflip: bool = False
    flip_prob: float = 0.3  # Bitwise Self-Correction (ARBooth keeps Infinity's 0.3)
    scale_weights: ScaleWeights = field(default_factory=ScaleWeights)
    # prior distillation
    prior_weight: float = 0.5  # λ; 0 = off
    prior_prompt: str = "a photo of {class_word}"  # ARBooth's; may also hold {article} ("a" / "an")
    prior_tau: float = 0.5
    prior_top_p: float = 0.97
    prior_cfg: float = 1.0  # 1: ARBooth's (unguided samples, conditional prediction); > 1: the guided prediction
    prior_per_bit: bool = True  # False: ARBooth's softmax over the whole 2d-vector of a token
    prior_samples: int = 64  # teacher samples drawn once and reused (0: fresh ones every step, as ARBooth)
    separate_steps: bool = False  # True: ARBooth's two optimizer steps per iteration
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot train, with a message a user can act on."""
        if not self.class_word.strip():
            raise ValueError("The class word is empty: give the subject's class, e.g. dog, backpack or teapot (it "
                             "makes the default prompt and the prior distillation prompt).")
        if self.mode not in MODES:
            raise ValueError(f"mode = {self.mode!r} is not a tuning mode: choose from {', '.join(MODES)}.")
        for name, lr in (("learning rate", self.lr if self.mode != "none" else None),
                         ("placeholder learning rate", self.embedding_lr)):
            if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= 1):
                raise ValueError(f"The {name} {lr!r} cannot train: use a positive number up to 1 (LoRA: about "
                                 f"1e-4 to 1e-3; full deltas: about 2e-5).")
        # (setting, lowest, highest, whole number); a bound in a 1-tuple is exclusive (defaults.check)
        for name, low, high, whole in (
                ("steps", 1, None, True), ("batch_size", 1, None, True), ("rank", 1, None, True),
                ("alpha", (0.0,), None, False), ("placeholder_vectors", 0, None, True), ("warmup_steps", 0, None, True),
                ("weight_decay", 0.0, None, False), ("grad_clip", 0.0, None, False),
                ("flip_prob", 0.0, (1.0,), False),  # the share of bits Bitwise Self-Correction flips
                ("prior_weight", 0.0, None, False), ("prior_tau", (0.0,), None, False),
                ("prior_top_p", (0.0,), 1.0, False), ("prior_cfg", 0.0, None, False),
                ("prior_samples", 0, None, True), ("seed", 0, None, True)):
            value = getattr(self, name)
            if value is not None or name not in ("steps", "alpha"):  # None: the model's own / the rank
                defaults.check(name, value, low, high, whole)
        try:
            self.class_prompt()
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"The prior prompt {self.prior_prompt!r} cannot be filled in ({e!r}): write the class "
                             f"as {{class_word}} and its article as {{article}}, e.g. 'a photo of {{class_word}}'.") \
                from None
        if not isinstance(self.scale_weights, ScaleWeights):
            raise ValueError(f"scale_weights must be a ScaleWeights, got {type(self.scale_weights).__name__}.")

    def class_prompt(self) -> str:
        """The class prompt of prior distillation: prior_prompt with {class_word} and {article} ("a" or "an")."""
        article = "an" if self.class_word.strip()[:1].lower() in tuple("aeiou") else "a"
        return self.prior_prompt.format(class_word=self.class_word, article=article)

    def for_model(self, model) -> "TrainConfig":
        """These settings with every one left to the model (None: pn, steps, lr, embedding_lr, groups) filled in
        with ``model``'s own (defaults.tuning: the family's, or what the model file states); this one is unchanged."""
        if self.mode not in MODES:
            raise ValueError(f"Unknown tuning mode {self.mode!r}: choose from {', '.join(MODES)}.")
        own = defaults.tuning(model)
        lr = own["lr"][self.mode] if isinstance(own["lr"], dict) else own["lr"]
        return replace(self, pn=self.pn or own["pn"], steps=self.steps if self.steps is not None else own["steps"],
                       lr=self.lr if self.lr is not None else lr,
                       embedding_lr=self.embedding_lr if self.embedding_lr is not None else own["embedding_lr"],
                       groups=tuple(self.groups or model.family.default_groups))

    def summary(self) -> dict:
        return asdict(self)

    @classmethod
    def resumed(cls, saved: dict, steps: int | None = None, **explicit) -> "TrainConfig":
        """The settings of a run to resume: every setting from the subject file's ``training`` record (``saved``),
        ``steps`` may be raised and gradient_checkpointing chosen anew (neither changes what is learned); any other
        ``explicit`` setting (not None) that differs from the file's is refused."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        missing = sorted(known - set(values) - {"steps"})
        if missing:
            raise ValueError(f"The subject file does not record the training settings {missing}; it cannot be resumed "
                             f"exactly (start a new training).")
        if "coarse_tokens" in values["scale_weights"]:
            raise ValueError("The subject file was trained with scale weights split by token count (an earlier "
                             "version); it cannot be resumed exactly: start a new training.")
        values["scale_weights"] = ScaleWeights(**{**values["scale_weights"], "per_scale": _tuple(
            values["scale_weights"].get("per_scale"))})
        values["groups"], values["betas"] = tuple(values["groups"]), tuple(values["betas"])
        checkpointing = explicit.pop("gradient_checkpointing", None)
        if checkpointing is not None:
            values["gradient_checkpointing"] = checkpointing
        config = cls(**{**values, "steps": steps if steps is not None else values.get("steps", 0)})
        conflicts = [f"{k}={v!r} (the file has {getattr(config, k)!r})" for k, v in explicit.items()
                     if v is not None and k != "steps" and _normal(v) != _normal(getattr(config, k))]
        if conflicts:
            raise ValueError(f"Resuming continues the subject file's training with its own settings; these differ: "
                             f"{', '.join(conflicts)}. Leave them out, or start a new training instead of resuming.")
        return config


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _normal(v):
    if isinstance(v, (list, tuple)):
        return tuple(_normal(x) for x in v)
    if isinstance(v, ScaleWeights):
        return asdict(v)
    return v
