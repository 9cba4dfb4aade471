"""Switti and the class-conditional VAR in ComfyUI: their loaders list the release layouts from the model folders,
their samplers draw pictures with each family's own controls (in-process, and their templates in a real server),
subjects train, apply and draw on both (strength 0 is the base drawing the class), the Per-Scale Schedule and
variations drive their samplers, and bad inputs are clear errors. The models are the tiny fixtures under the release
names (conftest.RELEASE_NAMES)."""
from __future__ import annotations

import copy
import shutil

import pytest
import torch

from conftest import VAR
from workflows import api_twins, saved_images


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.node_classes


def outputs(out) -> tuple:
    return out.args if hasattr(out, "args") else out.result


def run(node, **inputs):
    return outputs(node.execute(**inputs))


def text_of(out) -> str:
    return out.ui.as_dict()["text"][0]


def options(nodes, node_id: str, name: str) -> list[str]:
    return next(i for i in nodes[node_id].define_schema().inputs if i.id == name).options


def is_picture(images: torch.Tensor) -> bool:
    """Many colours in every image: not a fill."""
    return all(len(torch.unique((im * 255).round().reshape(-1, 3), dim=0)) > 100 for im in images)


@pytest.fixture(scope="module")
def switti(nodes):
    return run(nodes["VARBooth_LoadSwitti"], model_name="Switti/", vae_name="VQVAE-Switti/",
               clip_l_name="clip-vit-large-patch14/", clip_g_name="CLIP-ViT-bigG-14-laion2B-39B-b160k/", dtype="auto")


def switti_sample(nodes, switti, text="a photo of a red fox", seed=1, **kw):
    model, vae, encoder = switti
    (cond,) = run(nodes["VARBooth_SwittiTextEncode"], text_encoder=encoder, text=text, negative="")
    args = dict(model=model, vae=vae, conditioning=cond, seed=seed, cfg=6.0, top_k=400, top_p=0.95, batch_size=1,
                cfg_start_scale=0, cfg_stop_scale=10, last_scale_temp=0.0, more_smooth=False, smooth_start_scale=0)
    return nodes["VARBooth_SwittiSampler"].execute(**{**args, **kw})


def test_the_loaders_list_the_release_layouts(nodes):
    assert options(nodes, "VARBooth_LoadSwitti", "model_name") == ["Switti/"]  # folders only: a loose file is no model
    vaes = options(nodes, "VARBooth_LoadSwitti", "vae_name")
    assert {"VQVAE-Switti/", "vae_ch160v4096z32.pth"} <= set(vaes) and "VQVAE-Switti/model.safetensors" not in vaes
    encoders = options(nodes, "VARBooth_LoadSwitti", "clip_l_name")
    assert {"clip-vit-large-patch14/", "CLIP-ViT-bigG-14-laion2B-39B-b160k/"} <= set(encoders)
    assert options(nodes, "VARBooth_LoadVAR", "model_name") == ["var_d16.pth"]
    assert options(nodes, "VARBooth_VARSampler", "class_name")[207] == "golden retriever"


def test_switti_draws_the_prompt_with_its_own_defaults(nodes, switti):
    out = switti_sample(nodes, switti, text="a photo of a red fox\na photo of a cat", batch_size=2)
    (images,) = outputs(out)
    assert images.shape == (4, 128, 128, 3) and 0 <= images.min() and images.max() <= 1 and is_picture(images)
    assert text_of(out) == "6 scales, 128x128 px, cfg 6 on scales 0-5, top_k 400, top_p 0.95"
    again = switti_sample(nodes, switti, text="a photo of a red fox\na photo of a cat", batch_size=2)
    assert torch.equal(outputs(again)[0], images)
    fox = outputs(switti_sample(nodes, switti))[0]
    assert not torch.equal(outputs(switti_sample(nodes, switti, seed=2))[0], fox)
    assert not torch.equal(outputs(switti_sample(nodes, switti, text="a photo of a blue car"))[0], fox)
    fast = switti_sample(nodes, switti, prune_scales=2, prune_keep=0.3)
    assert text_of(fast).endswith("top_p 0.95, scales 4-5 pruned to 30% of their tokens")
    assert not torch.equal(outputs(fast)[0], fox)
    window = switti_sample(nodes, switti, cfg_stop_scale=4, last_scale_temp=0.5, more_smooth=True,
                           smooth_start_scale=2)
    assert text_of(window) == ("6 scales, 128x128 px, cfg 6 on scales 0-3, top_k 400, top_p 0.95, last_scale_temp "
                               "0.5 on scales 4-5, Gumbel-smoothed scales 2-3")
    defaults = {i.id: getattr(i, "default", None) for i in nodes["VARBooth_SwittiSampler"].define_schema().inputs}
    assert (defaults["cfg"], defaults["top_k"], defaults["top_p"], defaults["cfg_stop_scale"]) == (6, 400, 0.95, 10)
    tooltip = next(i.tooltip for i in nodes["VARBooth_SwittiSampler"].define_schema().inputs if i.id == "cfg")
    assert "Default 6: Switti's own" in tooltip


