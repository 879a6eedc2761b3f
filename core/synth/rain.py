"""Rain streaks: sparse noise, directional (motion) blur, screen blend, slight veil.

The usual photometric recipe of synthetic rain sets (Rain100/Rain1400 style):

1. Streak seeds: each pixel becomes a drop with probability ``strength · density · a₅₁₂ / a``,
   ``density`` being the fraction of pixels at 512 px and ``a₅₁₂ / a`` the ratio of a streak's
   area there to its area at this size (:func:`~.base.streak_area`: streaks are longer and wider
   in pixels at higher resolutions, so fewer seeds per pixel give the same rain at any
   resolution; about ``(512 / min(H,W))²``); nested thresholds of one fixed uniform field, so
   more strength only adds drops, each with a random brightness in [0.5, 1].
2. Motion blur of the seeds along the fall direction: an antialiased segment kernel of
   length ``length · min(H,W)`` pixels at ``angle`` degrees from vertical and Gaussian
   cross-section ``width`` pixels (at 512 px; cut below 1e-3 of its peak), stamped at each seed
   (sparse seeds on the CPU, :mod:`.kernels`; an FFT convolution of the seed map when they are
   dense, on accelerators, or when the image is processed in strips). Rain is fast, so each drop becomes a streak.
   Two layers are drawn: near (the given length/width) and far (half the length and width,
   twice as dense), as rain seen through depth.
3. The streak layer ``S`` (scaled so an isolated streak peaks at ``opacity``) is screen
   blended: ``I = 1 − (1 − J)(1 − S)``.
4. A light veil of scattered light (rain is also a fog): ``I ← I·(1 − v) + v·A`` with
   ``v = strength · veil`` and ``A`` = 0.9.

``angle`` empty draws one angle per image from U(−angle_range, angle_range) degrees.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import (
    REF_SIDE,
    Degradation,
    Param,
    bview,
    fall_direction,
    fast_len,
    odd,
    param_values,
    scale_of,
    segment_kernels,
    stationary_conv,
    stationary_rows,
    streak_area,
)
from .kernels import nested_sites, stamp_circular, truncate
from .strips import is_split, strips

#: default streak opacity (the joint calibration searches it in SIGMA_RANGE to set σ at a μ)
OPACITY = 0.2
SIGMA_RANGE = (0.02, 1.0)

PARAMS = {
    "density": Param(0.005, 0.0, 0.2, "fraction of pixels that seed a near streak at strength 1, at 512 px (far layer: "
                     "twice that; scaled by the streaks' area so the rain looks the same at any resolution)"),
    "length": Param(0.1, 0.005, 0.5, "streak length as a fraction of the shorter side (near layer)"),
    "angle": Param(None, -80.0, 80.0, "fall angle in degrees from vertical (positive leans right); empty = random", optional=True),
    "angle_range": Param(20.0, 0.0, 80.0, "random angles are drawn from ±angle_range degrees"),
    "width": Param(1.2, 0.3, 8.0, "streak cross-section std in pixels at 512 px (near layer)"),
    "opacity": Param(OPACITY, 0.0, 1.0, "peak brightness of an isolated streak (the second parameter: at the same "
                     "mu, fainter streaks mean more streaks and more veil, so sigma falls)"),
    "veil": Param(0.12, 0.0, 1.0, "veil (scattered light) fraction at strength 1"),
}


def streak_kernels(b: int, length_px: float, width_px: float, angle: torch.Tensor, opacity: float | torch.Tensor,
                   size: int) -> torch.Tensor:
    """Segment kernels ``[B,size,size]`` scaled so an isolated seed of value 1 peaks at ``opacity``
    (one value, or ``[B]``: one per image), without their negligible tails (:func:`~.kernels.truncate`)."""
    dev = angle.device
    k = segment_kernels(torch.full((b,), length_px, device=dev), angle, torch.full((b,), width_px, device=dev), size)
    return truncate(k * (param_values(opacity, b, dev) / k.flatten(1).amax(dim=1)).view(-1, 1, 1))


def streak_sites(b: int, h: int, w: int, strength: torch.Tensor, density: float, generator: torch.Generator,
                 device: torch.device, top: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeds of :func:`streak_seeds` as flat indices into ``[B,H,W]`` (sorted) and brightnesses.

    Candidates of the largest strength ``top`` and their nested thresholds as in
    :func:`~.kernels.nested_sites`; each candidate draws a brightness U(0.5, 1) before the
    selection, so a pixel keeps its brightness whatever the strength and more strength only adds
    streaks.
    """
    def brightness(n: int, g: torch.Generator) -> torch.Tensor:
        return torch.rand((n,), generator=g, device=device).mul_(0.5).add_(0.5)

    sites, keep, bright = nested_sites(b, h * w, strength, density, generator, device, top, brightness)
    return sites[keep], bright[keep]


