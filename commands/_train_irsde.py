"""``gendeg train irsde CONFIG.yaml``: train an IR-SDE / Refusion / DA-CLIP noise network (see core/train)."""

from __future__ import annotations

import argparse


def register_train(ts: argparse._SubParsersAction) -> None:
    from ._common_train import add_common_arguments

    p = ts.add_parser(
        "irsde",
        help="train an IR-SDE family restorer (ConditionalUNet, Refusion NAFNet, DA-CLIP UNet) from a YAML config",
        description="Train a noise network of the IR-SDE family with the official maximum-likelihood matching loss "
        "(L1 between the predicted reverse-step mean and the optimal x*_{t-1}) on clean photos degraded on the fly, "
        "the pack's datasets, or gt/ + lq/ folders. Writes <out>/<name>.safetensors (EMA weights in the official key "
        "layout, with the SDE settings, which GenDeg IR-SDE Loader reads), checkpoints, metrics.csv, val.csv and "
        "validation grids. Example: configs/train/irsde_deraining.yaml.",
    )
    add_common_arguments(p)
    p.add_argument("--archs", action="store_true", help="list the architectures and their options, then exit")
    p.set_defaults(func=run_train_irsde)


def _check(config) -> dict:
    from ..core.train.data import build_data
    from ..core.train.irsde_task import build_irsde_net

    build_irsde_net(config.model.arch, config.model.options)
    return build_data(config.data, config.seed)


def run_train_irsde(args: argparse.Namespace) -> int:
    from ..core.train.irsde_task import ARCH_DOCS, ARCH_OPTIONS, train_irsde
    from ..core.train.sde_config import IRSDEConfig
    from ._common_train import run_command

    if args.archs:
        for name, opts in ARCH_OPTIONS.items():
            print(f"{name}: {ARCH_DOCS[name]}")
            print(f"    options (defaults): {opts}")
        return 0
    return run_command(args, IRSDEConfig, "irsde", _check, train_irsde)
