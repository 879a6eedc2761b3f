"""`gendeg studio` on the real executor: a graph queued through /prompt writes the same files
as `gendeg run` on it, reports ComfyUI-shaped validation errors, and `gendeg studio`'s
command line is wired. (Browser-level checks are in test_browser_studio.py.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (studio extra) is not installed")
pytest.importorskip("comfyui_frontend_package", reason="comfyui-frontend-package (studio extra) is not installed")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from comfyui_gendeg.cli import build_parser, main  # noqa: E402
from comfyui_gendeg.commands.studio import build_studio  # noqa: E402
from comfyui_gendeg.core.io import save_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "workflows" / "gendeg_synth_sweep.json"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _normalised(files: dict[str, bytes]) -> dict[str, bytes]:
    """JSON/JSONL records lose their wall-clock fields (timestamps differ between two runs)."""
    out = {}
    for name, data in files.items():
        if name.endswith((".jsonl", ".json")):
            rows = []
            for line in data.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                if isinstance(row, dict):
                    row = {k: v for k, v in row.items() if not any(t in k for t in ("time", "date", "started", "finished"))}
                rows.append(row)
            data = json.dumps(rows, sort_keys=True).encode()
        out[name] = data
    return out


def _studio_run(studio, body: dict, timeout: float = 240.0) -> tuple[int, dict, dict]:
    """POST /prompt and wait for the run; returns (status, response json, history entry)."""

    async def go():
        async with TestClient(TestServer(studio.app)) as c:
            ws = await c.ws_connect("/ws?clientId=t1")
            await ws.receive_json(timeout=5)
            r = await c.post("/api/prompt", json={**body, "client_id": "t1"})
            data = await r.json()
            if r.status != 200:
                return r.status, data, {}
            pid = data["prompt_id"]
            deadline = time.monotonic() + timeout
            kinds = []
            while time.monotonic() < deadline:
                msg = await ws.receive_json(timeout=deadline - time.monotonic())
                kinds.append(msg["type"])
                if msg["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    break
            assert studio.queue.wait_idle(30)
            hist = await (await c.get(f"/api/history/{pid}")).json()
            await ws.close()
            return r.status, {**data, "kinds": kinds}, hist[pid]

    return asyncio.run(go())


@pytest.fixture
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("input", "out_run", "out_studio", "temp", "user")}
    for p in d.values():
        p.mkdir()
    return d


def test_queued_graph_writes_the_same_files_as_gendeg_run(dirs, tmp_path):
    g = torch.Generator().manual_seed(0)
    save_image(dirs["input"] / "tiny.png", torch.rand(1, 3, 24, 40, generator=g))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "tiny.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "studio/check"}},
    }
    wf = tmp_path / "graph.json"
    wf.write_text(json.dumps(prompt))
    rc = main(["run", str(wf), "--input-dir", str(dirs["input"]), "--output-dir", str(dirs["out_run"]),
               "--temp-dir", str(dirs["temp"]), "--device", "cpu", "--quiet"])  # fmt: skip
    assert rc == 0
    from comfyui_gendeg.core.graph.formats import api_to_ui
    from comfyui_gendeg.core.graph.object_info import object_info
    from comfyui_gendeg.nodes.standins import runner_registry

    classes, names, modules = runner_registry()
    ui = api_to_ui(json.loads(wf.read_text()), object_info(classes, names, modules))  # what `gendeg run` embeds

    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip
    try:
        status, data, entry = _studio_run(studio, {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": ui}}})
    finally:
        studio.queue.stop()
    assert status == 200, data
    kinds = [k for k in data["kinds"] if k != "status"]
    assert kinds[0] == "execution_start" and "executed" in kinds and kinds[-1] == "execution_success"
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["2"]["images"] == [{"filename": "check_00001_.png", "subfolder": "studio", "type": "output"}]
    a, b = _files(dirs["out_run"]), _files(dirs["out_studio"])
    assert list(a) == ["studio/check_00001_.png"]
    assert a == b  # byte for byte, PNG text chunks (prompt, workflow) included


def test_invalid_graph_is_refused_with_node_errors(dirs):
    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "not_there.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}},
        "3": {"class_type": "GenDegNoSuchNode", "inputs": {}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},  # ComfyUI checks only what outputs need
    }
    try:
        status, data, _ = _studio_run(studio, {"prompt": prompt})
    finally:
        studio.queue.stop()
    assert status == 400
    assert data["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(data["node_errors"]) == {"1", "2", "3"}
    for nid, entry in data["node_errors"].items():
        assert entry["errors"] and all(e["message"] for e in entry["errors"]), nid
    assert data["node_errors"]["1"]["class_type"] == "LoadImage"
    assert any(e["extra_info"].get("input_name") == "image" for e in data["node_errors"]["1"]["errors"])
    assert _files(dirs["out_studio"]) == {}


def test_missing_checkpoint_is_the_loaders_run_time_error_with_the_packs_message(dirs, tmp_path):
    """As inside ComfyUI: validation lets the loader run; its error (file, folder, fetch command)
    reaches the editor as the node's exception, which the frontend shows in full."""
    from comfyui_gendeg.core.graph.formats import load_any

    models = tmp_path / "models"
    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], models_dir=models, device="cpu")  # fmt: skip
    try:
        doc = json.loads((ROOT / "workflows" / "gendeg_restore_feedforward.json").read_text())
        prompt, _ = load_any(doc, studio.backend.object_info())
        prompt = {k: v for k, v in prompt.items() if v["class_type"] != "LoadImage"}  # no input image needed
        loader = next(k for k, v in prompt.items() if v["class_type"] == "GenDegRestorerLoader")
        prompt["90"] = {"class_type": "GenDegSampleImage", "inputs": {"sample": "chelsea.png"}}
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value and value[0] not in prompt:
                    node["inputs"][name] = ["90", 0]
        status, data, entry = _studio_run(studio, {"prompt": prompt})
    finally:
        studio.queue.stop()
    assert status == 200 and data["kinds"][-1] == "execution_error", data
    err = dict(entry["status"]["messages"])["execution_error"]
    assert err["node_id"] == loader and err["exception_type"].endswith("core.errors.MissingWeightError")
    assert err["exception_message"].startswith("weight file 'NAFNet-SIDD-width64.pth' not found. It belongs in ")
    assert str(models / "restore") in err["exception_message"] and "get it by hand" in err["exception_message"]


