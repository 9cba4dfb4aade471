"""The nodes called in-process (fast): each does what its schema says, and errors are clear."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.node_classes


@pytest.fixture(scope="module")
def loaded(nodes):
    out = nodes["VARBooth_LoadAll"].execute(model_name="toy_infinity.safetensors",
                                            vae_name="toy_bitvae.safetensors", text_encoder_name="toy_t5/",
                                            dtype="auto")
    return out.args if hasattr(out, "args") else out.result


def run(node, **inputs):
    out = node.execute(**inputs)
    return out.args if hasattr(out, "args") else out.result


AUTO = "auto (the model's own)"
SAMPLE = dict(seed=3, aspect_ratio="0.75 (h/w) 1152×864", resolution="0.06M (256²)", cfg=4.0, tau=0.5, top_k=0,
              top_p=0.97, batch_size=1)


def sample(nodes, model, vae, cond, **kw):
    args = dict(model=model, vae=vae, positive=cond, **SAMPLE)
    args.update(kw)
    return run(nodes["VARBooth_Sampler"], **args)[0]


def test_loaders_give_managed_var_core_objects_outside_inference_mode(loaded):
    import comfy.model_patcher
    assert all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in loaded)
    model, vae, enc = (p.obj for p in loaded)
    assert model.config.bits == vae.d == 16 and enc.width == model.config.text_channels
    assert not any(p.is_inference() for p in model.parameters())  # trainable later in the graph


def test_text_to_image_and_variations(nodes, loaded):
    model, vae, enc = loaded
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog\na photo of a cat")
    images = sample(nodes, model, vae, cond, batch_size=2)
    assert images.shape == (4, 240, 320, 3) and 0 <= images.min() and images.max() <= 1
    again = sample(nodes, model, vae, cond, batch_size=2)
    assert torch.equal(images, again)
    variations = sample(nodes, model, vae, cond, seed=9, init_image=images[:1], keep_scales=7)
    assert variations.shape == (2, 240, 320, 3)
    # keeping every scale reproduces the source's bits: only the VAE round trip differs
    assert (variations[0] - images[0]).abs().mean() < (images[2] - images[0]).abs().mean()


def test_the_sampler_prunes_the_fine_scales_when_asked_and_says_so(nodes, loaded):
    model, vae, enc = loaded
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    exact = nodes["VARBooth_Sampler"].execute(**SAMPLE, model=model, vae=vae, positive=cond)
    fast = nodes["VARBooth_Sampler"].execute(**SAMPLE, model=model, vae=vae, positive=cond, prune_scales=2,
                                             prune_keep=0.25)
    assert "pruned" not in exact.ui.as_dict()["text"][0]
    assert "scales 5-6 pruned to 25% of their tokens" in fast.ui.as_dict()["text"][0]
    assert exact.args[0].shape == fast.args[0].shape and not torch.equal(exact.args[0], fast.args[0])


def test_the_sampler_warns_of_untrained_scales_and_of_a_schedule_switch_beyond_its_scales(nodes):
    embedded = nodes["VARBooth_LoadAll"].define_schema().inputs[0].options[0]  # its file states it samples 0.015M
    model, vae, enc = run(nodes["VARBooth_LoadAll"], model_name=embedded, vae_name=embedded,
                          text_encoder_name=embedded, dtype="auto")
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    big = nodes["VARBooth_Sampler"].execute(**SAMPLE, model=model, vae=vae, positive=cond)  # 0.06M
    assert ("warning: this model was trained at 0.015M (144x192 px here); scales 5-6 of this resolution were never "
            "trained") in big.ui.as_dict()["text"][0]
    schedule = nodes["VARBooth_ScaleSchedule"].execute(
        resolution=AUTO, aspect_ratio="1.0 (h/w) 1024×1024", switch=8, cfg_coarse=4.0, cfg_fine=1.0, tau_coarse=0.5,
        tau_fine=0.5, strength_coarse=1.0, strength_fine=1.0).args[0]
    own = nodes["VARBooth_Sampler"].execute(**{**SAMPLE, "resolution": AUTO}, model=model, vae=vae, positive=cond,
                                            schedule=schedule)
    text = own.ui.as_dict()["text"][0]
    assert "trained at" not in text
    assert "warning: the schedule's switch 8 is beyond these 5 scales: its fine cfg never apply" in text


def test_schedule_node_shows_scales_and_drives_the_sampler(nodes, loaded):
    model, vae, enc = loaded
    out = nodes["VARBooth_ScaleSchedule"].execute(resolution="0.06M (256²)", aspect_ratio="1.0 (h/w) 1024×1024",
                                                  switch=4, cfg_coarse=4.0, cfg_fine=1.0, tau_coarse=0.5,
                                                  tau_fine=0.5, strength_coarse=1.0, strength_fine=0.0,
                                                  strength_list="1,1,1,1,0,0,0")
    schedule = out.args[0] if hasattr(out, "args") else out.result[0]
    text = out.ui.as_dict()["text"][0]
    assert text.startswith("7 scales at 0.06M") and "cfg: 4, 4, 4, 4, 1, 1, 1" in text
    assert "training loss weights (ARBooth): 1, 1, 1, 1, 0.5, 0.5, 0.5" in text
    assert schedule["strength"] == [1, 1, 1, 1, 0, 0, 0]
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    a = sample(nodes, model, vae, cond, schedule=schedule)
    b = sample(nodes, model, vae, cond, cfg=1.0)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="commas"):
        nodes["VARBooth_ScaleSchedule"].execute(resolution="0.06M (256²)", aspect_ratio="1.0 (h/w) 1024×1024",
                                                switch=4, cfg_coarse=4.0, cfg_fine=1.0, tau_coarse=0.5,
                                                tau_fine=0.5, strength_coarse=1.0, strength_fine=0.0,
                                                cfg_list="4, high")


def test_train_apply_save_load(nodes, loaded, pack):
    model, vae, enc = loaded
    from toyworld.builders import subject_pictures
    photos = (subject_pictures(2, 200).permute(0, 2, 3, 1) + 1) / 2
    subject, curve = run(nodes["VARBooth_TrainSubject"], model=model, vae=vae, text_encoder=enc, images=photos,
                         class_word="dog", token="<placeholder>", steps=3, learning_rate=1e-2, method="LoRA",
                         layers="ca+ffn (ARBooth)", rank=2, placeholder_vectors=2,
                         scale_weighting="ARBooth: coarse 1.0, fine 0.5", prior_weight=0.5,
                         resolution="0.06M (256²)", training_seed=0, preview_every=0)
    assert subject.metadata["training"]["steps_done"] == 3 and curve.shape[-1] == 3 and curve.dim() == 4
    assert model.obj.patch is None and not model.obj.gradient_checkpointing
    (zero,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=0.0)
    (full,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=1.0)
    # the prompt read for the model with the subject applied; the Sampler blends it with its model's strength
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of <placeholder> dog", model=full)
    base = sample(nodes, model, vae, cond)
    assert not torch.equal(sample(nodes, full, vae, cond), base)
    (unread,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of <placeholder> dog")
    with pytest.raises(ValueError, match="connect Apply Subject's model to Infinity Text Encode's model input"):
        sample(nodes, full, vae, unread)  # encoded without the subject: refused, not drawn as plain text
    # strength 0: the base model drawing the prompt with the class word, exactly
    (plain,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of dog")
    assert torch.equal(sample(nodes, zero, vae, cond), sample(nodes, model, vae, plain))
    for _ in range(2):
        out = nodes["VARBooth_SaveSubject"].execute(subject=subject, filename_prefix="trained dog")
    assert "the prefix 'trained dog' became 'trained_dog'" in out.ui.as_dict()["text"][0]
    saved = sorted(p.name for p in (pack.base / "models/var_subjects").glob("trained_dog_*"))
    assert saved == ["trained_dog_00001.safetensors", "trained_dog_00002.safetensors"]
    (loaded_subject,) = run(nodes["VARBooth_LoadSubject"], subject_name="trained_dog_00002.safetensors")
    assert all(torch.equal(loaded_subject.tensors[k], v.detach()) for k, v in subject.tensors.items())


def test_training_errors_and_cancel(nodes, loaded, pack, caplog):
    model, vae, enc = loaded
    import comfy.model_management as mm
    args = dict(model=model, vae=vae, text_encoder=enc, class_word="cat", token="<placeholder>", steps=50,
                learning_rate=0.0, method="LoRA", layers="ca", rank=2, placeholder_vectors=2,
                scale_weighting="uniform", prior_weight=0.0, resolution="0.06M (256²)", training_seed=5,
                preview_every=0)
    with pytest.raises(ValueError, match="No training images"):
        nodes["VARBooth_TrainSubject"].execute(images=torch.zeros(0, 64, 64, 3), **args)
    with pytest.raises(ValueError, match="does not contain the placeholder"):
        nodes["VARBooth_TrainSubject"].execute(images=torch.rand(1, 64, 64, 3), captions="a cat", **args)
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["VARBooth_TrainSubject"].execute(images=torch.rand(1, 64, 64, 3), **args)
    assert not mm.processing_interrupted()
    from var_core.tuning import load_subject
    first = pack.base / "output/varbooth_checkpoints/cat_seed5_00001.safetensors"
    kept = load_subject(first)
    assert kept.metadata["training"]["steps_done"] == 0 and not model.obj.gradient_checkpointing
    assert str(first) in caplog.text  # the node says where the checkpoint is
    before = first.read_bytes()
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):  # the same class and seed again: a new file
        nodes["VARBooth_TrainSubject"].execute(images=torch.rand(1, 64, 64, 3), **args)
    assert first.read_bytes() == before and first.with_name("cat_seed5_00002.safetensors").is_file()


def test_training_resumes_a_listed_checkpoint_and_says_what_it_did(nodes, loaded, pack):
    model, vae, enc = loaded
    args = dict(model=model, vae=vae, text_encoder=enc, class_word="owl", token="<owl>", steps=2,
                learning_rate=0.0, method="LoRA", layers="ca", rank=2, placeholder_vectors=2,
                scale_weighting="uniform", prior_weight=0.5, resolution="0.06M (256²)", training_seed=3,
                preview_every=0)
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    out = nodes["VARBooth_TrainSubject"].execute(images=images, **args)
    text = "".join(out.ui["text"]) if isinstance(out.ui, dict) else str(out.ui.as_dict())
    assert "2/2 steps" in text and "owl_seed3_00001.safetensors" in text and "distill" in text
    # resume with other widget values: the checkpoint's own settings win, only steps is taken from the node
    args.update(steps=3, rank=8, token="<other>")
    again = nodes["VARBooth_TrainSubject"].execute(images=images, resume_from="owl_seed3_00001.safetensors", **args)
    text = "".join(again.ui["text"]) if isinstance(again.ui, dict) else str(again.ui.as_dict())
    assert "3/3 steps" in text and "resumed at step 2 with its optimizer state" in text
    subject = again.result[0]
    assert subject.rank == 2 and subject.token == "<owl>"


def test_a_failed_import_is_logged_and_breaks_nothing(pack, monkeypatch, caplog):
    import asyncio
    import importlib.util
    import sys
    for name in [m for m in sys.modules if m == "var_core" or m.startswith("var_core.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "var_core", None)  # as if the library could not be imported
    spec = importlib.util.spec_from_file_location("varbooth_broken", pack.__file__,
                                                  submodule_search_locations=list(pack.__path__))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    extension = asyncio.run(module.comfy_entrypoint())
    assert asyncio.run(extension.get_node_list()) == []
    assert "[VARBooth] the node pack could not be loaded" in caplog.text and "requirements.txt" in caplog.text


def test_the_sampler_says_what_it_did_and_warns_about_tokens(nodes, loaded, pack):
    model, vae, enc = loaded
    from var_core.tuning import SubjectDelta
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of <dog9> dog")
    out = nodes["VARBooth_Sampler"].execute(model=model, vae=vae, positive=cond, seed=1,
                                            aspect_ratio="1.0 (h/w) 1024×1024", resolution="0.06M (256²)", cfg=4.0,
                                            tau=0.5, top_k=0, top_p=0.97, batch_size=1)
    text = "".join(out.ui["text"]) if isinstance(out.ui, dict) else str(out.ui.as_dict())
    assert "7 scales, 256x256 px, cfg 4, tau 0.5" in text and "<dog9> is in the prompt but no applied subject" in text
    subject = SubjectDelta.create(model.obj, "lora", rank=2, token="<cat7>", class_word="cat")
    (tuned,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=1.0)
    out = nodes["VARBooth_Sampler"].execute(model=tuned, vae=vae, positive=cond, seed=1,
                                            aspect_ratio="1.0 (h/w) 1024×1024", resolution="0.06M (256²)", cfg=4.0,
                                            tau=0.5, top_k=0, top_p=0.97, batch_size=1)
    text = "".join(out.ui["text"]) if isinstance(out.ui, dict) else str(out.ui.as_dict())
    assert "the applied subject <cat7> is not named in any prompt" in text
    with pytest.raises(ValueError, match="from 0 .* to 7"):
        sample(nodes, model, vae, cond, init_image=torch.rand(1, 64, 64, 3), keep_scales=9)


def test_schedule_lists_obey_the_widget_ranges(nodes):
    args = dict(resolution="0.06M (256²)", aspect_ratio="1.0 (h/w) 1024×1024", switch=4, cfg_coarse=4.0,
                cfg_fine=4.0, tau_coarse=0.5, tau_fine=0.5, strength_coarse=1.0, strength_fine=1.0)
    with pytest.raises(ValueError, match="between 0 and 30"):
        nodes["VARBooth_ScaleSchedule"].execute(cfg_list="4,4,-50,4,4,4,4", **args)
    with pytest.raises(ValueError, match="has 3 values but this resolution has 7"):  # made for another resolution
        nodes["VARBooth_ScaleSchedule"].execute(tau_list="0.5,0.5,0.5", **args)


def test_the_embedded_model_and_its_example_subjects_need_no_files(nodes):
    from toyworld import world
    embedded = nodes["VARBooth_LoadAll"].define_schema().inputs[0].options[0]
    model, vae, enc = run(nodes["VARBooth_LoadAll"], model_name=embedded, vae_name=embedded,
                          text_encoder_name=embedded, dtype="auto")
    m, v = model.obj, vae.obj
    assert m.config.bits == v.d * v.token_patch ** 2 and enc.obj.width == m.config.text_channels
    out = nodes["VARBooth_ExampleSubject"].execute(subject="teacup")
    photos, word = out.args if hasattr(out, "args") else out.result
    assert word == "cup" and photos.shape == (4, 128, 128, 3) and 0 <= photos.min() and photos.max() <= 1
    assert out.ui.as_dict()["text"][0] == "teacup: 4 photos of a cup"
    (subject,) = run(nodes["VARBooth_LoadSubject"], subject_name="embedded: teacup")
    assert subject.token == "<teacup>"
    with pytest.raises(ValueError, match="guide_dog"):
        nodes["VARBooth_ExampleSubject"].execute(subject="unicorn")
    assert world.find_member("teacup").held_out
    # the sampler's auto tau with the subject applied: the embedded model's with-subject value (strength 0: its own)
    from var_core import defaults
    (tuned,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=1.0)
    (off,) = run(nodes["VARBooth_ApplySubject"], model=model, subject=subject, strength=0.0)
    own = defaults.embedded_defaults()["sampling"]
    for which, settings in ((tuned, {**own, **defaults.embedded_defaults()["with_subject"]}), (off, own)):
        (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of <teacup> cup", model=which)
        out = nodes["VARBooth_Sampler"].execute(model=which, vae=vae, positive=cond, seed=1, aspect_ratio="1.0 (h/w) "
                                                "1024×1024", resolution=AUTO, cfg=0.0, tau=0.0, top_k=0, top_p=0.97,
                                                batch_size=1)
        assert f"cfg {settings['cfg']:g}, tau {settings['tau']:g}" in out.ui.as_dict()["text"][0]




def test_auto_resolution_follows_the_model_wired_in(nodes, loaded):
    """A Sampler, Per-Scale Schedule or Train Subject added by hand samples and trains the embedded model at its
    own 128², and a schedule list of its 5 scales is accepted (the sampler checks it)."""
    embedded = nodes["VARBooth_LoadAll"].define_schema().inputs[0].options[0]
    model, vae, enc = run(nodes["VARBooth_LoadAll"], model_name=embedded, vae_name=embedded,
                          text_encoder_name=embedded, dtype="auto")
    for node in ("VARBooth_Sampler", "VARBooth_ScaleSchedule", "VARBooth_TrainSubject"):
        inputs = {i.id: i for i in nodes[node].define_schema().inputs}
        assert inputs["resolution"].default == AUTO, node
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    out = nodes["VARBooth_ScaleSchedule"].execute(resolution=AUTO, aspect_ratio="1.0 (h/w) 1024×1024", switch=3,
                                                  cfg_coarse=4.0, cfg_fine=4.0, tau_coarse=0.5, tau_fine=0.5,
                                                  strength_coarse=1.0, strength_fine=1.0, cfg_list="4,4,4,3,3")
    assert "5 at 0.015M" in out.ui.as_dict()["text"][0] and "13 at 1M" in out.ui.as_dict()["text"][0]
    images = sample(nodes, model, vae, cond, resolution=AUTO, aspect_ratio="1.0 (h/w) 1024×1024",
                    schedule=out.args[0] if hasattr(out, "args") else out.result[0])
    assert images.shape == (1, 128, 128, 3)
    tiny_model = loaded[0]  # a file without native_pn: Infinity's own 1M
    from var_core import defaults
    assert defaults.sampling(tiny_model.obj)["pn"] == "1M" and defaults.sampling(model.obj)["pn"] == "0.015M"
    photos = torch.rand(2, 128, 128, 3)
    out = nodes["VARBooth_TrainSubject"].execute(
        model=model, vae=vae, text_encoder=enc, images=photos, class_word="dog", token="<placeholder>", steps=1,
        learning_rate=0.0, method="LoRA", layers="ca+ffn (ARBooth)", rank=2, placeholder_vectors=2,
        scale_weighting="uniform", prior_weight=0.0, resolution=AUTO, training_seed=0, preview_every=0)
    text = out.ui.as_dict()["text"][0]
    assert "at 0.015M, learning rate 0.001, placeholder 0.01" in text and "'<placeholder> dog'" in text


def test_an_8b_shaped_shard_folder_is_one_model_and_samples(nodes):
    """Infinity-8B as released: models/infinity/infinity_8b_weights/ (shards + index) is listed once, loads with
    its f8/d14 VAE through the same loaders, and samples (2x2-patchified tokens)."""
    choices = nodes["VARBooth_LoadAll"].define_schema().inputs[0].options
    assert "infinity_8b_weights/" in choices and not any("model-0000" in c for c in choices)
    model, vae, enc = run(nodes["VARBooth_LoadAll"], model_name="infinity_8b_weights/",
                          vae_name="infinity_vae_d56_f8_14_patchify.pth", text_encoder_name="t5_192/", dtype="auto")
    assert model.obj.config.bits == 56 and vae.obj.d == 14
    (cond,) = run(nodes["VARBooth_TextEncode"], text_encoder=enc, text="a photo of a dog")
    images = sample(nodes, model, vae, cond, aspect_ratio="1.0 (h/w) 1024×1024")
    assert images.shape == (1, 256, 256, 3) and images.std() > 0.01
    # the sampler's defaults (0) follow the model: the reference's 8B settings, cfg 3 and tau 1.0
    inputs = {i.id: i for i in nodes["VARBooth_Sampler"].define_schema().inputs}
    assert inputs["cfg"].default == 0 and inputs["tau"].default == 0
    out = nodes["VARBooth_Sampler"].execute(model=model, vae=vae, positive=cond, seed=1, aspect_ratio="1.0 (h/w) "
                                            "1024×1024", resolution="0.06M (256²)", cfg=0.0, tau=0.0, top_k=0,
                                            top_p=0.97, batch_size=1)
    assert "cfg 3, tau 1" in out.ui.as_dict()["text"][0]
    with pytest.raises(Exception, match="toy_bitvae"):  # a 2B-shaped VAE does not fit: both files named
        run(nodes["VARBooth_LoadAll"], model_name="infinity_8b_weights/", vae_name="toy_bitvae.safetensors",
            text_encoder_name="t5_192/", dtype="auto")


def test_a_text_encoder_that_does_not_fit_is_refused_by_the_loader_naming_both_files(nodes):
    with pytest.raises(ValueError, match=r"^The text encoder 't5_192/' does not fit the transformer "
                                         r"'toy_infinity\.safetensors': it gives 192-wide features"):
        run(nodes["VARBooth_LoadAll"], model_name="toy_infinity.safetensors", vae_name="toy_bitvae.safetensors",
            text_encoder_name="t5_192/", dtype="auto")


def test_load_subject_lists_only_files_it_can_read(nodes, pack):
    pickled = pack.base / "models/var_subjects/arbooth_checkpoint.pth"
    pickled.write_bytes(b"not read")
    try:
        choices = nodes["VARBooth_LoadSubject"].define_schema().inputs[0].options
    finally:
        pickled.unlink()
    assert "arbooth_checkpoint.pth" not in choices and choices[0].startswith("embedded: ")


def test_the_training_preview_is_sent_at_its_true_size(nodes, loaded, monkeypatch):
    import comfy.utils
    model, vae, enc = loaded
    sent = []
    real = comfy.utils.ProgressBar.update_absolute
    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute",
                        lambda self, value, total=None, preview=None: (sent.append(preview), real(self, value, total))[1])
    nodes["VARBooth_TrainSubject"].execute(
        images=torch.rand(1, 64, 64, 3), model=model, vae=vae, text_encoder=enc, class_word="cat",
        token="<placeholder>", steps=1, learning_rate=0.0, method="LoRA", layers="ca", rank=2, placeholder_vectors=2,
        scale_weighting="uniform", prior_weight=0.0, resolution="0.06M (256²)", training_seed=5, preview_every=1)
    previews = [p for p in sent if p is not None]
    assert previews and all(p[1].size == (256, 256) and p[2] == 256 for p in previews), previews
