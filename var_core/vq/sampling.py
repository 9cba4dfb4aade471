"""Scale-by-scale generation for the codebook families (Switti, the class-conditional VAR).

At scale k the transformer reads the running sum f_hat of all earlier scales' code embeddings, area-resized to the
scale (the VAE's ``tokens_at``), and predicts a logit per codebook entry for each token; classifier-free guidance
mixes the conditional and unconditional rows as (1 + t)·cond − t·uncond with the family's per-scale t (``ScalePlan``),
on the head's input (the head is linear: the same logits up to rounding, one head per image instead of two),
and one code per token is drawn (top-k, top-p, then ``torch.multinomial``: the official samplers' random stream, draw
for draw, from the same seed). Unconditional rows are computed only up to the last guided scale: the scales after it
run on the conditional rows alone, half the work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .. import defaults
from .. import pruning as prune


@dataclass(frozen=True)
class ScalePlan:
    """What happens at one scale, decided by the family from the user's settings."""
    guidance: float | None  # t of the mix (1 + t)·cond − t·uncond; None: the conditional logits alone
    temperature: float | None = None  # logits divided by it (after the mix)
    smooth: float | None = None  # Gumbel-softmax temperature: a soft code embedding instead of a drawn code
    ratio: float = 0.0  # k / (K - 1)


