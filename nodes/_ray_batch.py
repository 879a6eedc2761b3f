"""The nodes' side of a Ray job: what a worker runs per batch, and what the driver does at the end.

A worker (one per Ray actor) runs the whole validated prompt per batch through the
headless :class:`~..core.graph.executor.Executor`, with five node classes swapped for
batch-aware subclasses (the prompt itself is unchanged, so the PNG text chunks and the
workflow hash recorded in the pairs are those of ``gendeg run``):

* ``GenDegLoadImageFolder`` loads just the batch's files (decoded here, any sizes);
* ``GenDegDegradationPlan`` plans each file as the whole-folder run does (by its position);
* ``GenDegSaveDatasetPairs`` writes pairs (atomic, finished pairs skipped) but leaves
  ``metadata.jsonl`` to the driver;
* ``GenDegSaveScores`` hands its rows to the driver instead of appending them;
* ``SaveImage`` writes its PNGs under ``.gendeg-ray/<job>/`` in the output folder, named
  by batch and call; the driver gives them ComfyUI's numbered names in the plain run's order.

Nodes that do not depend on the folder (model loaders) are cached by the worker's executor
and so run once per actor. A re-run batch (Ray retries batches of a killed actor) rewrites
the same staged files and skips finished pairs; the driver takes one report per batch.
:func:`finalize` then renames the staged images, appends every score row once and rebuilds
each dataset's ``metadata.jsonl`` — the same files and records as ``gendeg run``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.dataset import PairWriter
from ..core.errors import GenDegError, InputError
from ..core.io import atomic_write_bytes
from ..core.quality.report import append_rows
from . import host
from .dataset import GenDegLoadImageFolder, GenDegSaveDatasetPairs
from .quality import GenDegSaveScores
from .standins import SaveImage, next_counter, numbered_name
from .synth import GenDegDegradationPlan

STAGING = ".gendeg-ray"


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs (picklable): the prompt, the folders, and which nodes the folder drives."""

    prompt: dict[str, Any]
    extra_pnginfo: dict[str, Any] | None
    loader: str
    downstream: frozenset[str]
    input_dir: str
    output_dir: str
    temp_dir: str
    models_dir: str | None
    device: str | None
    staging: str
    """Output-relative folder of this job's staged SaveImage files."""
    threads: int = 1


@dataclass
class _Batch:
    names: list[str]
    positions: list[int]
    node: str = ""
    calls: int = 0
    datasets: set[str] = field(default_factory=set)
    written: int = 0
    skipped: int = 0
    scores: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.positions[0] if self.positions else -1}+{len(self.names)}"


_local = threading.local()


def _batch() -> _Batch:
    batch = getattr(_local, "batch", None)
    if batch is None:
        raise GenDegError("a Ray batch node ran outside a Ray batch")
    return batch


class BatchFolder(GenDegLoadImageFolder):
    """Loads the current batch's files (names relative to the folder, as the driver listed them)."""

    @classmethod
    def IS_CHANGED(cls, *args: Any, **kwargs: Any) -> str:  # noqa: N802 - ComfyUI's name
        return _batch().key

    def select(self, root: Path, pattern: str, recursive: bool, start: int, limit: int) -> list[str]:
        return list(_batch().names)


class BatchPlan(GenDegDegradationPlan):
    """Balanced plans by the files' positions in the whole folder (random plans depend on names only)."""

    _plans: dict[tuple, tuple[list, ...]] = {}

    def plan(self, types, intensities, mode, seeds, count, base_seed, filenames=None, prompt=None, unique_id=None):  # noqa: ANN001, ANN201
        if not filenames or mode[0] != "balanced":
            return super().plan(types, intensities, mode, seeds, count, base_seed, filenames, prompt, unique_id)
        keys = [line for text in filenames for line in (str(text).splitlines() or [""])]
        positions = _batch().positions
        if len(keys) != len(positions):
            raise InputError(f"{len(keys)} file names for {len(positions)} files in this batch")
        key = (types[0], intensities[0], int(seeds[0]), int(base_seed[0]))
        need = max(positions) + 1
        cached = self._plans.get(key)
        if cached is None or len(cached[0]) < need:
            # item q of a balanced plan depends on q only, so a longer plan extends a shorter one
            length = max(need, 2 * len(cached[0]) if cached else 0)
            cached = super().plan(types, intensities, mode, seeds, count, base_seed, [""] * length, prompt, unique_id)
            self._plans[key] = cached
        return tuple([values[q] for q in positions] for values in cached)


