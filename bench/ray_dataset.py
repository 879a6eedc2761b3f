"""Benchmark: the synth dataset workflow on Ray (2 local workers) vs. one process, in the same run.

``workflows/gendeg_synth_dataset.json`` (folder → balanced plan → synthesize with μ
calibration → dataset pairs) over a folder of generated images, three ways:

* ``1 process, 1 thread``: ``gendeg run`` in a subprocess with one torch thread (the
  reference a worker is compared with), cold (its first calls initialise torch and the
  synthesizers) and warm (after a first run of the job in the same process);
* ``1 process, default threads``: ``gendeg run`` as a user runs it;
* ``2 shards × 1 thread``: ``gendeg run --shard 0/2`` and ``--shard 1/2`` at once, one thread
  each — the machine's own ceiling for two single-thread workers, nothing in between;
* ``Ray, 2 workers × 1 thread``: ``gendeg run --ray`` through the Python API, a local Ray of
  2 CPUs, ``--ray-batch`` images per batch.

Pairs/s of the two single-process runs is images over the executor's run time (what
``gendeg run`` reports: imports excluded). For Ray, the one-time costs are reported on their
own — starting Ray, starting the workers (process, imports, first batch queued), the
driver's finishing step — and pairs/s is images over the time the workers were busy with
batches (first batch started → last report reached the driver). Ray's own overhead per pair
is the worker time not spent inside the per-batch runner (scheduling, transfers, waiting at
the end), per pair: ``(busy span × workers − Σ runner seconds) / pairs``; the latency of a
report (batch done → driver told) is shown too. Ray's own CPU is measured as well: the CPU
seconds that the driver (Ray Data's executor), Ray's daemons and Ray Data's helper actors use
while the workers run (first report → job done), in cores and per pair — on a cluster the
daemons and helpers run once per node or once per job, so this is what each worker's core
shares with Ray here. CPU seconds per pair inside a worker and in
the one-thread process show whether a worker does the same work at the same cost: on a
machine shared with other jobs, a gap between wall and CPU time is waiting for a core. The target is
``Ray 2 workers ≥ 1.8 × 1 process, 1 thread``; both are also given in steady state (Ray
without each worker's first batch, against the warm process). Outputs are checked equal.

Usage::

    python bench/ray_dataset.py --smoke   # 12 images of 64², no warm run: seconds of work, Ray start dominates
    python bench/ray_dataset.py           # 384 images of 192², --ray-batch 8 (the default)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "gendeg_synth_dataset.json"

# `gendeg run` in a fresh process, twice: a warm-up into another folder (first calls initialise
# torch and the synthesizers, as each Ray worker's first batch does), then the measured run;
# prints the measured run's CPU seconds
RUN = """
import sys, time, torch
{threads}
from comfyui_gendeg import cli, nodes
warm = sys.argv.pop()
args = sys.argv[1:]
if warm != "-":
    cli.main(args + ["--output-dir", warm])
