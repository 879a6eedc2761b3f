"""Sensor noise: additive Gaussian, or Poisson–Gaussian (signal-dependent).

* ``gaussian``: ``I = J + σ·n``, ``σ = strength · sigma_max`` (default 0.3 ≈ 77/255).
* ``poisson_gaussian``: variance ``a·J + b²`` with ``a = strength · poisson_max`` (photon
  shot noise gain) and ``b = strength · sigma_max · read_fraction`` (read noise), using the
  standard heteroscedastic Gaussian approximation of the Poisson–Gaussian model
  (Foi et al., IEEE TIP 2008): ``I = J + sqrt(a·J + b²)·n``.

``n`` is standard normal per pixel and channel (``per_channel=False``: one field shared by
the three channels, i.e. luminance noise). The result is clipped to 0..1.
"""

from __future__ import annotations

import torch

from .base import Degradation, Param, bview, random_field

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
) -> torch.Tensor:
    """Noisy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1."""
    b, c, h, w = x.shape
    shape = (b, c if per_channel else 1, h, w)
    n = random_field(shape, generator, x.device, normal=True, dtype=x.dtype)
    s = bview(strength)
    if model == "gaussian":
        std = s * sigma_max
    else:
        std = torch.sqrt(s * poisson_max * x.clamp(0, 1) + (s * sigma_max * read_fraction) ** 2)
    return n.mul_(std).add_(x).clamp_(0, 1)  # in place on the noise field: one temporary in all


DEGRADATION = Degradation("noise", noise, PARAMS, __doc__ or "")
