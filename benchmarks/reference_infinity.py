"""The official Infinity sampler (github.com/FoundationVision/Infinity, a checkout the user gives) run on a var_core
model's weights: the other side of ``bench_sample.py --reference``.

The transformer is the checkout's ``Infinity`` class built as tools/run_infinity.py's ``load_transformer`` builds it
(the 2B release flags: level embedding before the first block only, bit labels, 2D RoPE in every layer normalised
"star" style, shared AdaLN, the compiled fused AdaLN norm, no flex attention; inference mode), at this model's sizes,
with our state dict loaded into it (our parameter names are the release names). The VAE is the checkout's, built as
``load_visual_tokenizer`` builds it (reference_arbooth.reference_vae); the sampler needs its quantizer even when it
does not decode. A call is ``gen_one_img``'s ``autoregressive_infer_cfg`` call, given the T5 features in
``encode_prompt``'s packed form (the T5 encoder is not run), guidance on the logits (cfg_insertion_layer 0, as
tools/reproduce.py), the default negative (the learned null text), no autocast (fp32 on the CPU).

Nothing of the reference is copied: its classes are imported from the checkout, after reference_arbooth's
``install_stand_ins``: flash-attn (no CUDA here; the reference calls only its varlen cross-attention, on the bf16
copies of q, k, v it makes for flash-attn: the stand-in computes exact softmax attention per sequence with SDPA and
returns bf16, as flash-attn does), timm's DropPath, and empty plotting / logging / image-IO modules it imports at module
level and never calls here.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings

import torch
import torch.nn.functional as F

from benchmarks.reference_arbooth import install_stand_ins, load_weights, reference_vae


class ReferenceSampler:
    """The reference's ``autoregressive_infer_cfg`` on ``model`` / ``vae`` (var_core's, release layout) at
    ``schedule`` ((h, w) per scale): call it with a list of (len_i, Ct5) text features."""

    def __init__(self, checkout: str, model, vae, schedule):
        install_stand_ins()
        warnings.filterwarnings("ignore", category=FutureWarning, module="infinity")  # torch.cuda.amp.autocast
        if checkout not in sys.path:
            sys.path.insert(0, checkout)
        from infinity.models.bsq_vae import vae as vae_module
        from infinity.models.infinity import Infinity

        cfg = model.config
        if cfg.token_patch != 1 or cfg.lvl_embed_per_chunk:
            raise ValueError("The side-by-side runs the Infinity-2B layout (no spatial patchify, one level "
                             "embedding).")
        self.bits = vae.config.d
        self.vae = reference_vae(vae_module, vae).to(model.device)
        self.schedule = [(1, h, w) for h, w in schedule]
        with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints its whole configuration
            net = Infinity(
                vae_local=self.vae, text_channels=cfg.text_channels, text_maxlen=cfg.text_maxlen, shared_aln=True,
                raw_scale_schedule=self.schedule, checkpointing="full-block", customized_flash_attn=False,
                fused_norm=True, pad_to_multiplier=128, use_flex_attn=False, add_lvl_embeding_only_first_block=1,
                use_bit_label=1, rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, pn=None, apply_spatial_patchify=0,
                inference_mode=True, train_h_div_w_list=[1.0], depth=cfg.depth, embed_dim=cfg.embed_dim,
                num_heads=cfg.num_heads, mlp_ratio=cfg.ffn_hidden / cfg.embed_dim, block_chunks=cfg.block_chunks)
        load_weights(net, model)
        self.net = net.to(model.device).eval().requires_grad_(False)
        self.net.rng = torch.Generator(device=model.device)  # as load_transformer sets it

    def __call__(self, text, cfg: float, tau: float, top_k: int, top_p: float, seed: int, decode: bool = False):
        """The images (B, H, W, 3) uint8 as gen_one_img returns them, or [] without ``decode``."""
        lens = [t.shape[0] for t in text]
        cu = F.pad(torch.tensor(lens).cumsum(0), (1, 0)).to(torch.int32).to(text[0].device)
        K = len(self.schedule)
        _, _, images = self.net.autoregressive_infer_cfg(
            vae=self.vae, scale_schedule=self.schedule, label_B_or_BLT=(torch.cat(text), lens, cu, max(lens)),
            B=len(text), negative_label_B_or_BLT=None, g_seed=seed, cfg_list=[cfg] * K, tau_list=[tau] * K,
            top_k=top_k, top_p=top_p, returns_vemb=1, cfg_insertion_layer=[0], vae_type=self.bits, ret_img=decode,
            gt_leak=0, inference_mode=True, sampling_per_bits=1)
        return images

    def codes(self, text, **settings) -> list[torch.Tensor]:
        """The bits (B, h, w, d) drawn at every scale of one call (as the VAE's quantizer receives them: the
        sampler returns none of them)."""
        lfq, seen = self.vae.quantizer.lfq, []
        original = lfq.indices_to_codes

        def recording(indices, **kw):
            seen.append(indices.squeeze(1))
            return original(indices, **kw)
        lfq.indices_to_codes = recording
        try:
            self(text, **settings)
        finally:
            del lfq.indices_to_codes
        return seen
