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

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..checkpoint import (CheckpointError, load_optimizer_tensors, optimizer_tensors,
                          save_safetensors_atomic)
from ..sampling import sample
from .config import TrainConfig
from .data import SubjectImages, _data_differences, data_fingerprint
from .apply import apply_subjects
from .delta import SubjectDelta
from .fingerprint import base_identity, check_fits
from .distributed import Ranks
from .memory import needs_checkpointing

# Checkpointing's default for a model whose blocks are streamed (streaming.py)
STREAMED = True, "on: the blocks are streamed (without it every block's copy would stay until the backward pass)"
from .losses import weighted_loss
from .placeholder import substitute
from .subject import load_subject, save_subject

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

    def __new__(cls, model, *args, **kwargs):
        # a family whose conditioning is not Infinity's text trains with its own subclass (e.g. VAR's class vector)
        if cls is SubjectTrainer and hasattr(model.family, "trainer"):
            cls = model.family.trainer()
        return super().__new__(cls)

    def __init__(self, model, vae, text_encoder, images: SubjectImages, config: TrainConfig,
                 delta: SubjectDelta | None = None, start_step: int = 0, ranks: Ranks | None = None):
        if model.patch is not None:
            raise ValueError("Train on the base model, not on a model with subjects applied.")
        model.family.check_compatible(model, vae)  # the VAE's latent must make this model's tokens
        config = config.for_model(model)  # settings left to the model: its own
        config.check()
        self.model, self.vae, self.config, self.family = model, vae, config, model.family
        self.device = model.device
        self.schedule = model.family.tuning_schedule(model, config.aspect, config.pn)
        if len(images.prompts) != images.images.shape[0]:
            raise ValueError("One prompt per training image is needed.")
        self.ranks = ranks or Ranks()
        batch = min(config.batch_size, len(images.prompts))
        if batch < self.ranks.world_size:
            raise ValueError(f"A batch of {batch} images cannot be split over {self.ranks.world_size} processes: "
                             f"give a --batch-size (and photos) of at least {self.ranks.world_size}, or start fewer "
                             f"processes (--nproc_per_node).")
        identity = base_identity(model)
        # before any collective: every rank must be about to train the same thing
        self.ranks.agree({"photos and captions": data_fingerprint(images, config.class_word),
                          "settings": _comparable(config.summary()), "start step": int(start_step), "base": identity})
        self.generator = torch.Generator().manual_seed(config.seed)  # data order, flips, BSC (CPU: reproducible)
        self.sample_generator = torch.Generator(self.device).manual_seed(config.seed + 1)  # fresh teacher samples
        delta = delta or self._new_delta(model, config)
        check_fits(delta, model)
        if model.sharded and delta.mode not in ("lora", "none"):
            raise ValueError(f"A {delta.mode} delta changes whole weights, which a sharded base (--fsdp) splits over "
                             f"the processes: train LoRA (--mode lora) on a sharded base, or leave out --fsdp.")
        # our own fp32 copy: a delta given to resume from is not trained in place under its holder
        self.delta = delta.to(self.device, torch.float32, copy=True).requires_grad_(True)
        self.ranks.broadcast(self.delta.parameters())  # every rank starts from rank 0's delta
        self.delta.metadata = {**delta.metadata, **identity}
        self.step_count = int(start_step)
        self.num_trainable = self.delta.num_parameters()
        self.data = data_fingerprint(images, config.class_word)

        # frozen inputs, computed once: VAE latents of every image (and its mirror), T5 features and token positions
        with torch.no_grad():
            imgs = images.images.to(vae.device)
            self.latents = [vae.encode_latent(imgs[i:i + 1]).cpu() for i in range(imgs.shape[0])]
            self.flipped = [vae.encode_latent(imgs[i:i + 1].flip(-1)).cpu() for i in range(imgs.shape[0])] \
                if config.hflip else None
        self._conditioning(text_encoder, images)
        self.prior_bank: tuple[torch.Tensor, torch.Tensor] | None = None

        self.student = apply_subjects(model, [(self.delta, 1.0)])
        # on this training's own view of the model: the shared base (and other trainers on it) stay as they are
        on, why = self._checkpointing(batch)
        self.student.gradient_checkpointing = on
        self.checkpointing = "gradient checkpointing " + why
        groups = [{"params": [t for k, t in self.delta.tensors.items() if k != "placeholder"],
                   "lr": config.lr}]
        if self.delta.placeholder is not None:
            groups.append({"params": [self.delta.placeholder], "lr": config.embedding_lr})
        groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.AdamW(groups, betas=config.betas, weight_decay=config.weight_decay,
                                           foreach=self.device.type == "cuda")
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # an fp16 base: its activations' gradients underflow to zero without loss scaling (docs/benchmarks.md)
        self.scaler = torch.amp.GradScaler(self.device.type) if model.compute_dtype == torch.float16 else None
        self._order: list[int] = []
        self.notes = ""
        self.resumed_from: Path | None = None  # the subject file this training continues (its own to rewrite)

    # ------------------------------------------------------------------ what a family's subclass may change
    @staticmethod
    def _new_delta(model, config: TrainConfig) -> SubjectDelta:
        return SubjectDelta.create(
            model, config.mode, config.groups, config.blocks, config.rank, config.alpha, config.placeholder_vectors,
            config.token, config.class_word, generator=torch.Generator().manual_seed(config.seed))

    def _checkpointing(self, batch: int) -> tuple[bool, str]:
        config = self.config
        if config.gradient_checkpointing is None and getattr(self.model, "_streaming", None) is not None:
            return STREAMED
        if config.gradient_checkpointing is None:
            rows = -(-batch // self.ranks.world_size)  # the most rows one rank trains on
            return needs_checkpointing(self.model.config, self.schedule, rows, self.model.compute_dtype, self.device)
        return config.gradient_checkpointing, "on (asked for)" if config.gradient_checkpointing else "off (asked for)"

    def _conditioning(self, text_encoder, images: SubjectImages) -> None:
        """The frozen conditioning, computed once: T5 features of the prompts and where the placeholder sits, and
        the class prompt's for prior distillation."""
        config = self.config
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
        inputs, labels = self.family.teacher_forcing(self.vae, latent, self.schedule, self.config.flip_prob,
                                                     self.generator)
        inputs, labels = inputs[rows], labels[rows]
        logits = self._student_logits(idx[rows], inputs)
        return weighted_loss(self.family, logits, labels, self.schedule, self.config.scale_weights), \
            self.family.accuracy(logits.detach(), labels)

    def _student_logits(self, idx: Sequence[int], inputs: torch.Tensor) -> torch.Tensor:
        """The student's teacher-forced logits on the instance prompts of images ``idx``."""
        vectors = self.delta.placeholder
        text = [substitute(self.text[i], {p: vectors for p in self.positions[i]}) for i in idx]
        return self.student(text, inputs, self.schedule)

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
            return self.family.flatten_codes([b.clone() for b in bits]), torch.cat(logits, dim=1).float() * c.prior_tau
        codes = self.family.flatten_codes([b.clone() for b in bits])  # out of inference mode
        inputs = self.family.inputs_from_codes(self.model, codes, self.schedule)
        return codes, self._guided(self.model, text, inputs).float()

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
        inputs = self.family.inputs_from_codes(self.model, bits, self.schedule)
        text = self.prior_text * bits.shape[0]
        student = self._guided(self.student, text, inputs) if self.config.prior_cfg != 1.0 else \
            self.student(text, inputs, self.schedule)
        return self.family.distillation(student, teacher, per_unit=self.config.prior_per_bit)

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
        loss = loss * share if share != 1.0 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return total

    def _update(self):
        self.ranks.sum_gradients(self._params())  # data parallel: the whole batch's gradient on every rank
        if self.scaler is not None:  # (after the sum: every rank sees the same inf/nan and skips the same step)
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.delta.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
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
        if self.scaler is not None:
            tensors["scaler"] = torch.tensor([self.scaler.get_scale(), self.scaler._get_growth_tracker()])
        return tensors, {"steps_done": str(self.step_count), "optimized": json.dumps(keys)}

    def load_state(self, path) -> None:
        """Continue from a state written by ``save`` (same subject, same step count)."""
        unusable = (f"Delete '{path}' to resume with a fresh optimizer (the run will then differ from an "
                    f"uninterrupted one), or restore the file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            steps, optimized = int(meta.get("steps_done", -1)), json.loads(meta.get("optimized", "[]"))
            tensors = load_file(str(path))
            state = tensors["rng.data"], tensors["rng.samples"], tensors["order"]
        except (SafetensorError, OSError, ValueError, KeyError) as e:  # truncated, not safetensors, edited by hand
            raise CheckpointError(f"The training state '{path}' cannot be read ({type(e).__name__}: {e}). "
                                  f"{unusable}.") from None
        if steps != self.step_count or sorted(optimized) != sorted(self._optimized_keys()):
            raise CheckpointError(f"The training state '{path}' belongs to another checkpoint (step "
                                  f"{meta.get('steps_done')} vs the subject's {self.step_count}). {unusable}, or "
                                  f"resume the subject file it was written with.")
        self.generator.set_state(state[0])
        self.sample_generator.set_state(state[1])
        self._order = state[2].tolist()[:-1]
        try:
            load_optimizer_tensors(self.optimizer, tensors, self._optimized_keys())
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"The training state '{path}' holds no usable optimizer state ({e}). "
                                  f"{unusable}.") from None
        if self.scaler is not None and "scaler" in tensors:  # an fp16 base's loss scale, where it had got to
            scale, tracker = tensors["scaler"].tolist()
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": scale, "_growth_tracker": int(tracker)})

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _optimized_keys(self) -> list[str]:
        names = {id(t): k for k, t in self.delta.tensors.items()}
        return [names[id(p)] for p in self._params()]

    @classmethod
    def resume(cls, path, model, vae, text_encoder, images: SubjectImages, steps: int | None = None,
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
        trainer.resumed_from = Path(path).resolve()
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
            save_dtype: torch.dtype | None = None, overwrite: bool = False) -> bool:
        """Train until ``config.steps`` steps are done. Returns True if finished, False if stopped early.

        ``should_stop`` is polled before every step (data parallel: all ranks stop when one is asked to). The delta is
        written to ``checkpoint_path`` atomically every ``checkpoint_every`` steps and when the loop ends for any
        reason (finished, stopped, or an exception, e.g. a cancel raised from ``callback``), as of the last finished
        step; data parallel, by rank 0 only. An existing file there is refused before any step, unless it is the one
        this training resumes or ``overwrite``.
        """
        self.ranks.agree({"steps": self.config.steps, "output": str(checkpoint_path)})
        if checkpoint_path is not None and not overwrite and Path(checkpoint_path).exists() and \
                Path(checkpoint_path).resolve() != self.resumed_from:
            raise FileExistsError(f"'{checkpoint_path}' already exists: choose another checkpoint path, resume it "
                                  f"(SubjectTrainer.resume), or pass overwrite=True.")
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


def train_subject(model, vae, text_encoder, images: SubjectImages, config: TrainConfig, **run_kwargs):
    """Convenience: build a SubjectTrainer, run it, return its delta."""
    trainer = SubjectTrainer(model, vae, text_encoder, images, config)
    trainer.run(**run_kwargs)
    return trainer.delta


def _comparable(settings: dict) -> dict:
    """Settings as every rank can compare them (gradient checkpointing may differ: it changes memory, not results)."""
    return {k: v for k, v in settings.items() if k != "gradient_checkpointing"}
