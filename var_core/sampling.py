"""Scale-by-scale generation with a KV cache and classifier-free guidance on the logits, for every family.

At scale k the model reads the running sum of all earlier scales' codes resized to (h_k, w_k) and predicts every
token of the scale at once; the family mixes the guided logits and draws the codes (Infinity: every bit on its own),
which are added to the sum. Self-attention keys and values of earlier scales are kept (KVCache), so every token is
computed once.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import defaults
from . import pruning as prune
from .infinity.layers import KVCache, TextCondition, scale_levels
from .infinity.model import TextMix
from .schedules import per_scale

KEEP_SCALES = 4  # a variation keeps this many coarse scales of its image unless told otherwise


def variation_codes(vae, image: torch.Tensor, schedule, keep_scales: int, batch: int, family=None) -> list | None:
    """The first ``keep_scales`` scales' codes of ``image`` (1, 3, H, W at the schedule's size), repeated for a batch:
    ``forced_codes`` for a variation of it (None for keep_scales 0). keep_scales must be 0..K."""
    K = len(schedule)
    if isinstance(keep_scales, bool) or not isinstance(keep_scales, int) or not 0 <= keep_scales <= K:
        raise ValueError(f"keep_scales is {keep_scales!r}, but it must be a whole number from 0 (a new picture) to "
                         f"{K}, the scales of this resolution (all of them reproduces the image).")
    if keep_scales == 0:
        return None
    codes = (family or vae.family).image_codes(vae, image, schedule)[:keep_scales]
    return [c.expand(batch, *c.shape[1:]) for c in codes]


def sample(model, vae, text, schedule=None, cfg=None, tau=None, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, negative=None, forced_codes: Sequence[torch.Tensor] | None = None,
           return_logits: bool = False, generator: torch.Generator | None = None,
           progress: Callable[[int, int], None] | None = None, use_cache: bool = True,
           pruning: prune.Pruning = prune.OFF, **family_settings):
    """Generate images (B, 3, H, W) in [-1, 1].

    For Switti and VAR (codebook families) this is vq/sampling.py's ``sample``: text is their condition (Switti:
    PromptEmbeds; VAR: class labels or names), there is no tau, and family_settings are their own controls (Switti's
    cfg window, last_scale_temp, Gumbel smoothing; return_codes). The rest of this docstring is Infinity's.

    text: list of B (len_i, Ct5) tensors (or TextMix: a subject's strength on the text side). cfg, tau: scalar or one
    value per scale; cfg, tau, top_k, top_p None: the model's own (model.family.sampling_defaults(model)).
    negative: list of B tensors (default: the model's learned null text cfg_uncond[:len_i]). forced_codes: codes
    (B, h_k, w_k, ·) of the first N scales, used instead of sampling (variations / image-to-image), in the model's
    token layout (variation_codes makes them).
    seed: the same seed, prompts, batch and device give the same images. One seed draws the whole batch, scale by
    scale, so an image depends on the batch it is in: row 0 of a batch of 4 is not the batch-1 image of that seed.
    With return_logits, also returns per-scale logits (B, h_k*w_k, 2d) exactly as sampled from (after /tau and
    the CFG mix). vae may be None to skip decoding (then the per-scale codes are returned in place of images).
    use_cache=False recomputes every earlier scale at each step (same result, slower; for benchmarks and tests).
    pruning: the finest scales computed on part of their tokens (pruning.py; off by default: the exact sampler).
    """
    if hasattr(model.family, "sample"):  # the codebook families (vq/sampling.py): their own controls
        if tau is not None:
            raise ValueError(f"{model.family.title} models have no tau (Infinity's temperature); Switti divides the "
                             f"logits after its guidance window by last_scale_temp.")
        return model.family.sample(model, vae, text, schedule, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                                   negative=negative, forced_codes=forced_codes, return_logits=return_logits,
                                   generator=generator, progress=progress, pruning=pruning, **family_settings)
    if family_settings:
        raise TypeError(f"Infinity has no sampling settings {sorted(family_settings)}.")
    if schedule is None:
        raise ValueError("Infinity samples any resolution: give a schedule, e.g. var_core.scale_schedule(1.0, '1M').")
    # inference mode, except on an FSDP-sharded base (training's teacher samples): FSDP reuses the buffers it gathers
    # blocks into, and a buffer made in inference mode could not be used by the training step after
    with torch.inference_mode(not model.sharded), torch.no_grad():
        return _sample(model, vae, text, schedule, cfg, tau, top_k, top_p, seed, negative, forced_codes,
                       return_logits, generator, progress, use_cache, pruning)


def _sample(model, vae, text, schedule, cfg, tau, top_k, top_p, seed, negative, forced_codes, return_logits, generator,
            progress, use_cache, pruning):
    schedule = [tuple(s) for s in schedule]
    K, device, family = len(schedule), model.device, model.family
    if K > model.config.num_levels:
        raise ValueError(f"The schedule has {K} scales; this model supports at most {model.config.num_levels}.")
    if vae is not None:
        family.check_compatible(model, vae)
    settings = defaults.sampling(model, cfg=cfg, tau=tau, top_k=top_k, top_p=top_p)  # the model's own, checked
    cfgs, taus = per_scale(settings["cfg"], K, "cfg"), per_scale(settings["tau"], K, "tau")
    top_k, top_p = settings["top_k"], settings["top_p"]
    if seed is not None:
        defaults.check("seed", seed, whole=True)
    if model.patch is not None and hasattr(model.patch, "check_scales"):
        model.patch.check_scales(K)
    if isinstance(text, torch.Tensor) and text.dim() == 2:
        text = [text]
    B = len(text)
    forced = list(forced_codes or [])
    if len(forced) > K:
        raise ValueError(f"{len(forced)} forced scales but the schedule has only {K}.")
    for k, b in enumerate(forced):
        if tuple(b.shape) != (B, *family.code_shape(model, schedule[k])):
            raise ValueError(f"Forced codes of scale {k} must be {(B, *family.code_shape(model, schedule[k]))}, "
                             f"got {tuple(b.shape)}.")
    if generator is None and seed is not None:
        generator = torch.Generator(device).manual_seed(int(seed))

    # the unconditional rows run only up to the last guided scale: after it no scale needs them (half the work)
    last_guided = max((k for k, c in enumerate(cfgs) if c != 1.0), default=-1)
    guided = last_guided >= 0
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
    if pruning.scales and not use_cache:
        raise ValueError("Pruning needs the KV-cached sampler (use_cache=True).")

    cos, sin = model.rope(schedule)
    cache = KVCache(model.config.depth) if use_cache else None
    total = sum(h * w for h, w in schedule)
    start, sequence, sums = 0, None, family.code_sum(model, schedule)
    all_logits, all_codes, previous = [], [], None
    with model.autocast():
        for k, (h, w) in enumerate(schedule):
            n = h * w
            if guided and k > last_guided:
                conds = [TextCondition(*(t[:B] for t in c)) for c in conds]
                if use_cache:
                    cache.keep(B)
                else:
                    sequence = sequence[:B]
                previous = previous[:B] if previous is not None else None
                guided = False
            keep = pruning.keep_at(k, K)
            if k == 0:
                x = model.start_token(conds[k])
            else:
                tokens = sums.tokens_at((h, w))
                x = model.embed_inputs(tokens)
                x = torch.cat((x, x)) if guided else x  # cond and uncond halves read the same tokens
            if use_cache:
                rope = (cos[start:start + n], sin[start:start + n])
                if keep is not None:
                    index = prune.rows(prune.pivotal(tokens, keep), x.shape[0])
                    x, rope = prune.take(x, index), tuple(prune.table(t, index) for t in rope)
                x = model.run_blocks(x, conds[k], rope, model.lvl_embed.weight[k], cache=cache, total=total,
                                     scale_index=k)
                cache.length += x.shape[1]
                if keep is not None:
                    x = prune.restore(x, index, previous, schedule[k - 1], (h, w))
                previous = x
            else:  # recompute the whole prefix with the block-causal mask (reference speed baseline)
                sequence = x if sequence is None else torch.cat((sequence, x), dim=1)
                level = scale_levels(schedule[:k + 1], device)
                rope = (cos[:start + n], sin[:start + n])
                sizes = tuple(a * b for a, b in schedule[:k + 1])
                x = model.run_blocks(sequence, conds[k], rope, model.lvl_embed(level), scale_sizes=sizes)[:, start:]
            start += n
            raw = model.logits(x, conds[k])
            logits = raw[:B] / taus[k]
            if guided and cfgs[k] != 1.0:
                logits = family.guide(logits, raw[B:] / taus[k], cfgs[k])
            if return_logits:
                all_logits.append(logits)
            if k < len(forced):
                codes = forced[k].to(device=device, dtype=family.code_dtype)
            else:
                codes = family.draw(logits, top_k, top_p, generator).unflatten(1, (h, w))
            all_codes.append(codes)
            sums.add(codes)
            if progress is not None:
                progress(k + 1, K)

    # Free the KV cache (Infinity-8B at 1M with CFG: 11 GiB, benchmarks/memory.py) before the VAE decode's
    # activations come on top of it.
    cache = conds = sequence = x = raw = previous = None
    out = all_codes if vae is None else family.decode(vae, sums)
    return (out, all_logits) if return_logits else out
