"""Subject tuning: a few photos + a class word -> a SubjectDelta (ARBooth's method, with its bugs fixed).

Per step:
1. a batch of the subject's images (cached VAE latents; optional horizontal flip) -> teacher-forced inputs with
   Bitwise Self-Correction flips and bit labels; the student (base + delta) is trained on the instance prompts with
   the scale-weighted bitwise cross-entropy;
2. prior distillation (λ > 0): the frozen base (the same weights with the delta switched off, no second copy)
   samples class-prompt tokens scale by scale with the KV cache; the base's per-bit distributions on those tokens (the
   sampler's own logits) and the student's (teacher-forced, same class prompt) are matched with KL(base ‖ student);
3. one AdamW step on L_wCE + λ·L_distill (or ARBooth's two separate steps, ``separate_steps=True``).

The teacher's class samples (tokens and its distributions on them) are drawn once into a bank of ``prior_samples``
and reused, as DreamBooth does with class images: the frozen teacher's samples do not change during training.

Trainable tensors are fp32 master copies; frozen weights stay as loaded (bf16 on GPU) and run under autocast.
T5 runs once, before training. Under torchrun the batch is split over the processes (distributed.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..infinity import quantizer
from ..checkpoint import (CheckpointError, check_compatible, load_optimizer_tensors, optimizer_tensors,
                          save_safetensors_atomic)
from ..sampling import sample
from ..schedules import scale_schedule
from ..infinity.loss import bit_accuracy
from ..infinity.model import Infinity
from .data import SubjectImages
from .delta import SubjectDelta, apply_subjects, check_fits, fingerprint
from .distributed import Ranks
from .memory import needs_checkpointing
from .losses import ScaleWeights, distillation_loss, weighted_bitwise_loss
from .placeholder import DEFAULT_TOKEN, substitute
from .subject import load_subject, save_subject

# Learning rates: ARBooth's for full deltas; LoRA and the zero-initialised placeholder vectors (which pass through
# an RMSNorm, so only their direction matters) need larger steps to move within a few hundred iterations.
DEFAULT_LR = {"full": 2.34375e-5, "lora": 1e-4, "none": 0.0}
DEFAULT_EMBEDDING_LR = 1e-3


@dataclass
class TrainConfig:
    class_word: str = "object"
    token: str = DEFAULT_TOKEN
    # what is trained
    mode: str = "lora"  # "lora", "full" (ARBooth) or "none" (placeholder vectors only)
    groups: tuple[str, ...] = ("ca", "ffn")
    blocks: str | None = None  # e.g. "0-15"; None = all
    rank: int = 16
    alpha: float | None = None  # default = rank
    placeholder_vectors: int = 4  # 0 = no learned embedding
    # optimisation
    steps: int = 500
    batch_size: int = 2
    lr: float | None = None  # default by mode (DEFAULT_LR)
    embedding_lr: float | None = None  # default DEFAULT_EMBEDDING_LR
    warmup_steps: int = 0
    weight_decay: float = 0.005
    betas: tuple[float, float] = (0.9, 0.97)
    grad_clip: float = 0.0  # 0 = off
    gradient_checkpointing: bool | None = None  # None: only when a step would not fit without it (memory.py)
    # data and loss
    pn: str = "0.25M"  # 512²; "1M" = 1024²
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
        for name, lr in (("learning rate", self.resolved_lr() if self.mode != "none" else None),
                         ("placeholder learning rate", self.resolved_embedding_lr())):
            if lr is not None and not (math.isfinite(lr) and 0 < lr <= 1):
                raise ValueError(f"The {name} {lr!r} cannot train: use a positive number up to 1 (LoRA: about "
                                 f"1e-4 to 1e-3; full deltas: about 2e-5).")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps ({self.steps}) and batch size ({self.batch_size}) must be at least 1.")
        for name, value, ok, hint in (
                ("prior_weight", self.prior_weight, lambda v: v >= 0, "0 turns prior distillation off; a negative "
                 "weight would push the model away from its prior"),
                ("flip_prob", self.flip_prob, lambda v: 0 <= v < 1, "the share of bits flipped for Bitwise "
                 "Self-Correction, from 0 up to but not including 1"),
                ("weight_decay", self.weight_decay, lambda v: v >= 0, "0 or a small positive number"),
                ("grad_clip", self.grad_clip, lambda v: v >= 0, "0 turns clipping off"),
                ("warmup_steps", self.warmup_steps, lambda v: v >= 0, "0 or more steps"),
                ("prior_tau", self.prior_tau, lambda v: v > 0, "a positive sampling temperature"),
                ("prior_top_p", self.prior_top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
                ("prior_cfg", self.prior_cfg, lambda v: v >= 0, "0 or more"),
                ("rank", self.rank, lambda v: v >= 1, "at least 1"),
                ("placeholder_vectors", self.placeholder_vectors, lambda v: v >= 0, "0 (none) or more")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not ok(value):
                raise ValueError(f"{name} = {value!r} is not a valid setting: {hint}.")
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

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def resolved_embedding_lr(self) -> float:
        return self.embedding_lr if self.embedding_lr is not None else DEFAULT_EMBEDDING_LR

    def summary(self) -> dict:
        d = asdict(self)
        d["lr"], d["embedding_lr"] = self.resolved_lr(), self.resolved_embedding_lr()
        return d

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


def model_defaults(model) -> dict:
    """The TrainConfig settings that suit ``model`` where the user gives none: for a model made at the embedded toy
    model's resolution, the toy's own (128², ten times Infinity's learning rates, 300 steps: embedded.TUNING);
    for Infinity, TrainConfig's (ARBooth's 500 steps, at 512²)."""
    from ..embedded import TUNING
    if model.native_preset() == TUNING["pn"]:
        return dict(TUNING)
    return {"pn": TrainConfig.pn, "steps": TrainConfig.steps}


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _normal(v):
    if isinstance(v, (list, tuple)):
        return tuple(_normal(x) for x in v)
    if isinstance(v, ScaleWeights):
        return asdict(v)
    return v


def state_path(subject_path) -> Path:
    """Where a training's resumable state (optimizer moments, random streams) lives: beside the subject file, in
    its own file, so the subject file users share holds only the subject."""
    p = Path(subject_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.safetensors")


@dataclass
class Progress:
    step: int  # steps done
    total: int
    loss: float
    parts: dict[str, float]  # "ce", "distill", "bit_acc", "lr"
    seconds: float
    preview: torch.Tensor | None = None  # (1, 3, H, W) in [-1, 1] every preview_every steps


class SubjectTrainer:
    """Holds everything one training needs; ``step()`` does one iteration, ``run()`` the loop.

    images: SubjectImages (see data.prepare_images). delta: resume from this SubjectDelta (e.g. load_subject);
    start_step: the steps it already had. ranks: this process's place in a data-parallel training (distributed.py;
    default: a single process): each rank trains on its rows of every batch and only rank 0 writes files.
    """

    def __init__(self, model: Infinity, vae, text_encoder, images: SubjectImages, config: TrainConfig,
                 delta: SubjectDelta | None = None, start_step: int = 0, ranks: Ranks | None = None):
        if model.patch is not None:
            raise ValueError("Train on the base model, not on a model with subjects applied.")
        check_compatible(model, vae)  # the VAE's latent must make this model's tokens (2B: f16 d32, 8B: f8 d14)
        config.check()
        self.model, self.vae, self.config = model, vae, config
        self.device = model.device
        self.schedule = scale_schedule(config.aspect, config.pn)
        if len(images.prompts) != images.images.shape[0]:
            raise ValueError("One prompt per training image is needed.")
        self.ranks = ranks or Ranks()
        batch = min(config.batch_size, len(images.prompts))
        if batch < self.ranks.world_size:
            raise ValueError(f"A batch of {batch} images cannot be split over {self.ranks.world_size} processes: "
                             f"give a --batch-size (and photos) of at least {self.ranks.world_size}, or start fewer "
                             f"processes (--nproc_per_node).")
        self.generator = torch.Generator().manual_seed(config.seed)  # data order, flips, BSC (CPU: reproducible)
        self.sample_generator = torch.Generator(self.device).manual_seed(config.seed + 1)  # fresh teacher samples
        delta = delta or SubjectDelta.create(
            model, config.mode, config.groups, config.blocks, config.rank, config.alpha, config.placeholder_vectors,
            config.token, config.class_word, generator=torch.Generator().manual_seed(config.seed))
        check_fits(delta, model)
        if model.sharded and delta.mode not in ("lora", "none"):
            raise ValueError(f"A {delta.mode} delta changes whole weights, which a sharded base (--fsdp) splits over "
                             f"the processes: train LoRA (--mode lora) on a sharded base, or leave out --fsdp.")
        # our own fp32 copy: a delta given to resume from is not trained in place under its holder
        self.delta = delta.to(self.device, torch.float32, copy=True).requires_grad_(True)
        self.ranks.broadcast(self.delta.parameters())  # every rank starts from rank 0's delta
        self.delta.metadata = {**delta.metadata, "fingerprint": fingerprint(model),
                               "architecture": json.dumps(asdict(model.config), sort_keys=True)}
        self.step_count = int(start_step)
        self.num_trainable = self.delta.num_parameters()
        self.data = data_fingerprint(images, config)

        # frozen inputs, computed once: VAE latents of every image (and its mirror), T5 features and token positions
        with torch.no_grad():
            imgs = images.images.to(vae.device)
            self.latents = [vae.encode_latent(imgs[i:i + 1]).cpu() for i in range(imgs.shape[0])]
            self.flipped = [vae.encode_latent(imgs[i:i + 1].flip(-1)).cpu() for i in range(imgs.shape[0])] \
                if config.hflip else None
        self.prompts = list(images.prompts)
        token = self.delta.token  # a resumed subject keeps its own token
        tokens = [token] if self.delta.placeholder is not None else []
        text, rows = text_encoder.encode(self.prompts, tokens)  # what sampling feeds T5 too (encode_prompts)
        self.text = [t.to(self.device) for t in text]
        self.positions = [r.get(token, []) for r in rows]
        if self.delta.placeholder is not None and not any(self.positions):
            raise ValueError(f"No training prompt contains the placeholder {token!r}, so the learned vectors "
                             f"would never be used.")
        prior = config.class_prompt()
        # Placeholder vectors alone never change the class prompt's output: nothing to distil, so no teacher.
        self.distills = config.prior_weight > 0 and self.delta.mode != "none"
        self.prior_text = [t.to(self.device) for t in text_encoder([prior])] if self.distills else None
        self.prior_bank: tuple[torch.Tensor, torch.Tensor] | None = None

        self.student = apply_subjects(model, [(self.delta, 1.0)])
        # on this training's own view of the model: the shared base (and other trainers on it) stay as they are
        if config.gradient_checkpointing is None:
            rows = -(-batch // self.ranks.world_size)  # the most rows one rank trains on
            on, why = needs_checkpointing(model.config, self.schedule, rows, model.compute_dtype, self.device)
        else:
            on, why = config.gradient_checkpointing, "on (asked for)" if config.gradient_checkpointing else \
                "off (asked for)"
        self.student.gradient_checkpointing = on
        self.checkpointing = "gradient checkpointing " + why
        groups = [{"params": [t for k, t in self.delta.tensors.items() if k != "placeholder"],
                   "lr": config.resolved_lr()}]
        if self.delta.placeholder is not None:
            groups.append({"params": [self.delta.placeholder], "lr": config.resolved_embedding_lr()})
        groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.AdamW(groups, betas=config.betas, weight_decay=config.weight_decay,
                                           foreach=self.device.type == "cuda")
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._order: list[int] = []
        self.notes = ""

    # ------------------------------------------------------------------ one iteration
    def _batch(self) -> list[int]:
        """The next images of a shuffled pass over the data (a new order every epoch, no repeats in a batch)."""
        n = len(self.latents)
        size = min(self.config.batch_size, n)
        if len(self._order) < size:
            self._order = torch.randperm(n, generator=self.generator).tolist()
        batch, self._order = self._order[:size], self._order[size:]
        return batch

    def instance_loss(self, idx: Sequence[int], rows: slice = slice(None)):
        """The loss on ``rows`` of the batch ``idx``; the randomness of the whole batch is drawn (data parallel: every
        rank draws the same, so its rows get what a single process would give them)."""
        latents = []
        for i in idx:
            flip = self.flipped is not None and torch.rand((), generator=self.generator).item() < 0.5
            latents.append((self.flipped if flip else self.latents)[i])
        latent = torch.cat(latents).to(self.device)
        inputs, labels = quantizer.teacher_forcing(latent, self.schedule, self.config.flip_prob, self.generator,
                                                   self.model.config.token_patch)
        inputs, labels = torch.cat(inputs, dim=1)[rows], quantizer.flatten_bits(labels)[rows]
        vectors = self.delta.placeholder
        text = [substitute(self.text[i], {p: vectors for p in self.positions[i]}) for i in idx[rows]]
        logits = self.student(text, inputs, self.schedule)
        return weighted_bitwise_loss(logits, labels, self.schedule, self.config.scale_weights), \
            bit_accuracy(logits.detach(), labels)

    @torch.no_grad()
    def teacher_samples(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n class-prompt samples of the frozen base: bits (n, L, d) uint8 and the base's logits (n, L, 2d) on them.

        Tokens come from the KV-cached sampler. Without guidance (prior_cfg 1, ARBooth's) the sampler's own logits,
        times tau, are the base's on those tokens (the teacher-forced forward's up to float rounding, ~1e-5): no
        second forward. With guidance (prior_cfg g > 1) the samples are drawn as users draw them and the targets
        are the base's guided logits on them, g·cond + (1 − g)·uncond (teacher-forced), which the student's own
        guided logits are matched to (prior_loss).
        """
        c = self.config
        text = self.prior_text * n
        guided = c.prior_cfg != 1.0
        bits = sample(self.model, None, text, self.schedule, cfg=c.prior_cfg, tau=c.prior_tau, top_p=c.prior_top_p,
                      generator=generator or self.sample_generator, return_logits=not guided)  # the base (no patch)
        if not guided:
            bits, logits = bits
            return quantizer.flatten_bits([b.clone() for b in bits]), torch.cat(logits, dim=1).float() * c.prior_tau
        bits = [b.clone() for b in bits]  # out of inference mode
        inputs = torch.cat(quantizer.inputs_from_bits(bits, self.schedule, self.model.config.token_patch), dim=1)
        return quantizer.flatten_bits(bits), self._guided(self.model, text, inputs).float()

    def _guided(self, model, text: list, inputs: torch.Tensor) -> torch.Tensor:
        """g·cond + (1 − g)·uncond logits of ``model`` (g = prior_cfg), as the sampler guides: one forward of the
        prompts and their null text."""
        g = self.config.prior_cfg
        cond, uncond = model(text + self.model.null_text(text), torch.cat([inputs, inputs]), self.schedule).chunk(2)
        return g * cond + (1 - g) * uncond

    def draw_prior_bank(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Draw the teacher's class samples for prior distillation (once; the first step does it otherwise). It takes
        as long as sampling ``prior_samples`` pictures: call it first to show that with ``progress(done, total)``."""
        m = self.config.prior_samples
        if self.prior_bank is not None or m <= 0 or not self.distills:
            return
        # The teacher is frozen, so its samples are draws from a fixed distribution: draw a bank once (like
        # DreamBooth's class images) instead of sampling every step, which would cost more than the step itself.
        # Its own generator: a resumed run draws the same bank without replaying any other random stream.
        g = torch.Generator(self.device).manual_seed(self.config.seed + 2)
        chunk = max(1, self.config.batch_size)  # no more memory than a training step needs
        parts = []
        for i in range(0, m, chunk):
            parts.append(self.teacher_samples(min(chunk, m - i), g))
            if progress is not None:
                progress(min(m, i + chunk), m)
        self.prior_bank = tuple(torch.cat(p) for p in zip(*parts))

    def _teacher_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.config.prior_samples
        if m <= 0:
            return self.teacher_samples(n)
        self.draw_prior_bank()
        idx = torch.randint(m, (n,), generator=self.generator).to(self.device)
        return self.prior_bank[0][idx], self.prior_bank[1][idx]

    def prior_loss(self, batch: int, rows: slice = slice(None)) -> torch.Tensor:
        """KL(base ‖ student) on class-prompt samples of the base (``rows`` of a batch of ``batch`` of them): of the
        conditional prediction, or with prior_cfg > 1 of the guided one."""
        bits, teacher = self._teacher_batch(batch)
        bits, teacher = bits[rows], teacher[rows]
        inputs = torch.cat(quantizer.inputs_from_bits(quantizer.split_bits(bits, self.schedule), self.schedule,
                                                      self.model.config.token_patch), 1)
        text = self.prior_text * bits.shape[0]
        student = self._guided(self.student, text, inputs) if self.config.prior_cfg != 1.0 else \
            self.student(text, inputs, self.schedule)
        return distillation_loss(student, teacher, per_bit=self.config.prior_per_bit)

    def _set_lr(self):
        w = self.config.warmup_steps
        factor = min(1.0, (self.step_count + 1) / w) if w > 0 else 1.0
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * factor

    def _backward(self, loss: torch.Tensor, weight: float = 1.0, share: float = 1.0) -> float:
        """Back-propagate ``weight`` times this rank's ``loss``, which is on its ``share`` of the batch; returns the
        whole batch's (unweighted) loss, the same on every rank, so all of them refuse a non-finite one together."""
        total = self.ranks.sum(loss.reshape(1) * share if share != 1.0 else loss.reshape(1)).item()
        if not math.isfinite(total):  # refuse before any update: the delta keeps its last good values
            raise FloatingPointError(f"The loss became {total} at step {self.step_count + 1}; lower the "
                                     f"learning rate.")
        if weight != 1.0:
            loss = weight * loss
        (loss * share if share != 1.0 else loss).backward()
        return total

    def _update(self):
        self.ranks.sum_gradients(self._params())  # data parallel: the whole batch's gradient on every rank
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.delta.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> dict[str, float]:
        """One iteration. The two losses are back-propagated one after the other (same gradient as their sum,
        half the activation memory), then one optimizer step (ARBooth: a step after each, separate_steps)."""
        c = self.config
        streams = self.generator.get_state(), self.sample_generator.get_state(), list(self._order)
        try:
            self._set_lr()
            idx = self._batch()
            rows, share = self.ranks.rows(len(idx)), self.ranks.share(len(idx))
            ce, acc = self.instance_loss(idx, rows)
            parts = {"ce": self._backward(ce, share=share),
                     "bit_acc": self.ranks.sum(acc.reshape(1) * share if share != 1.0 else acc.reshape(1)).item(),
                     "lr": self.optimizer.param_groups[0]["lr"]}
            if self.distills:
                if c.separate_steps:
                    self._update()
                kl = self.prior_loss(len(idx), rows)
                parts["distill"] = self._backward(kl, c.prior_weight, share)
            self._update()
        except BaseException:  # a failed step leaves the streams as of the last finished one: a save stays exact
            self.generator.set_state(streams[0])
            self.sample_generator.set_state(streams[1])
            self._order = streams[2]
            self.optimizer.zero_grad(set_to_none=True)
            raise
        parts["loss"] = parts["ce"] + c.prior_weight * parts.get("distill", 0.0)
        self.step_count += 1
        return parts

    # ------------------------------------------------------------------ the loop
    def preview(self, seed: int = 0) -> torch.Tensor:
        """One sample of the first training prompt with the current delta, (1, 3, H, W) in [-1, 1]."""
        vectors = self.delta.placeholder
        text = [substitute(self.text[0], {p: vectors.detach() for p in self.positions[0]})]
        return sample(self.student, self.vae, text, self.schedule, seed=seed)

    def save(self, path, overwrite: bool = True, dtype: torch.dtype | None = None) -> Path:
        """The subject file, and beside it (state_path) what an exact resume needs: optimizer moments, the random
        streams and the data order. The state is written first: a subject file is never ahead of its state."""
        tensors, meta = self.state()
        save_safetensors_atomic(tensors, state_path(path), meta, overwrite=overwrite)
        return save_subject(self.delta, path, self.model, dtype=dtype, overwrite=overwrite)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        keys = self._optimized_keys()
        tensors = {"rng.data": self.generator.get_state(), "rng.samples": self.sample_generator.get_state().cpu(),
                   "order": torch.tensor(self._order + [-1], dtype=torch.long),  # -1 ends it (never empty)
                   **optimizer_tensors(self.optimizer, keys)}
        return tensors, {"steps_done": str(self.step_count), "optimized": json.dumps(keys)}

    def load_state(self, path) -> None:
        """Continue from a state written by ``save`` (same subject, same step count)."""
        from safetensors.torch import load_file
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if int(meta.get("steps_done", -1)) != self.step_count or \
                sorted(json.loads(meta.get("optimized", "[]"))) != sorted(self._optimized_keys()):
            raise CheckpointError(f"The training state '{path}' belongs to another checkpoint (step "
                                  f"{meta.get('steps_done')} vs the subject's {self.step_count}); delete it to resume "
                                  f"with a fresh optimizer, or resume the subject file it was written with.")
        tensors = load_file(str(path))
        self.generator.set_state(tensors["rng.data"])
        self.sample_generator.set_state(tensors["rng.samples"])
        self._order = tensors["order"].tolist()[:-1]
        load_optimizer_tensors(self.optimizer, tensors, self._optimized_keys())

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _optimized_keys(self) -> list[str]:
        names = {id(t): k for k, t in self.delta.tensors.items()}
        return [names[id(p)] for p in self._params()]

    @classmethod
    def resume(cls, path, model: Infinity, vae, text_encoder, images: SubjectImages, steps: int | None = None,
               ranks: Ranks | None = None, **explicit) -> "SubjectTrainer":
        """Continue the training that wrote the subject file ``path``: its settings (``TrainConfig.resumed``), its
        step count, and, when its state file is beside it, its optimizer and random streams, so the run goes on
        exactly as if it had not stopped. ``notes`` says what was restored."""
        delta = load_subject(path, model)
        saved = delta.metadata.get("training", {})
        config = TrainConfig.resumed(saved, steps, **explicit)
        trainer = cls(model, vae, text_encoder, images, config, delta=delta, start_step=int(saved.get("steps_done", 0)),
                      ranks=ranks)
        if "data" in saved:  # (files of earlier versions do not record their data)
            differences = _data_differences(saved["data"], trainer.data)
            if differences:
                raise ValueError(f"'{path}' was trained on other inputs than the ones given to resume it: "
                                 f"{'; '.join(differences)}. Resume with the same photos and captions, or start a "
                                 f"new training.")
        state = state_path(path)
        if state.is_file():
            trainer.load_state(state)
            trainer.notes = f"resumed at step {trainer.step_count} with its optimizer state"
        else:
            trainer.notes = (f"resumed at step {trainer.step_count}; no state file '{state.name}' beside it, so the "
                             f"optimizer starts afresh (the run will differ from an uninterrupted one)")
        return trainer

    def _record(self) -> None:
        self.delta.metadata["training"] = {**self.config.summary(), "steps_done": self.step_count,
                                           "schedule": self.schedule, "data": self.data}

    def run(self, callback: Callable[[Progress], None] | None = None, should_stop: Callable[[], bool] | None = None,
            checkpoint_path=None, checkpoint_every: int = 100, preview_every: int = 0,
            save_dtype: torch.dtype | None = None) -> bool:
        """Train until ``config.steps`` steps are done. Returns True if finished, False if stopped early.

        ``should_stop`` is polled before every step (data parallel: all ranks stop when one is asked to). The delta is
        written to ``checkpoint_path`` atomically every ``checkpoint_every`` steps and when the loop ends for any
        reason (finished, stopped, or an exception, e.g. a cancel raised from ``callback``), as of the last finished
        step; data parallel, by rank 0 only.
        """
        t0 = time.perf_counter()
        finished, failed = True, False
        try:
            while self.step_count < self.config.steps:
                if should_stop is not None and self.ranks.any(should_stop()):  # every rank stops at the same step
                    finished = False
                    break
                parts = self.step()
                self._record()
                preview = self.preview() if preview_every and self.step_count % preview_every == 0 else None
                if checkpoint_path is not None and checkpoint_every and self.step_count % checkpoint_every == 0 \
                        and self.ranks.is_main:
                    self.save(checkpoint_path, dtype=save_dtype)
                if callback is not None:
                    callback(Progress(self.step_count, self.config.steps, parts["loss"], parts,
                                      time.perf_counter() - t0, preview))
        except BaseException:
            failed = True
            raise
        finally:
            self._record()
            # data parallel, an error usually means another rank failed: its launcher may kill this one at any moment,
            # so the last regular checkpoint stands rather than being rewritten now
            if checkpoint_path is not None and self.ranks.is_main and not (failed and self.ranks.world_size > 1):
                self.save(checkpoint_path, dtype=save_dtype)
        return finished


def data_fingerprint(images: SubjectImages, config: TrainConfig) -> dict:
    """What a training learns from, recorded in its subject file so a resume can check it gets the same inputs: a
    hash of every photo (as 8-bit pixels at the training size), the captions, the class word and the resolution."""
    pixels = ((images.images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return {"photos": [hashlib.sha256(p.numpy().tobytes()).hexdigest()[:16] for p in pixels],
            "captions": list(images.prompts), "class_word": config.class_word, "size": list(pixels.shape[-2:])}


def _data_differences(saved: dict, given: dict) -> list[str]:
    out = []
    if len(saved["photos"]) != len(given["photos"]):
        out.append(f"{len(given['photos'])} photos given, it was trained on {len(saved['photos'])}")
    else:
        changed = [str(i + 1) for i, (a, b) in enumerate(zip(saved["photos"], given["photos"])) if a != b]
        if len(changed) == 1:
            out.append(f"photo {changed[0]} differs")
        elif changed:
            out.append(f"photos {', '.join(changed)} differ")
        diff = [f"{a!r} -> {b!r}" for a, b in zip(saved["captions"], given["captions"]) if a != b]
        if diff:
            out.append(f"captions differ ({diff[0]}{' ...' if len(diff) > 1 else ''})")
    for key, what in (("class_word", "class word"), ("size", "resolution")):
        if saved.get(key) != given.get(key):
            out.append(f"{what} {given.get(key)!r}, it was trained with {saved.get(key)!r}")
    return out


def train_subject(model, vae, text_encoder, images: SubjectImages, config: TrainConfig, **run_kwargs):
    """Convenience: build a SubjectTrainer, run it, return its delta."""
    trainer = SubjectTrainer(model, vae, text_encoder, images, config)
    trainer.run(**run_kwargs)
    return trainer.delta
