"""The templates as a user meets them: the real ComfyUI frontend in headless Chromium (Debian's chromium, driven by
Playwright) loads each template, builds the prompt with its own code (app.graphToPrompt), runs it on the embedded
model with nothing in input/, and the saved images show what the prompts ask for; re-running after a prompt change
does not retrain; and every VARBooth node added from the node library keeps its default widget values through a
save/load round trip."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
import uuid

import pytest

from PIL import Image

from toyworld import world
from workflows import CONTENT, DOWNLOADS, SUBJECTS, WORKFLOWS, api_twins, saved_images

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What the sampler of a template says first: the embedded model's 5 scales, the tiny Switti's 6 and the tiny VAR's 4
# (the fixtures put under the release names those templates load)
SAYS = {"switti_text_to_image": "6 scales, 128x128 px", "var_class_to_image": "4 scales, 128x128 px",
        "switti_subject": "6 scales, 128x128 px", "var_subject": "4 scales, 128x128 px"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Where a screenshot of each loaded template goes (printed; not committed)."""
    folder = tmp_path_factory.mktemp("template_screenshots")
    print(f"\ntemplate screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(comfy):
    if CHROMIUM is None or not _has_playwright():
        if os.environ.get("VARBOOTH_REQUIRE_COMFYUI"):
            pytest.fail("The browser tests need Debian's chromium and 'pip install playwright' (.ci/run installs them).")
        pytest.skip("no chromium or playwright: apt install chromium; pip install playwright")
    from playwright.sync_api import sync_playwright
    comfy.post("/settings/Comfy.TutorialCompleted", True)  # no template browser over the canvas at first start
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page()
        tab.goto(comfy.url, wait_until="load")
        tab.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        yield tab
        browser.close()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
        return True
    except ImportError:
        return False


def load_template(page, name: str) -> None:
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)


def missing_nodes(page) -> list[str]:
    return page.evaluate("() => window.app.graph._nodes.map(n => n.type)"
                         ".filter(t => !(t in window.LiteGraph.registered_node_types))")


def build(page) -> dict:
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def overlapping(page) -> list:
    """Pairs of nodes whose boxes (title bar included) overlap on the canvas, as the frontend has sized them."""
    return page.evaluate("""() => {
        const T = window.LiteGraph.NODE_TITLE_HEIGHT;
        const box = n => [n.pos[0], n.pos[1] - T, n.pos[0] + n.size[0], n.pos[1] + n.size[1]];
        const nodes = window.app.graph._nodes, out = [];
        for (const a of nodes) for (const b of nodes) {
            if (a.id >= b.id) continue;
            const [p, q] = [box(a), box(b)];
            if (p[0] < q[2] && q[0] < p[2] && p[1] < q[3] && q[1] < p[3]) out.push([a.title, b.title]);
        }
        return out;
    }""")


def focus(page, node_id: int) -> dict:
    """Centre the canvas on a node at zoom 1 (as a user looks at it); its box on the page, for a screenshot."""
    return page.evaluate("""async (id) => {
        const app = window.app, node = app.graph.getNodeById(id), T = window.LiteGraph.NODE_TITLE_HEIGHT;
        app.canvas.ds.scale = 1;
        app.canvas.centerOnNode(node);
        app.canvas.setDirty(true, true);
        app.canvas.draw(true, true);
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        const rect = app.canvas.canvas.getBoundingClientRect(), [ox, oy] = app.canvas.ds.offset;
        return {x: Math.max(0, rect.left + node.pos[0] + ox), y: Math.max(0, rect.top + node.pos[1] - T + oy),
                width: node.size[0], height: node.size[1] + T};
    }""", node_id)


def client_id(page) -> str:
    """The tab's id at the server: a prompt queued with it reports its progress and outputs to the tab."""
    return page.evaluate("() => window.app.api.clientId")


def node_texts(page) -> list[str]:
    """The texts the pack's frontend extension shows on the nodes, read from the page (its text boxes)."""
    return page.evaluate("() => [...document.querySelectorAll('textarea.varbooth-text')].map(t => t.value)")


