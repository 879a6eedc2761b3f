"""Command-line plumbing shared by every ``gendeg train <what> CONFIG.yaml`` command.

Each command adds :func:`add_common_arguments` to its parser and calls :func:`run_command`
with its config schema, a ``prepare(config)`` that checks the network and builds the data
(before anything is written), and its ``train(config, device=, resume=, models_dir=, data=)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_common_arguments(p: argparse.ArgumentParser, *, example: str = "configs/train/",
                         models_help: str = "models folder for the frozen networks and validation's LPIPS") -> None:
    p.add_argument("config", nargs="?", help=f"YAML config (see {example} and --schema)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=4 (repeatable; YAML values)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--out", help="output folder (default: the config's out, else runs/<name>)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available; multi-GPU through accelerate launch)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--models-dir", help=f"{models_help} (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--schema", action="store_true", help="print every config key with its type, default and meaning, then exit")
    p.add_argument("--validate-only", action="store_true", help="check the config and the data, print the resolved config, exit")


def run_command(args: argparse.Namespace, schema: type, what: str, prepare: Callable[[Any], Any],
                train: Callable[..., Any], *, example: str = "configs/train/",
                report: Callable[[Any, Any], dict[str, Any]] | None = None) -> int:
    """``--schema``, ``--validate-only`` or a training run of ``schema``.

    ``prepare(config)`` returns the training data (a ``TrainData``-like object with ``summary``);
    ``report(config, data)`` adds fields to the JSON printed at the end.
    """
    from ..core.errors import InputError
    from ..core.train.config import load_config
    from ..core.train.schema import describe

    if args.schema:
        print("\n".join(describe(schema)))
        return 0
    if not args.config:
        raise InputError(f"give a config file: gendeg train {what} CONFIG.yaml (examples in {example})")
    overrides = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError("--max-steps must be at least 1")
        overrides.append(f"train.max_steps={args.max_steps}")
    config = load_config(args.config, overrides, schema)
    if args.out:
        config.out = str(Path(args.out))
    data = prepare(config)
    if args.validate_only:
        print(json.dumps({"config": config.to_dict(), "data": data.summary}, indent=2, default=str))
        return 0
    try:
        result = train(config, device=args.device, resume=args.resume, models_dir=args.models_dir, data=data)
    except KeyboardInterrupt as exc:
        print(f"gendeg: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    if not result.main_process:
        return 0
    extra = report(config, data) if report is not None else {}
    print(json.dumps({"model": str(result.model_path), "out": str(result.out_dir), "step": result.step, **extra,
                      "losses": result.last_losses, "val": result.last_val}, indent=2))
    return 0