def test_the_samplers_show_progress_and_stop_on_cancel(nodes, switti):
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        switti_sample(nodes, switti)
    assert not mm.processing_interrupted()


@pytest.fixture(scope="module")
def var(nodes):
    return run(nodes["VARBooth_LoadVAR"], model_name="var_d16.pth", vae_name="vae_ch160v4096z32.pth", dtype="auto")


def var_sample(nodes, var, **kw):
    model, vae = var
    args = dict(model=model, vae=vae, class_name="golden retriever", class_label=3, seed=1, cfg=4.0, top_k=900,
                top_p=0.95, batch_size=2)
    return nodes["VARBooth_VARSampler"].execute(**{**args, **kw})


def test_var_draws_a_class_by_label_and_refuses_what_it_lacks(nodes, var):
    out = var_sample(nodes, var)
    (images,) = outputs(out)
    assert images.shape == (2, 128, 128, 3) and is_picture(images)
    assert text_of(out) == "4 scales, 128x128 px, class 3, cfg 4, top_k 900, top_p 0.95"
    assert not torch.equal(outputs(var_sample(nodes, var, class_label=4))[0], images)
    fast = var_sample(nodes, var, prune_scales=1, prune_keep=0.5)
    assert text_of(fast).endswith("top_p 0.95, scale 3 pruned to 50% of their tokens")
    assert not torch.equal(outputs(fast)[0], images)
    with pytest.raises(ValueError, match=r"Class label 12 is not allowed: VAR's labels are whole numbers from 0 to 9"):
        var_sample(nodes, var, class_label=12)
    # the tiny model has 10 classes, not ImageNet's: a name is refused, saying so
    with pytest.raises(ValueError, match="'golden retriever' is not one of its 10 class names"):
        var_sample(nodes, var, class_label=-1)


def test_a_vae_or_model_of_another_family_is_refused_naming_the_files(nodes, pack):
    from var_core.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r"VQVAE-Switti' does not fit the transformer '.*var_d16\.pth'"):
        run(nodes["VARBooth_LoadVAR"], model_name="var_d16.pth", vae_name="VQVAE-Switti/", dtype="auto")
    with pytest.raises(CheckpointError, match=r"vae_ch160v4096z32\.pth' does not fit the transformer '.*Switti'"):
        run(nodes["VARBooth_LoadSwitti"], model_name="Switti/", vae_name="vae_ch160v4096z32.pth",
            clip_l_name="clip-vit-large-patch14/", clip_g_name="CLIP-ViT-bigG-14-laion2B-39B-b160k/", dtype="auto")
    stray = pack.base / "models/infinity/var_d16.pth"  # a VAR file put where Infinity's go
    shutil.copy(VAR / "var_d2.pth", stray)
    try:
        with pytest.raises(ValueError, match=r"'var_d16.pth' \(models/infinity\) is a VAR model: load it with Load "
                                             r"VAR, from models/var"):
            run(nodes["VARBooth_LoadTransformer"], model_name="var_d16.pth", dtype="auto")
    finally:
        stray.unlink()


# ------------------------------------------------------------------------------------------------ subjects, schedule
# A few steps at a high learning rate and without prior distillation (its 64 class samples are the slow part): enough
# for the subject to change the pictures; the library's tests (tests/test_vq_tuning.py) check what it learns.
TRAINING = dict(token="<sks>", steps=3, learning_rate=1e-2, method="LoRA", rank=2,
                scale_weighting="ARBooth: coarse 1.0, fine 0.5", prior_weight=0.0, training_seed=0, preview_every=0)


def photos(n: int = 2) -> torch.Tensor:
    from toyworld.builders import subject_pictures
    return (subject_pictures(n, 160).permute(0, 2, 3, 1) + 1) / 2  # an IMAGE batch, not at the model's size


