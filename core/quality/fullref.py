"""Full-reference pixel metrics: PSNR, SSIM, MS-SSIM (no weights).

All take ``reference`` and ``image`` as ``[B,C,H,W]`` floats in 0..1 (data range 1) on any
device and return ``[B]``: one value per image (channels averaged for SSIM/MS-SSIM, pooled
for PSNR's MSE). A single reference is compared against every image of a batch.

* PSNR = 10·log10(1 / MSE); ``inf`` for identical images. Optional BT.601 Y channel and
  border crop, as restoration papers (BasicSR) report it.
* SSIM: Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, population (co)variances,
  mean over the "valid" region (5 pixels from each border dropped). This is exactly
  scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)``: its window has radius
  ``int(3.5·σ + 0.5) = 5`` and it crops the same 5 pixels before averaging.
* MS-SSIM (Wang et al. 2003): 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2×2 average pooling between scales (a replicate pad of one pixel on the top/left when a
  side is odd), contrast-structure terms at scales 1-4 and full SSIM at scale 5, negative
  terms clipped to 0; per channel, then averaged. Same as ``piq.multi_scale_ssim``.
  Images need a side of at least (11 − 1)·2⁴ + 1 = 161 pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from .common import check_pair, crop_border, rgb_to_y

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _prepare(reference: torch.Tensor, image: torch.Tensor, y_channel: bool, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref, img = check_pair(reference, image)
    # float32 everywhere (float64 convolutions are several times slower on CPU); the
    # results agree with scikit-image's float64 to ~1e-6. Reductions accumulate in float64.
    ref, img = ref.float(), img.float()
    if y_channel:
        ref, img = rgb_to_y(ref), rgb_to_y(img)
    return crop_border(ref, border), crop_border(img, border)


def psnr(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1), ``[B]``; ``inf`` where the images are identical.

    ``y_channel`` scores BT.601 luma only (see :data:`.common.Y_WEIGHTS`); ``crop`` removes
    that many pixels from every border first.
    """
    ref, img = _prepare(reference, image, y_channel, crop)
    mse = (ref - img).pow(2).flatten(1).mean(dim=1, dtype=torch.float64)  # float64 accumulation, no float64 copy
    return (10.0 * torch.log10(1.0 / mse)).float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (centred), as used separably by SSIM."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid region only (no padding), per channel."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map) over the valid region, ``[B,C,h,w]``."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    # One grouped filter pass for the five moments.
    c = x.shape[1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(stack, g).split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return lum * cs, cs


def _check_ssim_size(x: torch.Tensor, min_side: int, what: str) -> None:
    h, w = x.shape[-2:]
    if min(h, w) < min_side:
        raise InputError(f"{what} needs images of at least {min_side}x{min_side} pixels, got {w}x{h}")


def ssim(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0) -> torch.Tensor:
    """Structural similarity, ``[B]`` in [-1, 1] (1 for identical images); see the module doc."""
    ref, img = _prepare(reference, image, y_channel, crop)
    _check_ssim_size(ref, SSIM_WINDOW, "SSIM")
    return ssim_values(ref, img)


def ssim_values(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM ``[B]`` of two float ``[B,C,H,W]`` batches, without validation (differentiable; training losses)."""
    g = gaussian_window(dtype=x.dtype, device=x.device)
    s, _ = _ssim_maps(x, y, g)
    return s.double().mean(dim=(2, 3)).mean(dim=1).float()


def ms_ssim(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """Multi-scale SSIM, ``[B]`` in 0..1 (1 for identical images); see the module doc."""
    ref, img = _prepare(reference, image, y_channel, crop)
    levels = len(weights)
    _check_ssim_size(ref, ms_ssim_min_side(levels), f"MS-SSIM ({levels} scales)")
    return ms_ssim_values(ref, img, weights)


def ms_ssim_min_side(levels: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side MS-SSIM with ``levels`` scales accepts: (11 − 1)·2^(levels−1) + 1."""
    return (SSIM_WINDOW - 1) * 2 ** (levels - 1) + 1


def ms_ssim_values(x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM ``[B]`` of two float ``[B,C,H,W]`` batches, without validation (differentiable; training losses)."""
    levels = len(weights)
    g = gaussian_window(dtype=x.dtype, device=x.device)
    terms = []
    for level in range(levels):
        if level > 0:
            pad = max(x.shape[2] % 2, x.shape[3] % 2)
            if pad:
                x = F.pad(x, (pad, 0, pad, 0), mode="replicate")
                y = F.pad(y, (pad, 0, pad, 0), mode="replicate")
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        s, cs = _ssim_maps(x, y, g)
        terms.append((s if level == levels - 1 else cs).double().mean(dim=(2, 3)))  # [B,C]
    stacked = torch.relu(torch.stack(terms, dim=0))  # [L,B,C]
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device).view(-1, 1, 1)
    return torch.prod(stacked**w, dim=0).mean(dim=1).float()


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on data range 1 (``inf`` for 0)."""
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
