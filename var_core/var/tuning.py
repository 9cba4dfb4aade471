"""Subject tuning on VAR, with the machinery of every family (tuning/trainer.py): the subject is a new class, a
learned class vector (the placeholder; it starts as the class word's embedding) read by the layers the class acts
through (the AdaLN projections and the FFN, as LoRA or full deltas), trained with the scale-weighted code
cross-entropy; prior distillation keeps the base's predictions for the class word's own class on the frozen base's
samples of it."""
from __future__ import annotations

from typing import Sequence

import torch

from ..tuning.delta import SubjectDelta
from ..tuning.trainer import SubjectTrainer
from ..vq.checkpointing import CheckpointOnGPU
from ..vq.sampling import sample


class VARSubjectTrainer(CheckpointOnGPU, SubjectTrainer):
    @staticmethod
    def _new_delta(model, config) -> SubjectDelta:
        delta = SubjectDelta.create(
            model, config.mode, config.groups, config.blocks, config.rank, config.alpha,
            model.family.placeholder_count(config.placeholder_vectors), config.token, config.class_word,
            generator=torch.Generator().manual_seed(config.seed))
        if delta.placeholder is not None:  # the subject starts as its class
            label = model.family.class_label(model, config.class_word)
            delta.tensors["placeholder"] = model.class_emb.weight[label:label + 1].detach().float().clone()
        return delta

    def _conditioning(self, text_encoder, images) -> None:
        if text_encoder is not None:
            raise ValueError("VAR is class-conditional: it trains without a text encoder.")
        self.prompts = list(images.prompts)
        self.label = self.family.class_label(self.model, self.config.class_word)
        # the class vector alone never changes the class word's own predictions: nothing to distil then
        self.distills = self.config.prior_weight > 0 and self.delta.mode != "none"
        if self.distills and self.config.prior_cfg != 1.0:
            raise ValueError("VAR's prior distillation keeps the base's unguided predictions (prior_cfg 1).")

    def _labels(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.label, dtype=torch.long, device=self.device)

    def _student_logits(self, idx: Sequence[int], inputs: torch.Tensor) -> torch.Tensor:
        vector = self.delta.placeholder
        cond = vector.expand(len(idx), -1) if vector is not None else self._labels(len(idx))
        return self.student(cond, inputs)

    @torch.no_grad()
    def teacher_samples(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples of the frozen base's class (unguided: cfg 0 on VAR's ramp) and its logits on them (the
        sampler's own: with a KV cache they are the teacher-forced forward's up to float rounding)."""
        _, logits, codes = sample(self.model, self.vae, self._labels(n), cfg=0.0, top_k=0,
                                  top_p=self.config.prior_top_p, generator=generator or self.sample_generator,
                                  return_logits=True, return_codes=True)
        return self.family.flatten_codes([c.clone() for c in codes]), torch.cat(logits, dim=1).float()

    def prior_loss(self, batch: int, rows: slice = slice(None)) -> torch.Tensor:
        codes, teacher = self._teacher_batch(batch)
        codes, teacher = codes[rows], teacher[rows]
        inputs = self.vae.inputs_from_codes(self.family.split_codes(codes, self.schedule), self.schedule)
        student = self.student(self._labels(codes.shape[0]), inputs)
        return self.family.distillation(student, teacher)

    def preview(self, seed: int = 0) -> torch.Tensor:
        token = self.delta.token if self.delta.placeholder is not None else self.label
        return sample(self.student, self.vae, [token], seed=seed)
