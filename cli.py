"""The ``gendeg`` command line.

Each module in :mod:`commands` adds its sub-commands with ``register(subparsers)`` and
sets ``func`` (``func(args) -> int`` exit code) on its parsers. Errors the pack raises on
purpose (:class:`GenDegError`) are printed as one clear line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from . import commands
from .core.errors import GenDegError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gendeg",
        description="Degrade, restore and score images; run ComfyUI-GenDeg workflows without ComfyUI.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f".{info.name}", commands.__name__)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GenDegError as exc:
        print(f"gendeg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gendeg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
