"""Run a per-batch function over a list of files on a pool of Ray actors (Ray Data).

The driver turns the files into a Ray Dataset (one row per file: its name and its position
in the folder's window) and maps it with ``map_batches`` over a callable class on an
:class:`ray.data.ActorPoolStrategy` pool: each actor builds its runner once (models load
once per actor) and is then called with batches of ``batch_size`` rows. A batch returns
one JSON report; the driver yields the reports as they arrive, first position first
after sorting by the caller. Ray retries a batch whose actor died (Ray Data restarts
actors without limit and retries their tasks), so a runner must be idempotent: the pack's
writers are (finished pairs are skipped, SaveImage and SaveScores outputs are gathered on
the driver). Reports are de-duplicated by their first position as a last guard.

Connecting: without an address a local Ray starts with ``workers × cpus_per_worker`` CPUs,
no dashboard, a session folder under the system temp folder (removed afterwards) and token
authentication with a fresh token kept in the environment (nothing is written to the home
folder); with an address (``host:port``, ``auto``, ``ray://host:port``) the job joins that
cluster, and an address nobody answers at is one :class:`RayAddressError`. A Ray that the
calling script already started is used as it is and left running.

``ray`` is imported only here, and only when a job runs: the pack works without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import GenDegError, InputError

log = logging.getLogger("gendeg")

#: A runner: ``runner(names, positions) -> report`` (a JSON-serialisable dict).
Runner = Callable[[list[str], list[int]], dict[str, Any]]


class RayUnavailableError(GenDegError):
    """``ray`` is not installed (it is optional: the ``scale`` extra)."""


class RayAddressError(GenDegError):
    """No Ray cluster answers at the given address."""


class RayResourcesError(GenDegError):
    """The cluster cannot place one worker (e.g. GPUs asked for, none there)."""


@dataclass(frozen=True)
class RayOptions:
    """How to run: ``workers`` actors of ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs each,
    ``batch_size`` files per call; ``address`` of a cluster to join (None: start a local Ray)."""

    address: str | None = None
    workers: int | None = None
    """None: as many as the cluster's CPUs (and GPUs, with ``gpus_per_worker``) allow."""
    batch_size: int = 8
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        """Raise :class:`InputError` for values Ray would reject later, less clearly."""
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers {self.workers}: give 1 or more workers")
        if self.batch_size < 1:
            raise InputError(f"--ray-batch {self.batch_size}: give 1 or more images per batch")
        if not (self.cpus_per_worker > 0 and math.isfinite(self.cpus_per_worker)):
            raise InputError(f"CPUs per worker {self.cpus_per_worker}: give a number above 0")
        if not (self.gpus_per_worker >= 0 and math.isfinite(self.gpus_per_worker)):
            raise InputError(f"--ray-gpus-per-worker {self.gpus_per_worker}: give 0 or more (fractions share a GPU)")


def import_ray():  # noqa: ANN201 - the ray module
    """``ray`` and ``ray.data``, or :class:`RayUnavailableError` saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(
            f"--ray needs Ray, which is not installed ({exc}); install it with "
            "`pip install 'comfyui-gendeg[scale]'` (or `pip install 'ray[data]'`), or run without --ray"
        ) from exc
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when nothing listens at ``host:port`` (Ray itself retries for a minute)."""
    target = address.split("://", 1)[-1].rstrip("/")
    if target == "auto" or ":" not in target:
        return
    host, _, port_text = target.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise RayAddressError(
            f"--ray-address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379, the address `ray start --head` "
            "prints), ray://HOST:10001 or auto"
        ) from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RayAddressError(
            f"--ray-address {address!r}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head` and pass the address it prints, or leave out --ray-address to start a local Ray"
        ) from None


@contextlib.contextmanager
def _env(values: dict[str, str], restore: Sequence[str] = ()) -> Iterator[None]:
    """``values`` set in the environment for the block; they and the ``restore`` keys are put back after it."""
    saved = {k: os.environ.get(k) for k in [*values, *restore]}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def connect(options: RayOptions) -> Iterator[Any]:
    """A connected ``ray`` module for the ``with`` block (see the module doc); shuts down what it started."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if options.address:
        _probe(options.address)
        try:
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise RayAddressError(
                f"--ray-address {options.address!r}: could not join the Ray cluster there "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); check the address "
                "`ray start --head` printed, or leave out --ray-address to start a local Ray"
            ) from None
        try:
            _check_resources(ray, options, local=False)
            yield ray
        finally:
            ray.shutdown()
        return
    session = tempfile.mkdtemp(prefix="gendeg-ray-")  # short: Ray's socket paths must fit in 107 bytes
    env: dict[str, str] = {}
    if not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        # Ray turns token authentication on for a new local cluster; a token in the environment
        # keeps it from writing one to ~/.ray (the user's own settings win)
        env["RAY_AUTH_TOKEN"] = _local_token()
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    try:
        with _env(env, restore=("RAY_AUTH_MODE",)), _level(auth_log, logging.ERROR):
            ray.init(
                num_cpus=max(1, math.ceil(options.workers * options.cpus_per_worker)) if options.workers else None,
                include_dashboard=False,
                object_store_memory=256 * 2**20,  # only file names and reports travel through it
                _temp_dir=session,
                _node_ip_address="127.0.0.1",  # the local Ray listens on loopback only
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
            try:
                _check_resources(ray, options, local=True)
                yield ray
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(session, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _local_token() -> str:
    """The token of every local Ray this process starts: Ray's driver keeps the first token it
    loads for the life of the process, so a second local Ray with a new token (a second job from
    the same Python session) would refuse the driver's connection."""
    return secrets.token_hex(32)