def schedule(nodes, **kw) -> dict:
    args = dict(resolution="auto (the model's own)", aspect_ratio="1.0 (h/w) 1024×1024", switch=2, cfg_coarse=0.0,
                cfg_fine=0.0, tau_coarse=0.0, tau_fine=0.0, strength_coarse=1.0, strength_fine=1.0)
    return run(nodes["VARBooth_ScaleSchedule"], **{**args, **kw})[0]


@pytest.fixture(scope="module")
def var_subject(nodes, var):
    model, vae = var
    out = nodes["VARBooth_TrainVARSubject"].execute(
        model=model, vae=vae, images=photos(), class_name="golden retriever", class_label=3,
        layers="ada+ffn (the class's path)", placeholder_vectors=1, **{**TRAINING, "preview_every": 2})
    return outputs(out), text_of(out)


def test_a_var_subject_trained_by_the_node_is_drawn_by_its_token(nodes, var, var_subject, pack):
    (subject, curve), text = var_subject
    model, vae = var
    assert subject.metadata["family"] == "var" and subject.metadata["training"]["steps_done"] == 3
    assert curve.dim() == 4 and "3/3 steps" in text and "at 128x128" in text
    assert "use it: Apply Subject (VAR), then give the VAR Sampler subject_token <sks>" in text
    assert (pack.base / "output/varbooth_checkpoints/3_seed0_00001.safetensors").is_file()
    (zero,) = run(nodes["VARBooth_ApplyVARSubject"], model=model, subject=subject, strength=0.0)
    (full,) = run(nodes["VARBooth_ApplyVARSubject"], model=model, subject=subject, strength=1.0)
    base = outputs(var_sample(nodes, var))[0]
    # strength 0: the base model drawing the subject's class (3), exactly; 1: the subject
    assert torch.equal(outputs(var_sample(nodes, (zero, vae), subject_token="<sks>"))[0], base)
    drawn = var_sample(nodes, (full, vae), subject_token="<sks>")
    assert not torch.equal(outputs(drawn)[0], base) and "subject <sks>" in text_of(drawn)
    # per-scale strength from the schedule: the subject on the coarse scales only is neither
    coarse = outputs(var_sample(nodes, (full, vae), subject_token="<sks>",
                                schedule=schedule(nodes, strength_fine=0.0)))[0]
    assert not torch.equal(coarse, base) and not torch.equal(coarse, outputs(drawn)[0])
    assert torch.equal(outputs(var_sample(nodes, (full, vae), subject_token="<sks>",
                                          schedule=schedule(nodes, strength_coarse=0.0, strength_fine=0.0)))[0], base)
    with pytest.raises(ValueError, match="'<other>' is not one of its 10 class names .* nor the token of an applied"):
        var_sample(nodes, (full, vae), subject_token="<other>")


def test_a_subject_of_another_family_is_refused(nodes, var, var_subject, switti):
    (subject, _), _ = var_subject
    with pytest.raises(ValueError, match="trained on a base of the 'var' family; this base is Switti"):
        run(nodes["VARBooth_ApplySwittiSubject"], model=switti[0], subject=subject, strength=1.0)
    out = nodes["VARBooth_SaveSubject"].execute(subject=subject, filename_prefix="var_sks")
    assert "var_sks_00001.safetensors" in text_of(out)  # saved and listed as any subject, loaded back
    assert "var_sks_00001.safetensors" in nodes["VARBooth_LoadSubject"].define_schema().inputs[0].options
    (loaded,) = run(nodes["VARBooth_LoadSubject"], subject_name="var_sks_00001.safetensors")
    assert torch.equal(loaded.placeholder, subject.placeholder.detach().cpu())


def test_var_training_stops_on_cancel_and_keeps_its_checkpoint(nodes, var, pack):
    import comfy.model_management as mm
    model, vae = var
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["VARBooth_TrainVARSubject"].execute(
            model=model, vae=vae, images=photos(1), class_name="golden retriever", class_label=5,
            layers="ffn", placeholder_vectors=0, **{**TRAINING, "steps": 50})
    assert not mm.processing_interrupted()
    from var_core.tuning import load_subject
    kept = load_subject(pack.base / "output/varbooth_checkpoints/5_seed0_00001.safetensors")
    assert kept.metadata["training"]["steps_done"] == 0 and kept.placeholder is None


