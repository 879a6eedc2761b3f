"""The converters agree with the real ComfyUI editor (comfyui-frontend-package in headless Chromium).

* A UI file → the editor's own ``graphToPrompt`` gives exactly our ``ui_to_api`` prompt
  (reroutes, primitives, notes, mutes, bypasses, seed controls, ``_meta``).
* Our ``api_to_ui`` output opens in the editor and the editor turns it back into the very
  prompt we started from, so files we write are files people can open and share.
* Every shipped workflow: the editor and ``gendeg run`` see the same graph.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from comfyui_gendeg.core.graph.formats import api_to_ui, ui_to_api
from helpers import free_port, get_json

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "workflows"
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
CHROMIUM = os.environ.get("GENDEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

if not Path(CHROMIUM).is_file():
    pytest.skip(f"Chromium not found at {CHROMIUM}", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytest.importorskip("aiohttp", reason="aiohttp (studio extra) is not installed")
pytest.importorskip("comfyui_frontend_package", reason="comfyui-frontend-package (studio extra) is not installed")


API_PROMPT = {
    "1": {"inputs": {"n": 3}, "class_type": "TestBatch", "_meta": {"title": "TestBatch"}},
    "2": {"inputs": {"image": ["1", 0]}, "class_type": "TestSplit", "_meta": {"title": "split"}},
    "3": {
        "inputs": {"image": ["2", 0], "factor": 2.0, "mode": "add", "index": ["2", 1], "bias": 0.5, "flag": True,
                   "note": "two\nlines"},
        "class_type": "TestScale",
        "_meta": {"title": "TestScale"},
    },  # fmt: skip
    "4": {"inputs": {"image": ["3", 0], "amount": 0.05, "seed": 11}, "class_type": "TestNoise", "_meta": {"title": "n"}},
    "5": {"inputs": {"images": ["4", 0], "index": ["2", 1]}, "class_type": "TestCollect", "_meta": {"title": "TestCollect"}},
    "6": {"inputs": {"image": "clean.png"}, "class_type": "LoadImage", "_meta": {"title": "Load Image"}},
    "7": {"inputs": {"images": ["6", 0], "filename_prefix": "a/b"}, "class_type": "SaveImage", "_meta": {"title": "Save Image"}},
}
FIXTURES = ["ui_reroute_primitive_bypass.json", "ui_subgraph.json", "ui_loadimage_synthesize_save.json"]


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    """``{name: (output, workflow)}`` as the editor builds them for every document, and ``object_info``.

    Documents: the fixtures, every shipped workflow, and ``api_to_ui(API_PROMPT)``; all are
    loaded in one page visit (``app.loadGraphData`` then ``app.graphToPrompt``).
    """
    base = tmp_path_factory.mktemp("fmt-studio")
    for k in ("input", "output", "temp", "user", "models"):
        (base / k).mkdir()
    port = free_port()
    env = {**os.environ, "GENDEG_NO_PROGRESS": "1"}
    log = open(base / "studio.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, str(DATA / "studio_with_test_nodes.py"), str(port), str(base)],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                info = get_json(url + "/api/object_info", 5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("studio did not start:\n" + (base / "studio.log").read_text()) from None
                time.sleep(0.3)
        docs = {name: json.loads((DATA / name).read_text()) for name in FIXTURES}
        docs.update({p.name: json.loads(p.read_text(encoding="utf-8")) for p in WORKFLOWS})
        docs["api_to_ui"] = api_to_ui(copy.deepcopy(API_PROMPT), info)
        with playwright_sync.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
            )
            page = browser.new_page()
            page.goto(url + "/", wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            results = page.evaluate(
                """async (docs) => {
                    const out = {};
                    for (const [name, wf] of Object.entries(docs)) {
                        await window.app.loadGraphData(wf);
                        const p = await window.app.graphToPrompt();
                        out[name] = [p.output, p.workflow];
                    }
                    return out;
                }""",
                copy.deepcopy(docs),
            )
            browser.close()
        yield {name: (out, wf) for name, (out, wf) in results.items()}, info, docs
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.parametrize("name", FIXTURES)
def test_editor_builds_the_same_prompt_as_ui_to_api(editor, name):
    results, info, docs = editor
    ui = docs[name]
    virtual = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"} | {
        sg["id"] for sg in (ui.get("definitions") or {}).get("subgraphs", [])
    }
    if any(n["type"] not in info for n in ui["nodes"] if n["type"] not in virtual):
        pytest.skip(f"{name} uses nodes this checkout does not have")
    output, saved = results[name]
    assert output == ui_to_api(ui, info)
    assert ui_to_api(saved, info) == output  # and the file the editor would save reads the same


def test_api_to_ui_opens_in_the_editor_as_the_same_graph(editor):
    results, info, _ = editor
    output, saved = results["api_to_ui"]
    assert output == API_PROMPT
    assert ui_to_api(saved, info) == API_PROMPT


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_shipped_workflow_means_the_same_in_the_editor(editor, path):
    results, info, docs = editor
    output, _ = results[path.name]
    assert output == ui_to_api(docs[path.name], info)