def cut_texts(page) -> list[str]:
    """The first line of each node text that its box cuts off (needs scrolling), each looked at on screen at zoom 1."""
    cut = []
    for node_id in page.evaluate("() => window.app.graph._nodes.filter(n => (n.widgets || []).some("
                                 "w => w.name === 'varbooth_text')).map(n => n.id)"):
        focus(page, node_id)
        page.wait_for_timeout(200)
        cut += page.evaluate("""(id) => {
            const node = window.app.graph.getNodeById(id), el = node.widgets.find(w => w.name === 'varbooth_text').inputEl;
            return el.scrollHeight > el.clientHeight + 2 ? [el.value.split('\\n')[0]] : [];
        }""", node_id)
    return cut


def glyph_agreement(images, member: str | list[str]) -> float:
    """Mean agreement of each image with its member's glyph (``member``: one for all, or one per image)."""
    from toyworld.metrics import member_similarity
    members = [member] * len(images) if isinstance(member, str) else member
    assert len(members) == len(images), (members, len(images))
    return sum(member_similarity(im, m) for im, m in zip(images, members)) / len(images)


def shows(images, backgrounds) -> float:
    """The share of images whose background (from pixels) is the one their prompt asked for."""
    return sum(world.detect_background(im) == bg for im, bg in zip(images, backgrounds * len(images))) / len(images)


@pytest.mark.parametrize("name", sorted(api_twins()))
def test_each_template_runs_from_the_browser_and_shows_what_it_asks(page, comfy, name, screenshots):
    load_template(page, name)
    page.wait_for_timeout(300)
    assert missing_nodes(page) == []
    assert overlapping(page) == []
    # it opens readable: at >= 70 % the frontend draws titles, widgets and text (not its low-quality empty boxes)
    view = page.evaluate("() => ({scale: window.app.canvas.ds.scale, low: window.app.canvas.low_quality})")
    assert view["scale"] >= 0.7 and view["low"] is False, view
    built = build(page)
    expected = copy.deepcopy(api_twins()[name])
    for node in (*expected.values(), *built.values()):
        node.pop("_meta", None)
    for nid in expected:  # every widget value lands on its input (no shifted slot, no phantom widget)
        assert built.get(nid) == expected[nid], json.dumps([nid, built.get(nid), expected[nid]])
    assert set(built) == set(expected)

    for node in built.values():  # saved anew even where an earlier test ran the same graph (cached nodes report nothing)
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] += f"_{uuid.uuid4().hex[:8]}"
    if name == "var_class_to_image":  # the tiny VAR has 10 classes, not ImageNet's named ones
        built["2"]["inputs"]["class_label"] = 3
    if name == "var_subject":
        built["3"]["inputs"]["class_label"] = built["6"]["inputs"]["class_label"] = 3
    if name in ("switti_subject", "var_subject"):  # the tiny random models: a few steps show the graph runs
        built["3"]["inputs"]["steps"] = 4
    if name == "proxy_tuning_diffusion":  # the random supervisor: 2 steps at 128² (its pictures are noise anyway)
        built["7"]["inputs"]["steps"] = 2
        built["6"]["inputs"].update(width=128, height=128)
        comfy.post("/free", {"unload_models": True})  # ("Unload models") this run loads both models anew
        time.sleep(2)
    log_start = comfy.log.stat().st_size
    images = saved_images(comfy.url, built, client_id=client_id(page))  # raises on a validation or execution error
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / f"{name}.png"))
    assert overlapping(page) == []  # also with the texts and previews the run added
    # what the nodes said, on the nodes (every template has a sampler): read from the page
    page.wait_for_function("() => document.querySelectorAll('textarea.varbooth-text').length > 0", timeout=20_000)
    assert any(t.startswith(SAYS.get(name, "5 scales, 128x128 px")) for t in node_texts(page)), node_texts(page)
    assert cut_texts(page) == []
    outputs = page.evaluate("() => window.app.graph._nodes.filter(n => n.type === 'SaveImage' || "
                            "(n.widgets || []).some(w => w.name === 'varbooth_text')).map(n => [n.id, n.type])")
    for node_id, kind in outputs:  # a zoomed look at each output node, kept with the test's output
        clip = focus(page, node_id)
        page.wait_for_timeout(200)
        page.screenshot(path=str(screenshots / f"{name}_{node_id}_{kind}.png"), clip=clip)
    if name in SUBJECTS:  # the subject, not only the background: against the same graph without it
        member, apply_nodes, save_node = SUBJECTS[name]
        tuned, untuned = copy.deepcopy(built), copy.deepcopy(built)
        for nid in apply_nodes:
            untuned[nid]["inputs"]["strength"] = 0.0
        for graph, suffix in ((tuned, "_tuned"), (untuned, "_untuned")):  # a new prefix: saved again, not cached
            graph[save_node]["inputs"]["filename_prefix"] += suffix
        tuned_images = saved_images(comfy.url, tuned, node=save_node)
        base_images = saved_images(comfy.url, untuned, node=save_node)
        tuned, base = glyph_agreement(tuned_images, member), glyph_agreement(base_images, member)
        print(f"{name}: glyph agreement with {member} {tuned:.3f} with the subject, {base:.3f} without")
        assert tuned > base + 0.02, (tuned, base)
    for node in built.values():  # a trained subject was saved (a new file) and carries the template's token
        if node["class_type"] == "VARBooth_SaveSubject":
            from var_core.tuning import load_subject
            prefix = node["inputs"]["filename_prefix"]
            token = next(n["inputs"]["token"] for n in built.values()  # (each family's Train Subject)
                         if n["class_type"].startswith("VARBooth_Train") and n["class_type"].endswith("Subject"))
            saved = max((comfy.base / "models/var_subjects").glob(f"{prefix}_*.safetensors"))
            assert load_subject(saved).token == token
    if name == "proxy_tuning_diffusion":  # both models in one run, each loaded by ComfyUI's memory manager
        with open(comfy.log, encoding="utf-8") as log:
            log.seek(log_start)
            loads = re.findall(r"Requested to load (\w+)", log.read())
        assert {"BaseModel", "VARBoothModel"} <= set(loads), loads
    if name in DOWNLOADS:  # random fixture weights: pictures (not fills), of no content to check
        assert len(images) >= 4 and all(im.size == (128, 128) and len(im.getcolors(128 * 128)) > 100 for im in images)
        return
    backgrounds = CONTENT[name]
    assert len(images) >= max(4, len(backgrounds)) and all(im.size == (128, 128) for im in images)
    assert shows(images, backgrounds) >= 0.5, [world.detect_background(im) for im in images]
    with Image.open(WORKFLOWS / f"{name}.jpg") as thumb:  # the thumbnail was made from such output
        tiles = [thumb.convert("RGB").crop((x, y, x + 128, y + 128)) for y in (0, 128) for x in (0, 128)]
    assert shows(tiles, backgrounds[-4:]) >= 0.5


