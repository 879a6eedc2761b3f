"""The editor in a real browser: `gendeg studio` serving the ComfyUI frontend, driven by
headless Chromium (Debian's package) through Playwright.

Checks: the editor loads with this pack's js and no console error from it; the pack's
nodes are in the node library; every shipped workflow loads with all its node types
known; the synthesizer sweep queued from the editor runs and shows its output images
and the before/after widget; the js widgets (comparison slider, stats, preset strip)
behave; a workflow whose checkpoint is missing shows the pack's message (file, folder,
fetch command); after the quality-gate workflow runs, no node covers another, counts are
whole numbers and Save Scores says where it wrote; outputs of cached nodes are shown from
the history in a fresh tab. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, get_json

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
SWEEP = ROOT / "workflows" / "gendeg_synth_sweep.json"
CHROMIUM = os.environ.get("GENDEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PACK_MARKERS = ("gendeg", "/extensions/comfyui-gendeg/")

if not Path(CHROMIUM).is_file() and os.environ.get("CI"):
    pytest.fail(f"CI must install Chromium (scripts/test.sh does): not found at {CHROMIUM}", pytrace=False)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install chromium; scripts/test.sh does it)", allow_module_level=True
    )
playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytest.importorskip("aiohttp", reason="aiohttp (studio extra) is not installed")
pytest.importorskip("comfyui_frontend_package", reason="comfyui-frontend-package (studio extra) is not installed")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """`gendeg studio` in a subprocess on a free loopback port, with the samples as inputs."""
    base = tmp_path_factory.mktemp("studio")
    dirs = {k: base / k for k in ("input", "output", "temp", "user", "models")}
    for d in dirs.values():
        d.mkdir()
    (dirs["input"] / "clean").mkdir()
    for p in (ROOT / "samples").glob("*"):
        if p.is_file():
            shutil.copy(p, dirs["input"] / p.name)
            if p.suffix == ".png":  # the folder the dataset workflows read
                shutil.copy(p, dirs["input"] / "clean" / p.name)
    port = free_port()
    env = {**os.environ, "GENDEG_NO_PROGRESS": "1", "GENDEG_MODELS_DIR": str(dirs["models"])}
    cmd = [sys.executable, "-m", "comfyui_gendeg", "studio", "--port", str(port), "--device", "cpu"]
    for k in ("input", "output", "temp", "user"):
        cmd += [f"--{k}-dir", str(dirs[k])]
    log = open(base / "studio.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(url + "/api/system_stats", 2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gendeg studio did not start:\n" + (base / "studio.log").read_text()) from None
                time.sleep(0.3)
        yield {"url": url, "dirs": dirs, "log": base / "studio.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(studio, tmp_path_factory):
    """The editor, loaded once for the module; ``page.gendeg_logs`` collects console problems."""
    with playwright_sync.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        pg = context.pages[0] if context.pages else context.new_page()
        logs: list[str] = []
        pg.on("console", lambda m: m.type in ("error", "warning") and logs.append(f"{m.type}: {m.text} @ {m.location}"))
        pg.on("pageerror", lambda e: logs.append(f"pageerror: {e}\n{getattr(e, 'stack', '')}"))
        pg.on("requestfailed", lambda r: logs.append(f"requestfailed: {r.url}"))
        pg.on("response", lambda r: r.status >= 400 and logs.append(f"http {r.status}: {r.url}"))
        pg.gendeg_logs = logs
        pg.goto(studio["url"] + "/", wait_until="domcontentloaded")
        pg.wait_for_function(
            "() => { try { return window.comfyAPI.app.app.graph"
            " && window.comfyAPI.app.app.extensions.some(e => e.name === 'GenDeg.Editor'); }"
            " catch { return false; } }",
            timeout=120_000,
        )
        pg.wait_for_timeout(1500)
        yield pg
        context.close()


def _pack_problems(logs: list[str]) -> list[str]:
    """Errors that name this pack. Template thumbnails (``workflows/<name>.jpg``) are optional
    in ComfyUI too (it answers 404 for a pack without them), so their absence is not one."""

    def thumbnail(line: str) -> bool:
        return re.search(r"/workflow_templates/[^'\s]+\.(jpg|jpeg|webp|png)\b", line) is not None

    def registry_lookup(line: str) -> bool:  # the editor asks comfy.org about missing nodes (offline here)
        return "api.comfy.org/" in line

    return [
        line
        for line in logs
        if any(m in line.lower() for m in PACK_MARKERS)
        and not line.startswith("warning")
        and not thumbnail(line)
        and not registry_lookup(line)
    ]


APP = "window.comfyAPI.app.app"


def test_editor_loads_the_pack_js_without_errors(page, studio):
    exts = page.evaluate(f"() => {APP}.extensions.map(e => e.name)")
    assert "GenDeg.Editor" in exts
    listed = get_json(studio["url"] + "/api/extensions")
    ours = [u for u in listed if u.startswith("/extensions/ComfyUI-GenDeg/")]
    assert "/extensions/ComfyUI-GenDeg/gendeg.js" in ours
    assert _pack_problems(page.gendeg_logs) == []
    assert not [line for line in page.gendeg_logs if line.startswith("pageerror")], page.gendeg_logs


def test_pack_nodes_are_in_the_node_library(page, studio):
    info = get_json(studio["url"] + "/api/object_info")
    ours = sorted(k for k in info if k.startswith("GenDeg"))
    assert ours, "no GenDeg nodes in /object_info"
    registered = page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    assert set(ours) <= set(registered)
    # the node library panel: search for the pack and see its display names
    page.keyboard.press("Escape")
    page.evaluate("() => document.activeElement?.blur?.()")
    page.keyboard.press("n")
    search = page.get_by_placeholder("Search Nodes...")
    search.wait_for(timeout=15_000)
    search.fill("GenDeg")
    some = info[ours[0]]["display_name"]
    page.get_by_text(some, exact=False).first.wait_for(timeout=15_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_node_library.png"))
    search.fill("")
    page.evaluate("() => document.activeElement?.blur?.()")
    page.keyboard.press("n")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_loads_in_the_editor(page, studio, workflow):
    """Every node type is known, and the prompt the editor builds from the file is the one
    `gendeg run` builds (same widget values in the same inputs)."""
    from comfyui_gendeg.core.graph.formats import load_any

    doc = json.loads(workflow.read_text())
    wanted = sorted({n["type"] for n in doc.get("nodes", [])})
    got = page.evaluate(
        f"""async (wf) => {{
            await {APP}.loadGraphData(wf);
            const nodes = {APP}.graph.nodes ?? {APP}.graph._nodes;
            const p = await {APP}.graphToPrompt();
            return {{types: nodes.map(n => [n.type, !!window.LiteGraph.registered_node_types[n.type]]),
                     prompt: p.output}};
        }}""",
        doc,
    )
    assert sorted({t for t, _ in got["types"]}) == wanted
    assert all(known for _, known in got["types"]), f"unknown node types: {[t for t, k in got['types'] if not k]}"
    expected, _ = load_any(doc, get_json(studio["url"] + "/api/object_info"))
    editor = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in got["prompt"].items()}
    runner = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in expected.items()}
    assert json.loads(json.dumps(editor)) == json.loads(json.dumps(runner))
    # laid out so that no node covers another once the editor has sized them (titles included)
    assert _overlaps(page.evaluate(NODE_BOXES)) == []
    assert _pack_problems(page.gendeg_logs) == []


def _wait_history(url: str, prompt_id: str | None, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = get_json(url + "/api/history")
        done = {k: v for k, v in hist.items() if prompt_id in (None, k) and v["status"]}
        if done:
            return done
        time.sleep(0.5)
    raise AssertionError("the queued prompt did not finish in time")


@pytest.mark.skipif(not SWEEP.is_file(), reason="workflows/gendeg_synth_sweep.json is not in this checkout yet")
def test_queue_the_synth_sweep_and_see_outputs(page, studio):
    doc = json.loads(SWEEP.read_text())
    page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", doc)
    before = set(get_json(studio["url"] + "/api/history"))
    page.evaluate(f"async () => {{ await {APP}.queuePrompt(0, 1); }}")
    deadline = time.monotonic() + 150
    entry = None
    while time.monotonic() < deadline and entry is None:
        hist = get_json(studio["url"] + "/api/history")
        new = [v for k, v in hist.items() if k not in before and v["status"]]
        entry = new[0] if new else None
        time.sleep(0.5)
    assert entry is not None, "the sweep did not finish in 150 s"
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert images, "the sweep showed no images"
    # the editor received the outputs and shows them
    page.wait_for_function(
        f"() => Object.values({APP}.nodeOutputs || {{}}).some(o => (o.images || []).length > 0)", timeout=30_000
    )
    compare = [out for out in entry["outputs"].values() if out.get("gendeg_compare")]
    if compare:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.gendeg-compare img.gendeg-after')]"
            ".some(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
    first = images[0]
    with urllib.request.urlopen(  # noqa: S310 - loopback only
        f"{studio['url']}/api/view?filename={first['filename']}&subfolder={first['subfolder']}&type={first['type']}"
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("image/")
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate(f"() => {{ {APP}.canvas?.ds && ({APP}.canvas.ds.scale = 0.75); {APP}.graph.setDirtyCanvas(true, true); }}")
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "studio_synth_sweep.png"))
    assert _pack_problems(page.gendeg_logs) == []


def test_compare_and_stats_widgets_show_a_run(page, studio):
    """onExecuted with ui.gendeg_compare / ui.gendeg_stats (as nodes/ui.py sends them)."""
    from PIL import Image

    temp = studio["dirs"]["temp"]
    Image.new("RGB", (64, 48), (200, 40, 40)).save(temp / "gendeg_test_before.png")
    Image.new("RGB", (64, 48), (40, 40, 200)).save(temp / "gendeg_test_after.png")
    node_type = page.evaluate(
        "() => Object.keys(window.LiteGraph.registered_node_types).find(t => t.startsWith('GenDeg'))"
    )
    node_id = page.evaluate(
        f"""(type) => {{
            const app = {APP};
            app.graph.clear();
            const node = window.LiteGraph.createNode(type);
            node.pos = [100, 100];
            app.graph.add(node);
            const ref = (f) => ({{filename: f, subfolder: "", type: "temp"}});
            node.onExecuted({{
                gendeg_compare: [{{before: ref("gendeg_test_before.png"), after: ref("gendeg_test_after.png")}}],
                gendeg_stats: [{{mu: 0.1234, sigma: 0.05}}],
            }});
            app.graph.setDirtyCanvas(true, true);
            return node.id;
        }}""",
        node_type,
    )
    sel = f'.gendeg-compare[data-gendeg-node="{node_id}"]'
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{sel} img')].filter(i => i.complete && i.naturalWidth > 0).length == 2""",
        timeout=20_000,
    )
    out = page.evaluate(
        f"""(id) => {{
            const node = {APP}.graph.getNodeById(id);
            const root = document.querySelector('{sel}');
            const widgets = node.widgets.map(w => w.name);
            const saved = node.serialize().widgets_values ?? [];
            return {{
                id,
                widths: [...root.querySelectorAll("img")].map(i => i.naturalWidth),
                split: root.dataset.split,
                stats: document.querySelector(`.gendeg-stats[data-gendeg-node="${{id}}"]`)?.textContent,
                widgets, saved: saved.length, normal: widgets.filter(n => !n.startsWith("gendeg_")).length,
            }};
        }}""",
        node_id,
    )
    assert out["widths"] == [64, 64], "before/after previews did not load through /view"
    assert out["split"] == "50.0"
    assert out["stats"] == "μ 0.1234  σ 0.0500"
    assert {"gendeg_compare", "gendeg_stats"} <= set(out["widgets"])
    assert out["saved"] <= out["normal"] + 1, "the pack's display widgets must not be saved in widgets_values"
    # dragging across the slider moves the split
    box = page.locator(f'.gendeg-compare[data-gendeg-node="{out["id"]}"]').bounding_box()
    if box and box["width"] > 0:
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
        split = float(page.locator(f'.gendeg-compare[data-gendeg-node="{out["id"]}"]').get_attribute("data-split"))
        assert abs(split - 25.0) < 3.0
    assert _pack_problems(page.gendeg_logs) == []