def dense_seeds(sites: torch.Tensor, values: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """Seed map ``[B,1,H,W]``: ``values`` at the flat ``sites``, 0 elsewhere."""
    seeds = torch.zeros(b * h * w, device=values.device)
    seeds[sites] = values
    return seeds.view(b, 1, h, w)


def streak_seeds(b: int, h: int, w: int, strength: torch.Tensor, density: float, generator: torch.Generator,
                 device: torch.device, top: float = 1.0) -> torch.Tensor:
    """Seed map ``[B,1,H,W]``: brightness U(0.5, 1) where ``u < strength·density``, else 0
    (``u`` a uniform per pixel; see :func:`streak_sites`)."""
    return dense_seeds(*streak_sites(b, h, w, strength, density, generator, device, top), b, h, w)


def circular_at(h: int, w: int, k: int) -> bool:
    """Whether :func:`~.base.stationary_conv` renders a ``k``-tap kernel circularly on ``h × w``."""
    return k <= min(h, w) and fast_len(h) == h and fast_len(w) == w


def rain(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    density: float = 0.005,
    length: float = 0.1,
    angle: float | None = None,
    angle_range: float = 20.0,
    width: float = 1.2,
    opacity: float | torch.Tensor = OPACITY,
    veil: float = 0.12,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rainy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1 (up to :func:`reach`);
    ``opacity`` one value or ``[B]``.

    ``out``: where the result is written (large images strip by strip; may be ``x`` itself: a strip
    reads its rows of ``x`` before writing them); a new tensor when not given. ``x`` may be in any
    memory layout (channels-last ComfyUI images are read in place).
    """
    b, _, h, w = x.shape
    dev = x.device
    theta = fall_direction(b, generator, dev, angle, angle_range)
    sc = scale_of(x)
    length_px = length * min(h, w)
    near_w, far_w = width * sc, max(0.3, width * sc / 2)
    # seeds per pixel so that the streaks cover the same fraction of the frame at any resolution
    near_density = density * (streak_area(length * REF_SIDE, width) / streak_area(length_px, near_w))
    far_density = 2 * density * (streak_area(length * REF_SIDE / 2, max(0.3, width / 2)) / streak_area(length_px / 2, far_w))
    # both layers' seeds first (same draw order as one layer at a time), then one FFT pass
    top = reach({"density": density, "veil": veil})
    near = streak_sites(b, h, w, strength, near_density, generator, dev, top)
    far = streak_sites(b, h, w, strength, far_density, generator, dev, top)
    near_size, far_size = odd(length_px + 6 * near_w), odd(length_px / 2 + 6 * far_w)
    size = max(near_size, far_size)
    kernels = (streak_kernels(b, length_px, near_w, theta, opacity, near_size),
               streak_kernels(b, length_px / 2, far_w, theta, param_values(opacity, b, dev) * 0.6, far_size))
    # screen blends and the veil in one pass over the colour image:
    # I = (1 − v)·(1 − (1 − J)·T) + 0.9·v with T = (1 − near)(1 − far)
    #   = J·A + (1 − 0.1·v − A),  A = (1 − v)·T
    v = bview(strength * veil)

    def blend(xr: torch.Tensor, near_l: torch.Tensor, far_l: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """``dst`` ← the blend of ``xr`` with the (unclamped) layers ``[B,1,rows,W]``, channel by channel
        (no broadcast over channels; ``dst`` may be ``xr``)."""
        a = near_l.clamp_(0, 1).sub_(1).mul_(far_l.clamp_(0, 1).sub_(1)).mul_(1.0 - v)  # (1 − near)(1 − far)(1 − v)
        c = (1.0 - 0.1 * v) - a
        for ch in range(xr.shape[1]):
            torch.addcmul(c, xr[:, ch : ch + 1], a, out=dst[:, ch : ch + 1]).clamp_(0, 1)
        return dst

    split = is_split(h, w)
    # CPU, sparse seeds: stamp the streaks (no FFT, no dense seed maps); accelerators keep the batched FFT
    if not split and dev.type == "cpu" and circular_at(h, w, size):
        stamped = [stamp_circular(sites, vals, kj, h, w) for (sites, vals), kj in zip((near, far), kernels, strict=True)]
        if stamped[0] is not None and stamped[1] is not None:
            return blend(x, stamped[0].unsqueeze(1), stamped[1].unsqueeze(1), torch.empty_like(x) if out is None else out)
    k = torch.zeros(b, 2, size, size, device=dev)
    for j, kj in enumerate(kernels):
        o = (size - kj.shape[-1]) // 2
        k[:, j, o : o + kj.shape[-1], o : o + kj.shape[-1]] = kj
    near_seeds, far_seeds = dense_seeds(*near, b, h, w), dense_seeds(*far, b, h, w)
    if not split:
        layers = stationary_conv(torch.cat([near_seeds, far_seeds], dim=1), k)  # [B,2,H,W]
        return blend(x, layers[:, :1], layers[:, 1:], torch.empty_like(x) if out is None else out)
    out = torch.empty_like(x) if out is None else out  # large images: the same streak field and blend, strip by strip
    for y0, y1 in strips(h, w, halo=size // 2):
        blend(x[..., y0:y1, :], stationary_rows(near_seeds, k[:, :1], y0, y1), stationary_rows(far_seeds, k[:, 1:], y0, y1),
              out[..., y0:y1, :])
    return out


def reach(params: dict[str, Any]) -> float:
    """Largest strength: the seed density stays within its range and the veil at most 1."""
    limits = [PARAMS["density"].hi / params["density"] if params["density"] > 0 else 1.0,
              1.0 / params["veil"] if params["veil"] > 0 else 1.0]
    return min(limits)


DEGRADATION = Degradation("rain", rain, PARAMS, __doc__ or "", reach=reach, sigma_param="opacity",
                          sigma_range=SIGMA_RANGE)
