"""`gendeg studio`'s server: endpoints the ComfyUI frontend calls, confinement of paths,
the queue and websocket messages, interruption. A fake engine keeps these fast; the real
executor is exercised in test_studio_run.py."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (studio extra) is not installed")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from comfyui_gendeg.core.studio.backend import node_errors_from  # noqa: E402
from comfyui_gendeg.core.studio.server import Studio, StudioConfig  # noqa: E402

JS_DIR = Path(__file__).resolve().parent.parent / "js"


class FakeBackend:
    """Two node types; 'Slow' waits on the interrupt event, 'Boom' raises."""

    def __init__(self, interrupt: threading.Event) -> None:
        self.interrupt = interrupt
        self.runs: list[str] = []

    def object_info(self):
        return {
            "GenDegThing": {
                "input": {"required": {"x": ["INT", {"default": 1}]}},
                "output": ["IMAGE"],
                "name": "GenDegThing",
                "category": "GenDeg/Degrade",
                "output_node": False,
            },
            "Out": {
                "input": {"required": {}},
                "output": [],
                "name": "Out",
                "category": "image",
                "output_node": True,
            },
        }

    def validate(self, prompt):
        errors = {}
        for nid, node in prompt.items():
            if node.get("class_type") not in self.object_info() and node.get("class_type") not in (
                "Slow",
                "Boom",
            ):
                errors[nid] = {
                    "errors": [
                        {
                            "type": "invalid_class",
                            "message": f"unknown node {node.get('class_type')}",
                            "details": "",
                            "extra_info": {},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": "",
                }
        if errors:
            return (
                {
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": "",
                    "extra_info": {},
                },
                errors,
                [],
            )
        return None, {}, [n for n, v in prompt.items() if v["class_type"] in ("Out", "Slow", "Boom")]

    def execute(self, prompt, *, extra_pnginfo, on_event, prompt_id):
        self.runs.append(prompt_id)
        for nid, node in prompt.items():
            on_event("executing", {"node": nid})
            if node["class_type"] == "Slow":
                for i in range(200):
                    if self.interrupt.is_set():
                        from comfyui_gendeg.core.errors import Interrupted

                        raise Interrupted("interrupted by the user")
                    on_event("progress", {"node": nid, "value": i, "max": 200})
                    time.sleep(0.02)
            if node["class_type"] == "Boom":
                on_event("execution_error", {"node": nid, "message": "it went boom"})
                raise RuntimeError("it went boom")
            on_event("progress", {"node": nid, "value": 1, "max": 1})
            on_event(
                "executed",
                {
                    "node": nid,
                    "output": {
                        "images": [{"filename": "a.png", "subfolder": "", "type": "output"}],
                        "extra": {"wf": bool(extra_pnginfo)},
                    },
                },
            )


@pytest.fixture
def studio_env(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>ComfyUI</title>")
    (web / "extensions" / "core").mkdir(parents=True)
    (web / "extensions" / "core" / "a.js").write_text("export {}")
    wf = tmp_path / "workflows"
    wf.mkdir()
    (wf / "gendeg_synth_demo.json").write_text(json.dumps({"nodes": [], "links": []}))
    interrupt = threading.Event()
    config = StudioConfig(
        web_root=web,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "output",
        temp_dir=tmp_path / "temp",
        user_dir=tmp_path / "user",
        extensions={"ComfyUI-GenDeg": JS_DIR},
        workflows={"ComfyUI-GenDeg": wf},
        interrupt=interrupt,
    )
    for d in (config.input_dir, config.output_dir, config.temp_dir):
        d.mkdir()
    backend = FakeBackend(interrupt)
    return Studio(backend, config), backend, tmp_path


def run(studio, coro_fn):
    async def main():
        async with TestClient(TestServer(studio.app)) as client:
            return await coro_fn(client)

    return asyncio.run(main())


async def _ws_until(ws, kind, prompt_id=None, timeout=20.0):
    """Collect websocket messages until one of ``kind`` (for prompt_id) arrives."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(msg)
        if msg["type"] == kind and (prompt_id is None or msg["data"].get("prompt_id") == prompt_id):
            return seen
    raise AssertionError(f"no {kind} message; got {[m['type'] for m in seen]}")


