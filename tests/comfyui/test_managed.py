"""Our models under ComfyUI's own model management (nodes/managed.py), in-process with ComfyUI's real
comfy.model_management: the loaders give ModelPatchers that ComfyUI counts at their weights' bytes, loads before a
node computes (with the job's memory) and unloads on request; the next run moves them back without reading the file;
loaders of one file share one base; an applied subject is a patch on a clone.

Without a GPU the load and offload devices are both the CPU, so these tests read ComfyUI's bookkeeping (what it holds
loaded, where it says each model is, what it was asked to free), not the weights' placement; benchmarks/gpu_memory.py
checks the placement on a GPU."""
from __future__ import annotations

import pytest
import torch

from test_nodes import SAMPLE, run, sample


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.node_classes


@pytest.fixture()
def mm(pack):
    import comfy.model_management as mm
    mm.unload_all_models()
    yield mm
    mm.unload_all_models()


def load(nodes, **names):
    return run(nodes["VARBooth_LoadAll"], **{**dict(model_name="toy_infinity.safetensors",
                                                    vae_name="toy_bitvae.safetensors",
                                                    text_encoder_name="toy_t5/", dtype="auto"), **names})


def ours(mm, patcher):
    return [m for m in mm.current_loaded_models if m.model is not None and m.model.is_clone(patcher)]


def weight_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())


def test_comfyui_counts_our_models_at_their_weights_bytes_and_unloads_them(nodes, mm, monkeypatch):
    import var_core
    model, vae, enc = load(nodes)
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    (loaded_enc,) = ours(mm, enc)
    assert loaded_enc.model_memory() == weight_bytes(enc.obj.model)
    first = sample(nodes, model, vae, cond)
    (loaded_model,), (loaded_vae,) = ours(mm, model), ours(mm, vae)
    assert loaded_model.model_memory() == weight_bytes(model.obj) > 0
    assert loaded_vae.model_memory() == weight_bytes(vae.obj) > 0
    assert model.model.model_loaded_weight_memory == weight_bytes(model.obj)  # loaded whole

    reads = []
    for name in ("load_transformer", "load_vae", "load_text_encoder"):
        monkeypatch.setattr(var_core, name, lambda *a, _f=getattr(var_core, name), **k: reads.append(a) or _f(*a, **k))
    mm.unload_all_models()  # ComfyUI's "Unload models"
    assert not ours(mm, model) and not ours(mm, vae) and not ours(mm, enc)
    for p in (model, vae, enc):
        assert p.model.model_loaded_weight_memory == 0 and p.model.device == p.offload_device
    assert torch.equal(sample(nodes, model, vae, cond), first)  # moved back, not read again
    assert len(ours(mm, model)) == 1 and reads == []
    again, _, _ = load(nodes)  # a second loader of the same file: the same base
    assert again.model is model.model and again is not model and reads == []


def test_an_applied_subject_is_a_patch_on_a_clone_of_the_shared_base(nodes, mm):
    from var_core.tuning import SubjectDelta
    model, vae, enc = load(nodes)
    before = {k: v.data_ptr() for k, v in model.obj.state_dict().items()}
    subject = SubjectDelta.create(model.obj, "lora", rank=2, token="<cup3>", class_word="cup")
    for t in subject.tensors.values():
        torch.nn.init.normal_(t, std=0.5)
    (tuned,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=1.0)
    assert tuned is not model and tuned.model is model.model and tuned.is_clone(model)
    assert model.subjects == [] and tuned.subjects == [(subject, 1.0)]
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of <cup3> cup", model=tuned)
    assert not torch.equal(sample(nodes, tuned, vae, cond), sample(nodes, model, vae, cond))
    assert len(ours(mm, model)) == 1  # the clone and the base are one loaded model
    assert {k: v.data_ptr() for k, v in model.obj.state_dict().items()} == before  # never copied, never changed


def test_each_node_asks_comfyui_for_its_jobs_memory(nodes, mm, monkeypatch):
    from var_core import scale_schedule
    from var_core.memory import sampling_bytes
    model, vae, enc = load(nodes)
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog\na photo of a cat")
    asked = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kw: asked.append((list(models), kw)) or
                        real(models, **kw))
    sample(nodes, model, vae, cond, batch_size=3)
    ((models, kw),) = asked
    schedule = scale_schedule(0.75, "0.06M")
    assert models == [model, vae] and not kw["force_full_load"]
    assert kw["memory_required"] == sampling_bytes(model.obj, schedule, 6, guided=True)
    assert sampling_bytes(model.obj, schedule, 6, guided=True) == sampling_bytes(model.obj, schedule, 12, False)
    asked.clear()
    photos = torch.rand(2, 64, 64, 3)
    run(nodes["VARBooth_TrainSubject"], model=model, vae=vae, text_encoder=enc, images=photos, class_word="dog",
        token="<placeholder>", steps=1, learning_rate=0.0, method="LoRA", layers="ca+ffn (ARBooth)", rank=2,
        placeholder_vectors=1, scale_weighting="uniform", prior_weight=0.0, resolution="0.06M (256²)",
        training_seed=0, preview_every=0)
    ((models, kw),) = asked
    assert models == [model, vae, enc] and kw["force_full_load"]  # training: fully loaded, as ComfyUI's trainer
    from var_core.tuning.memory import training_activation_bytes
    assert kw["memory_required"] == training_activation_bytes(model.obj.config, scale_schedule(1.0, "0.06M"), 2,
                                                              model.obj.compute_dtype, True)
    assert not ours(mm, enc) and ours(mm, model)  # T5 is offloaded once it has read the captions