@contextlib.contextmanager
def _level(logger: logging.Logger, level: int) -> Iterator[None]:
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def _check_resources(ray: Any, options: RayOptions, *, local: bool) -> None:
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    if options.gpus_per_worker > 0 and gpus < options.gpus_per_worker:
        where = "this machine" if local else "the cluster"
        raise RayResourcesError(
            f"--ray-gpus-per-worker {options.gpus_per_worker:g}: {where} has {gpus:g} GPU(s); "
            "use 0 to run on CPUs, or join a cluster with GPU nodes (--ray-address)"
        )
    if cpus < options.cpus_per_worker:
        raise RayResourcesError(
            f"each worker needs {options.cpus_per_worker:g} CPU(s) but the Ray cluster has {cpus:g}"
        )


def resolve_workers(ray: Any, options: RayOptions) -> RayOptions:
    """``options`` with ``workers`` set: as given, else what the cluster's CPUs and GPUs allow (at least 1)."""
    if options.workers:
        return options
    total = ray.cluster_resources()
    n = int(float(total.get("CPU", 1)) // options.cpus_per_worker)
    if options.gpus_per_worker > 0:
        n = min(n, int(float(total.get("GPU", 0)) // options.gpus_per_worker))
    return dataclasses.replace(options, workers=max(1, n))


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress bars and console log off for the block (the caller shows progress); its log files stay."""
    ctx = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": False, "print_on_execution_start": False}
    saved_ctx = {k: getattr(ctx, k) for k in settings if hasattr(ctx, k)}
    for k in saved_ctx:
        setattr(ctx, k, settings[k])
    logger = logging.getLogger("ray.data")
    handlers = [h for h in logger.handlers if type(h).__name__ != "SessionFileHandler"]
    saved = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for h, level in zip(handlers, saved, strict=True):
            h.setLevel(level)
        for k, v in saved_ctx.items():
            setattr(ctx, k, v)


class _GraphWorker:
    """The callable class Ray Data runs on each actor: builds the runner once, then runs batches."""

    def __init__(self, make_runner: Callable[[], Runner]) -> None:
        self.runner = make_runner()
        self.pid = os.getpid()
        self.host = socket.gethostname()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        names = [str(n) for n in batch["name"]]
        positions = [int(p) for p in batch["position"]]
        started, start, cpu, own = time.time(), time.perf_counter(), time.process_time(), time.thread_time()
        report = dict(self.runner(names, positions))
        report.update(
            first=positions[0] if positions else -1,
            count=len(names),
            pid=self.pid,
            host=self.host,
            started=started,
            seconds=time.perf_counter() - start,
            cpu_seconds=time.process_time() - cpu,  # the whole worker process (Ray's own threads too)
            thread_cpu_seconds=time.thread_time() - own,  # the thread that ran the graph
        )
        return {"report": np.array([json.dumps(report)], dtype=object)}


def run_batches(
    ray: Any,
    names: Sequence[str],
    positions: Sequence[int],
    make_runner: Callable[[], Runner],
    options: RayOptions,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``make_runner()`` once per actor and the runner on every batch; reports sorted by first position.

    ``on_report(report)`` is called on the driver as each batch finishes (progress); a report
    with an ``error`` stops the job (the error is raised as :class:`BatchError`).
    """
    if len(names) != len(positions):
        raise InputError(f"{len(names)} names but {len(positions)} positions")
    if not names:
        return []
    options = resolve_workers(ray, options)
    rows = [{"name": n, "position": int(p)} for n, p in zip(names, positions, strict=True)]
    blocks = max(1, min(math.ceil(len(rows) / options.batch_size), 10_000))
    reports: dict[int, dict[str, Any]] = {}
    with _quiet_ray_data(ray):  # datasets copy the context when made: quiet from here on
        mapped = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _GraphWorker,
            fn_constructor_args=(make_runner,),
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=options.cpus_per_worker,
            num_gpus=options.gpus_per_worker or None,
        )
        for row in _rows(mapped):
            report = json.loads(row["report"])
            if report["first"] in reports:  # delivered twice: the first one counts
                continue
            reports[report["first"]] = report
            if on_report is not None:
                on_report(report)
            if report.get("error"):
                raise BatchError(report["error"], report)
    return [reports[k] for k in sorted(reports)]


def _rows(dataset: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows as each output block arrives; a failure inside Ray (a worker that cannot
    start, a bug) becomes one :class:`BatchError`.

    Blocks are taken as they are (``batch_size=None``) without prefetching: a batch's report then
    reaches the driver ~0.1 s after the batch ends instead of 0.3–0.9 s (``iter_rows`` prefetches
    in a thread), which is also how much sooner the job ends.
    """
    try:
        for block in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy"):
            columns = list(block)
            for i in range(len(block[columns[0]]) if columns else 0):
                yield {k: block[k][i] for k in columns}
    except GenDegError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own types
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(exc).__name__
        raise BatchError(f"the Ray job failed: {detail} (Ray's logs have the details)", {}) from exc


class BatchError(GenDegError):
    """A node failed on a batch (the message names the node and the batch's files)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
