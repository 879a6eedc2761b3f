"""SSIM and MS-SSIM losses: 1 − the pack's own metric (``core.quality.fullref``), mean over the batch.

The metric code is shared with ``gendeg score`` (Gaussian 11×11 window, σ 1.5, K1 0.01,
K2 0.03, data range 1; MS-SSIM with 5 scales and the published weights), run in float32
with autocast off and without the metric's 0..1 input check (restorer outputs are not
clamped). MS-SSIM needs crops of at least 161×161.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InputError
from ...quality.fullref import ms_ssim_min_side, ms_ssim_values, ssim_values
from .base import LossBatch, LossContext, TrainLoss, check_same_shape, full_precision


@dataclass
class SSIMOptions:
    #: Multiplier of this loss (1 − SSIM) in the total.
    weight: float = 1.0


@dataclass
class MSSSIMOptions:
    #: Multiplier of this loss (1 − MS-SSIM) in the total; crops must be at least 161×161.
    weight: float = 1.0


class StructuralLoss(TrainLoss):
    """1 − SSIM (``kind`` "ssim") or 1 − MS-SSIM (``kind`` "ms_ssim") of ``out`` against ``gt``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        check_same_shape(batch, self.kind)
        h, w = batch.out.shape[-2:]
        need = ms_ssim_min_side() if self.kind == "ms_ssim" else 11
        if min(h, w) < need:
            raise InputError(f"{self.kind} loss needs crops of at least {need}x{need}, got {w}x{h}; raise the crop size "
                             f"or use {'ssim' if self.kind == 'ms_ssim' else 'l1'}")
        with full_precision(batch.out.device):
            x, y = batch.gt.float(), batch.out.float()
            v = ms_ssim_values(x, y) if self.kind == "ms_ssim" else ssim_values(x, y)
        return {self.kind: 1.0 - v.mean()}


def build_ssim(options: SSIMOptions, ctx: LossContext) -> StructuralLoss:
    return StructuralLoss("ssim")


def build_ms_ssim(options: MSSSIMOptions, ctx: LossContext) -> StructuralLoss:
    return StructuralLoss("ms_ssim")