def test_sampling_settings_unchanged_by_management(nodes, mm):
    """The managed sampler draws what the library draws with the same objects."""
    import var_core
    model, vae, enc = load(nodes)
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    image = sample(nodes, model, vae, cond)
    scales = var_core.scale_schedule(0.75, "0.06M")
    direct = var_core.sample(model.obj, vae.obj, cond["text"].readings[()], scales, cfg=SAMPLE["cfg"],
                             tau=SAMPLE["tau"], top_k=SAMPLE["top_k"], top_p=SAMPLE["top_p"], seed=SAMPLE["seed"])
    assert torch.equal(image, ((direct.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1))


def test_a_transformer_given_less_memory_than_it_needs_streams_its_blocks_and_draws_the_same(nodes, mm):
    """What ComfyUI does when the card is full, or with --lowvram / --novram: it offers the model part of its size
    (ModelPatcher.load's lowvram_model_memory); ours then streams its blocks."""
    model, vae, enc = load(nodes)
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    resident = sample(nodes, model, vae, cond)
    mm.unload_all_models()
    size = model.model_size()
    offered = size - weight_bytes(model.obj.blocks[0])  # one block short of the whole model
    model.load(model.load_device, lowvram_model_memory=offered)
    streaming = model.obj._streaming
    assert streaming is not None and model.model.model_lowvram
    streamed = [weight_bytes(b) for b in streaming.blocks]
    assert 0 < len(streaming.blocks) < len(model.obj.blocks)  # the blocks that fit stay resident
    assert model.loaded_size() == size - sum(streamed) + 2 * max(streamed) <= offered
    import var_core
    image = var_core.sample(model.obj, vae.obj, cond["text"].readings[()], var_core.scale_schedule(0.75, "0.06M"),
                            cfg=SAMPLE["cfg"], tau=SAMPLE["tau"], top_k=SAMPLE["top_k"], top_p=SAMPLE["top_p"],
                            seed=SAMPLE["seed"])
    assert torch.equal(((image.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1), resident)
    assert streaming.copies == len(streaming.blocks) * 7
    model.load(model.load_device, full_load=True)  # room again: resident, streaming stopped
    assert model.obj._streaming is None and not model.model.model_lowvram


def test_training_loads_fully_when_it_fits_and_streams_when_it_does_not(nodes, mm, monkeypatch):
    """As ComfyUI's trainer, every other model out and ours fully loaded; when the free memory cannot hold them with
    the step's memory, ComfyUI is let offer less and the transformer streams."""
    model, vae, enc = load(nodes)
    asked = []
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kw: asked.append(kw))
    managed = __import__(type(model).__module__, fromlist=["use"])
    managed.use(model, vae, train=True, memory=1000)
    size = model.model_size() + vae.model_size()
    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: size + 1000 + mm.minimum_inference_memory() - 1)
    managed.use(model, vae, train=True, memory=1000)
    assert [(kw["force_full_load"], kw["memory_required"]) for kw in asked] == [(True, 1000), (False, 1000)]


def test_an_fp8_model_loads_samples_and_tunes_in_the_graph(nodes, mm):
    full, vae, enc = load(nodes)
    model, _, _ = load(nodes, dtype="fp8")
    assert model.model is not full.model  # another dtype, another base
    assert model.obj.blocks[0].ffn.fc1.weight.dtype == torch.float8_e4m3fn
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    image = sample(nodes, model, vae, cond)
    assert image.shape == (1, 240, 320, 3) and image.std() > 0.01
    (loaded,) = ours(mm, model)
    assert loaded.model_memory() == weight_bytes(model.obj) < weight_bytes(full.obj)
    subject, _ = run(nodes["VARBooth_TrainSubject"], model=model, vae=vae, text_encoder=enc,
                     images=torch.rand(2, 64, 64, 3), class_word="dog", token="<placeholder>", steps=2,
                     learning_rate=0.0, method="LoRA", layers="ca+ffn (ARBooth)", rank=2, placeholder_vectors=1,
                     scale_weighting="uniform", prior_weight=0.0, resolution="0.06M (256²)", training_seed=0,
                     preview_every=0)
    assert subject.metadata["training"]["steps_done"] == 2
    assert all(torch.isfinite(t).all() for t in subject.tensors.values())
