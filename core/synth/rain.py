"""Rain streaks: sparse noise, directional (motion) blur, screen blend, slight veil.

The usual photometric recipe of synthetic rain sets (Rain100/Rain1400 style):

1. Streak seeds: each pixel becomes a drop with probability ``strength · density`` (nested
   thresholds of one fixed uniform field, so more strength only adds drops), with a random
   brightness in [0.5, 1].
2. Motion blur of the seeds along the fall direction: an antialiased segment kernel of
   length ``length · min(H,W)`` pixels at ``angle`` degrees from vertical and Gaussian
   cross-section ``width`` pixels (at 512 px). Rain is fast, so each drop becomes a streak.
   Two layers are drawn: near (the given length/width) and far (half the length and width,
   twice as dense), as rain seen through depth.
3. The streak layer ``S`` (scaled so an isolated streak peaks at ``opacity``) is screen
   blended: ``I = 1 − (1 − J)(1 − S)``.
4. A light veil of scattered light (rain is also a fog): ``I ← I·(1 − v) + v·A`` with
   ``v = strength · veil`` and ``A`` = 0.9.

``angle`` empty draws one angle per image from U(−angle_range, angle_range) degrees.
"""

from __future__ import annotations

import math

import torch

from .base import Degradation, Param, bview, fft_conv, odd, scale_of, screen, segment_kernels

PARAMS = {
    "density": Param(0.005, 0.0, 0.2, "fraction of pixels that seed a near streak at strength 1 (far layer: twice that)"),
    "length": Param(0.1, 0.005, 0.5, "streak length as a fraction of the shorter side (near layer)"),
    "angle": Param(None, -80.0, 80.0, "fall angle in degrees from vertical (positive leans right); empty = random", optional=True),
    "angle_range": Param(20.0, 0.0, 80.0, "random angles are drawn from ±angle_range degrees"),
    "width": Param(1.2, 0.3, 8.0, "streak cross-section std in pixels at 512 px (near layer)"),
    "opacity": Param(0.7, 0.0, 1.0, "peak brightness of an isolated streak"),
    "veil": Param(0.12, 0.0, 1.0, "veil (scattered light) fraction at strength 1"),
}


def streak_layer(
    b: int, h: int, w: int, strength: torch.Tensor, generator: torch.Generator, device: torch.device,
    *, density: float, length_px: float, width_px: float, angle: torch.Tensor, opacity: float,
) -> torch.Tensor:
    """One layer of streaks ``[B,1,H,W]`` in 0..1 (draws 2 uniform fields from ``generator``)."""
    u = torch.rand((b, 1, h, w), generator=generator, device=device)
    bright = torch.rand((b, 1, h, w), generator=generator, device=device) * 0.5 + 0.5
    seeds = (u < bview(strength) * density).float() * bright
    size = odd(length_px + 6 * width_px)
    k = segment_kernels(torch.full((b,), length_px, device=device), angle, torch.full((b,), width_px, device=device), size)
    peak = k.flatten(1).amax(dim=1)  # brightness an isolated seed of value 1 reaches
    layer = fft_conv(seeds, k) / bview(peak) * opacity
    return layer.clamp(0, 1)


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
    opacity: float = 0.7,
    veil: float = 0.12,
) -> torch.Tensor:
    """Rainy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1."""
    b, _, h, w = x.shape
    dev = x.device
    a_rand = (torch.rand((b,), generator=generator, device=dev) * 2 - 1) * angle_range
    deg = torch.full_like(a_rand, float(angle)) if angle is not None else a_rand
    theta = (90.0 - deg) * math.pi / 180.0  # kernel angle: π/2 = straight down
    sc = scale_of(x)
    length_px = length * min(h, w)
    near = streak_layer(b, h, w, strength, generator, dev, density=density, length_px=length_px,
                        width_px=width * sc, angle=theta, opacity=opacity)
    far = streak_layer(b, h, w, strength, generator, dev, density=2 * density, length_px=length_px / 2,
                       width_px=max(0.3, width * sc / 2), angle=theta, opacity=opacity * 0.6)
    s_layer = screen(near, far)
    y = screen(x, s_layer)
    v = bview(strength * veil)
    return (y * (1 - v) + v * 0.9).clamp(0, 1)


DEGRADATION = Degradation("rain", rain, PARAMS, __doc__ or "")