t = time.process_time()
code = cli.main(args)
print("cpu", time.process_time() - t, file=sys.stderr)
sys.exit(code)
"""
ONE_THREAD = RUN.format(threads="torch.set_num_threads(1)")
DEFAULT = RUN.format(threads="")


def make_images(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = size + 8 * (i % 3), size - 8 * (i % 2)  # mixed sizes
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        img = np.clip(0.6 * ramp + 0.4 * 255 * rng.random((h, w, 3)), 0, 255).astype("uint8")
        Image.fromarray(img).save(folder / f"img{i:04d}.png")


def _gendeg_run(code: str, input_dir: Path, out: Path, warm: Path | None, *extra: str) -> list[str]:
    """The command line of ``gendeg run`` of the workflow in a fresh process running ``code`` (which
    takes the warm-up folder, or ``-``, as its last argument)."""
    return [sys.executable, "-c", code, "run", str(WORKFLOW), "--input-dir", str(input_dir), "--output-dir", str(out),
            *extra, "--quiet", str(warm) if warm else "-"]


def _timing(returncode: int, stdout: str, stderr: str) -> tuple[float, float]:
    """Seconds ``gendeg run`` reports for running the graph, and the CPU seconds the code printed."""
    m = re.search(r"done in ([0-9.]+) s", stdout)
    c = re.search(r"^cpu ([0-9.]+)$", stderr, re.M)
    if returncode != 0 or not m or not c:
        raise SystemExit(f"gendeg run failed or printed no timing:\n{stdout[-500:]!r}\n{stderr[-3000:]}")
    return float(m.group(1)), float(c.group(1))


_ENV = {**os.environ, "GENDEG_NO_PROGRESS": "1"}


def run_plain(code: str, input_dir: Path, out: Path, warm: Path | None) -> tuple[float, float]:
    """Seconds ``gendeg run`` reports for running the graph (imports and start-up excluded), and its CPU seconds.

    ``warm``: first run the same job into this folder in the same process (untimed).
    """
    proc = subprocess.run(_gendeg_run(code, input_dir, out, warm), capture_output=True, text=True, env=_ENV)
    return _timing(proc.returncode, proc.stdout, proc.stderr)


def run_two_shards(input_dir: Path, out: Path) -> tuple[float, float]:
    """``gendeg run --shard 0/2`` and ``--shard 1/2`` at once, one thread each: the longer run's
    seconds, and both processes' CPU seconds.

    The same two cores with nothing between the processes: this machine's own ceiling for two
    single-thread workers (shared caches, memory bandwidth, turbo), against which Ray's
    scheduling and transfers are judged.
    """
    procs = [subprocess.Popen(_gendeg_run(ONE_THREAD, input_dir, out, None, "--shard", f"{i}/2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_ENV) for i in range(2)]
    timings = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        timings.append(_timing(proc.returncode, stdout, stderr))
    return max(t for t, _ in timings), sum(c for _, c in timings)


def _cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of this process and every process it started, by pid: the driver,
    and a local Ray's daemons, helper actors and workers (all descend from the driver)."""
    import psutil  # a dependency of Ray

    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:  # ended meanwhile
            pass
    return out


def run_ray(input_dir: Path, out: Path, batch: int) -> dict:
    import torch
    from comfyui_gendeg.core.scale.ray_job import RayOptions, connect
    from comfyui_gendeg.scale import run_workflow_on_ray

    torch.set_num_threads(1)
    options = RayOptions(workers=2, batch_size=batch)
    t0 = time.perf_counter()
    with connect(options):
        t_init = time.perf_counter() - t0
        arrivals: list[tuple[float, dict]] = []
        cpu_at_first: list[dict[int, float]] = []

        def on_report(report: dict) -> None:
            arrivals.append((time.time(), report))
            if len(arrivals) == 1:  # from here on both workers are busy until the end
                cpu_at_first.append(_cpu_seconds())

        t_submit = time.time()
        summary = run_workflow_on_ray(WORKFLOW, input_dir=input_dir, output_dir=out, workers=2, batch_size=batch,
                                      progress=False, on_report=on_report)
        t_done = time.time()
        cpu_at_end = _cpu_seconds()
    # a local Ray: the workers' clocks are this machine's
    first_start = min(r["started"] for _, r in arrivals)  # the first batch began computing
    last = max(t for t, _ in arrivals)  # the last report reached the driver
    busy = last - first_start
    runner = sum(r["seconds"] for _, r in arrivals)
    n = summary.files
    # steady state: without each worker's first batch (its first calls initialise torch and the
    # synthesizers); the other worker's first batch may overlap the window uncounted (conservative)
    firsts = {min((r["started"], r["first"]) for _, r in arrivals if r["pid"] == pid)[1] for pid in
              {r["pid"] for _, r in arrivals}}
    rest = [r for _, r in arrivals if r["first"] not in firsts]
    steady = sum(r["count"] for r in rest) / (last - min(r["started"] for r in rest)) if rest else float("nan")
    # Ray's own CPU while the workers run (first report -> job done): the driver (Ray Data's
    # executor, the reports), the daemons (GCS, raylet, agents) and Ray Data's helper actors
    worker_pids = {r["pid"] for _, r in arrivals}
    used = {pid: c - cpu_at_first[0].get(pid, 0.0) for pid, c in cpu_at_end.items()}
    own_cpu = sum(c for pid, c in used.items() if pid not in worker_pids)
    window = t_done - arrivals[0][0]
    window_pairs = sum(r["count"] for _, r in arrivals[1:])
    return {
        "steady_pairs_per_s": steady,
        "pairs": n,
        "ray_init_s": t_init,
        "workers_start_s": first_start - t_submit,
        "finish_s": t_done - last,
        "report_latency_ms": 1000 * sum(t - r["started"] - r["seconds"] for t, r in arrivals) / len(arrivals),
        "busy_s": busy,
        "pairs_per_s": n / busy,
        "overhead_per_pair_ms": 1000 * (busy * 2 - runner) / n,
        "runner_s_per_pair": runner / n,
        "runner_cpu_s_per_pair": sum(r["cpu_seconds"] for _, r in arrivals) / n,
        "runner_thread_cpu_s_per_pair": sum(r["thread_cpu_seconds"] for _, r in arrivals) / n,
        "workers_seen": len(worker_pids),
        "own_cpu_cores": own_cpu / window if window > 0 else float("nan"),
        "own_cpu_ms_per_pair": 1000 * own_cpu / window_pairs if window_pairs else float("nan"),
        "workers_cpu_cores": sum(c for pid, c in used.items() if pid in worker_pids) / window if window > 0 else float("nan"),
    }


