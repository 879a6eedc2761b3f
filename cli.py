"""The ``gendeg`` command line.

Each module in :mod:`commands` adds its sub-commands with ``register(subparsers)`` and
sets ``func`` (``func(args) -> int`` exit code) on its parsers. Errors the pack raises on
purpose (:class:`GenDegError`), wrong arguments, and as a last resort a failing file
operation, an allocation failure or input nested too deeply, are printed as one line
(what was wrong and what to do) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import commands
from .core.errors import GenDegError, is_out_of_memory


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to read more (sub-parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("gendeg: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        return _fail("the input is nested too deeply to process (thousands of levels); check that it is the file you meant")
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise  # a bug: the traceback is what a report needs
        return _fail("not enough memory; use smaller images (downscale or crop them), or close other programs / "
                     "use a machine with more memory")
    except OSError as exc:
        return _fail(_describe_os_error(exc))


def _fail(message: str) -> int:
    """Print ``message`` as one line on stderr; the exit code of every refused input (2)."""
    print(f"gendeg: error: {message}", file=sys.stderr)
    return 2


def _describe_os_error(exc: OSError) -> str:
    """A failing file operation in one line: which file, what the system said."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "") if exc.filename else "a file"
    return f"cannot access {where}: {exc.strerror or exc}; check the path and its permissions"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
