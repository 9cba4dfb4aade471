"""API-format workflows (example_workflows/api/*.json, what POST /prompt takes and what the tests run) -> the UI format
the editor and the template browser open (example_workflows/*.json).

The API twins are the source; regenerate the UI files after editing one, with a ComfyUI running this pack:

    python tests/comfyui/workflows.py http://127.0.0.1:8188 [--thumbnails]

--thumbnails also runs each template and writes its thumbnail (<name>.jpg) from the images it saved.

Widget values are positional in the UI format: they follow each node's input order from /object_info, with the
extra "control after generate" value after seeds.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "example_workflows"
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGETS


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [(name, info["input"][group][name]) for group in ("required", "optional") for name in order.get(group, [])]


def depths(api: dict) -> dict[str, int]:
    memo: dict[str, int] = {}

    def depth(nid):
        if nid not in memo:
            ups = [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list)]
            memo[nid] = 1 + max((depth(u) for u in ups), default=-1)
        return memo[nid]
    for nid in api:
        depth(nid)
    return memo


# The Note each template shows: what it does, and what to change (two lines).
NOTES = {
    "text_to_image": "Text to image with the embedded toy model (128², 5 scales, CFG 4): no download needed.\n"
                     "For Infinity-2B: load infinity_2b_reg.pth, infinity_vae_d32reg.pth, flan-t5-xl/ (resolution auto: 1M); "
                     "for 8B: infinity_8b_weights/, infinity_vae_d56_f8_14_patchify.pth (cfg, tau 0: the model's own).",
    "train_subject": "Teaches the model a subject from 4 photos (LoRA, 300 steps), saves it and draws it in the snow.\n"
                     "For Infinity-2B: load it and your photos (Load Image + Batch); steps, learning rate, resolution: auto.",
    "subject_per_scale_strength": "A subject at full strength on the coarse scales (identity), 0.6 on the fine ones."
                                  "\nFor Infinity-2B: load it and a subject trained on it; switch 8 (of its 13 scales).",
    "two_subjects": "Two subjects applied at once, each drawn by its own prompt of one batch (<guide_dog>, <teacup>).\n"
                    "The toy model draws one object per picture; for Infinity-2B, load it and two subjects trained on it.",
    "proxy_tuning": "Proxy-Tuning: a model that knows the subject draws it in N contexts; Infinity is tuned on them.\n"
                    "For Infinity-2B: replace the supervisor (Load Subject + Sampler) by SDXL/Flux with your "
                    "DreamBooth LoRA and its trigger words.",
    "proxy_tuning_diffusion": "Proxy-Tuning with a diffusion model as the supervisor (ComfyUI's own nodes): your "
                              "DreamBooth SD1.5 model draws the subject in 4 contexts; Infinity is tuned on them.\n"
                              "Your checkpoint: models/checkpoints (here v1-5-pruned-emaonly.safetensors), your "
                              "subject LoRA: models/loras (here subject_lora.safetensors; a DreamBooth checkpoint "
                              "alone: bypass Load LoRA); its trigger words: subject_phrase. For Infinity-2B: load it "
                              "in Load Infinity.",
    "image_variations": "Draws a picture, then keeps its first 2 scales (layout, colours) and samples the rest anew."
                        "\nFor Infinity-2B: load it and your own image (Load Image); keep_scales 4-8 at 1M.",
    "switti_text_to_image": "Switti text to image (512², or 1024² with Switti-1024). Download (Hugging Face):\n"
                            "yresearch/Switti (or Switti-AR, Switti-1024, Switti-1024-AR): the folder, into "
                            "models/switti/Switti/\n"
                            "yresearch/VQVAE-Switti: the folder, into models/vae/VQVAE-Switti/\n"
                            "openai/clip-vit-large-patch14 and laion/CLIP-ViT-bigG-14-laion2B-39B-b160k: each folder "
                            "into models/text_encoders/ (or ComfyUI's clip_l.safetensors and clip_g.safetensors).",
    "var_class_to_image": "VAR: an ImageNet class to image (256²; var_d36: 512²). Download (FoundationVision/var on "
                          "Hugging Face):\n"
                          "var_d16.pth (or var_d20, var_d24, var_d30, var_d36.pth) into models/var/\n"
                          "vae_ch160v4096z32.pth into models/vae/\n"
                          "Pick the class by name, or by its label 0-999 (class_label).",
    "switti_subject": "Teaches Switti a subject from photos (here the example's; your own: Load Image), then draws it "
                      "in a new context: write its token in the prompt. Downloads as for Switti text to image:\n"
                      "yresearch/Switti (or Switti-AR, -1024, -1024-AR) into models/switti/Switti/, "
                      "yresearch/VQVAE-Switti into models/vae/VQVAE-Switti/, openai/clip-vit-large-patch14 and "
                      "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k into models/text_encoders/.",
    "var_subject": "Teaches VAR a subject from photos (here the example's; your own: Load Image) as a class of its "
                   "own, starting from an ImageNet class; draw it by giving its token to the VAR Sampler "
                   "(subject_token). Downloads as for VAR class to image:\n"
                   "var_d16.pth (or d20-d36) into models/var/, vae_ch160v4096z32.pth into models/vae/.",
}

# The templates that load downloaded files, which their Note names: the families without an embedded model, and a
# diffusion supervisor (the tests run them on tiny random files put under those names: conftest.RELEASE_NAMES,
# conftest.write_supervisor)
DOWNLOADS = {"switti_text_to_image", "var_class_to_image", "proxy_tuning_diffusion", "switti_subject",
             "var_subject"}

# What each template's saved images must show: the background its prompt asks for (proxy_tuning: the supervisor's
# four contexts, then the tuned subject in the desert), checked from pixels by toyworld.world.detect_background.
CONTENT = {"text_to_image": ["beach"], "train_subject": ["snow"], "subject_per_scale_strength": ["night"],
           "two_subjects": ["white", "white", "snow", "snow"], "image_variations": ["desert"],
           "proxy_tuning": ["beach", "snow", "yellow", "night", "desert", "desert", "desert", "desert"]}


# Where a template applies a subject: the subject's member (or one per saved image, in order), its Apply Subject
# nodes, and the SaveImage node whose images show it. The browser test draws them again with those nodes at strength
# 0 (the base model drawing the prompt with the class word, same seeds): the subject's images must agree with its
# glyph better than those.
SUBJECTS = {"train_subject": ("guide dog", ["10"], "13"), "subject_per_scale_strength": ("guide dog", ["3"], "7"),
            "proxy_tuning": ("guide dog", ["11"], "14"),
            "two_subjects": (["guide dog", "guide dog", "teacup", "teacup"], ["3", "5"], "8")}


def card(name: str):
    """The thumbnail of a template that runs on files a user downloads (DOWNLOADS): its title and what it needs, in
    words, since the tiny random weights the tests run it with draw noise, which the real model does not."""
    from PIL import Image, ImageDraw
    lines = {"switti_text_to_image": ["Switti", "text -> image", "", "needs Switti's released", "files: see the note"],
             "var_class_to_image": ["VAR", "ImageNet class -> image", "", "needs VAR's released", "files: see the note"],
             "proxy_tuning_diffusion": ["Proxy-Tuning", "SD1.5 + LoRA -> Infinity", "", "needs your DreamBooth",
                                        "checkpoint: see the note"],
             "switti_subject": ["Switti", "photos -> your subject", "", "needs Switti's released",
                                "files: see the note"],
             "var_subject": ["VAR", "photos -> your subject", "", "needs VAR's released", "files: see the note"]}
    image = Image.new("RGB", (256, 256), (32, 36, 44))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines[name]):
        draw.text((20, 60 + 26 * i), line, fill=(235, 235, 235) if i < 2 else (170, 180, 190))
    return image


def thumbnail(images: list):
    """A template's thumbnail from its last four saved images (PIL) in a 2x2 grid of 128² tiles."""
    from var_core.images import grid
    if not images:
        raise ValueError("the template saved no images: nothing to make a thumbnail of")
    last = images[-4:]
    return grid([("", last[:2]), ("", last[2:])], 128, label=0)