def same_dataset(a: Path, b: Path) -> bool:
    def snap(root: Path) -> dict:
        out = {}
        for p in sorted((root / "gendeg_synth_dataset").rglob("*")):
            if p.is_file() and p.suffix in (".png", ".json"):
                data = p.read_bytes()
                if p.suffix == ".json":
                    rec = json.loads(data)
                    rec.pop("created", None)
                    data = json.dumps(rec, sort_keys=True).encode()
                out[p.relative_to(root).as_posix()] = data
        return out

    return snap(a) == snap(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="12 images of 64² (CI)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="images per Ray batch")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds of (one thread, two shards, Ray); the ratios' medians are reported "
                         "(a shared VM's speed drifts by tens of percent over minutes)")
    args = ap.parse_args()
    n = args.images or (12 if args.smoke else 384)
    size = args.size or (64 if args.smoke else 192)
    batch = args.batch or (2 if args.smoke else 8)  # 8: `--ray-batch`'s default
    try:
        import ray  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "ray is not installed (pip install 'comfyui-gendeg[scale]')"}))
        return

    work = Path(tempfile.mkdtemp(prefix="gendeg-bench-ray-"))
    try:
        make_images(work / "input" / "clean", n, size)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        rounds = []
        for k in range(args.rounds):
            # interleaved rounds: a change of the machine's speed (shared VMs) hits every side of a round alike
            t1, cpu1 = run_plain(ONE_THREAD, work / "input", work / f"one_thread_{k}", None)
            t2, cpu2 = (None, None) if args.smoke else run_two_shards(work / "input", work / f"two_shards_{k}")
            r = run_ray(work / "input", work / f"ray_{k}", batch)
            same = same_dataset(work / f"one_thread_{k}", work / f"ray_{k}")
            rounds.append({"t1": t1, "cpu1": cpu1, "t2": t2, "cpu2": cpu2, "ray": r, "same": same})
            for name in ("two_shards", "ray") if k else ():  # round 0's folders stay for the single-run sides
                shutil.rmtree(work / f"{name}_{k}", ignore_errors=True)
            print(f"round {k + 1}/{args.rounds}: Ray {r['pairs_per_s']:.3f} pairs/s = x{r['pairs_per_s'] * t1 / n:.3f} "
                  f"one thread ({n / t1:.3f})" + (f", two shards x{t1 / t2:.3f}" if t2 else ""), file=sys.stderr, flush=True)
        first = rounds[0]
        t1, cpu1, t2, cpu2, r = first["t1"], first["cpu1"], first["t2"], first["cpu2"], first["ray"]
        # warm reference: the full run only (the smoke run checks that everything runs, quickly)
        t1w = None if args.smoke else run_plain(ONE_THREAD, work / "input", work / "one_thread_warm", work / "warm_up")[0]
        td, _ = run_plain(DEFAULT, work / "input", work / "default", None)
        ray_vs = [x["ray"]["pairs_per_s"] * x["t1"] / n for x in rounds]
        shards_vs = [x["t1"] / x["t2"] for x in rounds if x["t2"]]
        result = {
            "images": n,
            "size": size,
            "batch": batch,
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "load_1min_before": round(load, 2),
            "load_1min_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "ray_vs_1_thread_median": round(float(np.median(ray_vs)), 3),
            "ray_vs_1_thread_rounds": [round(v, 3) for v in ray_vs],
            "two_shards_vs_1_thread_median": round(float(np.median(shards_vs)), 3) if shards_vs else None,
            "two_shards_vs_1_thread_rounds": [round(v, 3) for v in shards_vs],
            "ray_vs_two_shards_rounds": [round(x["ray"]["pairs_per_s"] * x["t2"] / n, 3) for x in rounds if x["t2"]],
            "ray_overhead_per_pair_ms_rounds": [round(x["ray"]["overhead_per_pair_ms"], 1) for x in rounds],
            "ray_own_cpu_cores_rounds": [round(x["ray"]["own_cpu_cores"], 3) for x in rounds],
            "ray_own_cpu_ms_per_pair_rounds": [round(x["ray"]["own_cpu_ms_per_pair"], 1) for x in rounds],
            "ray_workers_cpu_cores_rounds": [round(x["ray"]["workers_cpu_cores"], 3) for x in rounds],
            "one_process_1_thread_pairs_per_s": round(n / t1, 3),
            "one_process_default_threads_pairs_per_s": round(n / td, 3),
            "ray_2_workers_pairs_per_s": round(r["pairs_per_s"], 3),
            "ray_vs_1_thread": round(r["pairs_per_s"] / (n / t1), 3),
            "ray_vs_default": round(r["pairs_per_s"] / (n / td), 3),
            "two_shards_pairs_per_s": round(n / t2, 3) if t2 else None,
            "two_shards_vs_1_thread": round(t1 / t2, 3) if t2 else None,
            "ray_vs_two_shards": round(r["pairs_per_s"] / (n / t2), 3) if t2 else None,
            "two_shards_cpu_s_per_pair": round(cpu2 / n, 4) if cpu2 else None,
            "one_process_1_thread_warm_pairs_per_s": round(n / t1w, 3) if t1w else None,
            "ray_2_workers_steady_pairs_per_s": round(r["steady_pairs_per_s"], 3),
            "ray_steady_vs_1_thread_warm": round(r["steady_pairs_per_s"] / (n / t1w), 3) if t1w else None,
            "ray_overhead_per_pair_ms": round(r["overhead_per_pair_ms"], 1),
            "ray_runner_s_per_pair": round(r["runner_s_per_pair"], 4),
            "one_process_1_thread_s_per_pair": round(t1 / n, 4),
            "ray_runner_cpu_s_per_pair": round(r["runner_cpu_s_per_pair"], 4),
            "ray_runner_thread_cpu_s_per_pair": round(r["runner_thread_cpu_s_per_pair"], 4),
            "one_process_1_thread_cpu_s_per_pair": round(cpu1 / n, 4),
            "ray_init_s": round(r["ray_init_s"], 2),
            "ray_workers_start_s": round(r["workers_start_s"], 2),
            "ray_finish_s": round(r["finish_s"], 3),
            "ray_report_latency_ms": round(r["report_latency_ms"], 1),
            "ray_workers_seen": r["workers_seen"],
            "same_pairs_as_plain": all(x["same"] for x in rounds),
        }
        print(json.dumps(result, indent=1))
        if not result["same_pairs_as_plain"]:
            raise SystemExit("the Ray run wrote different pairs than gendeg run")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
