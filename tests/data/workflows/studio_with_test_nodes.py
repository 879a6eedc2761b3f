"""`gendeg studio` with the runner's test-only nodes added (for the browser format tests).

Usage: python studio_with_test_nodes.py PORT BASE_DIR
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    port, base = int(sys.argv[1]), Path(sys.argv[2])
    spec = importlib.util.spec_from_file_location("gendeg_runner_test_nodes_studio", HERE / "runner_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from comfyui_gendeg import nodes as pack_nodes

    pack_nodes.NODE_CLASS_MAPPINGS.update(mod.TEST_NODES)
    from comfyui_gendeg.commands.studio import build_studio
    from comfyui_gendeg.core.studio.server import run_studio

    dirs = {k: base / k for k in ("input", "output", "temp", "user", "models")}
    studio = build_studio(
        input_dir=dirs["input"], output_dir=dirs["output"], temp_dir=dirs["temp"], user_dir=dirs["user"],
        models_dir=dirs["models"], device="cpu",
    )  # fmt: skip
    run_studio(studio, "127.0.0.1", port, ready=threading.Event())


if __name__ == "__main__":
    main()