def test_startup_endpoints_answer_under_api_and_bare_paths(studio_env):
    studio, _, _ = studio_env

    async def go(c):
        for prefix in ("/api", ""):
            stats = await (await c.get(f"{prefix}/system_stats")).json()
            assert stats["system"]["python_version"] and stats["devices"][0]["type"] in ("cpu", "cuda")
            info = await (await c.get(f"{prefix}/object_info")).json()
            assert set(info) == {"GenDegThing", "Out"}
            one = await (await c.get(f"{prefix}/object_info/GenDegThing")).json()
            assert list(one) == ["GenDegThing"]
            assert await (await c.get(f"{prefix}/object_info/Nope")).json() == {}
            assert (await (await c.get(f"{prefix}/users")).json())["storage"] == "server"
            assert await (await c.get(f"{prefix}/i18n")).json() == {}
            assert "max_upload_size" in await (await c.get(f"{prefix}/features")).json()
            exts = await (await c.get(f"{prefix}/extensions")).json()
            assert "/extensions/core/a.js" in exts
            assert "/extensions/ComfyUI-GenDeg/gendeg.js" in exts
        js = await c.get("/extensions/ComfyUI-GenDeg/gendeg.js")
        assert js.status == 200 and "javascript" in js.headers["Content-Type"]
        assert "registerExtension" in await js.text()
        index = await c.get("/")
        assert index.status == 200 and "<title>ComfyUI" in await index.text()
        assert (await c.get("/api/prompt")).status == 200
        assert await (await c.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
        templates = await (await c.get("/api/workflow_templates")).json()
        assert templates == {"ComfyUI-GenDeg": ["gendeg_synth_demo"]}
        wf = await c.get("/api/workflow_templates/ComfyUI-GenDeg/gendeg_synth_demo.json")
        assert wf.status == 200 and (await wf.json())["nodes"] == []

    run(studio, go)


def test_settings_round_trip_and_persist(studio_env):
    studio, _, tmp = studio_env

    async def go(c):
        assert await (await c.get("/api/settings")).json() == {}
        assert (await c.post("/api/settings", json={"Comfy.A": 1, "Comfy.B": "x"})).status == 200
        assert (await c.post("/api/settings/Comfy.C", json=[1, 2])).status == 200
        assert await (await c.get("/api/settings")).json() == {
            "Comfy.A": 1,
            "Comfy.B": "x",
            "Comfy.C": [1, 2],
        }
        assert await (await c.get("/api/settings/Comfy.B")).json() == "x"
        assert await (await c.get("/api/settings/Missing")).json() is None

    run(studio, go)
    saved = json.loads((tmp / "user" / "default" / "comfy.settings.json").read_text())
    assert saved["Comfy.C"] == [1, 2]


def test_userdata_workflows_and_traversal_refused(studio_env):
    studio, _, tmp = studio_env
    root = tmp / "user" / "default"

    async def go(c):
        r = await c.post("/api/userdata/workflows%2Fmy%20graph.json", data=b'{"nodes": []}')
        assert r.status == 200 and await r.json() == "workflows/my graph.json"
        assert (root / "workflows" / "my graph.json").read_bytes() == b'{"nodes": []}'
        r = await c.post("/api/userdata/workflows%2Fmy%20graph.json?overwrite=false", data=b"{}")
        assert r.status == 409
        listing = await (
            await c.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
        ).json()
        assert [e["path"] for e in listing] == ["my graph.json"] and listing[0]["size"] == 13
        assert await (await c.get("/api/userdata?dir=workflows")).json() == ["my graph.json"]
        assert (await c.get("/api/userdata?dir=nothing")).status == 404
        got = await c.get("/api/userdata/workflows%2Fmy%20graph.json")
        assert got.status == 200 and await got.read() == b'{"nodes": []}'
        r = await c.post("/api/userdata/workflows%2Fmy%20graph.json/move/workflows%2Frenamed.json")
        assert r.status == 200 and await r.json() == "workflows/renamed.json"
        assert not (root / "workflows" / "my graph.json").exists()
        assert (await c.delete("/api/userdata/workflows%2Frenamed.json")).status == 204
        assert not (root / "workflows" / "renamed.json").exists()
        # leaving the user's folder is refused, whatever the spelling
        for bad in (
            "..%2F..%2Fsecret.txt",
            "%2Fetc%2Fpasswd",
            "workflows%2F..%2F..%2Fx.json",
            "..%2Fother_user%2Fx",
        ):
            assert (await c.post(f"/api/userdata/{bad}", data=b"x")).status == 403, bad
            assert (await c.get(f"/api/userdata/{bad}")).status == 403, bad
        r = await c.post("/api/userdata/workflows%2Fa.json", data=b"{}")
        assert (await c.post("/api/userdata/workflows%2Fa.json/move/..%2F..%2Fa.json")).status == 403
        assert (await c.get("/api/userdata?dir=..%2F..")).status == 403

    run(studio, go)
    assert (
        not (tmp / "secret.txt").exists()
        and not (tmp / "user" / "x").exists()
        and not (tmp / "a.json").exists()
    )


def _png_bytes(color=(255, 0, 0)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def test_view_and_upload_stay_in_their_folders(studio_env):
    studio, _, tmp = studio_env
    (tmp / "output" / "sub").mkdir()
    (tmp / "output" / "sub" / "o.png").write_bytes(_png_bytes())
    (tmp / "secret.png").write_bytes(_png_bytes())

    async def go(c):
        r = await c.get("/api/view?filename=o.png&subfolder=sub&type=output")
        assert r.status == 200 and r.headers["Content-Type"] == "image/png" and await r.read() == _png_bytes()
        assert (await c.get("/view?filename=o.png [output]&subfolder=sub")).status == 200
        r = await c.get("/api/view?filename=o.png&subfolder=sub&type=output&preview=jpeg;50")
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and (await r.read())[:2] == b"\xff\xd8"
        r = await c.get("/api/view?filename=o.png&subfolder=sub&type=output&channel=a")
        from PIL import Image

        alpha = Image.open(io.BytesIO(await r.read()))
        assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (255, 255)
        assert (await c.get("/api/view?filename=missing.png&type=output")).status == 404
        assert (await c.get("/api/view?filename=..%2Fsecret.png&type=output")).status == 400
        assert (await c.get("/api/view?filename=%2Fetc%2Fpasswd&type=output")).status == 400
        assert (await c.get("/api/view?filename=secret.png&subfolder=..&type=output")).status == 403
        assert (await c.get("/api/view?filename=secret.png&subfolder=..%2F..&type=temp")).status == 403
        assert (await c.get("/api/view?filename=o.png&type=nowhere")).status == 400

        def form(name, data, **fields):
            f = aiohttp.FormData()
            f.add_field("image", data, filename=name, content_type="image/png")
            for k, v in fields.items():
                f.add_field(k, v)
            return f

        r = await c.post("/api/upload/image", data=form("up.png", _png_bytes()))
        assert r.status == 200 and await r.json() == {"name": "up.png", "subfolder": "", "type": "input"}
        # same bytes again: same file; different bytes: a new name, the old file kept
        assert (await (await c.post("/api/upload/image", data=form("up.png", _png_bytes()))).json())[
            "name"
        ] == "up.png"
        r = await c.post("/api/upload/image", data=form("up.png", _png_bytes((0, 255, 0))))
        assert (await r.json())["name"] == "up (1).png"
        assert (tmp / "input" / "up.png").read_bytes() == _png_bytes()
        r = await c.post("/api/upload/image", data=form("up.png", _png_bytes((0, 0, 255)), overwrite="true"))
        assert (await r.json())["name"] == "up.png" and (tmp / "input" / "up.png").read_bytes() == _png_bytes(
            (0, 0, 255)
        )
        r = await c.post("/api/upload/image", data=form("s.png", _png_bytes(), subfolder="a/b"))
        assert r.status == 200 and (tmp / "input" / "a" / "b" / "s.png").is_file()
        for bad in (dict(subfolder="../.."), dict(subfolder="/tmp")):
            assert (
                await c.post("/api/upload/image", data=form("evil.png", _png_bytes(), **bad))
            ).status == 400
        r = await c.post("/api/upload/image", data=form("../evil.png", _png_bytes()))
        assert r.status == 400
        assert (
            await c.post("/api/upload/image", data=form("x.png", _png_bytes(), type="elsewhere"))
        ).status == 400

    run(studio, go)
    assert not list(tmp.glob("evil.png")) and not Path("/tmp/evil.png").exists()


def test_prompt_runs_with_comfyui_messages_and_history(studio_env):
    studio, backend, _ = studio_env
    prompt = {
        "1": {"class_type": "GenDegThing", "inputs": {"x": 1}},
        "2": {"class_type": "Out", "inputs": {}},
    }

    async def go(c):
        ws = await c.ws_connect("/ws?clientId=abc")
        first = await ws.receive_json(timeout=5)
        assert first == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"},
        }
        await ws.send_json({"type": "feature_flags", "data": {}})
        assert (await ws.receive_json(timeout=5))["type"] == "feature_flags"
        r = await c.post(
            "/api/prompt",
            json={
                "prompt": prompt,
                "client_id": "abc",
                "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}},
            },
        )
        assert r.status == 200
        body = await r.json()
        pid = body["prompt_id"]
        assert body["node_errors"] == {} and isinstance(body["number"], int | float)
        seen = await _ws_until(ws, "execution_success", pid)
        seen += await _ws_until(ws, "executing")  # the final {"node": None}
        kinds = [m["type"] for m in seen if m["type"] != "status"]
        assert kinds[:2] == ["execution_start", "execution_cached"]
        assert [m["data"]["node"] for m in seen if m["type"] == "executing"] == ["1", "2", None]
        assert any(
            m["type"] == "progress" and m["data"] == {"value": 1, "max": 1, "prompt_id": pid, "node": "1"}
            for m in seen
        )
        executed = [m["data"] for m in seen if m["type"] == "executed"]
        assert executed[0]["node"] == "1" and executed[0]["output"]["images"][0]["filename"] == "a.png"
        assert executed[0]["output"]["extra"] == {"wf": True}  # the editor's workflow reached the engine
        assert studio.queue.wait_idle(10)
        hist = await (await c.get("/api/history")).json()
        entry = hist[pid]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert entry["prompt"][1] == pid and entry["prompt"][2] == prompt and entry["prompt"][4] == ["2"]
        assert set(entry["outputs"]) == {"1", "2"} and entry["meta"]["1"]["node_id"] == "1"
        assert list(await (await c.get(f"/history/{pid}")).json()) == [pid]
        q = await (await c.get("/api/queue")).json()
        assert q == {"queue_running": [], "queue_pending": []}
        jobs = await (await c.get("/api/jobs?status=completed,failed&limit=10&offset=0")).json()
        assert jobs["pagination"]["total"] == 1 and jobs["jobs"][0]["id"] == pid
        assert jobs["jobs"][0]["status"] == "completed" and jobs["jobs"][0]["outputs_count"] == 2
        detail = await (await c.get(f"/api/jobs/{pid}")).json()
        assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"] == {"nodes": []}
        assert (await c.post("/api/history", json={"delete": [pid]})).status == 200
        assert await (await c.get("/api/history")).json() == {}
        await ws.close()

    run(studio, go)
    assert len(backend.runs) == 1


def test_invalid_prompts_get_comfyui_error_shape(studio_env):
    studio, backend, _ = studio_env

    async def go(c):
        r = await c.post("/api/prompt", json={"prompt": {"5": {"class_type": "NoSuchNode", "inputs": {}}}})
        assert r.status == 400
        body = await r.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert body["node_errors"]["5"]["errors"][0]["message"] == "unknown node NoSuchNode"
        r = await c.post("/api/prompt", json={"no": "prompt"})
        assert r.status == 400 and (await r.json())["error"]["type"] == "no_prompt"
        r = await c.post("/api/prompt", data=b"not json", headers={"Content-Type": "application/json"})
        assert r.status == 400

    run(studio, go)
    assert backend.runs == []


def test_errors_and_interrupt_reach_the_client(studio_env):
    studio, _, _ = studio_env

    async def go(c):
        ws = await c.ws_connect("/ws?clientId=z")
        await ws.receive_json(timeout=5)
        r = await c.post(
            "/api/prompt", json={"prompt": {"7": {"class_type": "Boom", "inputs": {}}}, "client_id": "z"}
        )
        pid = (await r.json())["prompt_id"]
        seen = await _ws_until(ws, "execution_error", pid)
        err = seen[-1]["data"]
        assert err["node_id"] == "7" and err["node_type"] == "Boom" and "boom" in err["exception_message"]
        assert isinstance(err["traceback"], list)
        # a long prompt, then a second one queued behind it; interrupt stops only the running one
        r1 = await c.post(
            "/api/prompt", json={"prompt": {"8": {"class_type": "Slow", "inputs": {}}}, "client_id": "z"}
        )
        r2 = await c.post(
            "/api/prompt", json={"prompt": {"9": {"class_type": "Out", "inputs": {}}}, "client_id": "z"}
        )
        p1, p2 = (await r1.json())["prompt_id"], (await r2.json())["prompt_id"]
        await _ws_until(ws, "progress", p1)
        q = await (await c.get("/api/queue")).json()
        assert [i[1] for i in q["queue_running"]] == [p1] and [i[1] for i in q["queue_pending"]] == [p2]
        assert (await c.post("/api/interrupt", json={})).status == 200
        seen = await _ws_until(ws, "execution_interrupted", p1)
        assert seen[-1]["data"]["node_id"] == "8"
        await _ws_until(ws, "execution_success", p2)
        assert studio.queue.wait_idle(10)
        hist = await (await c.get("/api/history")).json()
        assert hist[p1]["status"]["status_str"] == "error" and hist[p2]["status"]["status_str"] == "success"
        jobs = (await (await c.get("/api/jobs?status=failed,cancelled")).json())["jobs"]
        assert {j["id"]: j["status"] for j in jobs} == {p1: "cancelled", pid: "failed"}
        await ws.close()

    run(studio, go)


def test_queue_delete_and_clear_pending(studio_env):
    studio, backend, _ = studio_env

    async def go(c):
        slow = await (
            await c.post("/api/prompt", json={"prompt": {"1": {"class_type": "Slow", "inputs": {}}}})
        ).json()
        ids = []
        for _ in range(3):
            ids.append(
                (
                    await (
                        await c.post(
                            "/api/prompt", json={"prompt": {"2": {"class_type": "Out", "inputs": {}}}}
                        )
                    ).json()
                )["prompt_id"]
            )
        assert (await c.post("/api/queue", json={"delete": [ids[0]]})).status == 200
        pending = (await (await c.get("/api/queue")).json())["queue_pending"]
        assert [i[1] for i in pending] == ids[1:]
        assert (await c.post("/api/queue", json={"clear": True})).status == 200
        assert (await (await c.get("/api/queue")).json())["queue_pending"] == []
        await c.post("/api/interrupt", json={"prompt_id": slow["prompt_id"]})
        assert studio.queue.wait_idle(10)

    run(studio, go)
    assert len(backend.runs) == 1


def test_node_errors_from_executor_problem_lists():
    prompt = {"3": {"class_type": "GenDegSynthesize", "inputs": {}}}
    grouped = node_errors_from(
        [
            {
                "node": "3",
                "message": "missing required input 'image'",
                "type": "required_input_missing",
                "input": "image",
            },
            {"node": "3", "message": "seed out of range"},
        ],
        prompt,
    )
    assert list(grouped) == ["3"] and grouped["3"]["class_type"] == "GenDegSynthesize"
    assert [e["message"] for e in grouped["3"]["errors"]] == [
        "missing required input 'image'",
        "seed out of range",
    ]
    assert grouped["3"]["errors"][0]["extra_info"] == {"input_name": "image"}


def test_js_synth_presets_equal_the_synthesizers():
    """js/gendeg_widgets.js carries a copy of core/synth/plan.py PRESETS for the preset strip."""
    import re

    from comfyui_gendeg.core.synth.plan import PRESETS

    text = (JS_DIR / "gendeg_widgets.js").read_text(encoding="utf-8")
    m = re.search(r"export const SYNTH_MU_PRESETS = (\{.*?\});\n", text)
    assert m, "SYNTH_MU_PRESETS not found in js/gendeg_widgets.js"
    assert json.loads(m.group(1)) == PRESETS


def test_other_sites_and_rebinding_hosts_are_refused(studio_env):
    studio, backend, tmp = studio_env

    async def go(c):
        body = {"prompt": {"2": {"class_type": "Out", "inputs": {}}}}
        r = await c.post("/api/prompt", json=body, headers={"Origin": "https://evil.example"})
        assert r.status == 403
        r = await c.post("/api/userdata/x.json", data=b"{}", headers={"Origin": "http://127.0.0.1:1"})
        assert r.status == 403
        r = await c.get("/api/system_stats", headers={"Host": "evil.example:8188"})
        assert r.status == 403
        # sandboxed iframes and data: pages send "Origin: null" (and text/plain needs no preflight)
        r = await c.post("/api/prompt", data=json.dumps(body), headers={"Origin": "null", "Content-Type": "text/plain"})
        assert r.status == 403
        r = await c.post("/api/userdata/x.json", data=b"{}", headers={"Origin": "null"})
        assert r.status == 403
        own = f"http://{c.server.host}:{c.server.port}"
        r = await c.post("/api/prompt", json=body, headers={"Origin": own})
        assert r.status == 200
        assert studio.queue.wait_idle(10)

    run(studio, go)
    assert len(backend.runs) == 1 and not (tmp / "user" / "default" / "x.json").exists()


def test_malformed_numbers_are_bad_requests_not_server_errors(studio_env):
    studio, backend, tmp = studio_env

    async def go(c):
        body = {"prompt": {"2": {"class_type": "Out", "inputs": {}}}, "number": "x"}
        r = await c.post("/api/prompt", json=body)
        assert r.status == 400 and "bad request" in await r.text()
        r = await c.get("/api/jobs?limit=abc")
        assert r.status == 400
        r = await c.post("/api/prompt", data=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status == 400

    run(studio, go)
    assert backend.runs == []


def test_view_refuses_links_that_lead_outside_the_folder(studio_env):
    """A symbolic link in the output folder to a file (or folder) elsewhere is not served; links
    that stay inside are."""
    studio, _, tmp = studio_env
    secret = tmp / "secret.txt"
    secret.write_text("private")
    outside = tmp / "elsewhere"
    outside.mkdir()
    (outside / "inner.png").write_bytes(_png_bytes())
    out = tmp / "output"
    (out / "link.txt").symlink_to(secret)
    (out / "dirlink").symlink_to(outside, target_is_directory=True)
    (out / "real.png").write_bytes(_png_bytes())
    (out / "alias.png").symlink_to(out / "real.png")

    async def go(c):
        r = await c.get("/api/view?filename=link.txt&type=output")
        assert r.status == 403 and "private" not in await r.text()
        assert (await c.get("/api/view?filename=link.txt&type=output&preview=webp")).status == 403
        assert (await c.get("/api/view?filename=inner.png&subfolder=dirlink&type=output")).status == 403
        r = await c.get("/api/view?filename=alias.png&type=output")
        assert r.status == 200 and await r.read() == _png_bytes()

    run(studio, go)


def test_deep_or_odd_json_bodies_are_bad_requests(studio_env):
    """A 50000-deep body to /prompt is a 400 with a clear message (no traceback); so are bodies that
    are not objects where an object is needed, on every JSON endpoint."""
    studio, backend, _ = studio_env
    deep = b"[" * 50000 + b"]" * 50000
    deep_prompt = b'{"prompt": ' + b'{"a": ' * 50000 + b"1" + b"}" * 50000 + b"}"
    just_too_deep = json.dumps({"prompt": {"1": {"class_type": "Out", "inputs": {"x": [[[0]]]}}},
                                "extra_data": {"w": json.loads("[" * 150 + "]" * 150)}}).encode()

    async def go(c):
        for body in (deep, deep_prompt, just_too_deep):
            r = await c.post("/api/prompt", data=body, headers={"Content-Type": "application/json"})
            assert r.status == 400
            got = await r.json()
            assert got["error"]["type"] == "invalid_prompt" and "nested too deeply" in got["error"]["message"]
        for path in ("/api/settings", "/api/settings/Comfy.X", "/api/queue", "/api/history"):
            r = await c.post(path, data=deep)
            assert r.status == 400 and "nested too deeply" in await r.text(), path
        for path in ("/api/queue", "/api/history"):
            r = await c.post(path, json=[1, 2])
            assert r.status == 400 and "expected a JSON object" in await r.text(), path
            assert (await c.post(path, data=b"")).status == 400
        assert (await c.post("/api/interrupt", data=deep)).status == 200  # interrupt needs no body
        assert (await c.get("/api/system_stats")).status == 200  # the server lives on

    run(studio, go)
    assert backend.runs == []
