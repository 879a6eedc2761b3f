"""LPIPS and DISTS losses: the pack's own networks (``core.quality``), frozen, mean over the batch.

Weights come from the models folder as for ``gendeg score``: ``<models>/quality/lpips/``
(torchvision backbone + official heads) and ``<models>/quality/dists/weights.pt``; missing
files give the usual message with the ``gendeg weights fetch`` command. The restorer
output is used as is (not clamped); gradients flow through the frozen network to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ...quality.dists import DISTS
from ...quality.lpips import LPIPS
from ...weights import load_state_dict, resolve
from .base import LossBatch, LossContext, TrainLoss, check_same_shape


@dataclass
class LPIPSOptions:
    #: Multiplier of this loss in the total.
    weight: float = 1.0
    #: Backbone: "vgg" (LPIPS-vgg, the usual choice for optimisation) or "alex".
    net: Literal["vgg", "alex"] = "vgg"


@dataclass
class DISTSOptions:
    #: Multiplier of this loss in the total.
    weight: float = 1.0


def quality_folders(ctx: LossContext) -> list[Path]:
    """Where quality-model files live under the models root."""
    return [Path(ctx.models_dir) / "quality"]


class DistanceLoss(TrainLoss):
    """Mean of a frozen full-reference distance network (``distance(gt, out)``) over the batch."""

    def __init__(self, name: str, net: torch.nn.Module) -> None:
        super().__init__()
        self.name = name
        self.keep("net", net)

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        check_same_shape(batch, self.name)
        return {self.name: self.net.distance(batch.gt, batch.out).float().mean()}


def build_lpips(options: LPIPSOptions, ctx: LossContext) -> DistanceLoss:
    dirs = quality_folders(ctx)
    backbone = resolve("tv-alexnet" if options.net == "alex" else "tv-vgg16", dirs)
    heads = resolve(f"lpips-{options.net}", dirs)
    net = LPIPS(options.net).load(load_state_dict(backbone), load_state_dict(heads)).to(ctx.device)
    return DistanceLoss("lpips", net)


def build_dists(options: DISTSOptions, ctx: LossContext) -> DistanceLoss:
    dirs = quality_folders(ctx)
    backbone, weights = resolve("tv-vgg16", dirs), resolve("dists", dirs)  # missing files fail before building VGG16
    net = DISTS().load(load_state_dict(backbone), load_state_dict(weights)).to(ctx.device)
    return DistanceLoss("dists", net)
