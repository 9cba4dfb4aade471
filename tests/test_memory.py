"""The sampling memory model (var_core/memory.py: what ComfyUI's nodes ask the memory manager for) against measured
peaks of scaled-down runs on the CPU: weights plus the predicted job within 15 % of the weights plus the measured peak
(the CPU allocator's, read by the profiler; the VAE decode is left out, as in the model)."""
from __future__ import annotations

import pytest
import torch

from benchmarks.memory import live_bytes, measure
from var_core import sample
from var_core.memory import sampling_bytes
from var_core.schedules import scale_schedule


def _random(model):
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.02, generator=g)
    return model.eval().requires_grad_(False)


def _codebook_vae(family, patch_nums):
    from var_core.vq.vae import VQVAE, VQVAEConfig
    vae = VQVAE(VQVAEConfig(vocab_size=128, Cvae=16, ch=32, ch_mult=(1, 1), patch_nums=patch_nums)).eval()
    vae.family = family
    vae.decode_latent = lambda f_hat: torch.zeros(())  # the decode is not part of the transformer's job
    return vae


def infinity(dtype):
    from benchmarks.memory import small_model
    model = small_model(dtype)
    return model, None, [torch.randn(7, model.config.text_channels)], scale_schedule(1.0, "0.25M"), {}


def switti(dtype, use_ar=False):
    from var_core.switti.model import Switti, SwittiConfig
    from var_core.switti.text import PromptEmbeds
    config = SwittiConfig(depth=4, embed_dim=256, num_heads=4, patch_nums=(1, 2, 4, 8, 16, 24), vocab_size=128,
                          Cvae=16, context_dim=40, pooled_dim=24, use_ar=use_ar)
    model = _random(Switti(config))
    for block in model.blocks:
        block.to(dtype)

    def prompts(n):
        return PromptEmbeds(torch.randn(n, 77, 40), torch.randn(n, 24), torch.ones(n, 77, dtype=torch.long))
    return (model, _codebook_vae(model.family, config.patch_nums), prompts(1), model.schedule,
            dict(negative=prompts(1), cfg_stop_scale=len(model.schedule)))


def switti_ar(dtype):
    return switti(dtype, use_ar=True)


def var(dtype):
    from var_core.var.model import VAR, VARConfig
    config = VARConfig(depth=4, embed_dim=256, num_heads=4, mlp_hidden=1024, num_classes=10, vocab_size=128, Cvae=16,
                       patch_nums=(1, 2, 4, 8, 16, 24))
    model = _random(VAR(config))
    for block in model.blocks:
        block.to(dtype)
    return model, _codebook_vae(model.family, None), [3], model.schedule, {}


@pytest.mark.parametrize("make", [infinity, switti, switti_ar, var])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_sampling_memory_model_is_within_15_percent_of_a_measured_run(make, dtype):
    model, vae, cond, schedule, settings = make(dtype)
    weights = live_bytes(model)
    peak, _ = measure(sample, model, vae, cond, schedule, cfg=4.0, seed=0, **settings)
    predicted = sampling_bytes(model, schedule, batch=1, guided=True)
    assert abs((weights + predicted) / (weights + peak) - 1) < 0.15, (peak, predicted)
    assert sampling_bytes(model, schedule, batch=1, guided=False) < predicted