@pytest.fixture(scope="module")
def switti_subject(nodes, switti):
    model, vae, encoder = switti
    out = nodes["VARBooth_TrainSwittiSubject"].execute(
        model=model, vae=vae, text_encoder=encoder, images=photos(), class_word="dog", layers="ca+ffn (ARBooth)",
        placeholder_vectors=2, **TRAINING)
    return outputs(out)[0], text_of(out)


def encoded(nodes, switti, text, model=None):
    return run(nodes["VARBooth_SwittiTextEncode"], text_encoder=switti[2], text=text, negative="",
               **({"model": model} if model is not None else {}))[0]


def switti_draw(nodes, switti, model, cond, **kw):
    args = dict(model=model, vae=switti[1], conditioning=cond, seed=1, cfg=6.0, top_k=400, top_p=0.95, batch_size=1,
                cfg_start_scale=0, cfg_stop_scale=10, last_scale_temp=0.0, more_smooth=False, smooth_start_scale=0)
    return nodes["VARBooth_SwittiSampler"].execute(**{**args, **kw})


def test_a_switti_subject_trained_by_the_node_is_read_from_the_prompt(nodes, switti, switti_subject):
    subject, text = switti_subject
    model = switti[0]
    assert subject.metadata["family"] == "switti" and subject.placeholder.shape[0] == 2 and "3/3 steps" in text
    assert "gradient checkpointing off" in text  # left to the trainer: not on the CPU
    assert "write '<sks> dog' in a prompt (Switti Text Encode with that model)" in text
    (zero,) = run(nodes["VARBooth_ApplySwittiSubject"], model=model, subject=subject, strength=0.0)
    (full,) = run(nodes["VARBooth_ApplySwittiSubject"], model=model, subject=subject, strength=1.0)
    base = outputs(switti_draw(nodes, switti, model, encoded(nodes, switti, "a photo of dog")))[0]
    prompt = "a photo of <sks> dog"
    # strength 0: the base model drawing the prompt with the class word, exactly; 1: the subject
    assert torch.equal(outputs(switti_draw(nodes, switti, zero, encoded(nodes, switti, prompt, zero)))[0], base)
    cond = encoded(nodes, switti, prompt, full)
    drawn = outputs(switti_draw(nodes, switti, full, cond))[0]
    assert not torch.equal(drawn, base)
    # the schedule's strength: 0 everywhere is the base again (the prompt read with the class word at those scales)
    off = switti_draw(nodes, switti, full, cond, schedule=schedule(nodes, strength_coarse=0.0, strength_fine=0.0))
    assert torch.equal(outputs(off)[0], base) and "subject strength x0" in text_of(off)
    coarse = outputs(switti_draw(nodes, switti, full, cond, schedule=schedule(nodes, strength_fine=0.0)))[0]
    assert not torch.equal(coarse, base) and not torch.equal(coarse, drawn)
    # a prompt encoded for another model than the one sampled is refused, not drawn as plain text
    with pytest.raises(ValueError, match=r"encoded reading no subject, but the sampler's model reads <sks> as the "
                                         r"subject: .*connect Apply Subject \(Switti\)'s model to Switti Text Encode"):
        switti_draw(nodes, switti, full, encoded(nodes, switti, prompt))
    with pytest.raises(ValueError, match="reading <sks> as its class word, but the sampler's model reads <sks> as the "
                                         "subject"):
        switti_draw(nodes, switti, full, encoded(nodes, switti, prompt, zero))


def test_the_schedule_sets_the_cfg_of_each_scale_and_refuses_tau(nodes, switti, var):
    cond = encoded(nodes, switti, "a photo of a red fox")
    plain = switti_draw(nodes, switti, switti[0], cond)
    same = switti_draw(nodes, switti, switti[0], cond, cfg=1.0, schedule=schedule(nodes, cfg_list="6,6,6,6,6,6"))
    assert torch.equal(outputs(same)[0], outputs(plain)[0])  # the schedule's cfg wins over the widget's
    own = switti_draw(nodes, switti, switti[0], cond, cfg=1.0, schedule=schedule(nodes))  # 0: the model's own, 6
    assert torch.equal(outputs(own)[0], outputs(plain)[0])
    ramp = switti_draw(nodes, switti, switti[0], cond, schedule=schedule(nodes, switch=3, cfg_coarse=6.0,
                                                                         cfg_fine=2.0))
    assert not torch.equal(outputs(ramp)[0], outputs(plain)[0])
    assert text_of(ramp).startswith("6 scales, 128x128 px, cfg 6,6,6,2,2,2 on scales 0-5")
    with pytest.raises(ValueError, match="The cfg list has 5 values but this resolution has 6 scales"):
        switti_draw(nodes, switti, switti[0], cond, schedule=schedule(nodes, cfg_list="6,6,6,6,6"))
    with pytest.raises(ValueError, match="Switti has no tau"):
        switti_draw(nodes, switti, switti[0], cond, schedule=schedule(nodes, tau_fine=0.5))
    varied = var_sample(nodes, var, schedule=schedule(nodes, cfg_list="4,4,1,1"))
    assert "cfg 4,4,1,1" in text_of(varied) and not torch.equal(outputs(varied)[0], outputs(var_sample(nodes, var))[0])


