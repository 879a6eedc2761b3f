"""Ray jobs without Ray: which graphs split per batch, at-least-once delivery, the CLI's --ray flags and errors.

Nothing here starts Ray; the worker's runner and the driver's finishing step run in-process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from comfyui_gendeg import cli
from comfyui_gendeg.commands.run import make_executor
from comfyui_gendeg.core.scale.graph import FolderJob, plan_folder_job
from ray_helpers import every_writer_prompt, make_folder, seed_output, snapshot

try:  # imported with the module: a checkout folder named "ray" can shadow the package later on
    import ray
except ImportError:  # pragma: no cover - the scale extra is optional
    ray = None

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _plan(prompt):
    ex = make_executor()
    return plan_folder_job(prompt, ex.registry, ex.execution_order(prompt))


# --- which graphs run per batch ----------------------------------------------------------------


def test_the_dataset_workflow_splits_below_its_folder_loader():
    job = _plan(every_writer_prompt())
    assert isinstance(job, FolderJob)
    assert job.loader == "1"
    assert job.downstream == {str(i) for i in range(1, 11)}  # every node depends on the folder here
    assert job.folder_inputs["folder"] == "clean"


def test_a_model_loader_is_not_per_batch():
    prompt = every_writer_prompt()
    prompt["11"] = {"class_type": "GenDegIQALoader", "inputs": {"kind": "lpips-alex", "clip": "", "file": ""}}
    prompt["5"]["inputs"]["iqa_model"] = ["11", 0]
    ex = make_executor()
    job = plan_folder_job(prompt, ex.registry, ex.execution_order(prompt))
    assert isinstance(job, FolderJob) and "11" not in job.downstream


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p["1"]["inputs"].update(output="batch"), "outputs one batch"),
        (lambda p: p.update({"11": {"class_type": "GenDegContactSheet", "inputs": {"images": ["3", 0], "columns": 3,
                                                                                   "tile": 64}},
                             "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "s"}}}),
         "node 11 (GenDegContactSheet) gathers the whole list"),
        (lambda p: p.update({"11": {"class_type": "GenDegSampleImage", "inputs": {"sample": "coffee.png"}},
                             "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "s"}}}),
         "output node 12 (SaveImage) does not depend on the folder"),
        (lambda p: (p["2"]["inputs"].pop("filenames"), p["2"]["inputs"].update(mode="grid")),
         "pairs the folder's images with the list of node 2"),
        (lambda p: p.update({"11": dict(p["1"])}), "it loads 2 folders"),
    ],
    ids=["batch-output", "contact-sheet", "independent-output", "grid-plan", "two-folders"],
)
def test_graphs_that_must_run_whole_say_why(change, reason):
    prompt = every_writer_prompt()
    change(prompt)
    if "11" in prompt and prompt["11"]["class_type"] == "GenDegLoadImageFolder":
        prompt["5"]["inputs"]["reference"] = ["11", 0]
    result = _plan(prompt)
    assert isinstance(result, str) and reason in result, result


def test_the_shipped_folder_workflows_split_and_the_others_say_why():
    from comfyui_gendeg.commands.run import _registry_info
    from comfyui_gendeg.core.graph.formats import load_any, read_json

    _, info = _registry_info()
    verdict = {}
    for name in ("gendeg_synth_dataset", "gendeg_quality_dataset_gate", "gendeg_quality_folder_csv", "gendeg_synth_sweep"):
        prompt, _ = load_any(read_json(str(WORKFLOWS / f"{name}.json")), info)
        verdict[name] = _plan(prompt)
    assert isinstance(verdict["gendeg_synth_dataset"], FolderJob)
    assert isinstance(verdict["gendeg_quality_dataset_gate"], FolderJob)
    assert "loads 2 folders" in verdict["gendeg_quality_folder_csv"]
    assert "no GenDeg Load Image Folder" in verdict["gendeg_synth_sweep"]


def test_the_executor_caches_only_what_cacheable_accepts():
    """A Ray worker's executor keeps its loaders between batches, never the last batch's images."""
    prompt = {
        "1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "coffee.png"}},
        "2": {"class_type": "GenDegSynthesize", "inputs": {"image": ["1", 0], "type": "noise", "intensity_mode": "strength",
                                                            "mu": 0.05, "strength": 0.3, "seed": 1,
                                                            "depth_near_is_bright": True, "tolerance": 0.005,
                                                            "expert_params": ""}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    from comfyui_gendeg.core.graph.executor import Executor

    ex = Executor(make_executor().registry, cache=True, cacheable=lambda nid: nid == "1")
    events = []
    for _ in range(2):
        ex.execute(prompt, on_event=lambda kind, data: events.append((kind, data.get("node"), data.get("nodes"))))
    ran = [node for kind, node, _ in events if kind == "executing" and node]
    assert ran == ["1", "2", "3", "2", "3"]  # the second run reused node 1 only
    assert ("execution_cached", None, ["1"]) in events
    assert ex.last_outputs["2"] == []  # released after its consumer ran, not kept


# --- at-least-once delivery: a batch run twice changes nothing ------------------------------------


def _spec(tmp_path, prompt, job):
    from comfyui_gendeg.commands.run import _registry_info
    from comfyui_gendeg.core.graph.formats import api_to_ui
    from comfyui_gendeg.nodes._ray_batch import STAGING, JobSpec

    ui = api_to_ui(prompt, _registry_info()[1])  # what `gendeg run` puts in the PNGs
    return JobSpec(prompt=prompt, extra_pnginfo={"workflow": ui}, loader=job.loader, downstream=job.downstream,
                   input_dir=str(tmp_path / "input"), output_dir=str(tmp_path / "out"), temp_dir=str(tmp_path / "temp"),
                   models_dir=None, device="cpu", staging=f"{STAGING}/job")


def test_batches_run_twice_and_in_any_order_give_the_plain_runs_files(tmp_path):
    """What Ray may do (retry a batch, deliver out of order) leaves the same files as `gendeg run`."""
    from comfyui_gendeg.nodes import _ray_batch

    make_folder(tmp_path / "input")
    prompt = every_writer_prompt()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(prompt))
    seed_output(tmp_path / "plain")
    assert cli.main(["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "plain"),
                     "--quiet"]) == 0
    reference = snapshot(tmp_path / "plain")

    seed_output(tmp_path / "out")
    ex = make_executor()
    order = ex.execution_order(prompt)
    job = plan_folder_job(prompt, ex.registry, order)
    spec = _spec(tmp_path, prompt, job)
    run = _ray_batch.make_runner(spec)  # sets this process up as a worker (conftest restores host.SETTINGS)
    names = sorted(p.name for p in (tmp_path / "input" / "clean").iterdir())
    batches = [(names[i:i + 2], list(range(i, min(i + 2, 6)))) for i in (4, 0, 2)]  # out of order
    reports = [dict(run(n, p), first=p[0], count=len(n)) for n, p in batches]
    again = dict(run(*batches[1]), first=0, count=2)  # a retried batch: pairs skipped, the same staged files
    assert again["skipped"] == reports[1]["written"] and again["written"] == 0
    reports = sorted(reports, key=lambda r: r["first"])
    summary = _ray_batch.finalize(spec, reports, order)
    assert snapshot(tmp_path / "out") == reference
    assert summary.score_rows == 12 and summary.files == 6


def test_a_shard_in_batches_plans_and_writes_as_the_plain_shard_run(tmp_path):
    """`--shard 1/2 --ray`: the batches get the files' positions in the whole folder (the balanced plan needs them)."""
    import argparse

    from comfyui_gendeg.commands._ray_run import _listing
    from comfyui_gendeg.commands.run import apply_host_settings
    from comfyui_gendeg.nodes import _ray_batch

    make_folder(tmp_path / "input")
    prompt = every_writer_prompt()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(prompt))
    assert cli.main(["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "plain"),
                     "--shard", "1/2", "--quiet"]) == 0
    reference = snapshot(tmp_path / "plain")
    assert len([k for k in reference if k.startswith("pairs/degraded/")]) == 3

    apply_host_settings(argparse.Namespace(input_dir=tmp_path / "input", output_dir=tmp_path / "out", shard="1/2"))
    ex = make_executor()
    order = ex.execution_order(prompt)
    job = plan_folder_job(prompt, ex.registry, order)
    names, positions = _listing(job)
    assert names == ["img1.png", "img3.png", "img5.png"] and positions == [1, 3, 5]
    spec = _spec(tmp_path, prompt, job)
    run = _ray_batch.make_runner(spec)
    reports = [dict(run(names[i:i + 2], positions[i:i + 2]), first=positions[i], count=len(names[i:i + 2]))
               for i in (0, 2)]
    _ray_batch.finalize(spec, reports, order)
    assert snapshot(tmp_path / "out") == reference


