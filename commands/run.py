"""``gendeg run``, ``gendeg nodes`` and ``gendeg workflow``: workflows without ComfyUI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.errors import InputError


def _registry_info() -> tuple[dict[str, type], dict[str, dict[str, Any]]]:
    from ..core.graph.object_info import object_info
    from ..nodes.standins import runner_registry

    classes, names, modules = runner_registry()
    return classes, object_info(classes, names, modules)


# --- gendeg nodes ----------------------------------------------------------------------


def _cmd_nodes(args: argparse.Namespace) -> int:
    from ..core.graph.object_info import format_table

    _, info = _registry_info()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_table(info))
    return 0


# --- gendeg workflow to-ui / to-api --------------------------------------------------


def _write_json(path: str, doc: Any) -> None:
    from ..core.io import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _cmd_to_ui(args: argparse.Namespace) -> int:
    from ..core.graph.formats import api_to_ui, load_any, read_json

    _, info = _registry_info()
    prompt, _ = load_any(read_json(args.src), info)
    _write_json(args.dst, api_to_ui(prompt, info))
    print(f"wrote {args.dst} (UI workflow, {len(prompt)} nodes)")
    return 0


def _cmd_to_api(args: argparse.Namespace) -> int:
    from ..core.graph.formats import load_any, read_json

    _, info = _registry_info()
    prompt, _ = load_any(read_json(args.src), info)
    _write_json(args.dst, prompt)
    print(f"wrote {args.dst} (API prompt, {len(prompt)} nodes)")
    return 0


# --- gendeg run ----------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0-based I in 0..N-1) → ``(I, N)``; anything else raises :class:`InputError`."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError as exc:
        raise InputError(f"--shard {text!r}: expected I/N with whole numbers, e.g. 0/4 (I counts from 0)") from exc
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need N ≥ 1 and 0 ≤ I ≤ N−1 (I counts from 0), e.g. 0/{max(n, 1)}")
    return i, n


def _file_hint(class_type: str, input_name: str, value: Any) -> str:
    from ..core.io import IMAGE_SUFFIXES
    from ..nodes import host

    if isinstance(value, str) and value.lower().endswith(IMAGE_SUFFIXES):
        return f"images are read from the input folder {host.input_dir()} (choose another with --input-dir)"
    try:
        from ..core.weights import entry_for_file

        found = entry_for_file(str(value))
    except Exception:  # noqa: BLE001 - a broken manifest must not hide the validation error
        found = None
    if found is not None:
        entry, wfile = found
        folder = host.model_search_dirs(entry.kind)[0]
        how = (
            f"`gendeg weights fetch {entry.id}` downloads it"
            if wfile.downloadable
            else f"download it by hand ({entry.source}); `gendeg weights list` says more"
        )
        return f"it belongs in {folder / wfile.path} ({entry.id}); {how}"
    return (
        f"model files are looked up under {host.models_dir()} (choose another with --models-dir or GENDEG_MODELS_DIR); "
        "`gendeg weights list` shows where each known checkpoint goes and `gendeg weights fetch ID` downloads it"
    )


def make_executor(cache: bool = False):  # noqa: ANN201 - Executor, imported lazily
    """An :class:`Executor` over the pack's nodes and the stand-ins, wired to the host services."""
    from ..core.graph.executor import Executor
    from ..nodes import host
    from ..nodes.standins import runner_registry

    classes, _, _ = runner_registry()
    return Executor(
        classes,
        cache=cache,
        progress_listeners=host.PROGRESS_LISTENERS,
        interrupted=lambda: host.SETTINGS.interrupt.is_set(),
        file_hint=_file_hint,
    )


def apply_host_settings(args: argparse.Namespace) -> None:
    """``--input-dir/--output-dir/--temp-dir/--models-dir/--device/--shard`` → ``nodes.host.SETTINGS``."""
    from ..nodes import host

    settings = host.SETTINGS
    for attr in ("input_dir", "output_dir", "temp_dir", "models_dir"):
        value = getattr(args, attr, None)
        if value is not None:
            setattr(settings, attr, Path(value).expanduser().resolve())
    if getattr(args, "device", None):
        from ..core.device import parse_device

        settings.device = str(parse_device(args.device))
    if getattr(args, "shard", None):
        settings.shard = parse_shard(args.shard)
    settings.interrupt.clear()