def test_variations_keep_the_first_scales_of_an_image(nodes, switti, var):
    # (the tiny random VAEs do not reconstruct what they decode, so the checks are on what the codes decide)
    cond = encoded(nodes, switti, "a photo of a red fox")
    source = outputs(switti_draw(nodes, switti, switti[0], cond))[0]

    def varied(seed, keep):
        return switti_draw(nodes, switti, switti[0], cond, seed=seed, init_image=source, keep_scales=keep)
    assert "the first 5 scales kept from init_image" in text_of(varied(7, 5))
    # every scale kept: the image's codes decide the picture, whatever the seed; fewer: the seed draws the rest
    assert torch.equal(outputs(varied(7, 6))[0], outputs(varied(8, 6))[0])
    assert not torch.equal(outputs(varied(7, 5))[0], outputs(varied(8, 5))[0])
    assert torch.equal(outputs(varied(7, 0))[0], outputs(switti_draw(nodes, switti, switti[0], cond, seed=7))[0])
    with pytest.raises(ValueError, match="keep_scales is 7, but it must be a whole number from 0"):
        varied(7, 7)
    image = outputs(var_sample(nodes, var))[0][:1]
    kept = [outputs(var_sample(nodes, var, seed=seed, init_image=image, keep_scales=keep))[0] for seed, keep in
            ((7, 4), (8, 4), (7, 3), (8, 3))]
    assert kept[0].shape == (2, 128, 128, 3) and torch.equal(kept[0], kept[1]) and not torch.equal(kept[2], kept[3])


# ------------------------------------------------------------------------------------------------ in a real server
def error_of(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")


def as_tensor(images) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).float() / 255


def test_the_switti_template_runs_and_follows_its_prompt_and_seed(comfy):
    api = api_twins()["switti_text_to_image"]
    images = as_tensor(saved_images(comfy.url, api))
    assert images.shape == (4, 128, 128, 3) and is_picture(images)
    for change in ({"2": {"text": "a photo of a blue car"}}, {"3": {"seed": 43}}):
        other = copy.deepcopy(api)
        for nid, inputs in change.items():
            other[nid]["inputs"].update(inputs)
        other["4"]["inputs"]["filename_prefix"] += "_changed"
        assert not torch.equal(as_tensor(saved_images(comfy.url, other)), images), change


def test_the_var_template_runs_and_bad_inputs_are_node_errors(comfy):
    api = api_twins()["var_class_to_image"]
    api["2"]["inputs"]["class_label"] = 3  # the tiny model has 10 classes, not ImageNet's named ones
    images = as_tensor(saved_images(comfy.url, api))
    assert images.shape == (4, 128, 128, 3) and is_picture(images)

    wrong_vae = copy.deepcopy(api)
    wrong_vae["1"]["inputs"]["vae_name"] = "VQVAE-Switti/"
    error = error_of(comfy.wait(comfy.queue(wrong_vae)))
    assert error["node_id"] == "1" and "VQVAE-Switti' does not fit" in error["exception_message"] \
        and "var_d16.pth" in error["exception_message"]
    out_of_range = copy.deepcopy(api)
    out_of_range["2"]["inputs"]["class_label"] = 12
    error = error_of(comfy.wait(comfy.queue(out_of_range)))
    assert error["node_id"] == "2" and "whole numbers from 0 to 9" in error["exception_message"]
    assert comfy.get("/object_info/VARBooth_VARSampler")  # still serving


