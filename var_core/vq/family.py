"""What the codebook families (Switti, the class-conditional VAR) share on the family seam: a multi-scale residual
VQ-VAE (vae.py) whose tokens are codebook indices, one softmax over the codebook per token, and the sampler of
sampling.py. Each family adds its files, its condition and its per-scale plan (var/family.py, switti/family.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, describe_source
from ..family import Family
from ..infinity.family import RELEASE_TUNING as INFINITY_TUNING
from . import sampling

# ARBooth's tuning settings, as for Infinity; the resolution is the model's own (its positions are learned for one
# scale grid)
RELEASE_TUNING = {**INFINITY_TUNING, "pn": None}
VAE_KEYS = ("quantize.embedding.weight", "quantize.quant_resi.qresi_ls.0.weight", "encoder.conv_in.weight")


class VQFamily(Family):
    code_dtype = torch.long
    tuning_groups: dict[str, tuple[str, ...]] = {}
    default_groups: tuple[str, ...] = ()

    def sample(self, model, vae, cond, schedule=None, **settings):
        """``var_core.sample`` for this family's models (sampling.py)."""
        return sampling.sample(model, vae, cond, schedule, **settings)

    # ------------------------------------------------------------------ files
    def recognise_vae(self, names: set[str]) -> bool:
        return all(k in names for k in VAE_KEYS)

    def load_vae(self, source, device=None, dtype=None):
        from .vae import load_vq_vae
        vae = load_vq_vae(source, device=device, dtype=dtype)
        vae.family = self
        return vae

    def check_compatible(self, model, vae) -> None:
        """The VAE's codebook (entries and width) must be the transformer's, and where the VAE states its scales
        (a VQVAE-Switti config), they must be the transformer's."""
        if not isinstance(getattr(vae, "family", None), VQFamily):
            what = f"{vae.family.title} VAE" if getattr(vae, "family", None) else "not a codebook VAE"
            raise CheckpointError(f"The VAE {describe_source(getattr(vae, 'source', None))} is {what}; the "
                                  f"transformer {describe_source(model.source)} is a {self.title} model, which needs "
                                  f"a multi-scale VQ-VAE.")
        mine, theirs = model.config, vae.config
        scales = [h for h, _ in model.schedule]
        problems = [f"{what}: VAE {a}, transformer {b}" for what, a, b in (
            ("codebook entries", theirs.vocab_size, mine.vocab_size), ("code width", theirs.Cvae, mine.Cvae),
            ("scales", list(theirs.patch_nums or scales), scales)) if a != b]
        if problems:
            raise CheckpointError(f"The VAE {describe_source(vae.source)} does not fit the transformer "
                                  f"{describe_source(model.source)} ({'; '.join(problems)}). Use the VAE released "
                                  f"with this transformer.")

    # ------------------------------------------------------------------ defaults
    release_sampling: dict  # the family's release sampling settings {"cfg", "top_k", "top_p"}

    def release_defaults(self, kind):
        if kind == "tuning":
            return {self.title: {k: v for k, v in RELEASE_TUNING.items() if v is not None}}
        return {self.title: self.release_sampling} if kind == "sampling" else {}

    def file_defaults(self, source) -> dict:
        return {"sampling": {}, "tuning": {}, "with_subject": {}}  # the released files state nothing

    def sampling_defaults(self, model) -> dict:
        return dict(self.release_defaults("sampling")[self.title])

    def tuning_defaults(self, model) -> dict:
        return dict(RELEASE_TUNING)

    def tuning_schedule(self, model, aspect, pn) -> list[tuple[int, int]]:
        if pn is not None or float(aspect) != 1.0:
            raise ValueError(f"{self.title} models train and sample at their own square resolution "
                             f"{model.schedule[-1][0] * 16}²: leave out the resolution (pn) and aspect.")
        return model.schedule

    def placeholder_count(self, asked: int) -> int:
        """How many learned vectors a subject gets when ``asked`` for (TrainConfig.placeholder_vectors)."""
        return asked

    # ------------------------------------------------------------------ codes
    def code_shape(self, model, hw):
        return tuple(hw)

    def image_codes(self, vae, images, schedule):
        return vae.encode_codes(images, schedule)

    def code_sum(self, model, schedule):
        raise NotImplementedError("the codebook families sample with vq/sampling.py")

    def decode(self, vae, sums):
        return vae.decode_latent(sums)

    def teacher_forcing(self, vae, latent, schedule, flip_prob=0.0, generator=None):
        """(inputs (B, L-1, Cvae), codes (B, L)) of a latent. No self-correction noise: flip_prob is Infinity's
        Bitwise Self-Correction, which has no codebook counterpart here."""
        codes = vae.latent_codes(latent, schedule)
        return vae.inputs_from_codes(codes, schedule), self.flatten_codes(codes)

    def inputs_from_codes(self, model, codes, schedule):
        raise NotImplementedError("teacher-forcing inputs come from the VAE: vae.inputs_from_codes")

    # ------------------------------------------------------------------ prediction
    def draw(self, logits, top_k, top_p, generator):
        return sampling.draw(logits, top_k, top_p, generator)

    def token_loss(self, logits, labels):
        return F.cross_entropy(logits.transpose(1, 2).float(), labels, reduction="none")

    def accuracy(self, logits, labels):
        return (logits.argmax(dim=-1) == labels).float().mean()

    def distillation(self, student, teacher, per_unit=True):
        teacher_log = teacher.float().log_softmax(dim=-1)
        return (teacher_log.exp() * (teacher_log - student.float().log_softmax(dim=-1))).sum(dim=-1).mean()

    @staticmethod
    def ratio(k: int, K: int) -> float:
        """How far scale k is through the schedule (0 at the first, 1 at the last): the guidance ramp."""
        return k / (K - 1) if K > 1 else 0.0
