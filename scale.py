"""Run folder-driven workflows on Ray: the Python API behind ``gendeg run WORKFLOW --ray``.

    from comfyui_gendeg.scale import run_workflow_on_ray

    summary = run_workflow_on_ray(
        "workflows/gendeg_synth_dataset.json",
        input_dir="input", output_dir="output",
        workers=8, gpus_per_worker=0.5, batch_size=16,   # address="auto" inside a cluster
    )
    print(summary.written, "pairs written,", summary.skipped, "already there")

The folder's file list becomes a Ray Dataset; the nodes downstream of the
``GenDegLoadImageFolder`` run per batch on a pool of actors (models load once per actor);
the driver then names the saved images, appends the score rows and writes each dataset's
``metadata.jsonl`` once: the same files and records as ``gendeg run`` (timestamps aside).
A script that already called ``ray.init`` keeps its Ray; otherwise a local Ray starts (no
``address``) or the job joins the cluster at ``address``. The input and output folders
must be the same paths on every node of a cluster (a shared file system).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .commands._ray_run import run_prompt_on_ray
from .core.errors import GenDegError
from .core.scale.graph import plan_folder_job
from .core.scale.ray_job import RayOptions

__all__ = ["NotFolderDrivenError", "RayOptions", "run_prompt_on_ray", "run_workflow_on_ray"]


class NotFolderDrivenError(GenDegError):
    """The workflow is not driven by one folder loader; ``gendeg run`` without --ray runs it."""


def run_workflow_on_ray(
    workflow: str | os.PathLike | Mapping[str, Any],
    *,
    input_dir: str | os.PathLike = "input",
    output_dir: str | os.PathLike = "output",
    models_dir: str | os.PathLike | None = None,
    temp_dir: str | os.PathLike | None = None,
    device: str | None = None,
    overrides: Iterable[str] = (),
    shard: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 8,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
):  # noqa: ANN201 - nodes._ray_batch.Summary
    """Load, validate and run a folder-driven workflow (file or dict, UI or API format) on Ray.

    ``overrides`` are ``gendeg run --set`` items (``"3.mu=0.1"``), ``shard`` an ``"I/N"``;
    ``workers`` None uses every CPU (or GPU, with ``gpus_per_worker``) of the cluster.
    Raises :class:`~.core.graph.executor.ValidationFailed` (nothing ran),
    :class:`NotFolderDrivenError` (run it without Ray), the connection errors of
    :mod:`.core.scale.ray_job`, or :class:`~.core.scale.ray_job.BatchError` (a node failed).
    Returns a summary: ``files``, ``written``, ``skipped``, ``images``, ``score_rows``, ``datasets``.
    """
    import argparse

    from .commands.run import _registry_info, apply_host_settings, make_executor
    from .core.graph.executor import ValidationFailed
    from .core.graph.formats import api_to_ui, load_any, read_json, set_widget_value
    from .core.graph.overrides import apply_overrides, parse_override

    args = argparse.Namespace(
        input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir, models_dir=models_dir, device=device, shard=shard
    )
    apply_host_settings(args)
    executor = make_executor()
    _, info = _registry_info()
    doc = read_json(os.fspath(workflow)) if isinstance(workflow, str | os.PathLike) else json.loads(json.dumps(workflow))
    prompt, ui = load_any(doc, info)
    overrides = list(overrides)
    apply_overrides(prompt, overrides, executor.registry)
    if ui is not None:  # the PNGs' workflow shows the values that ran (as gendeg run)
        for item in overrides:
            set_widget_value(ui, *parse_override(item), info)
    errors = executor.validate(prompt)
    if errors:
        raise ValidationFailed(errors)
    order = executor.execution_order(prompt)
    job = plan_folder_job(prompt, executor.registry, order)
    if isinstance(job, str):
        raise NotFolderDrivenError(f"this workflow cannot run per batch on Ray: {job}; run it without Ray")
    if ui is None:
        try:
            ui = api_to_ui(prompt, info)
        except Exception:  # noqa: BLE001 - the PNGs then carry the prompt only (as gendeg run)
            ui = None
    options = RayOptions(
        address=address, workers=workers, batch_size=batch_size, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker
    )
    return run_prompt_on_ray(
        prompt, job, order, options, extra_pnginfo={"workflow": ui} if ui is not None else None,
        on_report=on_report, progress=progress,
    )
