"""Sensor noise: additive Gaussian, or Poisson–Gaussian (signal-dependent).

* ``gaussian``: ``I = J + σ·n``, ``σ = strength · sigma_max`` (default 0.3 ≈ 77/255).
* ``poisson_gaussian``: variance ``a·J + b²`` with ``a = strength · poisson_max`` (photon
  shot noise gain) and ``b = strength · sigma_max · read_fraction`` (read noise), using the
  standard heteroscedastic Gaussian approximation of the Poisson–Gaussian model
  (Foi et al., IEEE TIP 2008): ``I = J + sqrt(a·J + b²)·n``.

For intensities that strength 1 does not reach (large images: GenDeg's μ is measured after a
downscale to 256×256, which averages per-pixel noise away), the calibration continues until a
gain reaches the top of its range (σ = 1, a = 1).

``n`` is standard normal per pixel and channel (``per_channel=False``: one field shared by
the three channels, i.e. luminance noise). The result is clipped to 0..1.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Degradation, Param, bview, random_field
from .strips import is_split, strips

PARAMS = {
    "model": Param("gaussian", doc="noise model", choices=("gaussian", "poisson_gaussian")),
    "sigma_max": Param(0.3, 0.0, 1.0, "Gaussian std at strength 1 (0..1 units; 0.3 ≈ 77/255)"),
    "poisson_max": Param(0.05, 0.0, 1.0, "Poisson gain a at strength 1 (variance a·J)"),
    "read_fraction": Param(0.25, 0.0, 1.0, "poisson_gaussian: read-noise std as a fraction of sigma_max"),
    "per_channel": Param(True, doc="independent noise per channel (false: the same field for R, G, B)"),
}


def noise(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    model: str = "gaussian",
    sigma_max: float = 0.3,
    poisson_max: float = 0.05,
    read_fraction: float = 0.25,
    per_channel: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noisy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1.

    ``out``: where the result is written (``[B,3,H,W]``; ``x`` is then read in any memory
    layout, e.g. a channels-last ComfyUI image, without a copy). Default: a new tensor (the
    noise field itself where it has three channels).
    """
    b, c, h, w = x.shape
    shape = (b, c if per_channel else 1, h, w)
    n = random_field(shape, generator, x.device, normal=True, dtype=x.dtype)
    s = bview(strength)
    if out is None:
        out = n if per_channel else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rows = strips(h, w) if is_split(h, w) else [(0, h)]
    for y0, y1 in rows:  # large images strip by strip: one strip's temporaries at a time
        xr, nr, dst = x[..., y0:y1, :], n[..., y0:y1, :], out[..., y0:y1, :]
        if model == "gaussian":
            std = s * sigma_max
        else:
            std = torch.sqrt(s * poisson_max * xr.clamp(0, 1) + (s * sigma_max * read_fraction) ** 2)
        # (n·std) + x, clipped: the noise field is scaled in place when it has one value per
        # pixel and channel (the result may be written over it); a shared field is broadcast
        scaled = nr.mul_(std) if std.shape[1] <= nr.shape[1] else nr * std
        torch.add(scaled, xr, out=dst).clamp_(0, 1)
    return out


def reach(params: dict[str, Any]) -> float:
    """Largest strength: the scaled gains stay within their ranges (σ ≤ 1, a ≤ 1)."""
    gains = [("sigma_max", params["sigma_max"])]
    if params["model"] == "poisson_gaussian":
        gains.append(("poisson_max", params["poisson_max"]))
    limits = [PARAMS[k].hi / v for k, v in gains if v > 0]
    return min(limits) if limits else 1.0


DEGRADATION = Degradation("noise", noise, PARAMS, __doc__ or "", reach=reach)
