"""Snow: several particle layers at different depths, motion streaking, and a veil.

Three layers, far to near (Snow100K-style synthesis, with depth cues): flake radius
``size · (0.5, 1, 2)`` pixels at 512 px, per-pixel seeding probability
``strength · density · (4, 1.5, 0.5)`` at 512 px (far flakes are many and small, near ones few
and large), scaled by the ratio of a flake's area at 512 px to its area at this size
(:func:`~.base.streak_area`; flakes are larger in pixels at higher resolutions, so fewer seeds
per pixel give the same snowfall at any resolution), motion streak length ``streak · (0.5, 1, 2)`` pixels at 512 px along the fall
direction (near flakes cross more of the frame during the exposure), opacity
``(0.7, 0.85, 1.0)``. Each flake is an antialiased capsule (Gaussian cross-section =
radius, cut below 1e-3 of its peak) stamped at its seed (sparse seeds on the CPU, :mod:`.kernels`; an
FFT convolution of the seed map when they are dense, on accelerators, or in strips); layers are composited over the image
with ``I ← I·(1 − m) + c·m`` (``c`` = flake brightness, 0.85..1 per layer and image). Finally a veil of scattered
light: ``I ← I·(1 − v) + v·0.85`` with ``v = strength · veil``. Seeds are nested thresholds
of fixed uniforms (drawn only for the candidate pixels of the largest strength), so more
strength only adds flakes.
"""

from __future__ import annotations

import torch

from . import fused
from .base import (
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

    ``out``: where the result is written (large images strip by strip; may be ``x`` itself: a strip
    reads its rows of ``x`` before writing them); a new tensor when not given. ``x`` may be in any
    memory layout (channels-last ComfyUI images are read in place).
    """
    b, _, h, w = x.shape
    dev = x.device
    theta = fall_direction(b, generator, dev, angle, angle_range)
    sc = scale_of(x)
    s = bview(strength)
    op = param_values(opacity, b, dev)
    top = reach({"density": density, "veil": veil})
    sites, tones, kernels = [], [], []
    for size_f, dens_f, streak_f, layer_opacity in LAYERS:  # draws: candidate sites and their uniforms, then tone, per layer
        radius = max(0.3, size * size_f * sc)
        length = streak * streak_f * sc
        # seeds per pixel so that the flakes cover the same fraction of the frame at any resolution
        per_pixel = density * (streak_area(streak * streak_f, size * size_f) / streak_area(length, radius))
        sites.append(nested_sites(b, h * w, strength, per_pixel * dens_f, generator, dev, top)[0])
        tones.append(bview(torch.rand((b,), generator=generator, device=dev) * 0.15 + 0.85))  # flake brightness
        kernels.append(streak_kernels(b, length, radius, theta, layer_opacity * op, odd(length + 6 * radius)))
    v = s * veil

    def composite(xr: torch.Tensor, masks: list[torch.Tensor], dst: torch.Tensor) -> torch.Tensor:
        """``dst`` ← ``xr`` with the (unclamped) flake masks ``[B,1,rows,W]`` composited far to near,
        I ← I·(1 − m_j) + c_j·m_j, then the veil I ← I·(1 − v) + 0.85·v, folded into one pass over the
        colour image, I = J·P + Q with P, Q single-channel maps, channel by channel (``dst`` may be ``xr``)."""
        m0 = masks[0].clamp_(0, 1)
        q = m0 * tones[0]
        p = m0.neg_().add_(1.0).mul_(1.0 - v)
        for j in range(1, len(tones)):
            mj = masks[j].clamp_(0, 1)
            q.sub_(tones[j]).mul_(mj.neg().add_(1.0)).add_(tones[j])  # q·(1 − m) + c·m = (q − c)(1 − m) + c
            p.mul_(mj.neg_().add_(1.0))
        q.mul_(1.0 - v).add_(0.85 * v)
        for ch in range(xr.shape[1]):
            torch.addcmul(q, xr[:, ch : ch + 1], p, out=dst[:, ch : ch + 1]).clamp_(0, 1)
        return dst

    def compiled(xr: torch.Tensor, layers: list, dst: torch.Tensor) -> torch.Tensor:
        return fused.snow_render(xr, layers, torch.stack([t.view(-1) for t in tones]), v.view(-1), dst)

    return render_layers(x, [(sj, None) for sj in sites], kernels, out, composite, compiled)


#: largest strength: the seed density stays within its range and the veil at most 1
reach = reach_min(reach_of(PARAMS["density"], "density"), reach_of(PARAMS["veil"], "veil"))


DEGRADATION = Degradation("snow", snow, PARAMS, __doc__ or "", reach=reach, sigma_param="opacity", writes_8bit=True,
                          sigma_range=SIGMA_RANGE)
