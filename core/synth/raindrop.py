"""Raindrops on glass: refraction through drops of water, defocused view, soft edges.

1. Drops: three size classes with radii ``size · (0.6, 1, 1.6) · min(H,W)`` pixels. A pixel
   seeds a drop of class c with probability ``strength · coverage / (3·π·r_c²)``, so at
   strength 1 the drops' total area is ``coverage`` times the glass whatever the resolution
   (overlaps counted: a fraction ``1 − exp(−coverage)`` is wet, 50 % at the default 0.7, 95 %
   at 3; nested thresholds of fixed uniform fields: more strength only adds drops; touching
   drops merge). For intensities that strength 1 does not reach, the calibration continues
   until strength × coverage is 3 (the top of ``coverage``'s range).
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

from .base import (
    Degradation,
    Param,
    border_mode,
    gaussian_blur,
    odd,
    param_values,
    reach_of,
    render_sparse_padded,
    smooth_blur,
)
from .kernels import nested_sites, stamp_reflect
from .strips import is_split, pad_columns, rows_with_border, strips

#: default refraction
REFRACTION = 3.0
#: the range in which the joint calibration searches ``refraction`` to set σ at a μ
SIGMA_RANGE = (0.0, 20.0)

PARAMS = {
    "coverage": Param(0.7, 0.0, 3.0, "total drop area per glass area at strength 1 (overlaps counted: 1 − exp(−coverage) is wet)"),
    "size": Param(0.025, 0.003, 0.2, "radius of a middle-sized drop as a fraction of the shorter side"),
    "refraction": Param(REFRACTION, 0.0, 20.0, "extra magnification of the refracted, inverted view inside a drop (the "
                        "second parameter: at the same mu, stronger refraction changes fewer pixels more, so sigma grows)"),
    "blur": Param(0.35, 0.0, 3.0, "defocus of the view through the drops, σ as a fraction of the middle radius"),
    "rim": Param(0.35, 0.0, 1.0, "darkening at the drop rims (0 = none)"),
}
#: largest strength: strength × coverage up to the top of coverage's range
REACH = reach_of(PARAMS["coverage"], "coverage")

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
    refraction: float | torch.Tensor = REFRACTION,
    blur: float = 0.35,
    rim: float = 0.35,
) -> torch.Tensor:
    """``[B,3,H,W]`` 0..1 seen through a wet window; ``strength`` ``[B]`` in 0..1."""
    b, _, h, w = x.shape
    dev = x.device
    side = min(h, w)
    radii = [max(1.0, size * f * side) for f in CLASSES]
    # drops of each class, nested in the strength: candidates at the largest strength (sparse: a
    # few hundred per class at 512², drawn without a uniform per pixel)
    top = REACH({"coverage": coverage})
    sites = [nested_sites(b, h * w, strength, coverage / (len(radii) * math.pi * r * r), generator, dev, top)[0]
             for r in radii]
    split = is_split(h, w)
    k = odd(2 * max(radii) + 1)
    caps1 = cap_kernels(radii, k, dev)  # [3,k,k]
    caps = caps1.expand(b, -1, -1, -1)  # [B,3,k,k]
    rad = torch.tensor(radii, device=dev).view(1, -1, 1, 1)
    gain = ((1 + param_values(refraction, b, dev)) / 2).view(-1, 1, 1)  # one value per image
    # the defocused background is smooth: blurred at a reduced resolution and sampled from there
    # (grid_sample with align_corners=False addresses any resolution of the same frame)
    background = smooth_blur(x, blur * radii[1], upsample=False)
    sigma_a = 0.08 * radii[1]
    g = max(1, gaussian_radius(sigma_a, h, w))  # rows the edge blur reaches (≥ 1 for the gradient)
    mode = border_mode("reflect", k // 2, h, w)
    seeds = None
    if mode != "reflect":  # drops wider than the image: dense seed maps with replicated borders
        seeds = torch.zeros(len(radii), b * h * w, dtype=torch.bool, device=dev)
        for c, sc in enumerate(sites):
            seeds[c, sc] = True
        seeds = seeds.view(len(radii), b, h, w).transpose(0, 1)

    def rows(y0: int, y1: int) -> torch.Tensor:
        """Output rows ``y0..y1`` (drop heights are rendered ``g`` rows further on each side)."""
        a, e = max(0, y0 - g), min(h, y1 + g)
        if seeds is None:  # every drop (and its mirror images across the borders) stamps its cap
            z_c = stamp_reflect(sites, caps1, b, h, w, a, e)  # [B,3,e-a,W], heights in pixels
        else:
            p = k // 2
            sp = pad_columns(rows_with_border(seeds, a - p, e + p, mode).to(x.dtype), p, mode)
            z_c = render_sparse_padded(sp, caps).clamp_min_(0)
        z = z_c.amax(dim=1, keepdim=True)
        hn = (z_c / rad).amax(dim=1, keepdim=True).clamp_(0, 1)  # 0 at glass, 1 at a drop's apex
        del z_c
        # displacement = (1 + refraction) · ∇(z²/2), in pixels: central differences, edge rows
        # replicated only at the image's own top and bottom
        top, bottom = int(a == y0), int(e == y1)
        half = F.pad(0.5 * z * z, (1, 1, top, bottom), mode="replicate")[:, 0]
        c0, r = y0 - a + top, y1 - y0
        # sampling grid in grid_sample's units, written in place into its interleaved layout:
        # (p + displacement + 0.5)·2/size − 1
        grid = torch.empty((b, r, w, 2), device=dev, dtype=x.dtype)
        gx, gy = grid[..., 0], grid[..., 1]
        torch.sub(half[:, c0 : c0 + r, 2:], half[:, c0 : c0 + r, :-2], out=gx)
        gx.mul_(gain * (2.0 / w)).add_(torch.arange(w, device=dev, dtype=x.dtype).add_(0.5).mul_(2.0 / w).sub_(1.0))
        torch.sub(half[:, c0 + 1 : c0 + r + 1, 1:-1], half[:, c0 - 1 : c0 + r - 1, 1:-1], out=gy)
        gy.mul_(gain * (2.0 / h)).add_(torch.arange(y0, y1, device=dev, dtype=x.dtype).add_(0.5).mul_(2.0 / h)
                                       .sub_(1.0).view(r, 1))
        through = F.grid_sample(background, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        hn_r = hn[..., y0 - a : y1 - a, :]
        through.mul_(1 - rim * (1 - hn_r) ** 2)
        alpha = gaussian_blur((hn * 4).clamp_(0, 1), sigma_a)[..., y0 - a : y1 - a, :]
        return torch.lerp(x[..., y0:y1, :], through, alpha).clamp_(0, 1)

    if not split:
        return rows(0, h)
    out = torch.empty_like(x)  # large images: the same drops, strip by strip
    for y0, y1 in strips(h, w, halo=k // 2 + g):
        out[..., y0:y1, :] = rows(y0, y1)
    return out


def gaussian_radius(sigma: float, h: int, w: int) -> int:
    """Rows :func:`~.base.gaussian_blur` reaches for ``sigma`` on an ``h × w`` image (0 when it is the identity)."""
    if sigma < 0.3:
        return 0
    return min(max(1, int(math.ceil(3.0 * sigma))), max(1, min(h, w) - 1))


DEGRADATION = Degradation("raindrop", raindrop, PARAMS, __doc__ or "", reach=REACH,
                          sigma_param="refraction", sigma_range=SIGMA_RANGE)
