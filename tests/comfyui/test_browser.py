"""The templates as a user meets them: the real ComfyUI frontend in headless Chromium (Debian's chromium, driven by
Playwright) loads each template, builds the prompt with its own code (app.graphToPrompt), and queues it; and every
VARBooth node added from the node library keeps its default widget values through a save/load round trip."""
from __future__ import annotations

import copy
import json
import os
import shutil

import pytest

from test_server import tiny
from workflows import WORKFLOWS, api_twins

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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


@pytest.mark.parametrize("name", sorted(api_twins()))
def test_the_frontend_builds_each_template_into_its_api_twin(page, name, screenshots):
    load_template(page, name)
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshots / f"{name}.png"))
    assert missing_nodes(page) == []
    built = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    expected = copy.deepcopy(api_twins()[name])
    for node in expected.values():
        node.pop("_meta", None)
    for node in built.values():
        node.pop("_meta", None)
    for nid in expected:  # every widget value lands on its input (no shifted slot, no phantom widget)
        assert built.get(nid) == expected[nid], json.dumps([nid, built.get(nid), expected[nid]])
    assert set(built) == set(expected)


def test_a_template_queued_from_the_browser_runs(page, comfy):
    load_template(page, "text_to_image")
    toy = tiny(api_twins()["text_to_image"])
    page.evaluate("""(toy) => {
        for (const node of window.app.graph._nodes) {
            const want = toy[String(node.id)];
            if (!want) continue;
            for (const w of node.widgets || []) if (w.name in want.inputs && !Array.isArray(want.inputs[w.name]))
                w.value = want.inputs[w.name];
        }
    }""", toy)
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    entry = comfy.wait(comfy.queue(prompt))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert any(out.get("images") for out in entry["outputs"].values())


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
