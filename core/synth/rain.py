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

import torch

from . import fused
from .base import (
    REF_SIDE,
    Degradation,
    Param,
    bview,
    fall_direction,
    odd,
    param_values,
    reach_min,
    reach_of,
    scale_of,
    streak_area,
)
from .kernels import nested_sites, render_layers, streak_kernels

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


def streak_sites(b: int, h: int, w: int, strength: torch.Tensor, density: float, generator: torch.Generator,
                 device: torch.device, top: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Streak seeds: flat indices into ``[B,H,W]`` (sorted) of the pixels where ``u < strength·density``
    (``u`` as a uniform per pixel), and their brightnesses.

    Candidates of the largest strength ``top`` and their nested thresholds as in
    :func:`~.kernels.nested_sites`; each candidate draws a brightness U(0.5, 1) before the
    selection, so a pixel keeps its brightness whatever the strength and more strength only adds
    streaks.
    """
    def brightness(n: int, g: torch.Generator) -> torch.Tensor:
        return torch.rand((n,), generator=g, device=device).mul_(0.5).add_(0.5)

    return nested_sites(b, h * w, strength, density, generator, device, top, brightness)


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
    # both layers' seeds first (same draw order as one layer at a time), then both layers rendered together
    top = reach({"density": density, "veil": veil})
    near = streak_sites(b, h, w, strength, near_density, generator, dev, top)
    far = streak_sites(b, h, w, strength, far_density, generator, dev, top)
    kernels = (streak_kernels(b, length_px, near_w, theta, opacity, odd(length_px + 6 * near_w)),
               streak_kernels(b, length_px / 2, far_w, theta, param_values(opacity, b, dev) * 0.6,
                              odd(length_px / 2 + 6 * far_w)))
    # screen blends and the veil in one pass over the colour image:
    # I = (1 − v)·(1 − (1 − J)·T) + 0.9·v with T = (1 − near)(1 − far)
    #   = J·A + (1 − 0.1·v − A),  A = (1 − v)·T
    v = bview(strength * veil)

    def blend(xr: torch.Tensor, layers: list[torch.Tensor], dst: torch.Tensor) -> torch.Tensor:
        """``dst`` ← the blend of ``xr`` with the (unclamped) near and far layers ``[B,1,rows,W]``,
        channel by channel (no broadcast over channels; ``dst`` may be ``xr``)."""
        near_l, far_l = layers
        a = near_l.clamp_(0, 1).sub_(1).mul_(far_l.clamp_(0, 1).sub_(1)).mul_(1.0 - v)  # (1 − near)(1 − far)(1 − v)
        c = (1.0 - 0.1 * v) - a
        for ch in range(xr.shape[1]):
            torch.addcmul(c, xr[:, ch : ch + 1], a, out=dst[:, ch : ch + 1]).clamp_(0, 1)
        return dst

    def compiled(xr: torch.Tensor, layers: list, dst: torch.Tensor) -> torch.Tensor:
        return fused.rain_render(xr, layers[0], layers[1], strength * veil, dst)

    return render_layers(x, (near, far), kernels, out, blend, compiled)


#: largest strength: the seed density stays within its range and the veil at most 1
reach = reach_min(reach_of(PARAMS["density"], "density"), reach_of(PARAMS["veil"], "veil"))


DEGRADATION = Degradation("rain", rain, PARAMS, __doc__ or "", reach=reach, sigma_param="opacity", writes_8bit=True,
                          sigma_range=SIGMA_RANGE)
