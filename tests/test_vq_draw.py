"""The codebook families' draw (vq/sampling.py) masks top-k + top-p without sorting whole rows; what it keeps and
what it draws must be the official samplers' (sample_with_top_k_top_p_: top-k mask, then a full ascending sort for
top-p), bit for bit, from the same generator state, ties at the k-th value included."""
import pytest
import torch

from var_core.vq.sampling import _top_k_top_p, draw


def official(logits, top_k, top_p, generator):
    """The official samplers' masking and draw, as their helpers.py writes it (on a copy)."""
    B, l, V = logits.shape
    logits = logits.clone()
    if top_k > 0:
        logits.masked_fill_(logits < logits.topk(top_k, sorted=False)[0].amin(dim=-1, keepdim=True), -torch.inf)
    if top_p > 0:
        ascending, order = logits.sort(dim=-1)
        drop = ascending.softmax(dim=-1).cumsum_(dim=-1) <= 1 - top_p
        drop[..., -1:] = False
        logits.masked_fill_(drop.scatter(order.ndim - 1, order, drop), -torch.inf)
    codes = torch.multinomial(logits.softmax(dim=-1).view(-1, V), 1, replacement=True, generator=generator)
    return logits, codes.view(B, l)


@pytest.mark.parametrize("V,top_k,top_p,scale", [(128, 64, 0.95, 3.0), (512, 7, 0.5, 1.0), (4096, 400, 0.95, 3.0),
                                                 (4096, 900, 0.95, 8.0), (300, 299, 0.99, 0.3)])
def test_the_fast_mask_keeps_and_draws_what_the_official_one_does(V, top_k, top_p, scale):
    g = torch.Generator().manual_seed(V + top_k)
    logits = torch.randn(2, 150, V, generator=g) * scale
    kept = _top_k_top_p(logits.reshape(-1, V), top_k, top_p)
    masked, codes = official(logits, top_k, top_p, torch.Generator().manual_seed(7))
    assert kept is not None and torch.equal(kept, masked.reshape(-1, V))
    assert torch.equal(draw(logits, top_k, top_p, torch.Generator().manual_seed(7)), codes)


def test_ties_at_the_kth_value_keep_every_tied_code_as_the_official_sampler():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 64, 256, generator=g).mul(2).round()  # integers: many ties at any k-th value
    assert _top_k_top_p(logits.reshape(-1, 256), 20, 0.9) is None  # the fast path declines ...
    for seed in range(3):  # ... and draw's full path is the official one
        _, codes = official(logits, 20, 0.9, torch.Generator().manual_seed(seed))
        assert torch.equal(draw(logits, 20, 0.9, torch.Generator().manual_seed(seed)), codes)
