"""Training-side building blocks: teacher-forced inputs/labels with Bitwise Self-Correction, bitwise loss."""
import torch
import torch.nn.functional as F

from var_core import bit_accuracy, bitwise_cross_entropy, teacher_forcing_batch
from var_core.schedules import scale_schedule
from var_core.infinity.loss import bitwise_token_loss

SCHEDULE = scale_schedule(1.0, "0.06M")


def test_images_to_inputs_and_labels_match_reference(tiny_vae, case):
    inputs, labels = teacher_forcing_batch(tiny_vae, case["images"], SCHEDULE)
    assert torch.equal(labels, case["gt_bits"])
    assert (inputs - case["x_wo_prefix"]).abs().max() <= 1e-4  # from images: includes the encoder's rounding


def test_self_correction_flips_change_inputs_not_first_labels(tiny_vae, case):
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a_in, a_lab = teacher_forcing_batch(tiny_vae, case["images"], SCHEDULE, flip_prob=0.3, generator=g())
    b_in, b_lab = teacher_forcing_batch(tiny_vae, case["images"], SCHEDULE, flip_prob=0.3, generator=g())
    assert torch.equal(a_in, b_in) and torch.equal(a_lab, b_lab)  # reproducible with a seeded generator
    assert torch.equal(a_lab[:, :1], case["gt_bits"][:, :1])  # scale 0's label sees no earlier flips
    assert not torch.allclose(a_in, case["x_wo_prefix"], atol=1e-3)  # flipped codes reach later inputs


def test_bitwise_loss_is_the_mean_two_way_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 2, (2, 5, 4), generator=g, dtype=torch.uint8)
    expected = F.cross_entropy(logits.view(-1, 2), labels.long().view(-1))
    loss = bitwise_cross_entropy(logits, labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0])
    weighted = bitwise_cross_entropy(logits, labels, weights)
    assert torch.allclose(weighted, (bitwise_token_loss(logits, labels) * weights).mean())
    perfect = torch.stack([(1 - labels.float()) * 10, labels.float() * 10], -1).flatten(-2)
    assert bit_accuracy(perfect, labels) == 1.0 and bitwise_cross_entropy(perfect, labels) < 1e-3


def test_teacher_forced_forward_learns(tiny_model, case, case_text, case_bits):
    """A few gradient steps on the FFNs lower the loss on the reference bits (the graph is differentiable)."""
    model = tiny_model
    params = [p for n, p in model.named_parameters() if ".ffn." in n]
    saved = [p.detach().clone() for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=1e-3)
        losses = []
        for _ in range(5):
            loss = bitwise_cross_entropy(model.teacher_forced_logits(case_text, case_bits, SCHEDULE), case["gt_bits"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
                p.requires_grad_(False)