class BatchSavePairs(GenDegSaveDatasetPairs):
    """Writes the batch's pairs; ``metadata.jsonl`` is rebuilt once, by the driver."""

    FINALIZE = False

    def save(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().save(*args, **kwargs)
        batch = _batch()
        for stats in out["ui"].get("gendeg_stats", []):
            batch.written += int(stats.get("written", 0))
            batch.skipped += int(stats.get("skipped", 0))
        batch.datasets.update(d for d in out["result"][0].splitlines() if d)
        return out


class BatchSaveScores(GenDegSaveScores):
    """Gives its rows to the driver, which appends all batches' rows once, in folder order."""

    def save(self, scores, report, filenames=None, extra=None):  # noqa: ANN001, ANN201
        path, rows = self.rows(scores, report, filenames, extra)
        append_rows(path, [])  # checks the format (csv/jsonl) now, writes nothing
        rel = Path(os.path.relpath(path, host.output_dir())).as_posix()
        _batch().scores.append({"node": _batch().node, "path": rel, "rows": rows})
        return {"ui": {"text": [f"{len(rows)} rows -> {path} (appended when the Ray job ends)"]}, "result": (str(path),)}


class BatchSaveImage(SaveImage):
    """Stages its PNGs under the job's folder; the driver names them as ``gendeg run`` would."""

    staging: Path = Path(STAGING)

    def _place(self, folder: Path, filename: str, subfolder: str, blobs: list[bytes]) -> list[dict[str, str]]:
        batch = _batch()
        batch.calls += 1
        first = batch.positions[0] if batch.positions else 0
        staged = []
        for k, blob in enumerate(blobs):
            rel = f"{batch.node}/{first:012d}-{batch.calls:06d}-{k:04d}.png"
            atomic_write_bytes(host.output_dir() / self.staging / rel, blob)
            staged.append(rel)
        batch.images.append(
            {"node": batch.node, "call": batch.calls, "subfolder": subfolder, "filename": filename, "staged": staged}
        )
        return [{"filename": rel, "subfolder": str(self.staging), "type": "staged"} for rel in staged]


def make_runner(spec: JobSpec):  # noqa: ANN201 - a Runner
    """Set this process up as a worker (host folders, one quiet executor); returns ``runner(names, positions)``."""
    import torch

    from ..core.graph.executor import Executor
    from .standins import runner_registry

    os.environ["GENDEG_NO_PROGRESS"] = "1"
    torch.set_num_threads(max(1, int(spec.threads)))
    host.SETTINGS = host.Settings(
        device=spec.device,
        models_dir=Path(spec.models_dir) if spec.models_dir else None,
        input_dir=Path(spec.input_dir),
        output_dir=Path(spec.output_dir),
        temp_dir=Path(spec.temp_dir),
        shard=(0, 1),
        keep_models_loaded=True,  # models stay on the worker's device between batches
        compare_previews=False,  # no editor sees a worker's previews
    )
    registry = dict(runner_registry()[0])
    stage = type("StagedSaveImage", (BatchSaveImage,), {"staging": Path(spec.staging)})
    registry.update(
        {
            "GenDegLoadImageFolder": BatchFolder,
            "GenDegDegradationPlan": BatchPlan,
            "GenDegSaveDatasetPairs": BatchSavePairs,
            "GenDegSaveScores": BatchSaveScores,
            "SaveImage": stage,
        }
    )
    executor = Executor(registry, cache=True, cacheable=lambda nid: nid not in spec.downstream)

    def run(names: list[str], positions: list[int]) -> dict[str, Any]:
        batch = _local.batch = _Batch(list(names), list(positions))

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "executing" and data.get("node") is not None:
                batch.node = str(data["node"])

        error = None
        try:
            executor.execute(spec.prompt, extra_pnginfo=spec.extra_pnginfo, on_event=on_event, check_files=False)
        except GenDegError as exc:  # a node failed: the driver stops the job and says which files
            where = f"{names[0]}" + (f" … {names[-1]}" if len(names) > 1 else "")
            error = f"{exc} (batch of {len(names)} file(s): {where})"
        finally:
            _local.batch = None
        return {
            "error": error,
            "written": batch.written,
            "skipped": batch.skipped,
            "datasets": sorted(batch.datasets),
            "scores": batch.scores,
            "images": batch.images,
        }

    return run


@dataclass
class Summary:
    """What a Ray job did: pairs written/skipped, images saved, score rows appended, datasets finalised."""

    files: int = 0
    written: int = 0
    skipped: int = 0
    images: list[str] = field(default_factory=list)
    score_rows: int = 0
    datasets: list[str] = field(default_factory=list)


def finalize(spec: JobSpec, reports: list[Mapping[str, Any]], order: list[str]) -> Summary:
    """On the driver, after every batch: name staged images, append score rows, rebuild metadata.jsonl.

    ``reports`` are sorted by first position; ``order`` is the execution order (node by node,
    as ``gendeg run`` writes).
    """
    out_root = Path(spec.output_dir)
    staging = out_root / spec.staging
    summary = Summary(files=sum(int(r.get("count", 0)) for r in reports))
    summary.written = sum(int(r.get("written", 0)) for r in reports)
    summary.skipped = sum(int(r.get("skipped", 0)) for r in reports)
    rank = {nid: i for i, nid in enumerate(order)}

    calls = [c for r in reports for c in r.get("images", [])]
    calls.sort(key=lambda c: rank.get(c["node"], len(rank)))  # stable: batches stay in folder order
    counters: dict[tuple[Path, str], int] = {}
    for call in calls:
        folder = out_root / call["subfolder"]
        filename = call["filename"]
        slot = (folder, filename)
        if slot not in counters or "%batch_num%" in filename:
            counters[slot] = next_counter(folder, filename)
        counter = counters[slot]
        folder.mkdir(parents=True, exist_ok=True)
        for k, rel in enumerate(call["staged"]):
            src = staging / rel
            if not src.is_file():
                raise GenDegError(f"{src}: a staged image of this Ray job is missing; run the job again")
            name = numbered_name(filename, k, counter + k)
            os.replace(src, folder / name)
            summary.images.append(str(Path(call["subfolder"]) / name))
        counters[slot] = counter + len(call["staged"])

    per_node: dict[str, list[dict[str, Any]]] = {}
    paths: dict[str, str] = {}
    for r in reports:
        for part in r.get("scores", []):
            per_node.setdefault(part["node"], []).extend(part["rows"])
            paths[part["node"]] = part["path"]
    for nid in sorted(per_node, key=lambda n: rank.get(n, len(rank))):
        append_rows(out_root / paths[nid], per_node[nid])
        summary.score_rows += len(per_node[nid])

    datasets = sorted({d for r in reports for d in r.get("datasets", [])})
    for root in datasets:
        rel = os.path.relpath(root, out_root)
        PairWriter(out_root, rel).finalize()
        summary.datasets.append(root)

    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out_root / STAGING).rmdir()  # only when no other job stages there
    return summary
