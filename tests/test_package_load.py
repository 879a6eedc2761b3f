"""The pack loads the way ComfyUI loads custom nodes: a copy in custom_nodes/<folder with a hyphen>.

ComfyUI's ``load_custom_node`` imports ``<path>/__init__.py`` with
``importlib.util.spec_from_file_location`` under the module name ``path.replace(".", "_x_")``
(a package, so relative imports resolve inside the folder), then reads
``NODE_CLASS_MAPPINGS``, ``NODE_DISPLAY_NAME_MAPPINGS`` and ``WEB_DIRECTORY`` and sets
``RELATIVE_PYTHON_MODULE`` on each class. We do exactly that in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("diffusers", "transformers", "spandrel", "open_clip", "skimage", "piq", "aiohttp")

LOADER = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    module_path = sys.argv[1]
    stub = sys.argv[2] if len(sys.argv) > 2 else ""
    if stub:
        sys.path.insert(0, stub)
    sys_module_name = module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_module_name] = module
    spec.loader.exec_module(module)
    nodes_pkg = sys.modules[sys_module_name + ".nodes"]
    host = sys.modules[sys_module_name + ".nodes.host"]
    for name, cls in module.NODE_CLASS_MAPPINGS.items():
        cls.RELATIVE_PYTHON_MODULE = "custom_nodes." + os.path.basename(module_path)
    # ComfyUI's /object_info must be able to serialise every class (plain json.dumps, no fallback).
    info_mod = importlib.import_module(sys_module_name + ".core.graph.object_info")
    info = {}
    for name, cls in module.NODE_CLASS_MAPPINGS.items():
        entry = info_mod.node_info(name, cls, module.NODE_DISPLAY_NAME_MAPPINGS.get(name))
        entry["input"] = cls.INPUT_TYPES()
        json.dumps(entry)
        info[name] = entry["python_module"]
    out = {
        "mappings": sorted(module.NODE_CLASS_MAPPINGS),
        "display": sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
        "web": module.WEB_DIRECTORY,
        "web_is_dir": os.path.isdir(os.path.join(module_path, module.WEB_DIRECTORY)),
        "import_errors": nodes_pkg.IMPORT_ERRORS,
        "in_comfyui": host.IN_COMFYUI,
        "installed_copy_loaded": "comfyui_gendeg" in sys.modules,
        "heavy": [m for m in HEAVY_MODULES if m in sys.modules],
        "python_modules": sorted(set(info.values())),
    }
    if stub:
        import folder_paths
        out["folders"] = sorted(k for k in folder_paths.folder_names_and_paths if k.startswith("gendeg_"))
        out["models_dir"] = str(host.models_dir())
    print("RESULT " + json.dumps(out))
    """
).replace("HEAVY_MODULES", repr(HEAVY))

STUB_FOLDER_PATHS = """
import os
base_path = os.path.dirname(os.path.abspath(__file__))
models_dir = os.path.join(base_path, "models")
folder_names_and_paths = {"checkpoints": ([os.path.join(models_dir, "checkpoints")], {".safetensors"})}
def get_folder_paths(name):
    return folder_names_and_paths[name][0][:]
def get_input_directory():
    return os.path.join(base_path, "input")
def get_output_directory():
    return os.path.join(base_path, "output")
def get_temp_directory():
    return os.path.join(base_path, "temp")
"""
STUB_MM = """
import torch
def get_torch_device():
    return torch.device("cpu")
def unet_offload_device():
    return torch.device("cpu")
def throw_exception_if_processing_interrupted():
    pass
def soft_empty_cache():
    pass
"""
STUB_UTILS = """
class ProgressBar:
    def __init__(self, total):
        self.total = total
    def update_absolute(self, value, total=None, preview=None):
        pass
"""


def _copy_pack(tmp_path: Path) -> Path:
    dest = tmp_path / "ComfyUI" / "custom_nodes" / "ComfyUI-GenDeg"
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "output", "temp", "models", ".benchmarks"
        ),
    )
    return dest


def _start(dest: Path, stub: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    args = [sys.executable, "-c", LOADER, str(dest)] + ([str(stub)] if stub else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=dest.parent, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-4000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, dict]:
    """The pack copied into custom_nodes/ComfyUI-GenDeg and loaded twice at once: plain, and with ComfyUI present."""
    base = tmp_path_factory.mktemp("comfy")
    dest = _copy_pack(base)
    stub = base / "stub"
    (stub / "comfy").mkdir(parents=True)
    (stub / "folder_paths.py").write_text(STUB_FOLDER_PATHS)
    (stub / "comfy" / "__init__.py").write_text("")
    (stub / "comfy" / "model_management.py").write_text(STUB_MM)
    (stub / "comfy" / "utils.py").write_text(STUB_UTILS)
    procs = {"plain": _start(dest), "comfy": _start(dest, stub)}
    results = {name: _result(proc) for name, proc in procs.items()}
    results["comfy"]["stub"] = str(stub)
    return results


def test_loads_like_comfyui_from_a_hyphenated_folder(loaded):
    result = loaded["plain"]
    assert result["import_errors"] == {}, "node modules failed to import:\n" + "\n".join(result["import_errors"].values())
    assert result["mappings"], "NODE_CLASS_MAPPINGS is empty"
    assert all(name.startswith("GenDeg") for name in result["mappings"])
    # The runner's stand-ins for ComfyUI's own nodes are never registered inside ComfyUI.
    assert not {"LoadImage", "SaveImage", "PreviewImage"} & set(result["mappings"])
    assert set(result["display"]) <= set(result["mappings"])
    assert result["web"] == "js" and result["web_is_dir"]
    assert result["installed_copy_loaded"] is False, "the copy imported the installed package: use relative imports"
    assert result["heavy"] == [], f"heavy modules imported at load time (import them inside functions): {result['heavy']}"
    assert result["python_modules"] == ["custom_nodes.ComfyUI-GenDeg"]
    assert result["in_comfyui"] is False


def test_inside_comfyui_registers_model_folders(loaded):
    result = loaded["comfy"]
    assert result["in_comfyui"] is True and result["import_errors"] == {}
    assert {"gendeg_gendeg", "gendeg_restore", "gendeg_quality"} <= set(result["folders"])
    assert result["models_dir"] == str(Path(result["stub"]) / "models" / "gendeg")
