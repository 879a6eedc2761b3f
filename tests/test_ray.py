"""`gendeg run --ray` on a local Ray with 2 CPUs: same files as the plain run, a killed worker, a killed job.

One Ray for the module (starting one takes seconds); the plain run is the reference.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the scale extra (ray[data]) is not installed")

from comfyui_gendeg import cli  # noqa: E402
from comfyui_gendeg.core.scale.ray_job import RayOptions, connect  # noqa: E402
from comfyui_gendeg.scale import run_workflow_on_ray  # noqa: E402
from ray_helpers import every_writer_prompt, make_folder, seed_output, snapshot  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, started the way `gendeg run --ray` starts one; the jobs below reuse it.

    Its token is set here (not made up by `connect`) so that a second driver can join it.
    """
    saved = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        with connect(RayOptions(workers=2)) as r:
            assert r.cluster_resources().get("CPU") == 2
            yield r
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = saved


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The input folder, the workflow file and the plain `gendeg run` output (the reference)."""
    root = tmp_path_factory.mktemp("rayjob")
    make_folder(root / "input")
    wf = root / "every_writer.json"
    wf.write_text(json.dumps(every_writer_prompt()))
    plain = root / "plain"
    seed_output(plain)
    code = cli.main(["run", str(wf), "--input-dir", str(root / "input"), "--output-dir", str(plain), "--quiet"])
    assert code == 0
    return root, wf, snapshot(plain)


def _run(job, out: Path, **kw):
    root, wf, _ = job
    return run_workflow_on_ray(wf, input_dir=root / "input", output_dir=out, workers=2, batch_size=kw.pop("batch_size", 2),
                               progress=False, **kw)


def test_ray_run_gives_the_plain_runs_files(local_ray, job, tmp_path):
    _, _, reference = job
    # the reference has what the check is about: pairs, both score files, numbered SaveImage files
    assert "scores/all.csv" in reference and "scores/all.jsonl" in reference
    assert len([k for k in reference if k.startswith("pairs/degraded/")]) == 6
    shots = sorted(k for k in reference if k.startswith("shots/"))
    assert shots[0] == "shots/deg_00003_.png" and len(shots) > 2  # numbering continued at 4
    gated = len([k for k in reference if k.startswith("gated/degraded/")])
    assert 0 < gated < 6  # the gate dropped some

    out = tmp_path / "ray"
    seed_output(out)
    reports = []
    summary = _run(job, out, on_report=reports.append)
    assert snapshot(out) == reference  # byte-identical images, same rows in the same order, same records
    assert not (out / ".gendeg-ray").exists()
    assert summary.files == 6 and summary.written == 6 + gated and summary.skipped == 0
    assert len(reports) == 3 and sorted(r["first"] for r in reports) == [0, 2, 4]
    assert all(r["count"] == 2 and r["error"] is None for r in reports)


def test_a_killed_worker_does_not_change_the_result(local_ray, job, tmp_path):
    _, _, reference = job
    out = tmp_path / "ray"
    seed_output(out)
    killed: list[int] = []
    pids: list[int] = []

    def kill_first_worker(report):
        pids.append(report["pid"])
        if not killed:  # the worker already runs its next batch: Ray restarts it and runs that batch again
            os.kill(report["pid"], signal.SIGKILL)
            killed.append(report["pid"])

    _run(job, out, batch_size=1, on_report=kill_first_worker)
    assert killed
    # Reports reach the driver asynchronously: on a loaded machine the killed worker was busy with its
    # next batch (Ray restarts it and retries the batch: a third pid); on an idle one it may already
    # have finished its share. Either way, every batch is reported once and the files are the same.
    assert len(pids) == 6  # one report per batch: a retried batch is not counted twice
    assert snapshot(out) == reference


@pytest.mark.slow
def test_a_killed_job_resumes_where_it_stopped(local_ray, job, tmp_path):
    """`gendeg run --ray --ray-address` joins the module's Ray; killed, its rerun skips the finished pairs."""
    root, wf, reference = job
    out = tmp_path / "ray"
    seed_output(out)
    address = local_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "comfyui_gendeg", "run", str(wf), "--input-dir", str(root / "input"),
           "--output-dir", str(out), "--ray", "--ray-address", address, "--ray-workers", "2", "--ray-batch", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "pairs" / "records"
    deadline = time.monotonic() + 240
    try:
        while not list(records.glob("*.json")):
            assert proc.poll() is None, f"the job ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no pair was written in time"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's driver: Ray ends the job's workers with it
        proc.wait()
    done_before = len(list(records.glob("*.json")))
    # killed mid-job: some pairs done (on a fast machine perhaps all of them), the dataset never finalised
    assert done_before >= 1 and not (out / "pairs" / "metadata.jsonl").exists()

    summary = _run(job, out)
    assert summary.skipped >= done_before  # the pairs the killed job finished were not made again
    assert snapshot(out) == reference


def test_a_node_error_stops_the_job_with_one_line(local_ray, job, tmp_path):
    root, _, _ = job
    bad = every_writer_prompt()
    bad["7"]["inputs"]["report"] = "scores/all.txt"  # neither csv nor jsonl
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps(bad))
    from comfyui_gendeg.core.scale.ray_job import BatchError

    with pytest.raises(BatchError, match=r"node 7 \(GenDegSaveScores\) failed: .*csv or jsonl.*batch of"):
        run_workflow_on_ray(wf, input_dir=root / "input", output_dir=tmp_path / "out", workers=2, batch_size=3,
                            progress=False)


TWICE = """
import ray
from comfyui_gendeg.core.scale.ray_job import RayOptions, connect

@ray.remote
def square(v):
    return v * v

for k in range(2):  # a notebook's second job: a second local Ray in the same Python process
    with connect(RayOptions(workers=1)) as r:
        print(k, r.get(square.remote(k + 2)))
"""


@pytest.mark.slow
def test_a_second_local_ray_in_the_same_process_accepts_the_driver(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # nothing of the user's ~/.ray
    proc = subprocess.run([sys.executable, "-c", TWICE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "4", "1", "9"]
