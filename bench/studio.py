"""Benchmark: what `gendeg studio` adds on top of the executor, against the executor alone.

* ``prompt``: a small graph (LoadImage -> SaveImage, 64x64) queued N times through the
  studio's ``/api/prompt`` with a websocket listening for ``execution_success`` (validation,
  queue, events, history) vs. ``Executor.execute`` called directly on the same prompt in the
  same run. Reported as milliseconds per prompt.
* ``object_info``: time of ``/api/object_info`` (rebuilt on every call, like ComfyUI) and its
  size.
* ``editor`` (when Chromium is installed): cold load of the editor in headless Chromium
  until this pack's extension is registered.

There is no GPU part: the studio adds CPU-side work only. Usage::

    python bench/studio.py --smoke      # < 60 s: 20 prompts
    python bench/studio.py              # 200 prompts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="small CPU run (< 60 s)")
    ap.add_argument("--prompts", type=int, default=None)
    args = ap.parse_args()
    n = args.prompts or (20 if args.smoke else 200)
    os.environ.setdefault("GENDEG_NO_PROGRESS", "1")

    import torch
    from aiohttp.test_utils import TestClient, TestServer
    from comfyui_gendeg.commands.run import make_executor
    from comfyui_gendeg.commands.studio import build_studio
    from comfyui_gendeg.core.io import save_image
    from comfyui_gendeg.nodes import host

    tmp = Path(tempfile.mkdtemp(prefix="gendeg-bench-studio-"))
    dirs = {k: tmp / k for k in ("input", "out_direct", "out_studio", "temp", "user")}
    for d in dirs.values():
        d.mkdir()
    save_image(dirs["input"] / "x.png", torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }
    results: dict[str, object] = {"prompts": n}

    # direct executor
    host.SETTINGS.input_dir, host.SETTINGS.output_dir, host.SETTINGS.temp_dir = (
        dirs["input"], dirs["out_direct"], dirs["temp"])  # fmt: skip
    ex = make_executor()
    ex.execute(json.loads(json.dumps(prompt)))  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        ex.execute(json.loads(json.dumps(prompt)))
    results["direct_ms_per_prompt"] = round(1000 * (time.perf_counter() - t) / n, 2)

    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip

    async def through_studio() -> None:
        async with TestClient(TestServer(studio.app)) as c:
            ws = await c.ws_connect("/ws?clientId=bench")
            await ws.receive_json(timeout=5)

            async def one() -> None:
                r = await c.post("/api/prompt", json={"prompt": prompt, "client_id": "bench"})
                pid = (await r.json())["prompt_id"]
                while True:
                    m = await ws.receive_json(timeout=60)
                    if m["type"] == "execution_success" and m["data"]["prompt_id"] == pid:
                        return

            await one()  # warm-up
            t0 = time.perf_counter()
            for _ in range(n):
                await one()
            results["studio_ms_per_prompt"] = round(1000 * (time.perf_counter() - t0) / n, 2)
            t0 = time.perf_counter()
            body = await (await c.get("/api/object_info")).read()
            results["object_info_ms"] = round(1000 * (time.perf_counter() - t0), 1)
            results["object_info_kib"] = round(len(body) / 1024, 1)
            await ws.close()

    try:
        asyncio.run(through_studio())
    finally:
        studio.queue.stop()
    results["studio_overhead_ms"] = round(results["studio_ms_per_prompt"] - results["direct_ms_per_prompt"], 2)

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if Path(chromium).is_file():
        results["editor_cold_load_s"] = _editor_load(chromium, dirs)
    print(json.dumps(results, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


def _editor_load(chromium: str, dirs: dict[str, Path]) -> float | None:
    try:
        from comfyui_gendeg.commands.studio import build_studio
        from comfyui_gendeg.core.studio.server import run_studio
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    studio = build_studio(input_dir=dirs["input"], output_dir=dirs["out_studio"], temp_dir=dirs["temp"],
                          user_dir=dirs["user"], device="cpu")  # fmt: skip
    ready = threading.Event()
    threading.Thread(target=run_studio, args=(studio, "127.0.0.1", port), kwargs={"ready": ready}, daemon=True).start()
    ready.wait(30)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        t = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(
            "() => { try { return window.comfyAPI.app.app.extensions.some(e => e.name === 'GenDeg.Editor'); }"
            " catch { return false; } }",
            timeout=120_000,
        )
        took = round(time.perf_counter() - t, 2)
        browser.close()
    return took


if __name__ == "__main__":
    main()
