"""``gendeg train driftrec CONFIG.yaml``: train DriftRec's score network for JPEG restoration (see core/train)."""

from __future__ import annotations

import argparse

from ._common_train import add_common_arguments, run_command


def register_train(ts: argparse._SubParsersAction) -> None:
    p = ts.add_parser(
        "driftrec",
        help="train a DriftRec JPEG restorer (NCSN++ score network, OUVE/CosVE SDE) from a YAML config",
        description="Train DriftRec's score network with its denoising score-matching objective (t ~ U(t_eps, 1), "
        "loss 0.5 sum (score std + z)^2) on clean photos JPEG-compressed on the fly at a quality drawn uniformly from "
        "0..100, or on pairs. Writes <out>/<name>.safetensors (EMA weights that GenDeg DriftRec Loader reads), "
        "checkpoints, metrics.csv, val.csv and validation grids. Official defaults: configs/train/driftrec_jpeg.yaml. "
        "Multi-GPU: accelerate launch -m comfyui_gendeg train driftrec CONFIG.",
    )
    add_common_arguments(p)
    p.set_defaults(func=run_train_driftrec)


def _check(config):
    import torch

    from ..core.restore.nets.ncsnpp import NCSNpp
    from ..core.train.driftrec_task import build_driftrec_data

    with torch.device("meta"):
        NCSNpp(**config.net_config())
    return build_driftrec_data(config)


def run_train_driftrec(args: argparse.Namespace) -> int:
    from ..core.train.driftrec_task import train_driftrec
    from ..core.train.sde_config import DriftRecConfig

    return run_command(args, DriftRecConfig, "driftrec", _check, train_driftrec)
