"""Pixel losses: L1, MSE, Charbonnier (means over every pixel, channel and image; float32).

Charbonnier follows the BasicSR fork of Restormer/NAFNet: mean √((x − y)² + ε²) with
ε = 1e-3 (upstream BasicSR adds an unsquared ε = 1e-12 instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InputError
from .base import LossBatch, LossContext, TrainLoss, check_same_shape, full_precision


@dataclass
class L1Options:
    #: Multiplier of this loss in the total.
    weight: float = 1.0


@dataclass
class MSEOptions:
    #: Multiplier of this loss in the total.
    weight: float = 1.0


@dataclass
class CharbonnierOptions:
    #: Multiplier of this loss in the total.
    weight: float = 1.0
    #: ε of √((x − y)² + ε²), in 0..1 image units (> 0).
    eps: float = 1e-3


class PixelLoss(TrainLoss):
    """Mean of an element-wise penalty of ``out − gt`` (``kind`` l1, mse or charbonnier)."""

    def __init__(self, kind: str, eps: float = 1e-3) -> None:
        super().__init__()
        self.kind = kind
        self.eps = eps

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        check_same_shape(batch, self.kind)
        with full_precision(batch.out.device):
            d = batch.out.float() - batch.gt.float()
            if self.kind == "l1":
                v = d.abs().mean()
            elif self.kind == "mse":
                v = d.pow(2).mean()
            else:
                v = (d.pow(2) + self.eps**2).sqrt().mean()
        return {self.kind: v}


def build_l1(options: L1Options, ctx: LossContext) -> PixelLoss:
    return PixelLoss("l1")


def build_mse(options: MSEOptions, ctx: LossContext) -> PixelLoss:
    return PixelLoss("mse")


def build_charbonnier(options: CharbonnierOptions, ctx: LossContext) -> PixelLoss:
    if not options.eps > 0:
        raise InputError(f"charbonnier: eps must be > 0, got {options.eps}")
    return PixelLoss("charbonnier", options.eps)
