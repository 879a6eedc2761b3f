"""``gendeg train restorer CONFIG.yaml``: train a feed-forward restorer (see core/train)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register_train(ts: argparse._SubParsersAction) -> None:
    p = ts.add_parser(
        "restorer",
        help="train a restorer (NAFNet, SwinIR) from a YAML config: pairs, gt/lq folders, or degraded on the fly",
        description="Train a scale-1 restorer on the pack's datasets, gt/ + lq/ folders, or clean photos degraded on the "
        "fly by the synthesizer, with L1/MSE/Charbonnier/SSIM/LPIPS/DISTS, DiffLoss and Perceive-IR's losses. Writes "
        "<out>/<name>.safetensors (EMA weights that spandrel, ComfyUI's Load Upscale Model and GenDeg Restorer Loader "
        "read), checkpoints, metrics.csv, val.csv and validation grids. Examples: configs/train/. Multi-GPU: "
        "accelerate launch -m comfyui_gendeg train restorer CONFIG.",
    )
    p.add_argument("config", nargs="?", help="YAML config (see configs/train/ and --schema)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loss.diffloss.weight=0 (repeatable; YAML values)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--out", help="output folder (default: the config's out, else runs/<name>)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available; multi-GPU through accelerate launch)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--models-dir", help="models folder for the losses' frozen networks (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--schema", action="store_true", help="print every config key with its type, default and meaning, then exit")
    p.add_argument("--archs", action="store_true", help="list the trainable architectures and their options, then exit")
    p.add_argument("--losses", action="store_true", help="list the losses and their options, then exit")
    p.add_argument("--validate-only", action="store_true", help="check the config and the data, print the resolved config, exit")
    p.set_defaults(func=run_train_restorer)


def run_train_restorer(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.train.config import RestorerConfig, load_config
    from ..core.train.schema import describe

    if args.schema:
        print("\n".join(describe(RestorerConfig)))
        return 0
    if args.archs:
        from ..core.train.archs import describe_archs

        print(describe_archs())
        return 0
    if args.losses:
        from ..core.train.losses import LOSSES

        for name, spec in LOSSES.items():
            print(f"{name}: {spec.doc}")
            print("\n".join("    " + line for line in describe(spec.options)))
        return 0
    if not args.config:
        raise InputError("give a config file: gendeg train restorer CONFIG.yaml (examples in configs/train/)")
    overrides = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError("--max-steps must be at least 1")
        overrides.append(f"train.max_steps={args.max_steps}")
    config: RestorerConfig = load_config(args.config, overrides)
    if args.out:
        config.out = str(Path(args.out))
    if args.validate_only:
        from ..core.train.archs import build_model
        from ..core.train.data import build_data

        build_model(config.model.arch, config.model.options)
        data = build_data(config.data, config.seed)
        print(json.dumps({"config": config.to_dict(), "data": data.summary}, indent=2, default=str))
        return 0

    from ..core.train.engine import train_restorer

    try:
        result = train_restorer(config, device=args.device, resume=args.resume, models_dir=args.models_dir)
    except KeyboardInterrupt as exc:
        print(f"gendeg: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    if not result.main_process:
        return 0
    print(json.dumps({"model": str(result.model_path), "out": str(result.out_dir), "step": result.step,
                      "losses": result.last_losses, "val": result.last_val}, indent=2))
    return 0
