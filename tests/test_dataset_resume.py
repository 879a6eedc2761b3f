"""The pair writer killed with SIGKILL at random moments and resumed ends like an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.core import dataset as ds
from PIL import Image

N_PAIRS = 10
DELAY = 0.02  # seconds slept before each rename and each encode, so kills land mid-write too

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from comfyui_gendeg.core import dataset as ds

    out, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if delay:
        real_replace, real_encode = os.replace, ds.encode_image

        def slow_replace(a, b):
            time.sleep(delay)  # the temp file is complete but not yet renamed
            return real_replace(a, b)

        def slow_encode(*a, **k):
            time.sleep(delay / 2)
            return real_encode(*a, **k)

        os.replace = slow_replace
        ds.encode_image = slow_encode
    print("ready", flush=True)
    exec(open(sys.argv[4]).read())
    """
)

# The job itself: shared by the in-process reference run and the subprocess runs.
JOB = textwrap.dedent(
    """
    writer = ds.PairWriter(out, "haze/v1")
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        clean = torch.rand(1, 3, 24, 32, generator=g)
        degraded = (0.6 * clean + 0.3 * torch.rand(1, 3, 24, 32, generator=g)).clamp(0, 1)
        params = {"type": "haze", "strength": round(0.1 * i, 3), "mu": 0.05 * i}
        writer.write(clean, degraded, f"scene/img{i:02d}.png", params, seed=7)
        print("pair", i, flush=True)
        if i % 3 == 2:
            writer.finalize()  # periodic rebuilds: kills may land inside them too
    writer.finalize()
    print("done", flush=True)
    """
)


def _run_job_in_process(out: Path) -> None:
    exec(JOB, {"ds": ds, "torch": torch, "out": str(out), "n": N_PAIRS})


def _snapshot(root: Path) -> dict[str, object]:
    """Every file under root: bytes for images, parsed records without timestamps for JSON."""
    snap: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix == ".json":
            rec = json.loads(p.read_text())
            rec.pop("created")
            snap[rel] = rec
        elif p.name == "metadata.jsonl":
            lines = [json.loads(line) for line in p.read_text().splitlines()]
            for rec in lines:
                rec.pop("created")
            snap[rel] = lines
        else:
            snap[rel] = p.read_bytes()
    return snap


def _assert_no_partial_visible_file(root: Path) -> None:
    """After a kill, every visible file is complete (temp files are hidden ``.part`` names)."""
    for p in root.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix == ".png":
            with Image.open(p) as img:
                img.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.name == "metadata.jsonl":
            for line in p.read_text().splitlines():
                json.loads(line)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    _run_job_in_process(reference)
    ref_snap = _snapshot(reference)
    assert len([k for k in ref_snap if k.startswith("haze/v1/degraded/")]) == N_PAIRS
    assert len(ref_snap["haze/v1/metadata.jsonl"]) == N_PAIRS

    script, job = tmp_path / "job_runner.py", tmp_path / "job.py"
    script.write_text(SCRIPT)
    job.write_text(JOB)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    pairs_seen = []
    parts_left = 0
    for _attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out), str(N_PAIRS), str(DELAY), str(job)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "GENDEG_NO_PROGRESS": "1"},
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.35))  # a random moment of the work
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        pairs_seen.append(rest.count("pair"))
        if proc.returncode == -signal.SIGKILL and "done" not in rest:
            kills += 1
        _assert_no_partial_visible_file(out)
        parts_left += len(list(out.rglob("*.part")))
    print("pairs per killed run:", pairs_seen, "temp files left by kills:", parts_left)
    assert kills >= 2, f"the kills should interrupt the work (pairs per run: {pairs_seen})"

    # the final, uninterrupted run finishes the job
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(N_PAIRS), "0", str(job)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    assert not list(out.rglob("*.part")), "temporary files of killed runs must be gone"
    assert _snapshot(out) == ref_snap


def test_finished_pairs_are_skipped_and_records_keep_their_time(tmp_path):
    _run_job_in_process(tmp_path)
    rec_path = next((tmp_path / "haze" / "v1" / "records").glob("*.json"))
    created = json.loads(rec_path.read_text())["created"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    writer = ds.PairWriter(tmp_path, "haze/v1")
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 24, 32, generator=g)
    result = writer.write(clean, clean, "scene/img00.png", {"type": "haze", "strength": 0.0, "mu": 0.0}, seed=7)
    assert not result.written
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")} == mtimes
    assert json.loads(rec_path.read_text())["created"] == created
