"""Scale-by-scale generation with a KV cache and classifier-free guidance on the logits.

At scale k the model reads the running sum of all earlier scales' codes resized to (h_k, w_k), predicts 2 logits
per bit for every token of the scale at once, and the sampled bits' codes are added to the sum. Self-attention keys
and values of earlier scales are kept (KVCache), so every token is computed once.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .infinity import quantizer
from .checkpoint import check_compatible
from .schedules import per_scale
from .infinity.layers import KVCache, scale_levels
from .infinity.model import Infinity, TextMix


def variation_bits(vae, image: torch.Tensor, schedule, keep_scales: int, batch: int) -> list[torch.Tensor] | None:
    """The first ``keep_scales`` scales' bits of ``image`` (1, 3, H, W at the schedule's size), repeated for a batch:
    ``forced_bits`` for a variation of it (None for keep_scales 0). keep_scales must be 0..K."""
    K = len(schedule)
    if isinstance(keep_scales, bool) or not isinstance(keep_scales, int) or not 0 <= keep_scales <= K:
        raise ValueError(f"keep_scales is {keep_scales!r}, but it must be a whole number from 0 (a new picture) to "
                         f"{K}, the scales of this resolution (all of them reproduces the image).")
    if keep_scales == 0:
        return None
    patch = vae.token_patch  # the VAE quantises on its own grid; the sampler takes the transformer's token layout
    bits = vae.encode_bits(image, quantizer.vae_schedule(schedule, patch))[:keep_scales]
    bits = [quantizer.patchify(b, patch) for b in bits]
    return [b.expand(batch, *b.shape[1:]) for b in bits]


def step_schedule(coarse: float, fine: float, switch: int, num_scales: int) -> list[float]:
    """``coarse`` on scales 0..switch-1, ``fine`` from scale ``switch`` on."""
    return [float(coarse) if k < switch else float(fine) for k in range(num_scales)]


def sample_bits(logits: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Draw every bit independently from its 2-way softmax after top-k/top-p filtering.

    logits: (B, l, 2d) -> bits (B, l, d) uint8. With two outcomes, top-k=1 is greedy and top-k >= 2 (or 0) keeps
    both; top-p keeps the most likely outcomes whose probabilities reach top_p, so it drops the less likely one when
    its probability is <= 1 - top_p (always when top_p <= 0.5: greedy), as the reference's top_k_top_p_filtering.
    """
    p1 = logits.float().unflatten(-1, (-1, 2)).softmax(-1)[..., 1]
    if top_k == 1:
        p1 = (p1 > 0.5).float()
    elif 0 <= top_p < 1:
        less_likely = torch.minimum(p1, 1 - p1)
        p1 = torch.where(less_likely <= 1 - top_p, (p1 >= 0.5).float(), p1)
    u = torch.rand(p1.shape, generator=generator, device=p1.device if generator is None else generator.device)
    return (u.to(p1.device) < p1).to(torch.uint8)


def sample(model: Infinity, vae, text, schedule, cfg=None, tau=None, top_k: int = 0, top_p: float = 0.97,
           seed: int | None = None, negative=None, forced_bits: Sequence[torch.Tensor] | None = None,
           return_logits: bool = False, generator: torch.Generator | None = None,
           progress: Callable[[int, int], None] | None = None, use_cache: bool = True):
    """Generate images (B, 3, H, W) in [-1, 1].

    text: list of B (len_i, Ct5) tensors (or TextMix: a subject's strength on the text side). cfg, tau: scalar or one
    value per scale; None: the model's own (model.sampling_defaults(): 4 / 0.5 for Infinity-2B, 3 / 1.0 for 8B).
    negative: list of B tensors (default: the model's learned null text cfg_uncond[:len_i]). forced_bits: bits
    (B, h_k, w_k, d) for the first N scales, used instead of sampling (variations / image-to-image), in the model's
    token layout (d = 4*14 patchified bits for Infinity-8B: quantizer.patchify of the VAE's bits; variation_bits
    makes them).
    seed: same seed and device -> same images.
    With return_logits, also returns per-scale logits (B, h_k*w_k, 2d) exactly as sampled from (after /tau and
    the CFG mix). vae may be None to skip decoding (then the per-scale bits are returned in place of images).
    use_cache=False recomputes every earlier scale at each step (same result, slower; for benchmarks and tests).
    """
    # inference mode, except on an FSDP-sharded base (training's teacher samples): FSDP reuses the buffers it gathers
    # blocks into, and a buffer made in inference mode could not be used by the training step after
    with torch.inference_mode(not model.sharded), torch.no_grad():
        return _sample(model, vae, text, schedule, cfg, tau, top_k, top_p, seed, negative, forced_bits,
                       return_logits, generator, progress, use_cache)