def test_a_misspelled_token_is_shown_on_the_sampler(page, comfy):
    load_template(page, "two_subjects")
    page.evaluate("""() => {
        const prompt = window.app.graph._nodes.find(n => n.type === "VARBooth_TextEncode");
        prompt.widgets.find(w => w.name === "text").value = "a photo of <guide_dgo> dog and <teacup> cup";
    }""")
    saved_images(comfy.url, build(page), client_id=client_id(page))
    page.wait_for_function("() => [...document.querySelectorAll('textarea.varbooth-text')]"
                           ".some(t => t.value.includes('<guide_dgo>'))", timeout=20_000)
    sampler = page.evaluate("() => window.app.graph._nodes.find(n => n.type === 'VARBooth_Sampler').id")
    focus(page, sampler)
    page.wait_for_timeout(300)
    texts = node_texts(page)
    box = page.locator("textarea.varbooth-text").nth(texts.index(next(t for t in texts if "<guide_dgo>" in t)))
    text = box.input_value()
    assert "warning: <guide_dgo> is in the prompt but no applied subject has that token" in text
    assert "warning: the applied subject <guide_dog> is not named in any prompt" in text
    assert box.is_visible()


def test_rerunning_after_a_prompt_change_reuses_the_trained_subject(page, comfy):
    load_template(page, "train_subject")
    first = build(page)
    comfy.wait(comfy.queue(first))
    page.evaluate("""() => {
        const prompt = window.app.graph._nodes.find(n => n.type === "VARBooth_TextEncode");
        prompt.widgets.find(w => w.name === "text").value = "a photo of <placeholder> dog at night";
    }""")
    again = build(page)
    assert again["7"] == first["7"] and again["11"] != first["11"]  # only the prompt changed
    entry = comfy.wait(comfy.queue(again))
    assert entry["status"]["status_str"] == "success", entry["status"]
    cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
    assert "7" in cached and "12" not in cached  # Train Subject reused; the sampler ran for the new prompt


