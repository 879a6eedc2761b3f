"""``gendeg train restorer CONFIG.yaml``: train a feed-forward restorer (see core/train)."""

from __future__ import annotations

import argparse

from ._common_train import add_common_arguments, run_command


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
    add_common_arguments(p)
    p.add_argument("--archs", action="store_true", help="list the trainable architectures and their options, then exit")
    p.add_argument("--losses", action="store_true", help="list the losses and their options, then exit")
    p.set_defaults(func=run_train_restorer)


def _prepare(config):
    """Check the network's options (built on the meta device: no memory) and build the data."""
    import torch

    from ..core.train.archs import build_model
    from ..core.train.engine import restorer_data

    with torch.device("meta"):
        build_model(config.model.arch, config.model.options)
    return restorer_data(config)


def run_train_restorer(args: argparse.Namespace) -> int:
    from ..core.train.config import RestorerConfig
    from ..core.train.engine import train_restorer
    from ..core.train.schema import describe

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
    return run_command(args, RestorerConfig, "restorer", _prepare, train_restorer)
