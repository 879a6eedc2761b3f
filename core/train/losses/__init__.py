"""Training losses: a registry of named losses, each an options dataclass and a builder.

======================= ================================================================
name                    what (terms it returns)
======================= ================================================================
l1, mse, charbonnier    pixel losses (``l1`` / ``mse`` / ``charbonnier``)
ssim, ms_ssim           1 − the pack's SSIM / MS-SSIM (``ssim`` / ``ms_ssim``)
lpips, dists            the pack's LPIPS / DISTS networks, frozen (``lpips`` / ``dists``)
diffloss                DiffLoss through a frozen guided-diffusion prior (``diffloss_nat``, ``diffloss_sem``)
infonce                 Perceive-IR's InfoNCE on its CFE degradation features (``infonce``; arch perceive_ir)
clip_quality            Perceive-IR's L_clip from the quality perceiver (``clip_quality``)
dpl                     Perceive-IR's difficulty-adaptive perceptual loss (``dpl``)
======================= ================================================================

:func:`build_loss` validates the name and options and builds the loss on ``ctx.device``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InputError
from .base import LossBatch, LossContext, LossSpec, TrainLoss, make_options, option_docs
from .diffloss import DiffLoss, DiffLossOptions, build_diffloss
from .perceive_ir import (
    ClipQualityLoss,
    ClipQualityOptions,
    DPLOptions,
    DPLoss,
    InfoNCELoss,
    InfoNCEOptions,
    build_clip_quality,
    build_dpl,
    build_infonce,
)
from .perceptual import DISTSOptions, LPIPSOptions, build_dists, build_lpips
from .pixel import CharbonnierOptions, L1Options, MSEOptions, build_charbonnier, build_l1, build_mse
from .structural import MSSSIMOptions, SSIMOptions, build_ms_ssim, build_ssim

LOSSES: dict[str, LossSpec] = {
    "l1": LossSpec(L1Options, build_l1, "Mean absolute error |out − gt|."),
    "mse": LossSpec(MSEOptions, build_mse, "Mean squared error (out − gt)²."),
    "charbonnier": LossSpec(CharbonnierOptions, build_charbonnier, "Charbonnier √((out − gt)² + ε²), a smooth L1."),
    "ssim": LossSpec(SSIMOptions, build_ssim, "1 − SSIM (the pack's metric: Gaussian 11×11, σ 1.5)."),
    "ms_ssim": LossSpec(MSSSIMOptions, build_ms_ssim, "1 − MS-SSIM (the pack's metric, 5 scales; crops ≥ 161)."),
    "lpips": LossSpec(LPIPSOptions, build_lpips, "LPIPS distance (frozen VGG16 or AlexNet + official heads)."),
    "dists": LossSpec(DISTSOptions, build_dists, "DISTS distance (frozen VGG16 + official alpha/beta)."),
    "diffloss": LossSpec(DiffLossOptions, build_diffloss,
                         "DiffLoss: γ·(MSE of a frozen diffusion prior's noise predictions + λ·MSE of its h-space), with gradients."),
    "infonce": LossSpec(InfoNCEOptions, build_infonce,
                        "Perceive-IR InfoNCE (τ 0.1) on CFE degradation features: crops of one image together, other types apart."),
    "clip_quality": LossSpec(ClipQualityOptions, build_clip_quality,
                             "Perceive-IR L_clip: 1 − the quality perceiver's p(excellent) of the output (raw cosine)."),
    "dpl": LossSpec(DPLOptions, build_dpl,
                    "Perceive-IR difficulty-adaptive perceptual loss: VGG16 contrast of out to gt vs. lq and proxy outputs."),
}


def build_loss(name: str, options: Mapping[str, Any] | None, ctx: LossContext) -> TrainLoss:
    """Build loss ``name`` with ``options`` (a mapping of its option fields) on ``ctx.device``.

    Unknown names, unknown options and wrong option types raise :class:`InputError` listing
    what is valid; missing weights raise the pack's :class:`MissingWeightError`.
    """
    spec = LOSSES.get(name)
    if spec is None:
        raise InputError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return spec.build(make_options(spec.options, options, f"loss.{name}"), ctx)


__all__ = [
    "LOSSES",
    "ClipQualityLoss",
    "DPLoss",
    "DiffLoss",
    "InfoNCELoss",
    "LossBatch",
    "LossContext",
    "LossSpec",
    "TrainLoss",
    "build_loss",
    "option_docs",
]
