"""End to end in a real, headless ComfyUI 0.3.75: the node list, the templates' files, training progress and cancel,
and bad inputs coming back as node errors while the server keeps serving. (The templates run in test_browser.py.)"""
from __future__ import annotations

import copy
import json
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from workflows import DOWNLOADS, NOTES, WORKFLOWS, api_twins, card, to_ui

NODE_IDS = {"VARBooth_LoadTransformer", "VARBooth_LoadVAE", "VARBooth_LoadTextEncoder", "VARBooth_LoadAll",
            "VARBooth_TextEncode", "VARBooth_Sampler", "VARBooth_ScaleSchedule", "VARBooth_TrainSubject",
            "VARBooth_SaveSubject", "VARBooth_LoadSubject", "VARBooth_ApplySubject", "VARBooth_ProxyPrompts",
            "VARBooth_ExampleSubject", "VARBooth_LoadSwitti", "VARBooth_SwittiTextEncode", "VARBooth_SwittiSampler",
            "VARBooth_LoadVAR", "VARBooth_VARSampler", "VARBooth_ApplySwittiSubject", "VARBooth_TrainSwittiSubject",
            "VARBooth_ApplyVARSubject", "VARBooth_TrainVARSubject"}
EMBEDDED = "embedded toy model (128², no download)"
# the loaders' file inputs (ours, and ComfyUI's checkpoint and LoRA loaders)
FILES = ("model_name", "vae_name", "text_encoder_name", "clip_l_name", "clip_g_name", "ckpt_name", "lora_name")


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.get("/object_info")


def test_every_node_is_listed_with_tooltips(object_info):
    assert NODE_IDS <= set(object_info)
    for node_id in NODE_IDS:
        info = object_info[node_id]
        assert info["category"].startswith("VARBooth/")
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), (node_id, name)
        assert len(info["output_tooltips"]) == len(info["output"]) and all(info["output_tooltips"]), node_id
    sampler = object_info["VARBooth_Sampler"]["input"]
    assert sampler["required"]["seed"][1]["control_after_generate"] is True
    train = object_info["VARBooth_TrainSubject"]["input"]["required"]
    assert "seed" not in train and "control_after_generate" not in train["training_seed"][1]  # never re-randomised
    assert len(sampler["required"]["aspect_ratio"][1]["options"]) == 15
    assert "toy_t5/" in object_info["VARBooth_LoadTextEncoder"]["input"]["required"]["text_encoder_name"][1]["options"]
    loaders = object_info["VARBooth_LoadAll"]["input"]["required"]
    for name in ("model_name", "vae_name", "text_encoder_name"):  # the embedded model first: a new user's default
        assert loaders[name][1]["options"][0] == EMBEDDED
    subjects = object_info["VARBooth_LoadSubject"]["input"]["required"]["subject_name"][1]["options"]
    assert subjects[:2] == ["embedded: guide_dog", "embedded: teacup"]
    assert object_info["VARBooth_ExampleSubject"]["input"]["required"]["subject"][1]["options"] == \
        ["guide_dog", "racing_car", "teacup"]