@pytest.mark.skipif(not SWEEP.is_file(), reason="workflows/gendeg_synth_sweep.json is not in this checkout yet")
def test_synth_sweep_from_the_studio_matches_gendeg_run(dirs):
    """The README's main job: the same files from the studio as from `gendeg run`."""
    from comfyui_gendeg.core.graph.formats import load_any, read_json
    from comfyui_gendeg.core.graph.object_info import object_info
    from comfyui_gendeg.nodes.standins import runner_registry

    samples = ROOT / "samples"
    for p in samples.glob("*"):
        if p.is_file():
            shutil.copy(p, dirs["input"] / p.name)
    classes, names, modules = runner_registry()
    info = object_info(classes, names, modules)
    prompt, ui = load_any(read_json(str(SWEEP)), info)
    common = ["--input-dir", str(dirs["input"]), "--temp-dir", str(dirs["temp"]), "--device", "cpu", "--quiet"]
    assert main(["run", str(SWEEP), "--output-dir", str(dirs["out_run"]), *common]) == 0
    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip
    try:
        status, data, entry = _studio_run(studio, {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": ui}}})
    finally:
        studio.queue.stop()
    assert status == 200, data
    assert entry["status"]["status_str"] == "success", entry["status"]
    a, b = _files(dirs["out_run"]), _files(dirs["out_studio"])
    assert a, "gendeg run wrote nothing"
    assert sorted(a) == sorted(b)
    assert _normalised(a) == _normalised(b)


def test_studio_command_line_defaults_to_loopback_8188():
    args = build_parser().parse_args(["studio"])
    assert (args.host, args.port) == ("127.0.0.1", 8188)
    args = build_parser().parse_args(["studio", "--host", "::1", "--port", "9001"])
    assert (args.host, args.port) == ("::1", 9001)


@pytest.mark.skipif(not SWEEP.is_file(), reason="workflows/gendeg_synth_sweep.json is not in this checkout yet")
def test_interrupt_stops_a_running_graph_and_the_next_one_runs(dirs):
    from comfyui_gendeg.core.graph.formats import load_any, read_json
    from comfyui_gendeg.core.graph.object_info import object_info
    from comfyui_gendeg.nodes.standins import runner_registry

    classes, names, modules = runner_registry()
    prompt, _ = load_any(read_json(str(SWEEP)), object_info(classes, names, modules))
    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip

    async def go():
        async with TestClient(TestServer(studio.app)) as c:
            ws = await c.ws_connect("/ws?clientId=i1")
            await ws.receive_json(timeout=5)
            first = await (await c.post("/api/prompt", json={"prompt": prompt, "client_id": "i1"})).json()
            second = await (await c.post("/api/prompt", json={"prompt": prompt, "client_id": "i1"})).json()
            seen = []
            while True:
                msg = await ws.receive_json(timeout=60)
                seen.append(msg)
                if msg["type"] == "progress" and msg["data"]["prompt_id"] == first["prompt_id"]:
                    assert (await c.post("/api/interrupt", json={"prompt_id": first["prompt_id"]})).status == 200
                if msg["type"] in ("execution_success", "execution_error") and msg["data"]["prompt_id"] == second["prompt_id"]:
                    break
            assert studio.queue.wait_idle(30)
            hist = await (await c.get("/api/history")).json()
            await ws.close()
            return seen, hist, first["prompt_id"], second["prompt_id"]

    try:
        seen, hist, p1, p2 = asyncio.run(go())
    finally:
        studio.queue.stop()
    ends = [(m["type"], m["data"]["prompt_id"]) for m in seen if m["type"].startswith("execution_") and m["type"] not in ("execution_start", "execution_cached")]  # fmt: skip
    assert ends == [("execution_interrupted", p1), ("execution_success", p2)]
    assert hist[p1]["status"]["status_str"] == "error" and hist[p2]["status"]["status_str"] == "success"
    assert list(_files(dirs["out_studio"])) == ["gendeg_synth_sweep_00001_.png"]  # only the second one saved


def test_without_aiohttp_the_studio_says_what_to_install(monkeypatch, dirs):
    import sys

    from comfyui_gendeg.core.errors import InputError

    monkeypatch.setitem(sys.modules, "aiohttp", None)  # "not installed"
    monkeypatch.delitem(sys.modules, "comfyui_gendeg.core.studio.server", raising=False)
    with pytest.raises(InputError, match=r"pip install 'comfyui-gendeg\[studio\]'"):
        build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"], user_dir=dirs["user"])