def draw(logits: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One code per token (B, l) from logits (B, l, V): keep the top_k largest (0: all; ties kept), then the smallest
    set whose probability exceeds top_p (0: all), then draw from the softmax."""
    B, l, V = logits.shape
    if 0 < top_k < V and top_p > 0:
        kept = _top_k_top_p(logits.reshape(-1, V), top_k, top_p)
        if kept is not None:
            return torch.multinomial(kept.softmax(dim=-1), 1, replacement=True, generator=generator).view(B, l)
    logits = logits.clone()  # (the caller's logits are returned to the user as they were sampled from)
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        ascending, order = logits.sort(dim=-1)
        drop = ascending.softmax(dim=-1).cumsum_(dim=-1) <= 1 - top_p
        drop[..., -1:] = False  # the most likely code always stays
        logits.masked_fill_(drop.scatter(-1, order, drop), -torch.inf)
    return torch.multinomial(logits.softmax(dim=-1).view(-1, V), 1, replacement=True, generator=generator).view(B, l)


def _top_k_top_p(x: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor | None:
    """draw's masking of (N, V) logits without sorting all V entries: the same kept logits (the rest -inf), bit for
    bit, or None where a row ties at its k-th value (draw then keeps every tied entry, as the official samplers do).

    The official top-p sorts each whole row ascending after the top-k mask: that row is V - k entries of -inf, then
    the k kept values ascending. It is built here from the k + 1 largest values, sorted, instead (the extra one shows
    whether the k-th ties), and put through the same softmax and cumsum, so every probability and every decision is
    the one the full sort gives; only the order of exactly equal logits inside the kept set could differ, and with it
    which of two equal logits a top-p boundary falls between. On one CPU thread a whole draw of 2048 tokens (V 4096,
    k 400) took 0.6x the official function's time (multinomial's exponential draws are then half of what is left)."""
    N, V = x.shape
    values, index = x.topk(top_k + 1, dim=-1, sorted=False)  # one more than kept: it tells whether the k-th ties
    values, perm = values.sort(dim=-1)  # ascending: the (k+1)-th largest, then the k kept
    if not (values[:, 0] < values[:, 1]).all():
        return None
    ascending, order = values[:, 1:], index.gather(-1, perm[:, 1:])
    row = x.new_full((N, V), -torch.inf)
    row[:, V - top_k:] = ascending
    drop = row.softmax(dim=-1).cumsum_(dim=-1)[:, V - top_k:] <= 1 - top_p
    drop[:, -1] = False  # the most likely code always stays
    return row.fill_(-torch.inf).scatter_(-1, order, ascending.masked_fill(drop, -torch.inf))


def gumbel_soft(logits: torch.Tensor, plan: ScalePlan, generator: torch.Generator | None) -> torch.Tensor:
    """Soft code probabilities (B, l, V) of a Gumbel-smoothed scale (Switti's ``more_smooth``)."""
    gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
    return ((logits.mul(1 + plan.ratio) + gumbel) / plan.smooth).softmax(dim=-1)


def sample(model, vae, cond, schedule=None, cfg=None, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, negative=None, forced_codes: Sequence[torch.Tensor] | None = None,
           return_logits: bool = False, return_codes: bool = False, generator: torch.Generator | None = None,
           progress: Callable[[int, int], None] | None = None, pruning: prune.Pruning = prune.OFF,
           **family_settings):
    """Images (B, 3, H, W) in [-1, 1]; then, if asked, the per-scale logits (B, h_k·w_k, V) exactly as sampled from
    (after the guidance mix and temperature) and the per-scale codes (B, h_k, w_k) (None at Gumbel-smoothed scales).

    cond: the family's condition (Switti: PromptEmbeds; VAR: class labels (B,)); negative: Switti's null prompt
    (PromptEmbeds of one row; VAR guides with its unconditional class). cfg, top_k, top_p None: the model's own.
    family_settings: the family's own controls (Switti: cfg_start_scale, cfg_stop_scale, last_scale_temp,
    more_smooth, smooth_start_scale). forced_codes: codes of the first N scales, used instead of drawing
    (variations). seed: one generator on the model's device, consumed as the official sampler consumes it.
    pruning: the finest scales computed on part of their tokens (pruning.py; off by default: the exact sampler).
    """
    with torch.inference_mode(), torch.no_grad():
        return _sample(model, vae, cond, schedule, cfg, top_k, top_p, seed, negative, forced_codes, return_logits,
                       return_codes, generator, progress, pruning, family_settings)


def _sample(model, vae, cond, schedule, cfg, top_k, top_p, seed, negative, forced_codes, return_logits, return_codes,
            generator, progress, pruning, family_settings):
    family = model.family
    schedule = model.schedule if schedule is None else [tuple(s) for s in schedule]
    if list(schedule) != list(model.schedule):
        raise ValueError(f"This {family.title} model generates the scales {model.schedule} (its positions are learned "
                         f"for them); the schedule {schedule} cannot be sampled. Leave the schedule to the model.")
    family.check_compatible(model, vae)
    settings = defaults.sampling(model, cfg=cfg, top_k=top_k, top_p=top_p)
    K = len(schedule)
    plan = family.scale_plan(K, settings["cfg"], **family_settings)
    cond = family.condition(model, cond)
    B = family.batch_of(cond)
    forced = list(forced_codes or [])
    if len(forced) > K:
        raise ValueError(f"{len(forced)} forced scales but the schedule has only {K}.")
    for k, codes in enumerate(forced):
        if tuple(codes.shape) != (B, *schedule[k]):
            raise ValueError(f"Forced codes of scale {k} must be {(B, *schedule[k])}, got {tuple(codes.shape)}.")
    if generator is None and seed is not None:
        generator = torch.Generator(model.device).manual_seed(int(defaults.check("seed", seed, whole=True)))

    last_guided = max((k for k, p in enumerate(plan) if p.guidance is not None), default=-1)
    guided = last_guided >= 0
    state = model.start_sampling(cond, negative, B, guided)
    fhat, tokens, all_logits, all_codes = None, None, [], []
    for k, hw in enumerate(schedule):
        if guided and k > last_guided:  # no scale needs the unconditional rows any more
            model.drop_uncond(state)
            guided = False
        keep = pruning.keep_at(k, K)
        raw = model.sampling_step(state, k, tokens, None if keep is None else prune.pivotal(tokens, keep))
        p = plan[k]
        h = raw[:B]  # the head's input: the head is linear, so the mix of its logits is its logits of the mix
        if p.guidance is not None:
            h = (1 + p.guidance) * h - p.guidance * raw[B:]
        logits = model.head_logits(h)
        if p.temperature is not None:
            logits = logits / p.temperature
        if return_logits:
            all_logits.append(logits)
        if k < len(forced):
            codes = forced[k].to(model.device, torch.long)
            embedded = vae.embed(codes)
        elif p.smooth is not None:
            codes, embedded = None, vae.embed_soft(gumbel_soft(logits, p, generator), hw)
        else:
            codes = draw(logits, settings["top_k"], settings["top_p"], generator).view(B, *hw)
            embedded = vae.embed(codes)
        all_codes.append(codes)
        if fhat is None:
            fhat = embedded.new_zeros(B, embedded.shape[1], *schedule[-1])
        fhat = vae.add_scale(fhat, embedded, k, schedule)
        tokens = vae.tokens_at(fhat, schedule[k + 1]) if k + 1 < K else None
        if progress is not None:
            progress(k + 1, K)
    state = raw = None  # the caches go before the decoder's activations come
    out = (vae.decode_latent(fhat),) + ((all_logits,) if return_logits else ()) + ((all_codes,) if return_codes else ())
    return out if len(out) > 1 else out[0]
