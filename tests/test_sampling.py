"""The KV-cached sampler: reference parity of the CFG-mixed logits, cache == full recomputation, controls."""
import pytest
import torch

from var_core import sample
from var_core.infinity import INFINITY
from var_core.schedules import scale_schedule
from toyworld.builders import random_transformer
from var_core.infinity.model import InfinityConfig

SCHEDULE = scale_schedule(1.0, "0.06M")


def test_cfg_logits_match_reference(tiny_model, case, case_text, case_bits):
    bits, logits = sample(tiny_model, None, case_text, SCHEDULE, cfg=3.0, tau=0.5, forced_codes=case_bits,
                          return_logits=True)
    assert len(logits) == 7
    for k, got in enumerate(logits):
        assert got.shape == case[f"ar_logits_s{k}"].shape
        assert (got - case[f"ar_logits_s{k}"]).abs().max() <= 5e-4, k
    _, plain = sample(tiny_model, None, case_text, SCHEDULE, cfg=1.0, tau=1.0, forced_codes=case_bits,
                      return_logits=True)
    for k, got in enumerate(plain):
        assert (got - case[f"ar_plain_logits_s{k}"]).abs().max() <= 1e-4, k
    for got, want in zip(bits, case_bits):
        assert torch.equal(got, want)


def test_sampled_image_matches_reference(tiny_model, tiny_vae, case, case_text, case_bits):
    images = sample(tiny_model, tiny_vae, case_text, SCHEDULE, cfg=3.0, tau=0.5, forced_codes=case_bits)
    assert images.shape == (2, 3, 256, 256)
    assert (images - case["ar_image"]).abs().max() <= 2e-4
    as_uint8 = ((images + 1) / 2 * 255).to(torch.uint8).permute(0, 2, 3, 1).flip(-1)  # the reference's BGR
    assert (as_uint8.int() - case["ar_image_uint8_bgr"].int()).abs().max() <= 1


@pytest.mark.parametrize("aspect", [1.333, 0.5])
def test_kv_cache_equals_full_recomputation_on_other_architectures(aspect):
    cfg = InfinityConfig(depth=3, embed_dim=96, num_heads=3, block_chunks=3, ffn_hidden=192, bits=8,
                         text_channels=64, text_maxlen=16, text_pool_heads=2)
    model = random_transformer(cfg, seed=1)
    schedule = scale_schedule(aspect, "0.06M")
    text = [torch.randn(5, 64), torch.randn(9, 64)]
    bits_a, logits_a = sample(model, None, text, schedule, cfg=2.5, tau=0.7, seed=0, return_logits=True)
    bits_b, logits_b = sample(model, None, text, schedule, cfg=2.5, tau=0.7, forced_codes=bits_a,
                              return_logits=True, use_cache=False)
    for a, b in zip(logits_a, logits_b):
        assert (a - b).abs().max() <= 1e-4
    # And the teacher-forced forward (full block-causal pass) gives the same cond logits as sampling with cfg=1.
    _, plain = sample(model, None, text, schedule, cfg=1.0, tau=1.0, forced_codes=bits_a, return_logits=True)
    with torch.no_grad():
        tf = model.teacher_forced_logits(text, bits_a, schedule)
    assert (torch.cat(plain, 1) - tf).abs().max() <= 1e-4


