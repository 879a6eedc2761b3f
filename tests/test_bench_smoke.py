"""Every benchmark runs in its CPU smoke mode (as CI does); full runs are for a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "memory.py")


def test_every_benchmark_is_listed_in_results():
    results = (BENCH / "RESULTS.md").read_text()
    for script in SCRIPTS:
        assert f"bench/{script.name}" in results, f"{script.name} has no section in bench/RESULTS.md"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_smoke_mode_runs(script, tmp_path):
    env = {**os.environ, "GENDEG_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, f"{script.name} --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script.name} --smoke printed no results"