def test_example_workflows_are_templates_and_match_their_api_twins(comfy, object_info):
    twins = api_twins()
    assert set(twins) == {"text_to_image", "train_subject", "subject_per_scale_strength", "two_subjects",
                          "image_variations", "proxy_tuning", "proxy_tuning_diffusion", "switti_text_to_image",
                          "var_class_to_image", "switti_subject", "var_subject"}
    assert sorted(comfy.get("/api/workflow_templates")["comfyui-varbooth"]) == sorted(twins)
    for name, api in twins.items():
        ui_file = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
        assert ui_file == to_ui(api, object_info, NOTES[name]), f"{name}.json is stale: python tests/comfyui/workflows.py"
        note = next(n for n in ui_file["nodes"] if n["type"] == "Note")["widgets_values"][0]
        assert (WORKFLOWS / f"{name}.jpg").is_file(), "no thumbnail: python tests/comfyui/workflows.py URL --thumbnails"
        loaded = [node["inputs"][key] for node in api.values() for key in FILES if key in node["inputs"]]
        if name in DOWNLOADS:  # the Note names every file or folder the template loads, and where it goes
            with Image.open(WORKFLOWS / f"{name}.jpg") as thumb:  # words, not the noise of the tests' random weights
                diff = np.abs(np.asarray(thumb.convert("RGB"), float) - np.asarray(card(name), float)).mean()
            assert diff < 4, f"{name}.jpg is not its card: python tests/comfyui/workflows.py URL --thumbnails"
            for value in loaded:
                assert value == EMBEDDED or value.rstrip("/") in note, (name, value)
            folders = {"VARBooth_LoadSwitti": ["models/switti/", "models/vae/", "models/text_encoders/"],
                       "VARBooth_LoadVAR": ["models/var/", "models/vae/"],
                       "CheckpointLoaderSimple": ["models/checkpoints"], "LoraLoader": ["models/loras"]}
            assert all(f in note for node in api.values() for f in folders.get(node["class_type"], [])), name
            continue
        assert "Infinity-2B" in note and len(note.splitlines()) == 2
        # nothing from models/ or input/: the embedded model and its example subjects
        assert all(node["class_type"] != "LoadImage" for node in api.values())
        assert all(value == EMBEDDED for value in loaded), name


def test_training_shows_progress_and_cancel_keeps_the_checkpoint(comfy):
    api = api_twins()["train_subject"]
    train = next(k for k, n in api.items() if n["class_type"] == "VARBooth_TrainSubject")
    api[train]["inputs"].update(steps=100000, class_word="cancelled", training_seed=7, prior_weight=0.0)
    client = str(uuid.uuid4())
    ws = comfy.websocket(client)
    prompt_id = comfy.queue(api, client)
    seen, interrupted_at, outcome = [], None, None
    for msg in ws.messages(timeout=300):
        data = msg.get("data", {})
        if msg["type"] == "progress" and data.get("node") == train:
            seen.append(data["value"])
            if data["value"] >= 3 and interrupted_at is None:
                assert data["max"] == 100000
                comfy.post("/interrupt")
                interrupted_at = time.time()
        if msg["type"] in ("execution_interrupted", "execution_error", "execution_success") \
                and data.get("prompt_id") == prompt_id:
            outcome = msg["type"]
            break
    ws.close()
    assert outcome == "execution_interrupted" and seen[:3] == [1, 2, 3]
    assert time.time() - interrupted_at < 30
    from var_core.tuning import load_subject
    saved = load_subject(comfy.base / "output/varbooth_checkpoints/cancelled_seed7_00001.safetensors")
    assert saved.metadata["training"]["steps_done"] >= 3
    assert "training cancelled after" in comfy.log.read_text() and "cancelled_seed7_00001" in comfy.log.read_text()
    assert comfy.get("/object_info/VARBooth_Sampler")  # still serving


def test_bad_inputs_are_node_errors_and_the_server_keeps_serving(comfy):
    api = api_twins()["text_to_image"]
    missing = copy.deepcopy(api)
    missing["1"]["inputs"]["model_name"] = "not_there.pth"
    status, body = comfy.post("/prompt", {"prompt": missing})
    if status == 400:  # refused by validation (V1 combos) ...
        assert "1" in body["node_errors"]
    else:  # ... or by the loader (V3 combos are not validated by 0.3.75)
        entry = comfy.wait(body["prompt_id"])
        error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
        assert error["node_id"] == "1" and "not_there.pth" in error["exception_message"]

    wrong_vae = copy.deepcopy(api)
    wrong_vae["1"]["inputs"]["vae_name"] = "vae_d8.safetensors"
    entry = comfy.wait(comfy.queue(wrong_vae))
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["node_id"] == "1" and "8 bits" in error["exception_message"] and "32" in error["exception_message"]

    ok = comfy.wait(comfy.queue(api))
    assert ok["status"]["status_str"] == "success"
