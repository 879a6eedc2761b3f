"""``gendeg run --ray``'s driver: list the folder, run its batches on Ray, finish the job.

:func:`run_prompt_on_ray` is also the public :mod:`comfyui_gendeg.scale` API's last step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.scale.graph import FolderJob
from ..core.scale.ray_job import RayOptions, connect, run_batches


def _listing(job: FolderJob) -> tuple[list[str], list[int]]:
    """The files the loader would load in this run (shard applied) and their positions in its window."""
    from ..core.dataset import list_folder
    from ..nodes.dataset import GenDegLoadImageFolder, _folder_path

    inputs = job.folder_inputs
    folder = str(inputs.get("folder", ""))
    pattern, recursive = str(inputs.get("pattern", "*")), bool(inputs.get("recursive", False))
    start, limit = int(inputs.get("start", 0)), int(inputs.get("limit", 0))
    if not folder.strip().strip("\"'"):
        from ..core.errors import InputError

        raise InputError("folder is empty; give a folder of images (relative to the input folder, or absolute)")
    root = _folder_path(folder)
    names = GenDegLoadImageFolder().select(root, pattern, recursive, start, limit)  # this run's shard
    window = {name: i for i, name in enumerate(list_folder(root, pattern, recursive, start, limit))}
    return names, [window[n] for n in names]


def run_prompt_on_ray(
    prompt: dict[str, dict[str, Any]],
    job: FolderJob,
    order: list[str],
    options: RayOptions,
    *,
    extra_pnginfo: dict[str, Any] | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
):  # noqa: ANN201 - nodes._ray_batch.Summary
    """Run a validated, folder-driven ``prompt`` on Ray with the host settings already applied.

    ``job`` and ``order`` come from :func:`~.core.scale.graph.plan_folder_job` and the
    executor's ``execution_order``. ``on_report(report)`` hears each finished batch
    (``first``, ``count``, ``written``, ``skipped``, ``pid``, ``host``, ``seconds``).
    """
    from ..nodes import host
    from ..nodes._ray_batch import STAGING, JobSpec, finalize, make_runner

    options.check()
    names, positions = _listing(job)
    digest = hashlib.sha256(json.dumps([prompt, names], sort_keys=True, default=str).encode()).hexdigest()[:16]
    spec = JobSpec(
        prompt=prompt,
        extra_pnginfo=extra_pnginfo,
        loader=job.loader,
        downstream=job.downstream,
        input_dir=str(Path(host.input_dir()).resolve()),
        output_dir=str(Path(host.output_dir()).resolve()),
        temp_dir=str(Path(host.temp_dir()).resolve()),
        models_dir=str(Path(host.models_dir()).resolve()),
        device=host.SETTINGS.device,
        staging=f"{STAGING}/{digest}",
        threads=max(1, int(options.cpus_per_worker)),
    )
    bar = None
    if progress and os.environ.get("GENDEG_NO_PROGRESS") != "1":
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="ray", unit="img", file=sys.stderr)

    totals = {"written": 0, "skipped": 0}

    def heard(report: dict[str, Any]) -> None:
        for key in totals:
            totals[key] += int(report.get(key, 0))
        if bar is not None:
            bar.set_postfix(totals, refresh=False)
            bar.update(int(report.get("count", 0)))
        if on_report is not None:
            on_report(report)

    from functools import partial

    try:
        with connect(options) as ray:
            reports = run_batches(ray, names, positions, partial(make_runner, spec), options, heard)
    finally:
        if bar is not None:
            bar.close()
    return finalize(spec, reports, order)