def test_subjects_train_apply_and_draw_in_a_graph_on_both_families(comfy):
    """The sockets connect as a user wires them (the server checks every link's type): photos -> Train Subject ->
    Apply Subject -> the family's sampler, with a Per-Scale Schedule; the nodes say what they did."""
    train = dict(token="<sks>", steps=2, learning_rate=1e-2, method="LoRA", rank=2,
                 scale_weighting="uniform", prior_weight=0.0, training_seed=11, preview_every=0)
    api = {
        "1": {"class_type": "VARBooth_ExampleSubject", "inputs": {"subject": "guide_dog"}},
        "2": {"class_type": "VARBooth_ScaleSchedule",
              "inputs": {"resolution": "auto (the model's own)", "aspect_ratio": "1.0 (h/w) 1024×1024", "switch": 2,
                         "cfg_coarse": 4.0, "cfg_fine": 2.0, "tau_coarse": 0.0, "tau_fine": 0.0,
                         "strength_coarse": 1.0, "strength_fine": 0.5}},
        "10": {"class_type": "VARBooth_LoadVAR",
               "inputs": {"model_name": "var_d16.pth", "vae_name": "vae_ch160v4096z32.pth", "dtype": "auto"}},
        "11": {"class_type": "VARBooth_TrainVARSubject",
               "inputs": {"model": ["10", 0], "vae": ["10", 1], "images": ["1", 0], "class_name": "golden retriever",
                          "class_label": 3, "layers": "ada+ffn (the class's path)", "placeholder_vectors": 1,
                          **train}},
        "12": {"class_type": "VARBooth_ApplyVARSubject",
               "inputs": {"model": ["10", 0], "subject": ["11", 0], "strength": 1.0}},
        "13": {"class_type": "VARBooth_VARSampler",
               "inputs": {"model": ["12", 0], "vae": ["10", 1], "class_name": "golden retriever", "class_label": 3,
                          "seed": 1, "cfg": 4.0, "top_k": 900, "top_p": 0.95, "batch_size": 1,
                          "subject_token": "<sks>", "schedule": ["2", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "var/subject"}},
        "20": {"class_type": "VARBooth_LoadSwitti",
               "inputs": {"model_name": "Switti/", "vae_name": "VQVAE-Switti/",
                          "clip_l_name": "clip-vit-large-patch14/",
                          "clip_g_name": "CLIP-ViT-bigG-14-laion2B-39B-b160k/", "dtype": "auto"}},
        "21": {"class_type": "VARBooth_TrainSwittiSubject",
               "inputs": {"model": ["20", 0], "vae": ["20", 1], "text_encoder": ["20", 2], "images": ["1", 0],
                          "class_word": ["1", 1], "layers": "ca+ffn (ARBooth)", "placeholder_vectors": 2, **train}},
        "22": {"class_type": "VARBooth_ApplySwittiSubject",
               "inputs": {"model": ["20", 0], "subject": ["21", 0], "strength": 1.0}},
        "23": {"class_type": "VARBooth_SwittiTextEncode",
               "inputs": {"text_encoder": ["20", 2], "text": "a photo of <sks> dog in the snow", "negative": "",
                          "model": ["22", 0]}},
        "24": {"class_type": "VARBooth_SwittiSampler",
               "inputs": {"model": ["22", 0], "vae": ["20", 1], "conditioning": ["23", 0], "seed": 1, "cfg": 6.0,
                          "top_k": 400, "top_p": 0.95, "batch_size": 1, "cfg_start_scale": 0, "cfg_stop_scale": 10,
                          "last_scale_temp": 0.0, "more_smooth": False, "smooth_start_scale": 0,
                          "schedule": ["2", 0], "init_image": ["13", 0], "keep_scales": 2}},
        "25": {"class_type": "SaveImage", "inputs": {"images": ["24", 0], "filename_prefix": "switti/subject"}},
    }
    entry = comfy.wait(comfy.queue(api))
    assert entry["status"]["status_str"] == "success", entry["status"]
    texts = {nid: "".join(out.get("text", [])) for nid, out in entry["outputs"].items()}
    assert "2/2 steps" in texts["11"] and "subject_token <sks>" in texts["11"]
    assert "2/2 steps" in texts["21"] and "'<sks> dog'" in texts["21"]
    assert "subject <sks>, cfg 4,4,2,2" in texts["13"] and "subject strength x1,1,0.5,0.5" in texts["13"]
    assert texts["24"].startswith("6 scales, 128x128 px, cfg 4,4,2,2,2,2 on scales 0-5") \
        and "the first 2 scales kept from init_image" in texts["24"]
    assert [len(entry["outputs"][n]["images"]) for n in ("14", "25")] == [1, 1]
