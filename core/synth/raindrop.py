"""Raindrops on glass: refraction through drops of water, defocused view, soft edges.

1. Drops: three size classes with radii ``size · (0.6, 1, 1.6) · min(H,W)`` pixels. A pixel
   seeds a drop of class c with probability ``strength · coverage / (3·π·r_c²)``, so at
   strength 1 about ``coverage`` of the glass is wet whatever the resolution (nested
   thresholds of fixed uniform fields: more strength only adds drops; touching drops merge).
2. Height map: every drop is a spherical cap ``z = sqrt(r² − d²)`` (pixels), rendered by
   FFT convolution of the seed map with the cap; classes are combined by their maximum.
3. Refraction: a drop on a window is a small wide-angle lens that shows an inverted,
   minified view of the scene around it. For a cap, ``∇(z²/2) = −(p − centre)``, so sampling
   the background at ``p + (1 + refraction)·∇(z²/2)`` mirrors each drop's neighbourhood
   through its centre, magnified ``1 + refraction`` times (merged drops bend smoothly).
   The background seen through the drops is defocused (Gaussian, σ = ``blur`` × the middle
   radius) and sampled with bilinear ``grid_sample``.
4. Edges: drops darken towards their rim (light leaving the cap at grazing angles), and the
   drop mask is soft (the glass is out of focus): ``I = J·(1 − α) + D·α``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Degradation, Param, bview, gaussian_blur, odd, render_sparse, smooth_blur

PARAMS = {
    "coverage": Param(0.7, 0.0, 1.0, "fraction of the glass covered by drops at strength 1"),
    "size": Param(0.025, 0.003, 0.2, "radius of a middle-sized drop as a fraction of the shorter side"),
    "refraction": Param(3.0, 0.0, 20.0, "extra magnification of the refracted, inverted view inside a drop"),
    "blur": Param(0.35, 0.0, 3.0, "defocus of the view through the drops, σ as a fraction of the middle radius"),
    "rim": Param(0.35, 0.0, 1.0, "darkening at the drop rims (0 = none)"),
}

CLASSES = (0.6, 1.0, 1.6)


def cap_kernels(radii: list[float], size: int, device: torch.device) -> torch.Tensor:
    """Spherical caps ``[len(radii), size, size]``: ``sqrt(r² − d²)`` inside radius r, else 0."""
    r = size // 2
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    d2 = t.view(-1, 1) ** 2 + t.view(1, -1) ** 2
    rad = torch.tensor(radii, device=device).view(-1, 1, 1)
    return torch.sqrt((rad**2 - d2).clamp_min(0))


def raindrop(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    coverage: float = 0.7,
    size: float = 0.025,
    refraction: float = 3.0,
    blur: float = 0.35,
    rim: float = 0.35,
) -> torch.Tensor:
    """``[B,3,H,W]`` 0..1 seen through a wet window; ``strength`` ``[B]`` in 0..1."""
    b, _, h, w = x.shape
    dev = x.device
    side = min(h, w)
    radii = [max(1.0, size * f * side) for f in CLASSES]
    u = torch.rand((b, len(radii), h, w), generator=generator, device=dev)
    prob = torch.tensor([coverage / (len(radii) * math.pi * r * r) for r in radii], device=dev).view(1, -1, 1, 1)
    seeds = (u < bview(strength) * prob).float()
    k = odd(2 * max(radii) + 1)
    caps = cap_kernels(radii, k, dev)  # [3,k,k]
    z_c = render_sparse(seeds, caps.expand(b, -1, -1, -1)).clamp_min_(0)  # [B,3,H,W], heights in pixels
    rad = torch.tensor(radii, device=dev).view(1, -1, 1, 1)
    z = z_c.amax(dim=1, keepdim=True)
    hn = (z_c / rad).amax(dim=1, keepdim=True).clamp_(0, 1)  # 0 at glass, 1 at a drop's apex
    # displacement = (1 + refraction) · ∇(z²/2), in pixels
    half = F.pad(0.5 * z * z, (1, 1, 1, 1), mode="replicate")[:, 0]  # central differences, any size
    gain = (1 + refraction) / 2
    disp_x = (half[:, 1:-1, 2:] - half[:, 1:-1, :-2]).mul_(gain)
    disp_y = (half[:, 2:, 1:-1] - half[:, :-2, 1:-1]).mul_(gain)
    # the defocused background is smooth: blurred at a reduced resolution and sampled from there
    # (grid_sample with align_corners=False addresses any resolution of the same frame)
    background = smooth_blur(x, blur * radii[1], upsample=False)
    ys = torch.arange(h, device=dev, dtype=x.dtype).view(1, h, 1)
    xs = torch.arange(w, device=dev, dtype=x.dtype).view(1, 1, w)
    grid = torch.stack([(disp_x + xs).add_(0.5).mul_(2.0 / w).sub_(1.0), (disp_y + ys).add_(0.5).mul_(2.0 / h).sub_(1.0)], dim=-1)
    through = F.grid_sample(background, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)
    through.mul_(1 - rim * (1 - hn) ** 2)
    alpha = gaussian_blur((hn * 4).clamp_(0, 1), 0.08 * radii[1])
    return torch.lerp(x, through, alpha).clamp_(0, 1)

DEGRADATION = Degradation("raindrop", raindrop, PARAMS, __doc__ or "")