def _sample(model, vae, text, schedule, cfg, tau, top_k, top_p, seed, negative, forced_bits, return_logits, generator,
            progress, use_cache):
    schedule = [tuple(s) for s in schedule]
    K, device = len(schedule), model.device
    if K > model.config.num_levels:
        raise ValueError(f"The schedule has {K} scales; this model supports at most {model.config.num_levels}.")
    if vae is not None:
        check_compatible(model, vae)
    cfg, tau = model.sampling_settings(cfg, tau)
    cfgs, taus = per_scale(cfg, K, "cfg"), per_scale(tau, K, "tau")
    if model.patch is not None and hasattr(model.patch, "check_scales"):
        model.patch.check_scales(K)
    if any(t <= 0 for t in taus):
        raise ValueError("tau must be > 0 at every scale.")
    if isinstance(text, torch.Tensor) and text.dim() == 2:
        text = [text]
    B = len(text)
    forced = list(forced_bits or [])
    if len(forced) > K:
        raise ValueError(f"{len(forced)} forced scales but the schedule has only {K}.")
    for k, b in enumerate(forced):
        if tuple(b.shape) != (B, *schedule[k], model.config.bits):
            raise ValueError(f"Forced bits of scale {k} must be {(B, *schedule[k], model.config.bits)}, "
                             f"got {tuple(b.shape)}.")
    if generator is None and seed is not None:
        generator = torch.Generator(device).manual_seed(int(seed))

    guided = any(c != 1.0 for c in cfgs)
    if guided:
        if negative is None:
            negative = model.null_text(text)
        if len(negative) != B:
            raise ValueError(f"{len(negative)} negative prompts for {B} prompts.")
        text = list(text) + list(negative)
    # a TextMix (a subject's strength on the text side) may weigh its readings differently at every scale
    mixed = any(isinstance(t, TextMix) for t in text)
    conds = [model.condition(text, scale=k if use_cache else None) for k in range(K)] if mixed \
        else [model.condition(text)] * K

    cos, sin = model.rope(schedule)
    cache = KVCache(model.config.depth) if use_cache else None
    total = sum(h * w for h, w in schedule)
    start, sequence, sums = 0, None, quantizer.CodeSum(schedule, model.config.token_patch)
    all_logits, all_bits = [], []
    with model.autocast():
        for k, (h, w) in enumerate(schedule):
            n = h * w
            if k == 0:
                x = model.start_token(conds[k])
            else:
                x = model.embed_inputs(sums.tokens_at((h, w)))
                x = torch.cat((x, x)) if guided else x  # cond and uncond halves read the same tokens
            if use_cache:
                rope = (cos[start:start + n], sin[start:start + n])
                x = model.run_blocks(x, conds[k], rope, model.lvl_embed.weight[k], cache=cache, total=total,
                                     scale_index=k)
                cache.length += n
            else:  # recompute the whole prefix with the block-causal mask (reference speed baseline)
                sequence = x if sequence is None else torch.cat((sequence, x), dim=1)
                level = scale_levels(schedule[:k + 1], device)
                rope = (cos[:start + n], sin[:start + n])
                sizes = tuple(a * b for a, b in schedule[:k + 1])
                x = model.run_blocks(sequence, conds[k], rope, model.lvl_embed(level), scale_sizes=sizes)[:, start:]
            start += n
            raw = model.logits(x, conds[k])
            logits = raw[:B] / taus[k]
            if guided:
                logits = cfgs[k] * logits + (1 - cfgs[k]) * (raw[B:] / taus[k])
            if return_logits:
                all_logits.append(logits)
            if k < len(forced):
                bits = forced[k].to(device=device, dtype=torch.uint8)
            else:
                bits = sample_bits(logits, top_k, top_p, generator).unflatten(1, (h, w))
            all_bits.append(bits)
            sums.add(bits)
            if progress is not None:
                progress(k + 1, K)

    # Free the KV cache (Infinity-8B at 1M with CFG: 11 GiB, benchmarks/memory.py) before the VAE decode's
    # activations come on top of it.
    cache = conds = sequence = x = raw = None
    out = all_bits if vae is None else vae.decode_latent(sums.total)
    return (out, all_logits) if return_logits else out
