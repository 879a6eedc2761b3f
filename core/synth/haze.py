"""Haze by the atmospheric scattering model (Koschmieder; as in RESIDE's synthetic sets).

``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``, with ``d`` the scene depth normalised to 0..1
(0 = nearest, 1 = farthest), ``A`` the airlight (global atmospheric light, 0..1) and ``β``
the scattering coefficient. RESIDE draws A in [0.7, 1.0] and β in [0.6, 1.8]; here
``β = strength · beta_max`` (default ``beta_max`` 2.0, so strengths 0.3..0.9 span RESIDE's
β range) and A is drawn from [airlight_min, airlight_max] per image unless given. For
intensities that strength 1 does not reach, the calibration continues up to β = 8 (the top of
``beta_max``'s range: dense fog, as in the real Dense-Haze / NH-HAZE sets).

Depth: an optional ``depth`` ``[B,1,H,W]`` map in 0..1 from any depth node. Monocular depth
nodes (MiDaS, Depth Anything, ZoeDepth previews) output *inverse* depth where near = bright,
so by default ``d = 1 − depth``; set ``depth_near_is_bright=False`` for maps where far = bright.
The map is min-max normalised per image. Without a depth map a documented proxy is used:
``d = 0.6·v + 0.4·L̃`` where ``v`` runs from 1 at the top row to 0 at the bottom (scenes
recede towards the horizon) and ``L̃`` is the image luminance blurred with σ = 1/32 of the
shorter side (bright, flat regions such as sky are usually far), then min-max normalised.

Depth contrast (``depth_exponent``, the second parameter): the normalised distance is raised to
this power, ``d ← d^depth_exponent``. 0 = the same distance everywhere (an even fog: the haze
changes every pixel alike), 1 = the depth map or proxy as it is, above 1 the haze gathers in
the distance (a clear foreground). At the same μ, a larger exponent concentrates the change,
so σ grows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .base import Degradation, Param, bview, gaussian_blur, luminance, param_values, reach_of, uniform
from .strips import bilinear_rows, is_split, strips

#: default depth exponent
DEPTH_EXPONENT = 1.0

PARAMS = {
    "beta_max": Param(2.0, 0.1, 8.0, "scattering coefficient β at strength 1 (β = strength·beta_max), per unit depth"),
    "airlight": Param(None, 0.0, 1.0, "airlight A (0..1); empty = drawn per image from [airlight_min, airlight_max]", optional=True),
    "airlight_min": Param(0.7, 0.0, 1.0, "lower bound of the random airlight (RESIDE: 0.7)"),
    "airlight_max": Param(1.0, 0.0, 1.0, "upper bound of the random airlight (RESIDE: 1.0)"),
    "depth_near_is_bright": Param(True, doc="depth input convention: true for inverse depth / disparity (MiDaS, Depth Anything)"),
    "depth_exponent": Param(DEPTH_EXPONENT, 0.0, 4.0, "the normalised distance is raised to this power: 0 = even fog, "
                            "1 = the depth as is, >1 = haze gathers far away (the second parameter: more gives more sigma)"),
}

#: the range in which the joint calibration searches ``depth_exponent`` to set σ at a μ
SIGMA_RANGE = (0.0, 4.0)


def depth_proxy_small(x: torch.Tensor) -> torch.Tensor:
    """The depth proxy (see module doc) at a reduced resolution (shorter side ≈ 64 px), normalised.

    The proxy is smooth (a linear ramp plus luminance blurred with σ = 1/32 of the shorter
    side), so it is computed on a box-downsampled image and upsampled by the caller.
    """
    b, _, h, w = x.shape
    f = max(1, min(h, w) // 64)
    small = F.avg_pool2d(x, f, ceil_mode=True) if f > 1 else x  # luminance is linear: pool first
    hs = small.shape[-2]
    lum = gaussian_blur(luminance(small), min(small.shape[-2:]) / 32.0)
    v = torch.linspace(1.0, 0.0, hs, device=x.device, dtype=x.dtype).view(1, 1, hs, 1)
    return normalise(lum.mul_(0.4).add_(0.6 * v))


def depth_proxy(x: torch.Tensor) -> torch.Tensor:
    """Normalised depth proxy ``[B,1,H,W]`` in 0..1 (1 = far) from the image alone (see module doc)."""
    d = depth_proxy_small(x)
    if d.shape[-2:] != x.shape[-2:]:
        d = normalise(F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return d


def normalise(d: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation to 0..1 (a constant map becomes 0.5)."""
    lo = d.amin(dim=(1, 2, 3), keepdim=True)
    hi = d.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 1e-6, (d - lo) / span.clamp_min(1e-6), torch.full_like(d, 0.5))