def _make_node(page, node_type: str) -> str:
    return page.evaluate(
        f"""(type) => {{
            const app = {APP};
            app.graph.clear();
            const node = window.LiteGraph.createNode(type);
            node.pos = [100, 100];
            app.graph.add(node);
            app.graph.setDirtyCanvas(true, true);
            return node.id;
        }}""",
        node_type,
    )


CLICK = f"""([id, selectors]) => {{
    const node = {APP}.graph.getNodeById(id);
    const root = document.querySelector(`.gendeg-picker[data-gendeg-node="${{id}}"]`);
    const values = () => Object.fromEntries(node.widgets.filter(w => !w.name.startsWith("gendeg_")).map(w => [w.name, w.value]));
    const steps = [];
    for (const sel of selectors) {{
        root.querySelector(sel).click();
        steps.push({{...values(), active: [...root.querySelectorAll("button.active")].map(b => b.dataset.value).sort()}});
    }}
    return {{types: [...root.querySelectorAll(".gendeg-types button")].map(b => b.dataset.value), steps,
             color: node.color, saved: node.serialize().widgets_values}};
}}"""


def test_preset_strip_on_the_synthesizer_sets_per_type_mu(page):
    from comfyui_gendeg.core.synth.plan import PRESETS

    if not page.evaluate("() => !!window.LiteGraph.registered_node_types['GenDegSynthesize']"):
        pytest.skip("GenDegSynthesize is not registered in this checkout")
    node_id = _make_node(page, "GenDegSynthesize")
    page.wait_for_selector(f'.gendeg-picker[data-gendeg-node="{node_id}"]', state="attached", timeout=20_000)
    page.evaluate(
        f"(id) => {{ const n = {APP}.graph.getNodeById(id); n.widgets.find(w => w.name === 'intensity_mode').value = 'strength'; }}",
        node_id,
    )
    out = page.evaluate(
        CLICK,
        [node_id, ['.gendeg-types button[data-value="haze"]', '.gendeg-presets button[data-value="heavy"]',
                   '.gendeg-types button[data-value="snow"]', '.gendeg-presets button[data-value="light"]']],
    )  # fmt: skip
    assert {"haze", "snow", "noise"} <= set(out["types"])
    haze_heavy, snow_heavy, snow_light = out["steps"][1], out["steps"][2], out["steps"][3]
    assert haze_heavy["mu"] == pytest.approx(PRESETS["haze"]["heavy"]) and haze_heavy["intensity_mode"] == "mu"
    assert haze_heavy["active"] == ["haze", "heavy"]
    assert snow_heavy["type"] == "snow" and snow_heavy["mu"] == pytest.approx(PRESETS["snow"]["heavy"])
    assert snow_light["mu"] == pytest.approx(PRESETS["snow"]["light"]) and snow_light["active"] == ["light", "snow"]
    assert out["color"] == "#6b4a2a"  # GenDeg/Degrade colour
    assert "snow" in out["saved"] and not any(isinstance(v, dict) for v in out["saved"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_picker.png"))
    assert _pack_problems(page.gendeg_logs) == []


def test_preset_strip_on_the_condition_sets_its_preset(page):
    if not page.evaluate("() => !!window.LiteGraph.registered_node_types['GenDegCondition']"):
        pytest.skip("GenDegCondition is not registered in this checkout")
    node_id = _make_node(page, "GenDegCondition")
    page.wait_for_selector(f'.gendeg-picker[data-gendeg-node="{node_id}"]', state="attached", timeout=20_000)
    out = page.evaluate(
        CLICK, [node_id, ['.gendeg-types button[data-value="rain+haze"]', '.gendeg-presets button[data-value="light"]']]
    )
    assert out["steps"][-1]["degradation"] == "rain+haze" and out["steps"][-1]["preset"] == "light"
    assert out["steps"][-1]["active"] == ["light", "rain+haze"]
    assert _pack_problems(page.gendeg_logs) == []


def test_editor_saves_and_lists_user_workflows(page, studio):
    """The frontend's own userdata calls (save, list, move, delete) against the studio."""
    out = page.evaluate(
        """async () => {
            const api = window.comfyAPI.api.api;
            const body = JSON.stringify({nodes: [], links: [], version: 0.4});
            const saved = await api.storeUserData("workflows/my sweep.json", body, {overwrite: true, stringify: false});
            const listed = (await api.listUserDataFullInfo("workflows")).map(f => f.path);
            const got = await (await api.getUserData("workflows/my sweep.json")).text();
            await api.moveUserData("workflows/my sweep.json", "workflows/renamed.json");
            const after = (await api.listUserDataFullInfo("workflows")).map(f => f.path);
            await api.deleteUserData("workflows/renamed.json");
            const end = (await api.listUserDataFullInfo("workflows")).map(f => f.path);
            return {status: saved.status, listed, got, after, end};
        }"""
    )
    assert out["status"] == 200
    assert "my sweep.json" in out["listed"] and json.loads(out["got"])["version"] == 0.4
    assert "renamed.json" in out["after"] and "my sweep.json" not in out["after"]
    assert "renamed.json" not in out["end"]
    assert not (studio["dirs"]["user"] / "default" / "workflows" / "renamed.json").exists()


def test_pack_js_is_quiet_when_its_nodes_are_absent(page, studio):
    """The extension loads into an editor whose server has none of the pack's nodes."""
    other = page.context.new_page()
    logs: list[str] = []
    other.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    other.on("console", lambda m: m.type == "error" and logs.append(f"error: {m.text} @ {m.location}"))

    def without_pack(route):  # noqa: ANN001
        info = route.fetch().json()
        body = json.dumps({k: v for k, v in info.items() if not k.startswith("GenDeg")})
        route.fulfill(status=200, content_type="application/json", body=body)

    other.route("**/object_info", without_pack)
    try:
        other.goto(studio["url"] + "/", wait_until="domcontentloaded")
        other.wait_for_function(
            "() => { try { return window.comfyAPI.app.app.graph"
            " && window.comfyAPI.app.app.extensions.some(e => e.name === 'GenDeg.Editor'); } catch { return false; } }",
            timeout=120_000,
        )
        other.wait_for_timeout(1000)
        types = other.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
        assert "SaveImage" in types and not any(t.startswith("GenDeg") for t in types)
        assert _pack_problems(logs) == [] and not [m for m in logs if m.startswith("pageerror")], logs
    finally:
        other.close()


def _queue_and_wait(page, studio, doc: dict, timeout: float = 150) -> tuple[str, dict]:
    """Load ``doc`` in the editor, queue it from there, wait for its history entry."""
    page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", doc)
    before = set(get_json(studio["url"] + "/api/history"))
    page.evaluate(f"async () => {{ await {APP}.queuePrompt(0, 1); }}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {k: v for k, v in get_json(studio["url"] + "/api/history").items() if k not in before and v["status"]}
        if new:
            return next(iter(new.items()))
        time.sleep(0.5)
    raise AssertionError(f"the workflow did not finish in {timeout:.0f} s")


def test_missing_model_shows_the_packs_message(page, studio):
    """The DA-CLIP workflow without its weights: the editor shows which file, where it goes and
    the command that fetches it (not just "rejected the value")."""
    doc = json.loads((ROOT / "workflows" / "gendeg_restore_daclip.json").read_text())
    _, entry = _queue_and_wait(page, studio, doc)
    assert entry["status"]["status_str"] == "error"
    folder = studio["dirs"]["models"] / "restore" / "daclip"
    wanted = ["weight file 'daclip/universal-ir.pth' not found", str(folder), "gendeg weights fetch universal-ir"]
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = page.evaluate("() => document.body.innerText")
        if all(w in text for w in wanted):
            break
        details = page.get_by_text("View details")  # the error toast of newer frontends folds the message away
        if details.count():
            page.keyboard.press("Escape")  # a dialog the editor opened at start-up must not catch the click
            try:
                details.first.click(timeout=3000)
            except playwright_sync.TimeoutError:
                pass
        page.wait_for_timeout(500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_missing_model.png"))
    assert all(w in text for w in wanted), text[-3000:]
    page.keyboard.press("Escape")
    assert _pack_problems(page.gendeg_logs) == []


GATE = ROOT / "workflows" / "gendeg_quality_dataset_gate.json"

NODE_BOXES = f"""() => ({APP}.graph._nodes ?? {APP}.graph.nodes).map(n => ({{
    id: String(n.id), type: n.type, x: n.pos[0], y: n.pos[1] - (window.LiteGraph.NODE_TITLE_HEIGHT ?? 30),
    w: n.size[0], h: n.size[1] + (window.LiteGraph.NODE_TITLE_HEIGHT ?? 30),
    stats: document.querySelector(`.gendeg-stats[data-gendeg-node="${{n.id}}"]`)?.textContent ?? null,
    compare: !!document.querySelector(`.gendeg-compare[data-gendeg-node="${{n.id}}"] img.gendeg-after[src]`),
}}))"""


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    return [
        (a["id"], b["id"])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    ]


@pytest.fixture(scope="module")
def gate_run(page, studio):
    """The quality-gate workflow, run once from the editor: (prompt id, history entry)."""
    return _queue_and_wait(page, studio, json.loads(GATE.read_text()))


def test_gate_workflow_output_fits_and_reads_well(page, studio, gate_run):
    _, entry = gate_run
    assert entry["status"]["status_str"] == "success", entry["status"]
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gendeg-stats')].some(e => e.textContent.includes('rows ->'))",
        timeout=30_000,
    )
    boxes = page.evaluate(NODE_BOXES)
    by_type = {b["type"]: b for b in boxes}
    assert _overlaps(boxes) == [], boxes  # the stats that appeared moved the nodes below out of the way
    gate = by_type["GenDegQualityGate"]["stats"]
    assert re.fullmatch(r"passed \d+  dropped \d+", gate), gate  # counts, not "passed 1.0000"
    assert re.fullmatch(r"written \d+  skipped \d+", by_type["GenDegSaveDatasetPairs"]["stats"])
    assert re.fullmatch(r"\d+ rows -> .*all_scores\.csv", by_type["GenDegSaveScores"]["stats"])
    assert re.match(r"#0 μ 0\.\d{4}  σ 0\.\d{4}", by_type["GenDegSynthesize"]["stats"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_quality_gate.png"))
    out = studio["dirs"]["output"]
    assert not [p.name for p in out.rglob(".*")], "locks or temporary files left in the output folder"
    assert _pack_problems(page.gendeg_logs) == []


def test_cached_outputs_show_in_a_fresh_tab(page, studio, gate_run):
    """A fully cached re-run in a new tab: ComfyUI says which nodes were cached and resends ui
    only for output nodes; the slider and μ/σ of the cached synthesizer come from the history."""
    prompt_id, entry = gate_run
    fresh = page.context.new_page()
    try:
        fresh.goto(studio["url"] + "/", wait_until="domcontentloaded")
        fresh.wait_for_function(
            "() => { try { return window.comfyAPI.app.app.graph"
            " && window.comfyAPI.app.app.extensions.some(e => e.name === 'GenDeg.Editor'); } catch { return false; } }",
            timeout=120_000,
        )
        fresh.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", json.loads(GATE.read_text()))
        synth = next(n["id"] for n in json.loads(GATE.read_text())["nodes"] if n["type"] == "GenDegSynthesize")
        assert fresh.evaluate(f"() => !document.querySelector('.gendeg-stats[data-gendeg-node=\"{synth}\"]')")
        outputs = {nid for nid, node in entry["prompt"][2].items() if node["class_type"].startswith("GenDegSave")}
        fresh.evaluate(
            """([id, all, outs, ui]) => {
                const api = window.comfyAPI.api.api;
                api.dispatchCustomEvent("execution_start", {prompt_id: id});
                api.dispatchCustomEvent("execution_cached", {prompt_id: id, nodes: all});
                for (const n of outs) api.dispatchCustomEvent("executed", {prompt_id: id, node: n, display_node: n, output: ui[n] ?? null});
                api.dispatchCustomEvent("execution_success", {prompt_id: id});
            }""",
            [prompt_id, list(entry["prompt"][2]), sorted(outputs), entry["outputs"]],
        )
        fresh.wait_for_function(
            f"""() => [...document.querySelectorAll('.gendeg-compare[data-gendeg-node="{synth}"] img')]
                   .filter(i => i.complete && i.naturalWidth > 0).length == 2""",
            timeout=30_000,
        )
        stats = fresh.evaluate(f"() => document.querySelector('.gendeg-stats[data-gendeg-node=\"{synth}\"]')?.textContent")
        assert stats and stats.startswith("#0 μ 0.")
    finally:
        fresh.close()
