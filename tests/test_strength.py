"""A subject's strength on the text side: the placeholder read as the learned vectors (strength 1), as the class
word (strength 0), or a blend of both readings, per scale where the schedule says so."""
import pytest
import torch

from var_core import sample, scale_schedule
from var_core.infinity.model import TextMix
from var_core.tuning import SubjectDelta, apply_subjects, encode_prompts
from var_core.tuning.apply import class_reading

SCHEDULE = scale_schedule(1.0, "0.06M")
PROMPT = "a photo of <sks> dog on the beach"
CLASS_PROMPT = "a photo of dog on the beach"


def subject(model, mode="none", token="<sks>", class_word="dog", seed=0):
    delta = SubjectDelta.create(model, mode, placeholder_vectors=3, token=token, class_word=class_word)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in delta.tensors.values():
            t.copy_(torch.randn(t.shape, generator=g) * (1.0 if t.dim() == 2 and t.shape[0] == 3 else 0.05))
    return delta


def draw(model, enc, prompt, **kw):
    text = encode_prompts(enc, [prompt] * 2, model)
    return sample(model, None, text, SCHEDULE, seed=1, return_logits=True, **kw)[1]


@pytest.mark.parametrize("text,expected", [
    ("a photo of <sks> dog on the beach", "a photo of dog on the beach"),
    ("a photo of <sks>", "a photo of dog"),
    ("<sks> dog", "dog"),
    ("a <sks> doggy", "a dog doggy"),  # "dog" must follow as a word to be the class word
    ("no token here", "no token here"),
])
def test_class_reading_names_the_class_once(text, expected):
    assert class_reading(text, "<sks>", "dog") == expected


def test_a_subject_without_vectors_reads_its_token_as_written_or_as_the_class_word(toy):
    """A LoRA subject trained without placeholder vectors: at strength 0 the base draws the class prompt exactly (the
    token was left in the prompt as written before), at 1 the token reads as it was trained, literally."""
    model, _, enc = toy
    delta = SubjectDelta.create(model, "lora", rank=2, placeholder_vectors=0, token="<sks>", class_word="dog")
    with torch.no_grad():
        for t in delta.tensors.values():
            t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) * 0.05)
    zero = draw(apply_subjects(model, [(delta, 0.0)]), enc, PROMPT)
    assert all(torch.equal(a, b) for a, b in zip(zero, draw(model, enc, CLASS_PROMPT)))
    full_view = apply_subjects(model, [(delta, 1.0)])
    literal = [t for t in encode_prompts(enc, [PROMPT] * 2)]  # the token as written, no subject
    full = sample(full_view, None, literal, SCHEDULE, seed=1, return_logits=True)[1]
    assert all(torch.equal(a, b) for a, b in zip(draw(full_view, enc, PROMPT), full))


@pytest.mark.parametrize("mode", ["none", "lora", "full"])
def test_strength_zero_is_the_base_model_with_the_class_word(toy, mode):
    model, _, enc = toy
    view = apply_subjects(model, [(subject(model, mode), 0.0)])
    with_token = draw(view, enc, PROMPT)
    base = draw(model, enc, CLASS_PROMPT)
    for a, b in zip(with_token, base):
        assert torch.equal(a, b)


def test_strength_moves_a_vectors_only_subject(toy):
    """A vectors-only subject (every ARBooth checkpoint) changed nothing at 0, 0.5 and 1 before."""
    model, _, enc = toy
    delta = subject(model, "none")
    logits = {s: torch.cat(draw(apply_subjects(model, [(delta, s)]), enc, PROMPT), 1) for s in (0.0, 0.5, 1.0)}
    d_half, d_full = (logits[0.5] - logits[0.0]).abs().mean(), (logits[1.0] - logits[0.0]).abs().mean()
    assert d_half > 1e-4 and d_full > d_half  # a blend: part of the way
    assert not torch.equal(logits[0.5], logits[1.0])


def test_full_strength_reads_the_vectors_as_a_plain_tensor(toy):
    model, _, enc = toy
    delta = subject(model, "none")
    (mixed,) = encode_prompts(enc, [PROMPT], apply_subjects(model, [(delta, 1.0)]))
    (direct,) = encode_prompts(enc, [PROMPT], [delta])
    assert isinstance(mixed, torch.Tensor) and torch.equal(mixed, direct)
    (half,) = encode_prompts(enc, [PROMPT], apply_subjects(model, [(delta, 0.5)]))
    assert isinstance(half, TextMix) and half.weights == ((0.5,), (0.5,))


def test_per_scale_strength_reaches_the_text(toy):
    """Full strength on the first two scales, none after: scale by scale, the logits are those of strength 1, then
    those of the class prompt where strength 0 starts (its earlier scales' cache aside, the text is the class's)."""
    model, _, enc = toy
    delta = subject(model, "none")
    K = len(SCHEDULE)
    stepped = draw(apply_subjects(model, [(delta, [1.0, 1.0] + [0.0] * (K - 2))]), enc, PROMPT)
    full = draw(apply_subjects(model, [(delta, 1.0)]), enc, PROMPT)
    base = draw(model, enc, CLASS_PROMPT)
    assert torch.equal(stepped[0], full[0]) and torch.equal(stepped[1], full[1])
    assert not torch.equal(stepped[0], base[0])
    assert not torch.equal(stepped[2], full[2])


def test_two_subjects_each_at_their_own_strength(toy):
    model, _, enc = toy
    a = subject(model, "none", "<a1>", "dog", seed=1)
    b = subject(model, "none", "<b1>", "cat", seed=2)
    prompt = "<a1> dog and <b1> cat"
    (text,) = encode_prompts(enc, [prompt], apply_subjects(model, [(a, 1.0), (b, 0.0)]))
    (only_a,) = encode_prompts(enc, ["<a1> dog and cat"], [a])
    assert torch.equal(text, only_a)
    (mix,) = encode_prompts(enc, [prompt], apply_subjects(model, [(a, 0.25), (b, 0.5)]))
    assert len(mix.readings) == 4 and sorted(w for (w,) in mix.weights) == [0.125, 0.125, 0.375, 0.375]
