"""Snow: several particle layers at different depths, motion streaking, and a veil.

Three layers, far to near (Snow100K-style synthesis, with depth cues): flake radius
``size · (0.5, 1, 2)`` pixels at 512 px, per-pixel seeding probability
``strength · density · (4, 1.5, 0.5)`` at 512 px (far flakes are many and small, near ones few
and large), scaled by the ratio of a flake's area at 512 px to its area at this size
(:func:`~.base.streak_area`; flakes are larger in pixels at higher resolutions, so fewer seeds
per pixel give the same snowfall at any resolution), motion streak length ``streak · (0.5, 1, 2)`` pixels at 512 px along the fall
direction (near flakes cross more of the frame during the exposure), opacity
``(0.7, 0.85, 1.0)``. Each flake is an antialiased capsule (Gaussian cross-section =
radius) rendered by FFT convolution of the seed map; layers are composited over the image
with ``I ← I·(1 − m) + c·m`` (``c`` = flake brightness, 0.85..1 per layer and image). Finally a veil of scattered
light: ``I ← I·(1 − v) + v·0.85`` with ``v = strength · veil``. Seeds are nested thresholds
of fixed uniform fields, so more strength only adds flakes.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import (
    Degradation,
    Param,
    bview,
    fall_direction,
    odd,
    param_values,
    scale_of,
    segment_kernels,
    stationary_conv,
    stationary_rows,
    streak_area,
)
from .strips import is_split, strips

#: default flake opacity
OPACITY = 0.5

PARAMS = {
    "density": Param(0.004, 0.0, 0.05, "seeding probability per pixel of the middle layer at strength 1, at 512 px "
                     "(scaled by the flakes' area so the snowfall looks the same at any resolution)"),
    "size": Param(1.6, 0.3, 10.0, "flake radius (Gaussian std) of the middle layer, pixels at 512 px"),
    "streak": Param(4.0, 0.0, 60.0, "motion streak length of the middle layer, pixels at 512 px"),
    "angle": Param(None, -80.0, 80.0, "fall angle in degrees from vertical; empty = random in ±angle_range", optional=True),
    "angle_range": Param(30.0, 0.0, 80.0, "random angles are drawn from ±angle_range degrees"),
    "veil": Param(0.25, 0.0, 1.0, "veil fraction at strength 1"),
    "opacity": Param(OPACITY, 0.0, 1.0, "flake opacity, a factor on every layer's (the second parameter: at the same "
                     "mu, fainter flakes mean more flakes and more veil, so sigma falls)"),
}

#: the range in which the joint calibration searches ``opacity`` to set σ at a μ
SIGMA_RANGE = (0.03, 1.0)

LAYERS = (  # (size factor, density factor, streak factor, opacity)
    (0.5, 4.0, 0.5, 0.7),
    (1.0, 1.5, 1.0, 0.85),
    (2.0, 0.5, 2.0, 1.0),
)


def snow(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    density: float = 0.004,
    size: float = 1.6,
    streak: float = 4.0,
    angle: float | None = None,
    angle_range: float = 30.0,
    veil: float = 0.25,
    opacity: float | torch.Tensor = OPACITY,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Snowy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1 (up to :func:`reach`);
    ``opacity`` one value or ``[B]``.

    ``out``: where large images are written strip by strip (may be ``x`` itself: a strip reads its
    rows of ``x`` before writing them); a new tensor when not given.
    """
    b, _, h, w = x.shape
    dev = x.device
    theta = fall_direction(b, generator, dev, angle, angle_range)
    sc = scale_of(x)
    s = bview(strength)
    op = param_values(opacity, b, dev)
    seeds, tones, kernels = [], [], []
    for size_f, dens_f, streak_f, layer_opacity in LAYERS:  # draws: uniform field, then tone, per layer
        u = torch.rand((b, 1, h, w), generator=generator, device=dev)
        tones.append(bview(torch.rand((b,), generator=generator, device=dev) * 0.15 + 0.85))  # flake brightness
        radius = max(0.3, size * size_f * sc)
        length = streak * streak_f * sc
        # seeds per pixel so that the flakes cover the same fraction of the frame at any resolution
        per_pixel = density * (streak_area(streak * streak_f, size * size_f) / streak_area(length, radius))
        seeds.append((u < s * per_pixel * dens_f).float())
        k = segment_kernels(torch.full((b,), length, device=dev), theta, torch.full((b,), radius, device=dev),
                            odd(length + 6 * radius))
        kernels.append(k * (layer_opacity * op / k.flatten(1).amax(dim=1)).view(-1, 1, 1))  # isolated flake's peak
    # all layers in one FFT pass (kernels centred in the largest size)
    size_max = max(k.shape[-1] for k in kernels)
    kk = torch.zeros(b, len(kernels), size_max, size_max, device=dev)
    for j, k in enumerate(kernels):
        o = (size_max - k.shape[-1]) // 2
        kk[:, j, o : o + k.shape[-1], o : o + k.shape[-1]] = k
    v = s * veil

    def composite(xr: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # composite far to near, I ← I·(1 − m_j) + c_j·m_j, then the veil I ← I·(1 − v) + 0.85·v, folded
        # into one pass over the colour image: I = J·P + Q with P, Q single-channel maps
        p = (1.0 - masks[:, :1]) * (1.0 - v)
        q = masks[:, :1] * tones[0]
        for j in range(1, len(tones)):
            keep = 1.0 - masks[:, j : j + 1]
            p.mul_(keep)
            q.mul_(keep).add_(masks[:, j : j + 1] * tones[j])
        q.mul_(1.0 - v).add_(0.85 * v)
        return torch.addcmul(q, xr, p).clamp_(0, 1)

    if not is_split(h, w):
        return composite(x, stationary_conv(torch.cat(seeds, dim=1), kk).clamp_(0, 1))  # masks [B,layers,H,W]
    out = torch.empty_like(x) if out is None else out  # large images: the same flakes and compositing, strip by strip
    for y0, y1 in strips(h, w, halo=size_max // 2):
        masks = torch.cat([stationary_rows(sd, kk[:, j : j + 1], y0, y1) for j, sd in enumerate(seeds)], dim=1)
        out[..., y0:y1, :] = composite(x[..., y0:y1, :], masks.clamp_(0, 1))
    return out


def reach(params: dict[str, Any]) -> float:
    """Largest strength: the seed density stays within its range and the veil at most 1."""
    return min(PARAMS["density"].hi / params["density"] if params["density"] > 0 else 1.0,
               1.0 / params["veil"] if params["veil"] > 0 else 1.0)


DEGRADATION = Degradation("snow", snow, PARAMS, __doc__ or "", reach=reach, sigma_param="opacity",
                          sigma_range=SIGMA_RANGE)
