"""``gendeg dataset export``: a pack dataset as gt/ + lq/ folders for BasicSR / traiNNer-redux."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dataset", help="dataset tools: `gendeg dataset export`", description="Dataset tools.")
    ds = d.add_subparsers(dest="dataset_command", metavar="TOOL")
    e = ds.add_parser(
        "export",
        help="write a pack dataset as gt/ + lq/ folders (BasicSR, traiNNer-redux, neosr)",
        description="Copy the pairs of DATASET (a folder written by GenDeg Save Dataset Pairs, with metadata.jsonl) into "
        "OUT/gt/ (clean) and OUT/lq/ (degraded) under the same file names: the paired layout of BasicSR and "
        "traiNNer-redux configs (dataroot_gt / dataroot_lq). Resumable: files already there are skipped.",
    )
    e.add_argument("dataset", help="dataset folder (holds metadata.jsonl)")
    e.add_argument("out", help="output folder (gt/ and lq/ are created in it)")
    e.add_argument("--types", default="", help="comma-separated degradation types to keep (default: all)")
    e.add_argument("--mu-range", nargs=2, type=float, metavar=("LO", "HI"), help="keep pairs whose achieved mu is in LO..HI")
    e.add_argument("--link", action="store_true", help="hard-link instead of copying where the file system allows")
    e.set_defaults(func=run_export)
    d.set_defaults(func=lambda a: (d.print_help(), 2)[1])


def run_export(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.train.export import export_pairs

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    mu = tuple(args.mu_range) if args.mu_range else None
    if mu is not None and not (mu[0] <= mu[1]):
        raise InputError(f"--mu-range {mu[0]} {mu[1]}: LO must not exceed HI")
    report = export_pairs(args.dataset, args.out, types=types, mu_range=mu, link=args.link)
    print(json.dumps({"pairs": report.pairs, "written": report.written, "skipped": report.skipped,
                      "gt": str(report.out / "gt"), "lq": str(report.out / "lq")}, indent=2))
    return 0
