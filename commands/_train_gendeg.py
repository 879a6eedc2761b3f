"""``gendeg train gendeg CONFIG.yaml``: fine-tune GenDeg on your own pairs (see core/train/gendeg)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register_train(ts: argparse._SubParsersAction) -> None:
    p = ts.add_parser(
        "gendeg",
        help="fine-tune GenDeg (LoRA or full) on your own clean/degraded pairs: new degradation types, camera looks",
        description="Fine-tune the GenDeg generator on pairs (a pack dataset, or gt/ + lq/ folders) under the official "
        "objective: eps-MSE on the SD 1.5 schedule, classifier-free-guidance dropout (5 % text+intensity, 5 % all, "
        "5 % image), each pair's intensity measured as GenDeg does, prompt = caption + the type's phrase (a new type "
        "is a new phrase), the intensity projections at 10x the UNet's learning rate, EMA. Writes "
        "<out>/<name>.safetensors: a LoRA (GenDeg Model Loader's lora_name) or a whole model (its ckpt_name), "
        "checkpoints, metrics.csv, val.csv and validation images. Example: configs/train/gendeg_lora.yaml.",
    )
    p.add_argument("config", nargs="?", help="YAML config (see configs/train/gendeg_lora.yaml and --schema)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.mode=full (repeatable; YAML values)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--out", help="output folder (default: the config's out, else runs/<name>)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available; multi-GPU through accelerate launch)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--models-dir", help="models folder holding gendeg/ and clip/ (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--schema", action="store_true", help="print every config key with its type, default and meaning, then exit")
    p.add_argument("--validate-only", action="store_true",
                   help="check the config and the data (captions, phrases, measured intensities), print them, exit")
    p.set_defaults(func=run_train_gendeg)


def run_train_gendeg(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.train.config import load_config
    from ..core.train.gendeg.config import GenDegTrainConfig
    from ..core.train.schema import describe

    if args.schema:
        print("\n".join(describe(GenDegTrainConfig)))
        return 0
    if not args.config:
        raise InputError("give a config file: gendeg train gendeg CONFIG.yaml (example: configs/train/gendeg_lora.yaml)")
    overrides = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError("--max-steps must be at least 1")
        overrides.append(f"train.max_steps={args.max_steps}")
    config: GenDegTrainConfig = load_config(args.config, overrides, schema=GenDegTrainConfig)
    if args.out:
        config.out = str(Path(args.out))
    from ..core.train.gendeg.data import build_gendeg_data

    data = build_gendeg_data(config.data, config.seed)
    if args.validate_only:
        print(json.dumps({"config": config.to_dict(), "data": data.summary}, indent=2, default=str))
        return 0

    from ..core.train.gendeg.task import train_gendeg

    try:
        result = train_gendeg(config, device=args.device, resume=args.resume, models_dir=args.models_dir, data=data)
    except KeyboardInterrupt as exc:
        print(f"gendeg: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    if not result.main_process:
        return 0
    print(json.dumps({"model": str(result.model_path), "out": str(result.out_dir), "step": result.step,
                      "mode": config.model.mode, "types": data.summary.get("types", {}),
                      "losses": result.last_losses, "val": result.last_val}, indent=2))
    return 0