# --- the command line -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray-workers", "2"], "--ray-workers only applies with --ray"),
        (["--ray", "--ray-batch", "0"], "--ray-batch 0: give 1 or more"),
        (["--ray", "--ray-workers", "0"], "--ray-workers 0: give 1 or more"),
        (["--ray", "--ray-gpus-per-worker", "nan"], "--ray-gpus-per-worker nan"),
    ],
)
def test_bad_ray_flags_are_one_line(args, message, tmp_path, capsys):
    make_folder(tmp_path / "input")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(every_writer_prompt()))
    code = cli.main(["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_a_bad_address_is_one_line_and_exit_2(tmp_path, capsys):
    if ray is None:
        pytest.skip("the scale extra (ray[data]) is not installed")
    if ray.is_initialized():  # pragma: no cover - another module's Ray is still up
        pytest.skip("a Ray is running in this process")
    make_folder(tmp_path / "input")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(every_writer_prompt()))
    address = f"127.0.0.1:{_free_port()}"
    code = cli.main(["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "o"),
                     "--ray", "--ray-address", address, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"gendeg: error: --ray-address '{address}': no Ray cluster answers there")
    assert "ray start --head" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "o").rglob("*.png"))  # nothing was written


def test_a_workflow_without_a_folder_runs_as_usual_with_a_note(tmp_path, capsys):
    prompt = {
        "1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "coffee.png"}},
        "2": {"class_type": "GenDegSynthesize", "inputs": {"image": ["1", 0], "type": "noise", "intensity_mode": "strength",
                                                            "mu": 0.05, "strength": 0.3, "seed": 1,
                                                            "depth_near_is_bright": True, "tolerance": 0.005,
                                                            "expert_params": ""}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "plain"}},
    }
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(prompt))
    code = cli.main(["run", str(wf), "--output-dir", str(tmp_path / "o"), "--ray", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "gendeg: note: --ray runs folder-driven workflows per batch; this one runs as usual: no GenDeg Load Image" in err
    assert (tmp_path / "o" / "plain_00001_.png").is_file()


# --- ray stays optional -----------------------------------------------------------------------------

HIDE_RAY = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoRay(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError("No module named 'ray' (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoRay())
    sys.modules.pop("ray", None)
    from comfyui_gendeg import cli, nodes, scale  # the pack and its Ray API import without ray
    from comfyui_gendeg.core.scale import graph, ray_job
    assert not nodes.IMPORT_ERRORS, nodes.IMPORT_ERRORS
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_without_ray_the_pack_runs_and_ray_says_how_to_install_it(tmp_path):
    make_folder(tmp_path / "input")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(every_writer_prompt()))
    base = [sys.executable, "-c", HIDE_RAY, "run", str(wf), "--input-dir", str(tmp_path / "input"), "--quiet"]
    plain = subprocess.run([*base, "--output-dir", str(tmp_path / "plain")], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert len(list((tmp_path / "plain" / "pairs" / "degraded").glob("*.png"))) == 6
    with_ray = subprocess.run([*base, "--output-dir", str(tmp_path / "o"), "--ray"], capture_output=True, text=True,
                              timeout=300)
    err = with_ray.stderr.strip()
    assert with_ray.returncode == 2, err
    assert "--ray needs Ray, which is not installed" in err and "pip install 'comfyui-gendeg[scale]'" in err
    assert len(err.splitlines()) == 1