def _cmd_run(args: argparse.Namespace) -> int:
    import os
    import time

    from ..core.errors import Interrupted
    from ..core.graph.executor import NodeExecutionError
    from ..core.graph.formats import api_to_ui, load_any, read_json, set_widget_value
    from ..core.graph.overrides import apply_overrides, parse_override
    from ..core.graph.validate import format_errors
    from ..nodes import host
    from ..nodes.ui import prune_previews

    if args.quiet:
        os.environ["GENDEG_NO_PROGRESS"] = "1"
    apply_host_settings(args)
    host.SETTINGS.compare_previews = False  # no editor shows the comparison slider
    prune_previews(host.temp_dir())
    executor = make_executor(cache=args.cache)
    _, info = _registry_info()
    prompt, ui = load_any(read_json(args.workflow), info)
    apply_overrides(prompt, args.overrides, executor.registry)
    if ui is not None:  # the PNGs' workflow shows the values that ran
        for item in args.overrides:
            node_id, name, value = parse_override(item)
            set_widget_value(ui, node_id, name, value, info)

    errors = executor.validate(prompt, check_files=not args.structure_only)
    if errors:
        print(f"{args.workflow}: {len(errors)} problem(s), nothing was run:", file=sys.stderr)
        print(format_errors(errors), file=sys.stderr)
        return 2
    order = executor.execution_order(prompt)
    ray_options = _ray_options(args)
    if args.validate_only:
        print(f"{args.workflow}: valid ({len(prompt)} nodes, {len(order)} would run)")
        return 0

    if ui is None:
        try:
            ui = api_to_ui(prompt, info)
        except Exception:  # noqa: BLE001 - the PNG then carries the prompt only
            ui = None
    extra = {"workflow": ui} if ui is not None else None
    if ray_options is not None:
        from ..core.scale.graph import plan_folder_job

        job = plan_folder_job(prompt, executor.registry, order)
        if not isinstance(job, str):
            return _run_on_ray(args, prompt, job, order, ray_options, extra)
        print(f"gendeg: note: --ray runs folder-driven workflows per batch; this one runs as usual: {job}", file=sys.stderr)
    step = {"i": 0}
    saved: list[str] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "executing" and data.get("node") is not None:
            step["i"] += 1
            nid = data["node"]
            if not args.quiet:
                print(f"[{step['i']}/{len(order)}] node {nid} {prompt[nid]['class_type']}", file=sys.stderr)
        elif kind == "executed":
            for img in (data.get("output") or {}).get("images", []):
                if img.get("type") == "output":
                    saved.append(str(Path(img.get("subfolder", "")) / img["filename"]))

    start = time.perf_counter()
    try:
        executor.execute(prompt, extra_pnginfo=extra, on_event=on_event, check_files=not args.structure_only)
    except Interrupted as exc:
        print(f"gendeg: {exc}", file=sys.stderr)
        return 130
    except NodeExecutionError as exc:
        print(f"gendeg: error: {exc}", file=sys.stderr)
        return 1
    from ..nodes import host

    shown = f", saved {len(saved)} image(s)" if saved else ""
    print(f"done in {time.perf_counter() - start:.1f} s: ran {len(order)} nodes{shown}; output folder {host.output_dir()}")
    return 0


def _ray_options(args: argparse.Namespace):  # noqa: ANN202 - RayOptions | None
    """``--ray*`` → :class:`RayOptions` (None without ``--ray``); checked before anything runs."""
    flags = ("--ray-address", "--ray-workers", "--ray-batch", "--ray-gpus-per-worker", "--ray-cpus-per-worker")
    values = {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in flags}
    given = [flag for flag, value in values.items() if value is not None]
    if not getattr(args, "ray", False):
        if given:
            raise InputError(f"{given[0]} only applies with --ray; add --ray (or leave out {given[0]})")
        return None
    from ..core.scale.ray_job import RayOptions

    options = RayOptions(
        address=values["--ray-address"] or None,
        workers=values["--ray-workers"],
        batch_size=8 if values["--ray-batch"] is None else values["--ray-batch"],
        cpus_per_worker=1.0 if values["--ray-cpus-per-worker"] is None else values["--ray-cpus-per-worker"],
        gpus_per_worker=0.0 if values["--ray-gpus-per-worker"] is None else values["--ray-gpus-per-worker"],
    )
    options.check()
    return options


