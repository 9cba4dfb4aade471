"""Switti and the class-conditional VAR in ComfyUI: their loaders list the release layouts from the model folders,
their samplers draw pictures with each family's own controls (in-process, and their templates in a real server),
and bad inputs are clear errors. The models are the tiny fixtures under the release names (conftest.RELEASE_NAMES)."""
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