def prepare_depth(depth: torch.Tensor | None, x: torch.Tensor, near_is_bright: bool) -> torch.Tensor:
    """Depth input (``[B,1|3,h,w]`` 0..1, or ``None``) -> normalised distance ``[B,1,H,W]`` (1 = far)."""
    if depth is None:
        return depth_proxy(x)
    if depth.ndim != 4 or depth.shape[1] not in (1, 2, 3, 4):
        raise InputError(f"depth: expected [B,1,H,W] or [B,3,H,W], got shape {tuple(depth.shape)}")
    if not torch.isfinite(depth).all():
        raise InputError("depth: contains NaN or infinite values")
    d = depth.to(device=x.device, dtype=x.dtype)
    d = d[:, :3].mean(dim=1, keepdim=True) if d.shape[1] > 1 else d
    if d.shape[0] not in (1, x.shape[0]):
        raise InputError(f"depth: batch of {d.shape[0]} does not match the {x.shape[0]} images (use 1 or the same count)")
    d = d.expand(x.shape[0], -1, -1, -1)
    if d.shape[-2:] != x.shape[-2:]:
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
    d = normalise(d)
    return 1.0 - d if near_is_bright else d


def shape_depth(d: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``d^exponent`` for normalised distances ``d`` in 0..1 (``exponent`` ``[B,1,1,1]``; 0 gives 1 everywhere)."""
    if bool((exponent == 1).all()):
        return d
    return torch.where(exponent == 0, torch.ones_like(d), d.clamp_min(0).pow(exponent))


def haze(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    depth: torch.Tensor | None = None,
    beta_max: float = 2.0,
    airlight: float | None = None,
    airlight_min: float = 0.7,
    airlight_max: float = 1.0,
    depth_near_is_bright: bool = True,
    depth_exponent: float | torch.Tensor = DEPTH_EXPONENT,
) -> torch.Tensor:
    """Hazy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1 scales β;
    ``depth_exponent`` one value or ``[B]``."""
    if airlight_min > airlight_max:
        raise InputError(f"haze: airlight_min ({airlight_min}) must not exceed airlight_max ({airlight_max})")
    b = x.shape[0]
    a_rand = uniform((b,), generator, x.device, airlight_min, airlight_max)
    a = torch.full_like(a_rand, float(airlight)) if airlight is not None else a_rand
    beta = bview(strength * beta_max)
    h, w = x.shape[-2:]
    gamma = bview(param_values(depth_exponent, b, x.device))
    if depth is None:
        # the proxy is smooth: transmission at its reduced resolution, upsampled bilinearly
        t_small = torch.exp(-beta * shape_depth(depth_proxy_small(x), gamma))
        t_full = t_small if t_small.shape[-2:] == (h, w) else None
    else:
        t_full = torch.exp(-beta * shape_depth(prepare_depth(depth, x, depth_near_is_bright), gamma))
    out = torch.empty_like(x) if is_split(h, w) else None
    for y0, y1 in strips(h, w):
        if t_full is not None:
            t = t_full[..., y0:y1, :]
        elif out is None:  # one strip: the whole-image upsampling
            t = F.interpolate(t_small, size=(h, w), mode="bilinear", align_corners=False)
        else:
            t = bilinear_rows(t_small, (h, w), y0, y1)
        # I = J·t + A·(1 − t) in one pass over the colour image
        y = torch.addcmul(bview(a) * (1.0 - t), x[..., y0:y1, :], t).clamp_(0, 1)
        if out is None:
            return y
        out[..., y0:y1, :] = y
    return out


DEGRADATION = Degradation("haze", haze, PARAMS, __doc__ or "", uses_depth=True, reach=reach_of(PARAMS["beta_max"], "beta_max"),
                          sigma_param="depth_exponent", sigma_range=SIGMA_RANGE)
