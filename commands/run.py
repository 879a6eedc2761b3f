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


def _cmd_run(args: argparse.Namespace) -> int:
    from ..core.graph.executor import run_workflow_file

    return run_workflow_file(args)


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
    p.add_argument("--temp-dir", type=Path, help="folder for previews (default ./temp)")
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