def test_same_seed_same_bits_other_seed_other_bits(tiny_model, case_text):
    a = sample(tiny_model, None, case_text, SCHEDULE, seed=7)
    b = sample(tiny_model, None, case_text, SCHEDULE, seed=7)
    c = sample(tiny_model, None, case_text, SCHEDULE, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_per_scale_lists_equal_constant_scalars(tiny_model, case_text):
    a, la = sample(tiny_model, None, case_text, SCHEDULE, cfg=3.0, tau=0.5, seed=1, return_logits=True)
    b, lb = sample(tiny_model, None, case_text, SCHEDULE, cfg=[3.0] * 7, tau=[0.5] * 7, seed=1, return_logits=True)
    assert all(torch.equal(x, y) for x, y in zip(la, lb))
    _, lc = sample(tiny_model, None, case_text, SCHEDULE, cfg=[3.0] * 6 + [1.0], tau=0.5, seed=1, return_logits=True)
    assert torch.equal(la[0], lc[0]) and not torch.allclose(la[6], lc[6])
    with pytest.raises(ValueError, match="7 scales"):
        sample(tiny_model, None, case_text, SCHEDULE, cfg=[3.0] * 5)


def test_default_negative_is_the_learned_null_text(tiny_model, case_text):
    a = sample(tiny_model, None, case_text, SCHEDULE, seed=2)
    b = sample(tiny_model, None, case_text, SCHEDULE, seed=2, negative=tiny_model.null_text(case_text))
    c = sample(tiny_model, None, case_text, SCHEDULE, seed=2, negative=[torch.randn(3, 256)] * 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_forced_scales_are_kept_and_later_scales_sampled(tiny_model, case_text, case_bits):
    bits = sample(tiny_model, None, case_text, SCHEDULE, seed=3, forced_codes=case_bits[:3])
    assert all(torch.equal(bits[k], case_bits[k]) for k in range(3))
    with pytest.raises(ValueError, match="Forced codes of scale 1"):
        sample(tiny_model, None, case_text, SCHEDULE, forced_codes=[case_bits[0], case_bits[0]])


def test_sample_bits_top_k_and_top_p():
    logits = torch.tensor([[[0.0, 3.0, 0.0, 0.1, 5.0, 0.0]]])  # bit0: p1=0.95, bit1: p1~0.52, bit2: p1~0.007
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([INFINITY.draw(logits, 0, 0.97, g) for _ in range(400)]).float().mean(0)[0, 0]
    assert draws[0] > 0.9 and 0.4 < draws[1] < 0.65 and draws[2] == 0  # p_min 0.007 <= 0.03: deterministic
    no_top_p = torch.stack([INFINITY.draw(logits, 0, 1.0, g) for _ in range(400)]).float().mean(0)[0, 0]
    assert 0.0 < no_top_p[0] < 1.0
    greedy = INFINITY.draw(logits, 1, 1.0, g)[0, 0].tolist()
    assert greedy == [1, 1, 0]


def test_top_p_below_one_half_is_greedy_as_in_the_reference():
    # bit0: p1 = 0.6, bit1: p1 = 0.4, bit2: p1 = 0.69. The reference keeps the most likely outcomes whose mass reaches
    # top_p: with top_p = 0.3 the more likely bit alone suffices (0.6 >= 0.3), so every draw is the more likely bit.
    p1 = torch.tensor([0.6, 0.4, 0.69])
    logits = torch.stack([torch.zeros(3), torch.log(p1 / (1 - p1))], -1).flatten()[None, None]
    g = torch.Generator().manual_seed(0)
    for top_p in (0.3, 0.5):
        draws = torch.stack([INFINITY.draw(logits, 0, top_p, g) for _ in range(200)])[:, 0, 0]
        assert draws[:, 0].eq(1).all() and draws[:, 1].eq(0).all() and draws[:, 2].eq(1).all(), top_p
    # top_p = 0 is the reference's default and means no filter (not greedy): the same draws as top_p = 1
    unfiltered = []
    for top_p in (0.0, 1.0):
        g1 = torch.Generator().manual_seed(1)
        unfiltered.append(torch.stack([INFINITY.draw(logits, 0, top_p, g1) for _ in range(200)])[:, 0, 0])
    assert torch.equal(*unfiltered) and 0.3 < unfiltered[0][:, 1].float().mean() < 0.5
    # top_p = 0.7: an outcome is dropped when its probability is <= 0.3; 0.4 and 0.31 are not, so both stay random
    mixed = torch.stack([INFINITY.draw(logits, 0, 0.7, g) for _ in range(400)])[:, 0, 0].float().mean(0)
    assert 0.5 < mixed[0] < 0.7 and 0.3 < mixed[1] < 0.5 and 0.6 < mixed[2] < 0.78


def test_bad_inputs(tiny_model, case_text):
    with pytest.raises(ValueError, match="No text"):
        sample(tiny_model, None, [], SCHEDULE)
    with pytest.raises(ValueError, match="width"):
        sample(tiny_model, None, [torch.randn(4, 100)], SCHEDULE)
    with pytest.raises(ValueError, match="tau"):
        sample(tiny_model, None, case_text, SCHEDULE, tau=0)


def test_kv_cache_is_freed_before_the_vae_decodes(tiny_model, tiny_vae, case_text, monkeypatch):
    """The decode's activations do not come on top of the KV cache (benchmarks/memory.py: sampling's peak)."""
    import weakref
    import var_core.sampling as sampling

    caches, alive = [], []

    class Recorded(sampling.KVCache):
        def __init__(self, depth):
            super().__init__(depth)
            caches.append(weakref.ref(self))

    decode = tiny_vae.decode_latent

    def checked(codes):
        alive.append([c() is not None for c in caches])
        return decode(codes)

    monkeypatch.setattr(sampling, "KVCache", Recorded)
    monkeypatch.setattr(tiny_vae, "decode_latent", checked)
    images = sample(tiny_model, tiny_vae, case_text, SCHEDULE, cfg=3.0, seed=0)
    assert images.shape == (2, 3, 256, 256)
    assert alive == [[False]]


def test_kv_cache_is_stored_in_the_blocks_compute_dtype(monkeypatch):
    """bf16 blocks (load_transformer's default on CUDA) keep keys and values in bf16: half the cache of fp32."""
    import var_core.sampling as sampling

    caches = []

    class Kept(sampling.KVCache):
        def __init__(self, depth):
            super().__init__(depth)
            caches.append(self)

    monkeypatch.setattr(sampling, "KVCache", Kept)
    model = random_transformer().cast_blocks(torch.bfloat16)
    sample(model, None, [torch.randn(5, model.config.text_channels)], SCHEDULE, cfg=3.0, seed=0)
    L = sum(h * w for h, w in SCHEDULE)
    assert len(caches) == 1 and len(caches[0].k) == model.config.depth
    assert all(t.dtype == torch.bfloat16 and t.shape[0] == 2 and t.shape[2] == L for t in caches[0].k + caches[0].v)


def samples_with(model, case_text, **settings) -> bool:
    """Whether sampling with the settings left to the model draws what sampling with ``settings`` draws."""
    sched, text = scale_schedule(1.0, "0.06M")[:4], case_text[:1]
    default = sample(model, None, text, sched, seed=5)
    return all(torch.equal(a, b) for a, b in zip(default, sample(model, None, text, sched, seed=5, **settings)))


def test_sampling_defaults_follow_the_model(tiny_model, case_text, tmp_path):
    """cfg / tau left out: a file's own cfg / tau metadata, else the release's (2B: 4 / 0.5; a patchified model,
    Infinity-8B: 3 / 1.0); the defaults are really used (equal to passing them, unequal to other values)."""
    from safetensors.torch import save_file
    from toyworld.builders import TOY_8B_TRANSFORMER
    from var_core import load_transformer
    from var_core.checkpoint import CheckpointError
    from var_core import defaults
    assert defaults.sampling(tiny_model) == {"cfg": 4.0, "tau": 0.5, "top_k": 0, "top_p": 0.97, "pn": "1M"}
    assert defaults.sampling(random_transformer(TOY_8B_TRANSFORMER)) == {"cfg": 3.0, "tau": 1.0, "top_k": 0,
                                                                         "top_p": 0.97, "pn": "1M"}
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(sd, tmp_path / "own.safetensors", metadata={"cfg": "6", "tau": "0.8"})
    own = load_transformer(tmp_path / "own.safetensors")
    assert defaults.sampling(own, tau=0.7) == {"cfg": 6.0, "tau": 0.7, "top_k": 0, "top_p": 0.97, "pn": "1M"}
    assert samples_with(own, case_text, cfg=6.0, tau=0.8) and not samples_with(own, case_text, cfg=4.0, tau=0.5)
    save_file(sd, tmp_path / "bad.safetensors", metadata={"cfg": "strong"})
    with pytest.raises(CheckpointError, match="bad.safetensors.*cfg='strong'"):
        load_transformer(tmp_path / "bad.safetensors")


def test_a_subject_applied_samples_with_the_files_with_subject_settings(tiny_model, case_text, tmp_path):
    """A file's with_subject metadata replaces its sampling settings while a subject acts (strength above 0 at some
    scale); strength 0 is the base, settings included; the user's values still win; the embedded model states its own
    (a higher temperature with a subject: docs/benchmarks.md) and the help texts say it."""
    from safetensors.torch import save_file
    from var_core import defaults, embedded, load_transformer
    from var_core.checkpoint import CheckpointError
    from var_core.tuning import SubjectDelta, apply_subjects
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(sd, tmp_path / "own.safetensors", metadata={"tau": "0.5", "with_subject": '{"cfg": 2, "tau": 1.5}'})
    own = load_transformer(tmp_path / "own.safetensors")
    delta = SubjectDelta.create(own, "lora", rank=2, placeholder_vectors=0, token="<sks>", class_word="dog")
    view = apply_subjects(own, [(delta, 1.0)])
    assert (defaults.sampling(own)["cfg"], defaults.sampling(own)["tau"]) == (4.0, 0.5)
    assert (defaults.sampling(view)["cfg"], defaults.sampling(view)["tau"]) == (2.0, 1.5)
    assert defaults.sampling(apply_subjects(own, [(delta, 0.0)]))["tau"] == 0.5
    assert defaults.sampling(apply_subjects(own, [(delta, [0.0] * 3 + [1.0])]))["tau"] == 1.5
    assert defaults.sampling(view, tau=0.7)["tau"] == 0.7
    assert defaults.sampling(tiny_model)["tau"] == 0.5  # a file that states nothing: the release's, subject or not
    assert samples_with(view, case_text, cfg=2.0, tau=1.5) and not samples_with(view, case_text, cfg=4.0, tau=0.5)
    save_file(sd, tmp_path / "bad.safetensors", metadata={"with_subject": '{"steps": 3}'})
    with pytest.raises(CheckpointError, match="bad.safetensors.*with_subject"):
        load_transformer(tmp_path / "bad.safetensors")
    bundle = embedded.load_models()[0]
    stated = defaults.embedded_defaults()["with_subject"]
    example = next(info for info in embedded.example_subjects().values() if info["subject"] is not None)
    from var_core.tuning import load_subject
    applied = apply_subjects(bundle, [(load_subject(example["subject"], bundle), 1.0)])
    assert stated and all(defaults.sampling(applied)[k] == v != defaults.sampling(bundle)[k] for k, v in stated.items())
    assert f"({stated['tau']:g} with a subject applied)" in defaults.describe("sampling", "tau")


def test_one_seed_draws_the_whole_batch(tiny_model, case_text):
    """The documented property: the same seed, prompts and batch redraw the same images, and a row depends on the
    batch it is in (one generator draws every row, scale by scale)."""
    batch = [case_text[0]] * 3
    first = sample(tiny_model, None, batch, SCHEDULE[:4], seed=9)
    assert all(torch.equal(a, b) for a, b in zip(first, sample(tiny_model, None, batch, SCHEDULE[:4], seed=9)))
    alone = sample(tiny_model, None, batch[:1], SCHEDULE[:4], seed=9)
    assert not all(torch.equal(a[:1], b) for a, b in zip(first, alone))
