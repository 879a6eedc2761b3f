"""``gendeg train gendeg CONFIG.yaml``: fine-tune GenDeg on your own pairs (see core/train/gendeg)."""

from __future__ import annotations

import argparse

from ._common_train import add_common_arguments, run_command


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
    add_common_arguments(p, example="configs/train/gendeg_lora.yaml", models_help="models folder holding gendeg/ and clip/")
    p.set_defaults(func=run_train_gendeg)


def _prepare(config):
    from ..core.train.gendeg.data import build_gendeg_data

    return build_gendeg_data(config.data, config.seed)


def run_train_gendeg(args: argparse.Namespace) -> int:
    from ..core.train.gendeg.config import GenDegTrainConfig
    from ..core.train.gendeg.task import train_gendeg

    return run_command(args, GenDegTrainConfig, "gendeg", _prepare, train_gendeg, example="configs/train/gendeg_lora.yaml",
                       report=lambda config, data: {"mode": config.model.mode, "types": data.summary.get("types", {})})
