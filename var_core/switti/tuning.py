"""Subject tuning on Switti, with the machinery of every family (tuning/trainer.py): a placeholder token learned in
both CLIP encoders (K input embeddings of each, starting as the class word's first token), the selected layers
(ARBooth's cross-attention + FFN, as LoRA on Switti's own projections or full deltas), the scale-weighted code
cross-entropy with the crop condition of each photo's real size, and prior distillation on the frozen base's
unguided samples of the class prompt. The encoders stay frozen; they run every step, since the vectors are read
through them."""
from __future__ import annotations

from typing import Sequence

import torch

from ..tuning.trainer import SubjectTrainer
from ..vq.checkpointing import CheckpointOnGPU
from ..vq.sampling import sample


class SwittiSubjectTrainer(CheckpointOnGPU, SubjectTrainer):
    def _conditioning(self, text_encoder, images) -> None:
        if text_encoder is None or not hasattr(text_encoder, "encoder_2"):
            raise ValueError("Switti trains with its two text encoders (CLIP-L and OpenCLIP-bigG).")
        self.encoder = text_encoder
        self.prompts = list(images.prompts)
        self.sizes = list(images.sizes or [None] * len(self.prompts))
        token = self.delta.token
        if self.delta.placeholder is not None:
            if not any(token in p for p in self.prompts):
                raise ValueError(f"No training prompt contains the placeholder {token!r}, so the learned vectors "
                                 f"would never be used.")
            if self.step_count == 0 and not self.delta.placeholder.any():  # a new subject starts as its class word
                with torch.no_grad():
                    self.delta.placeholder.copy_(self._class_word_embedding().expand_as(self.delta.placeholder))
        self.distills = self.config.prior_weight > 0 and self.delta.mode != "none"
        if self.distills and self.config.prior_cfg != 1.0:
            raise ValueError("Switti's prior distillation keeps the base's unguided predictions (prior_cfg 1).")
        with torch.no_grad():
            self.prior_text = text_encoder([self.config.class_prompt()]) if self.distills else None
            self.null_text = text_encoder([""])

    def _class_word_embedding(self) -> torch.Tensor:
        """(1, width of both encoders): each encoder's input embedding of the class word's first token."""
        parts = []
        for encoder, tokenizer in ((self.encoder.encoder, self.encoder.tokenizer),
                                   (self.encoder.encoder_2, self.encoder.tokenizer_2)):
            first = tokenizer(self.delta.class_word, add_special_tokens=False)["input_ids"][0]
            parts.append(encoder.get_input_embeddings().weight[first].float())
        return torch.cat(parts)[None].to(self.device)

    def _subjects(self) -> dict[str, torch.Tensor]:
        vectors = self.delta.placeholder
        return {} if vectors is None else {self.delta.token: vectors}

    def _student_logits(self, idx: Sequence[int], inputs: torch.Tensor) -> torch.Tensor:
        text = self.encoder([self.prompts[i] for i in idx], self._subjects())
        return self.student(text, inputs, image_sizes=[self.sizes[i] for i in idx] if self.sizes[0] else None)

    @torch.no_grad()
    def teacher_samples(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n unguided samples of the class prompt from the frozen base and its logits on them (the sampler's own)."""
        _, logits, codes = sample(self.model, self.vae, self.prior_text.expand(n), cfg=0.0, top_k=0,
                                  top_p=self.config.prior_top_p, generator=generator or self.sample_generator,
                                  return_logits=True, return_codes=True)
        return self.family.flatten_codes([c.clone() for c in codes]), torch.cat(logits, dim=1).float()

    def prior_loss(self, batch: int, rows: slice = slice(None)) -> torch.Tensor:
        codes, teacher = self._teacher_batch(batch)
        codes, teacher = codes[rows], teacher[rows]
        inputs = self.vae.inputs_from_codes(self.family.split_codes(codes, self.schedule), self.schedule)
        student = self.student(self.prior_text.expand(codes.shape[0]), inputs)
        return self.family.distillation(student, teacher)

    def preview(self, seed: int = 0) -> torch.Tensor:
        with torch.no_grad():
            text = self.encoder([self.prompts[0]], {k: v.detach() for k, v in self._subjects().items()})
        return sample(self.student, self.vae, text, negative=self.null_text, seed=seed)