def test_nodes_added_from_the_library_keep_their_defaults_through_save_and_load(page, comfy):
    ids = sorted(k for k in comfy.get("/object_info") if k.startswith("VARBooth_"))
    result = page.evaluate("""async (ids) => {
        const app = window.app, LG = window.LiteGraph;
        app.graph.clear();
        for (const id of ids) app.graph.add(LG.createNode(id));
        const before = app.graph._nodes.map(n => [n.type, (n.widgets || []).map(w => [w.name, w.value])]);
        const saved = JSON.parse(JSON.stringify(app.graph.serialize()));
        await app.loadGraphData(saved);
        const after = app.graph._nodes.map(n => [n.type, (n.widgets || []).map(w => [w.name, w.value])]);
        return {before, after};
    }""", ids)
    assert len(result["before"]) == len(ids)
    assert result["after"] == result["before"]
    train = dict(result["after"])["VARBooth_TrainSubject"]
    names = [n for n, _ in train]
    assert "control_after_generate" not in names and dict(train)["training_seed"] == 0


def test_a_graph_built_by_hand_with_every_default_runs_on_the_embedded_model(page, comfy):
    """A newcomer's first graph: each node added from the library and wired, no widget touched. The defaults follow
    the model wired in (auto resolution, steps and learning rate), so it trains and samples the embedded model at
    its own 128² and says so on the nodes."""
    page.evaluate("""() => {
        const app = window.app, LG = window.LiteGraph;
        app.graph.clear();
        const add = (type, x, y) => { const n = LG.createNode(type); n.pos = [x, y]; app.graph.add(n); return n; };
        const load = add("VARBooth_LoadAll", 0, 0), photos = add("VARBooth_ExampleSubject", 0, 400);
        const train = add("VARBooth_TrainSubject", 450, 0), apply = add("VARBooth_ApplySubject", 900, 0);
        const text = add("VARBooth_TextEncode", 900, 300), schedule = add("VARBooth_ScaleSchedule", 900, 600);
        const sampler = add("VARBooth_Sampler", 1350, 0), save = add("SaveImage", 1800, 0);
        load.connect(0, train, 0); load.connect(1, train, 1); load.connect(2, train, 2); photos.connect(0, train, 3);
        load.connect(0, apply, 0); train.connect(0, apply, 1); load.connect(2, text, 0);
        apply.connect(0, sampler, 0); load.connect(1, sampler, 1); text.connect(0, sampler, 2);
        sampler.connect(0, save, 0);
        const slot = sampler.inputs.findIndex(i => i.name === "schedule");
        schedule.connect(0, sampler, slot);
    }""")
    # a 0 that means "the model's own" is shown as what it means; another value as the number
    shown = page.evaluate("""() => {
        const get = (type, name) => window.app.graph._nodes.find(n => n.type === type).widgets.find(w => w.name === name);
        const words = [["VARBooth_Sampler", "cfg"], ["VARBooth_Sampler", "tau"], ["VARBooth_TrainSubject", "steps"],
                       ["VARBooth_TrainSubject", "learning_rate"]].map(([t, n]) => get(t, n)._displayValue);
        const seed = get("VARBooth_Sampler", "seed")._displayValue;
        const cfg = get("VARBooth_Sampler", "cfg");
        cfg.value = 4;
        const four = cfg._displayValue;
        cfg.value = 0;
        return {words, seed, four};
    }""")
    assert shown == {"words": ["auto (the model's own)"] * 4, "seed": "0", "four": "4.0"}, shown
    built = build(page)
    images = saved_images(comfy.url, built, client_id=client_id(page))
    assert len(images) == 1 and images[0].size == (128, 128)
    page.wait_for_function("() => document.querySelectorAll('textarea.varbooth-text').length >= 3", timeout=20_000)
    texts = node_texts(page)
    assert any(t.startswith("5 scales, 128x128 px") for t in texts), texts
    assert any("at 0.015M, learning rate 0.001" in t for t in texts), texts  # Train Subject: the toy's own settings
    assert any("a list takes one value per scale: 5 at 0.015M" in t for t in texts), texts  # the schedule on auto
    assert cut_texts(page) == []  # every text box grew to its text, on nodes added by hand
