"""Low light: exposure drop in linear light plus sensor noise, in the style of "Unprocessing".

1. Inverse gamma: ``L = J^gamma`` (display values to linear light; gamma 2.2).
2. Exposure drop by ``strength · stops_max`` stops: ``L' = L · 2^(−strength·stops_max)``.
3. Sensor noise with the heteroscedastic model of Brooks et al. (CVPR 2019, "Unprocessing
   Images for Learned Raw Denoising"): variance ``λ_shot·L' + λ_read`` where the read noise
   follows their log-linear fit to real sensors,
   ``log λ_read = 2.18·log λ_shot + 1.20 + N(0, 0.26)``. Here ``λ_shot = strength·shot_max``
   (default 0.012, the top of their range), the ``N(0, 0.26)`` term is drawn per image.
4. Clip to 0..1 and re-apply the gamma: ``I = L_noisy^(1/gamma)``.
"""

from __future__ import annotations

import torch

from .base import Degradation, Param, bview, random_field
from .strips import is_split, strips

PARAMS = {
    "stops_max": Param(5.0, 0.0, 12.0, "exposure drop at strength 1, in stops (factor 2^-stops)"),
    "gamma": Param(2.2, 1.0, 3.0, "display gamma used to go to linear light and back"),
    "shot_max": Param(0.012, 0.0, 0.1, "shot-noise gain λ_shot at strength 1 (linear units; Brooks et al.: 1e-4..0.012)"),
    "noise": Param(True, doc="add shot + read noise (false: exposure drop only)"),
}


def low_light(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    stops_max: float = 5.0,
    gamma: float = 2.2,
    shot_max: float = 0.012,
    noise: bool = True,
) -> torch.Tensor:
    """Dark, noisy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1."""
    b, _, h, w = x.shape
    z_read = torch.randn((b,), generator=generator, device=x.device)
    n = random_field(tuple(x.shape), generator, x.device, normal=True, dtype=x.dtype)
    gain = bview(torch.exp2(-strength * stops_max))
    add_noise = noise and shot_max > 0
    if add_noise:
        shot = strength * shot_max
        log_read = 2.18 * torch.log(shot.clamp_min(1e-12)) + 1.20 + 0.26 * z_read
        read = torch.where(shot > 0, torch.exp(log_read), torch.zeros_like(shot))

    def rows(xr: torch.Tensor, nr: torch.Tensor) -> torch.Tensor:
        lin = xr.clamp(0, 1).pow_(gamma).mul_(gain)
        if add_noise:
            std = (lin * bview(shot)).add_(bview(read)).sqrt_()
            lin.addcmul_(nr, std)
        return lin.clamp_(0, 1).pow_(1.0 / gamma)

    if not is_split(h, w):
        return rows(x, n)
    for y0, y1 in strips(h, w):  # large images: in place over the noise field, strip by strip
        n[..., y0:y1, :] = rows(x[..., y0:y1, :], n[..., y0:y1, :])
    return n

DEGRADATION = Degradation("low_light", low_light, PARAMS, __doc__ or "")

#: Brooks et al.'s published range of λ_shot (for documentation and tests).
SHOT_RANGE = (1e-4, 0.012)
LOG_READ_SLOPE, LOG_READ_INTERCEPT, LOG_READ_STD = 2.18, 1.20, 0.26