# Room a node takes once it has run: the text box the pack's frontend extension adds (web/varbooth.js), and Train
# Subject's live preview, the images an image node shows; without it a grown node would cover the one below.
GROWS = {"VARBooth_TrainSubject": 560, "VARBooth_Sampler": 140, "VARBooth_ScaleSchedule": 160,
         "VARBooth_SaveSubject": 100, "VARBooth_ExampleSubject": 100, "VARBooth_ProxyPrompts": 200,
         "VARBooth_SwittiSampler": 140, "VARBooth_VARSampler": 140, "PreviewImage": 360, "SaveImage": 360}


OPEN_ZOOM = 0.8


def to_ui(api: dict, object_info: dict, note: str = "") -> dict:
    nodes, links = [], []
    level = depths(api)
    rows: dict[int, int] = {}  # column -> the y where its next node goes
    outputs: dict[tuple[str, int], list[int]] = {}
    for nid in sorted(api, key=int):  # links first, so every output knows its links
        for name, value in api[nid]["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                info = object_info[api[value[0]]["class_type"]]
                links.append([link_id, int(value[0]), value[1], int(nid), name, info["output"][value[1]]])
                outputs.setdefault((value[0], value[1]), []).append(link_id)
    for order, nid in enumerate(sorted(api, key=lambda n: (level[n], int(n)))):
        node = api[nid]
        info = object_info[node["class_type"]]
        inputs, widgets, slot = [], [], 0
        for name, spec in ordered_inputs(info):
            value = node["inputs"].get(name)
            if is_widget(spec):
                linked = isinstance(value, list)  # a widget fed by a link: a socket of its own, its value unused
                widgets.append(spec[1].get("default") if linked or name not in node["inputs"] else value)
                if spec[1].get("control_after_generate"):
                    widgets.append("fixed")
                if linked:
                    inputs.append({"name": name, "type": spec[0], "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": spec[0], "link": None})
        for entry in inputs:  # link slots in input order
            for link in links:
                if link[3] == int(nid) and link[4] == entry["name"]:
                    entry["link"] = link[0]
                    link[4] = slot
            slot += 1
        outs = [{"name": n, "type": t, "links": outputs.get((nid, i), []), "slot_index": i}
                for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))]
        height = 120 + 26 * (len(widgets) + len(inputs)) + GROWS.get(node["class_type"], 0)
        top = rows.get(level[nid], 60)  # nodes of one column stacked by their heights: none covers another
        rows[level[nid]] = top + height + 60
        nodes.append({"id": int(nid), "type": node["class_type"], "pos": [60 + 420 * level[nid], top],
                      "size": [380, height], "flags": {}, "order": order,
                      "mode": 0, "inputs": inputs, "outputs": outs,
                      "title": node.get("_meta", {}).get("title", info.get("display_name", node["class_type"])),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    if note:
        nodes.append({"id": max(int(n) for n in api) + 1, "type": "Note", "pos": [60, max(rows.values())],
                      "size": [380, 140], "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "title": "About this template", "properties": {}, "widgets_values": [note]})
    # open at a zoom where the frontend draws titles, widgets and text (it draws empty boxes below about 60 %), with
    # the graph's top-left corner at the window's: screen = (graph + offset) * scale
    left, top = min(n["pos"][0] for n in nodes), min(n["pos"][1] for n in nodes) - 40
    view = {"scale": OPEN_ZOOM, "offset": [20 / OPEN_ZOOM - left, 20 / OPEN_ZOOM - top]}
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": view}, "version": 0.4}


def api_twins() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((WORKFLOWS / "api").glob("*.json"))}


def saved_images(url: str, api: dict, timeout: float = 900, node: str | None = None, client_id: str | None = None) -> list:
    """Queue an API workflow on a running ComfyUI, wait for it, and return its saved (type output) images as PIL
    (only those of SaveImage ``node``, when given). ``client_id``: a browser tab's, to which the nodes' outputs (their
    texts, previews) are sent as to the tab that queued it."""
    import io
    import time
    import urllib.parse
    from PIL import Image
    url = url.rstrip("/")
    body = {"prompt": api, **({"client_id": client_id} if client_id else {})}
    request = urllib.request.Request(url + "/prompt", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    prompt_id = json.loads(urllib.request.urlopen(request).read())["prompt_id"]
    deadline = time.time() + timeout
    while prompt_id not in (history := json.loads(urllib.request.urlopen(f"{url}/history/{prompt_id}").read())):
        if time.time() > deadline:
            raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
        time.sleep(1)
    entry = history[prompt_id]
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"the workflow failed: {entry['status']}")
    images = [img for nid in sorted(entry["outputs"], key=int) for img in entry["outputs"][nid].get("images", [])
              if img["type"] == "output" and node in (None, nid)]
    return [Image.open(io.BytesIO(urllib.request.urlopen(f"{url}/view?" + urllib.parse.urlencode(
        {k: img[k] for k in ("filename", "subfolder", "type")})).read())).convert("RGB") for img in images]


def main(url: str, thumbnails: bool = False) -> None:
    sys.path.insert(0, str(ROOT))  # run as a script: var_core from this checkout
    object_info = json.loads(urllib.request.urlopen(url.rstrip("/") + "/object_info").read())
    for name, api in api_twins().items():
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(to_ui(api, object_info, NOTES.get(name, "")), indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print("wrote", path)
        if thumbnails:  # ComfyUI's template browser shows <name>.jpg beside <name>.json
            image = card(name) if name in DOWNLOADS else thumbnail(saved_images(url, api))
            image.save(WORKFLOWS / f"{name}.jpg", quality=90)
            print("wrote", WORKFLOWS / f"{name}.jpg")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--thumbnails"]
    main(args[0] if args else "http://127.0.0.1:8188", thumbnails="--thumbnails" in sys.argv)