def _run_on_ray(args: argparse.Namespace, prompt, job, order, options, extra) -> int:  # noqa: ANN001
    """``gendeg run --ray`` of a folder-driven workflow: batches on Ray actors, then the driver's finishing step."""
    import time

    from ..core.scale.ray_job import BatchError
    from ..nodes import host
    from ._ray_run import run_prompt_on_ray

    start = time.perf_counter()
    where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
    if not args.quiet:
        print(f"gendeg: running the nodes downstream of node {job.loader} on {where}, {options.batch_size} image(s) "
              "per batch", file=sys.stderr)
    try:
        summary = run_prompt_on_ray(prompt, job, order, options, extra_pnginfo=extra, progress=not args.quiet)
    except BatchError as exc:
        print(f"gendeg: error: {exc}", file=sys.stderr)
        return 1
    parts = [f"{summary.files} image(s)"]
    if summary.written or summary.skipped:
        parts.append(f"{summary.written} pair(s) written, {summary.skipped} already there")
    if summary.images:
        parts.append(f"saved {len(summary.images)} image(s)")
    if summary.score_rows:
        parts.append(f"{summary.score_rows} score row(s)")
    print(f"done in {time.perf_counter() - start:.1f} s on Ray: {', '.join(parts)}; output folder {host.output_dir()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a workflow (UI format as saved by the ComfyUI editor, or API format)",
        description="Validate the whole graph, then run it. Validation problems are listed per node (exit code 2).",
    )
    p.add_argument("workflow", help="workflow JSON file (UI or API format)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ID.INPUT=VALUE",
        help="override an input of a node (id as in the file); VALUE is read as JSON if it parses, else as text",
    )
    p.add_argument("--input-dir", type=Path, help="folder LoadImage and folder loaders read from (default ./input)")
    p.add_argument("--output-dir", type=Path, help="folder outputs are written to (default ./output)")
    p.add_argument("--temp-dir", type=Path, help="folder for previews (default: the system temp folder)")
    p.add_argument("--models-dir", type=Path, help="models folder (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--shard", help="I/N: process only slice I (0-based) of N of every folder-loading node")
    p.add_argument("--validate-only", action="store_true", help="check the graph and stop")
    p.add_argument(
        "--structure-only",
        action="store_true",
        help="with --validate-only: skip checks that depend on files on disk (model and image lists)",
    )
    p.add_argument("--cache", action="store_true", help="reuse outputs of unchanged nodes within this process")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    r = p.add_argument_group("Ray", "scale a folder-driven workflow out on Ray (pip install 'comfyui-gendeg[scale]')")
    r.add_argument(
        "--ray",
        action="store_true",
        help="run the nodes downstream of GenDeg Load Image Folder per batch on Ray workers (same files as without)",
    )
    r.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (HOST:PORT, auto, ray://HOST:PORT); default: start a local Ray")
    r.add_argument("--ray-workers", type=int, metavar="N", help="number of workers (default: as many as the CPUs/GPUs allow)")
    r.add_argument("--ray-gpus-per-worker", type=float, metavar="F", help="GPUs per worker (default 0; 0.5 puts two workers on a GPU)")
    r.add_argument("--ray-cpus-per-worker", type=float, metavar="F", help="CPUs (torch threads) per worker (default 1)")
    r.add_argument("--ray-batch", type=int, metavar="N", help="images per batch (default 8)")
    p.set_defaults(func=_cmd_run)

    n = sub.add_parser("nodes", help="list the node classes the runner knows, with inputs and outputs")
    n.add_argument("--json", action="store_true", help="print ComfyUI's /object_info JSON")
    n.set_defaults(func=_cmd_nodes)

    w = sub.add_parser("workflow", help="convert workflows between the UI and API formats")
    wsub = w.add_subparsers(dest="workflow_command", metavar="ACTION")
    a = wsub.add_parser("to-ui", help="API prompt (or UI workflow) → UI workflow the ComfyUI editor opens")
    a.add_argument("src")
    a.add_argument("dst")
    a.set_defaults(func=_cmd_to_ui)
    b = wsub.add_parser("to-api", help="UI workflow (or API prompt) → API prompt")
    b.add_argument("src")
    b.add_argument("dst")
    b.set_defaults(func=_cmd_to_api)
    w.set_defaults(func=lambda _args: (w.print_help(sys.stderr), 2)[1])
