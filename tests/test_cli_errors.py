"""Bad input on the command line: one clear line, exit code 2, no traceback, nothing lost (issue 10, items 8, 9, 13).

Every case of item 8 is one row of :data:`CASES`; each row builds its files (and, where the
condition cannot be produced for real in a test — a full disk, a read-only folder for root,
an exhausted memory — simulates it at the system call it stands for) and says what the one
line must contain. Item 9 (NaN / infinity, broken UI links) and item 13 (layering) follow.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from comfyui_gendeg import cli
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "workflows"
#: torch's message when the CPU allocator fails (copied from a run under `ulimit -v`).
TORCH_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 3072000000 bytes. Error code 12 (Cannot allocate memory)"
)


def _png(path: Path, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> Path:
    g = torch.Generator().manual_seed(0)
    c = len(Image.new(mode, (1, 1)).getbands())
    arr = (torch.rand(size[1], size[0], c, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr[..., 0] if c == 1 else arr, mode=mode).save(path)
    return path


def _huge_grey_png_header(path: Path, side: int = 16000) -> Path:
    """A valid PNG header for a ``side``² 8-bit grey image (the pixels are never decoded: the
    allocation that would hold them is the one made to fail)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _checkpoint(path: Path) -> Path:
    torch.save({"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.zeros(2)}, path)
    return path


def _deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` read-only. Permission bits do not stop root, so for root every way the pack
    writes there (Python's open, safetensors' writer, rename) is refused as the kernel would refuse
    it for anyone else — and so is removing a file there, the clean-up whose own error used to be
    chained on top of the first one."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return
    inside = folder.resolve()

    def denied(path: object) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().parent == inside
        except (TypeError, ValueError):
            return False

    def refuse(path: object) -> PermissionError:
        return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    real_open, real_unlink, real_replace = builtins.open, os.unlink, os.replace

    def fake_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        if isinstance(file, str | bytes | os.PathLike) and any(m in mode for m in "wax+") and denied(file):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_unlink(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if denied(path):
            raise refuse(path)
        return real_unlink(path, *args, **kwargs)

    def fake_replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        if denied(dst):
            raise refuse(dst)
        return real_replace(src, dst, *args, **kwargs)

    import safetensors.torch

    real_save = safetensors.torch.save_file

    def fake_save(tensors, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        if denied(filename):
            raise refuse(filename)
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "unlink", fake_unlink)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(safetensors.torch, "save_file", fake_save)


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up while a file is written: the data went to the temporary file, and the
    flush to disk fails with ENOSPC (where a full disk surfaces for buffered writes)."""

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


@dataclass
class Case:
    """One bad input: ``setup(tmp_path, monkeypatch) -> argv``; the line must contain ``expect``."""

    name: str
    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]
    expect: tuple[str, ...]


def _synth(tmp: Path, out: Path | str, *extra: str) -> list[str]:
    return ["synth", str(_png(tmp / "in.png")), str(out), "--type", "haze", "--mu", "0.05", *extra]


def _no_cuda(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    mp.setattr(torch.cuda, "is_available", lambda: False)  # the machine has no GPU (or it is hidden)
    return _synth(tmp, tmp / "out.png", "--device", "cuda")


def _out_is_folder(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    (tmp / "results").mkdir()
    return _synth(tmp, tmp / "results")


def _run_folder(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    (tmp / "flows").mkdir()
    (tmp / "flows" / "a.json").write_text("{}")
    return ["run", str(tmp / "flows")]


def _deep_json(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    n = 100_000
    (tmp / "deep.json").write_text('{"1": ' * n + "1" + "}" * n)
    return ["run", str(tmp / "deep.json")]


def _deep_json_within_the_parser(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    # parses, but deeper than the converters can walk (copy.deepcopy recurses ~2 frames a level)
    n = 800
    (tmp / "deep.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {"x": ' + "[" * n + "]" * n + "}}}")
    return ["run", str(tmp / "deep.json")]


def _synth_read_only(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    argv = _synth(tmp, tmp / "locked" / "out.png")
    _deny_writes(mp, tmp / "locked")
    return argv


def _convert_read_only(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    src = _checkpoint(tmp / "net.pth")
    _deny_writes(mp, tmp / "locked")
    return ["weights", "convert", str(src), "-o", str(tmp / "locked" / "net.safetensors")]


def _synth_disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    (tmp / "out.png").write_bytes(b"an earlier result that must survive")
    argv = _synth(tmp, tmp / "out.png")
    _disk_full(mp)
    return argv


def _convert_disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    src = _checkpoint(tmp / "net.pth")
    (tmp / "net.safetensors").write_bytes(b"an earlier conversion that must survive")
    _disk_full(mp)
    return ["weights", "convert", str(src), "--force"]


def _to_api_disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    _disk_full(mp)
    return ["workflow", "to-api", str(DATA / "ui_loadimage_synthesize_save.json"), str(tmp / "api.json")]


def _huge_grey_load(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    path = _huge_grey_png_header(tmp / "grey16000.png")
    from PIL import ImageFile

    real_load = ImageFile.ImageFile.load

    def load(self):  # noqa: ANN001, ANN202 - decoding 256 MB of pixels fails under the memory cap
        if self.size[0] * self.size[1] >= 16000 * 16000:
            raise MemoryError
        return real_load(self)

    mp.setattr(ImageFile.ImageFile, "load", load)
    return ["synth", str(path), str(tmp / "out.png"), "--type", "haze", "--mu", "0.05"]


def _oom_while_degrading(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    from comfyui_gendeg.core.synth import calibrate, joint

    def synthesize(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError(TORCH_OOM)

    mp.setattr(calibrate, "synthesize", synthesize)  # the μ-only calibration
    mp.setattr(joint, "synthesize", synthesize)  # the joint (μ, σ) one: haze's default
    return _synth(tmp, tmp / "out.png")


CASES = [
    Case("synth --device foo", lambda t, m: _synth(t, t / "o.png", "--device", "foo"), ("--device 'foo'", "not a device name", "cpu")),
    Case("score --device foo", lambda t, m: ["score", str(_png(t / "a.png")), str(_png(t / "b.png")), "--device", "foo"],
         ("--device 'foo'", "not a device name")),
    Case("synth --device cuda without a GPU", _no_cuda, ("--device cuda", "CUDA is not available", "cpu")),
    Case("synth IN FOLDER", _out_is_folder, ("is a folder", "give a file name")),
    Case("run FOLDER", _run_folder, ("is a folder, not a workflow", "a.json")),
    Case("run a workflow nested 100000 deep", _deep_json, ("nested more than",)),
    Case("run a workflow nested 800 deep", _deep_json_within_the_parser, ("nested more than",)),
    Case("synth into a read-only folder", _synth_read_only, ("cannot write", "permission denied", "nothing was written")),
    Case("weights convert -o into a read-only folder", _convert_read_only, ("cannot write", "permission denied")),
    Case("synth on a full disk", _synth_disk_full, ("disk is full", "the existing file is unchanged")),
    Case("weights convert on a full disk", _convert_disk_full, ("disk is full", "the existing file is unchanged")),
    Case("workflow to-api on a full disk", _to_api_disk_full, ("disk is full", "nothing was written")),
    Case("synth a 16000x16000 grey PNG under a memory cap", _huge_grey_load,
         ("not enough memory to load a 16000x16000 image", "976.6 MiB", "downscale")),
    Case("synth runs out of memory while degrading", _oom_while_degrading,
         ("not enough memory to degrade a 24x16 image on cpu", "downscale")),
    Case("synth --tol nan", lambda t, m: _synth(t, t / "o.png", "--tol", "nan"), ("--tol", "'nan' is not a finite number")),
    Case("synth --tol inf", lambda t, m: _synth(t, t / "o.png", "--tol", "inf"), ("--tol", "'inf' is not a finite number")),
    Case("synth --strength -inf", lambda t, m: ["synth", str(_png(t / "in.png")), str(t / "o.png"), "-t", "rain", "--strength=-inf"],
         ("--strength", "not a finite number")),
]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_with_exit_code_2_and_loses_nothing(case, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as mp:  # the simulated condition ends with the command
        argv = case.setup(work, mp)
        before = _files(work)
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse's own refusals
            rc = exc.code
    if (work / "locked").exists():
        (work / "locked").chmod(0o755)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for text in case.expect:
        assert text in lines[0], lines[0]
    assert captured.out == ""
    # nothing lost, nothing half-written: every file is as it was (no partial .part files either)
    assert _files(work) == before


# --- the memory cap for real: a 16000² grey PNG under RLIMIT_AS, in a subprocess -------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_a_huge_image_under_a_real_memory_cap_is_one_line(tmp_path):
    script = f"""
import resource, sys
from PIL import Image
from comfyui_gendeg import cli
Image.new("L", (16000, 16000), 128).save({str(tmp_path / 'grey.png')!r}, compress_level=1)
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
cap = vm + 600 * 2**20  # room to decode 256 MB of grey pixels, not for the 1 GB float32 copy
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.exit(cli.main(["synth", {str(tmp_path / 'grey.png')!r}, {str(tmp_path / 'out.png')!r}, "-t", "haze", "--mu", "0.05"]))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "not enough memory to load a 16000x16000 image" in lines[0]
    assert not (tmp_path / "out.png").exists()


# --- item 8: a chain of nodes longer than Python's recursion limit ----------------------------------------------


def test_a_chain_of_thousands_of_nodes_is_walked_without_recursion(tmp_path, capsys):
    """Validation, execution order and the UI layout walk the graph with explicit stacks."""
    n = 3 * sys.getrecursionlimit()
    prompt = {"1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "chelsea.png"}}}
    for i in range(2, n + 1):
        prompt[str(i)] = {"class_type": "GenDegContactSheet", "inputs": {"images": [str(i - 1), 0], "columns": 1, "tile": 32}}
    prompt[str(n + 1)] = {"class_type": "PreviewImage", "inputs": {"images": [str(n), 0]}}
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(prompt))
    assert cli.main(["run", str(path), "--validate-only"]) == 0
    assert f"valid ({n + 1} nodes, {n + 1} would run)" in capsys.readouterr().out
    assert cli.main(["workflow", "to-ui", str(path), str(tmp_path / "chain_ui.json")]) == 0
    ui = json.loads((tmp_path / "chain_ui.json").read_text())
    xs = {node["id"]: node["pos"][0] for node in ui["nodes"]}
    assert xs[n + 1] > xs[n] > xs[1]  # laid out left to right by depth


# --- item 9: NaN and infinity are refused, not run as "untouched" -----------------------------------------------


def _synth_prompt(tolerance: float) -> dict:
    return {
        "1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "chelsea.png"}},
        "2": {"class_type": "GenDegSynthesize", "inputs": {
            "image": ["1", 0], "type": "haze", "intensity_mode": "mu", "mu": 0.1, "strength": 0.5, "seed": 0,
            "tolerance": tolerance}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "nan"}},
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_workflow_input_of_nan_or_inf_is_a_per_node_error(bad, tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_synth_prompt(bad)))  # Python writes NaN / Infinity, as ComfyUI's frontend can
    assert "NaN" in path.read_text() or "Infinity" in path.read_text()
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "node 2 (GenDegSynthesize) input 'tolerance'" in err and "not a finite number" in err
    assert not out.exists() or not any(out.iterdir())  # nothing ran
    # and through --set, on a valid file
    path.write_text(json.dumps(_synth_prompt(0.005)))
    assert cli.main(["run", str(path), "--output-dir", str(out), "--set", "2.tolerance=NaN", "--validate-only"]) == 2
    assert "not a finite number" in capsys.readouterr().err


def test_the_calibration_refuses_a_nan_or_infinite_tolerance():
    """The engine itself refuses (inside ComfyUI, whose validator lets NaN through min/max, the node calls this)."""
    from comfyui_gendeg.core.errors import InputError
    from comfyui_gendeg.core.synth.calibrate import degrade_to_mu

    x = torch.full((1, 3, 16, 16), 0.5)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InputError, match="tol: .* is not a finite number"):
            degrade_to_mu(x, "haze", 0.1, tol=bad)


def test_finite_float_accepts_numbers_and_refuses_the_rest():
    from comfyui_gendeg.core.checks import finite_float
    from comfyui_gendeg.core.errors import InputError

    assert finite_float("0.25") == 0.25 and finite_float(3) == 3.0 and finite_float(" -1e-3 ") == -0.001
    for bad in ("nan", "NaN", "inf", "-Infinity", float("nan"), "abc", None, True):
        with pytest.raises(InputError, match="^x: "):
            finite_float(bad, "x")


# --- item 9: a broken link in a UI workflow is reported, not replaced by the widget value -----------------------


def _ui_with_broken_mu_link(kind: str) -> dict:
    """The editor's workflow LoadImage -> GenDegSynthesize -> SaveImage with the synthesizer's ``mu``
    widget linked (link 99) either through a link missing from ``links`` or from a node that is not there."""
    wf = json.loads((DATA / "ui_loadimage_synthesize_save.json").read_text())
    synth = next(n for n in wf["nodes"] if n["type"] == "GenDegSynthesize")
    slot = next(s for s in synth["inputs"] if s["name"] == "mu")
    slot["link"] = 99
    if kind == "dangling":
        wf["links"].append([99, 77, 0, synth["id"], synth["inputs"].index(slot), "FLOAT"])
    return wf


@pytest.mark.parametrize(("kind", "expect"), [
    ("missing", "its link 99 is missing from the workflow's links"),
    ("dangling", "its link 99 comes from node 77, which is not in the workflow"),
])
def test_a_broken_ui_link_is_a_per_node_error(kind, expect, tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_ui_with_broken_mu_link(kind)))
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "clean.png")
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--input-dir", str(tmp_path / "in"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "node 11 (GenDegSynthesize) input 'mu': " + expect in err, err
    assert "reconnect this input" in err
    assert not out.exists() or not any(out.iterdir())  # the widget's value was not run instead
    # the same workflow with the link repaired (the input back on its widget) runs
    wf = _ui_with_broken_mu_link("missing")
    next(s for n in wf["nodes"] for s in n["inputs"] if s.get("link") == 99)["link"] = None
    path.write_text(json.dumps(wf))
    assert cli.main(["run", str(path), "--input-dir", str(tmp_path / "in"), "--output-dir", str(out), "--quiet"]) == 0


# --- item 13: the weight-free engine does not import the model package ------------------------------------------


def test_the_synthesizer_does_not_import_the_gendeg_model_package():
    """Import every module of core.synth in a fresh interpreter and list what got imported.

    The package's root ``__init__`` is ComfyUI's entry point (it loads every node), so the
    subprocess registers the package folder without running it: what is measured is what the
    engine itself needs.
    """
    script = f"""
import importlib, pkgutil, sys, types
pkg = types.ModuleType("comfyui_gendeg")
pkg.__path__ = [{str(ROOT)!r}]
sys.modules["comfyui_gendeg"] = pkg
import comfyui_gendeg.core.synth as synth
for info in pkgutil.iter_modules(synth.__path__):
    importlib.import_module("comfyui_gendeg.core.synth." + info.name)
print("\\n".join(sorted(m for m in sys.modules if m.startswith("comfyui_gendeg"))))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    loaded = proc.stdout.split()
    assert "comfyui_gendeg.core.synth.plan" in loaded and "comfyui_gendeg.core.synth.calibrate" in loaded
    assert "comfyui_gendeg.core.presets" in loaded
    assert not [m for m in loaded if m.startswith(("comfyui_gendeg.core.gendeg", "comfyui_gendeg.nodes"))], loaded


def test_both_engines_read_the_same_preset_table():
    from comfyui_gendeg.core.gendeg import conditioning
    from comfyui_gendeg.core.presets import GENDEG_PRESETS, LEVELS
    from comfyui_gendeg.core.synth import plan

    assert conditioning.PRESETS is GENDEG_PRESETS and conditioning.PRESET_NAMES == plan.LEVELS == LEVELS
    for kind, levels in GENDEG_PRESETS.items():
        assert plan.PRESETS[kind] == {level: mu for level, (mu, _sigma) in levels.items()}
