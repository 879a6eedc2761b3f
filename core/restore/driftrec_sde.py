"""The drifting SDEs of DriftRec (Welker et al., 2024): OUVE and CosVE.

Images are in 0..1; ``y`` is the corrupted image (the JPEG), ``x0`` the clean one. Forward
process over process time ``t`` in 0..1::

    dx = a(t) (y - x) dt + g(t) dw

* **OUVE** (Ornstein-Uhlenbeck, variance exploding): ``a(t) = gamma``,
  ``g(t) = sigma_min (sigma_max/sigma_min)^t sqrt(2 (gamma + ln(sigma_max/sigma_min)))``;
  marginal mean ``e^{-gamma t} x0 + (1 - e^{-gamma t}) y`` and standard deviation
  ``sqrt(sigma_min^2 ((sigma_max/sigma_min)^{2t} - e^{-2 gamma t}))`` (closed forms).
* **CosVE**: ``a(t) = gamma (1 - cos(pi t))``, so the mean interpolates with
  ``e^{-Gamma(t)}``, ``Gamma(t) = gamma (t - sin(pi t)/pi)``;
  ``g(t) = c sigma_min (sigma_max/sigma_min)^t`` with ``c`` chosen so that ``std(1) = sigma_max``.
  Its variance ``c^2 e^{-2 Gamma(t)} int_0^t e^{2 Gamma(s)} sigma_min^2 (sigma_max/sigma_min)^{2s} ds``
  has no closed form: the integral is evaluated by 64-point Gauss-Legendre quadrature on
  ``[0, t]`` (exact to float64 rounding for this smooth integrand; the official code
  tabulates it with adaptive quadrature on 1000 points and interpolates cubically).

Defaults (the official training runs): ``gamma`` 1, ``sigma_min`` 0.01, ``sigma_max`` 1. The
prior is ``y + std(1) z``. The score network sees only ``std(t)`` (through ``log std``), not
``t``. Times are python floats or ``[B]`` tensors; results broadcast to ``[B,1,1,1]`` when
applied to images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch

from ..errors import InputError

SDE_NAMES = ("ouve", "cosve")


def _as_time(t: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` as a float64 CPU tensor of shape ``[B]`` (a scalar becomes ``[1]``)."""
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).reshape(-1)
    return torch.tensor([float(t)], dtype=torch.float64)


def _image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample ``[B]`` (or ``[1]``) coefficient shaped ``[B,1,1,1]`` on ``x``'s device and dtype."""
    return v.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


@lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


@dataclass(frozen=True)
class DriftSDE:
    """Common part of the drifting SDEs (see the module docstring). Build with :func:`make_sde`."""

    gamma: float = 1.0
    sigma_min: float = 0.01
    sigma_max: float = 1.0
    name = "drift"

    def __post_init__(self) -> None:
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise InputError(f"gamma must be a finite number >= 0, got {self.gamma}")
        if not (0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise InputError(f"need 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")

    @property
    def log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    # --- schedule (float64, [B]) ------------------------------------------------------

    def stiffness(self, t: torch.Tensor | float) -> torch.Tensor:
        """``a(t)`` of the drift ``a(t) (y - x)``."""
        raise NotImplementedError

    def big_gamma(self, t: torch.Tensor | float) -> torch.Tensor:
        """``Gamma(t) = int_0^t a(s) ds``: the mean keeps ``e^{-Gamma(t)}`` of ``x0``."""
        raise NotImplementedError

    def diffusion(self, t: torch.Tensor | float) -> torch.Tensor:
        """``g(t)``."""
        raise NotImplementedError

    def std(self, t: torch.Tensor | float) -> torch.Tensor:
        """Marginal standard deviation ``std(t)`` (``std(0) = 0``)."""
        raise NotImplementedError

    def interp(self, t: torch.Tensor | float) -> torch.Tensor:
        """``e^{-Gamma(t)}``, the share of ``x0`` in the marginal mean."""
        return torch.exp(-self.big_gamma(t))

    # --- images ---------------------------------------------------------------------------

    def mean(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Marginal mean ``e^{-Gamma(t)} x0 + (1 - e^{-Gamma(t)}) y``."""
        k = _image(self.interp(t), x0)
        return k * x0 + (1 - k) * y

    def drift(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Forward drift ``a(t) (y - x)``."""
        return _image(self.stiffness(t), x) * (y - x)

    def reverse_drift(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float, score: torch.Tensor,
                      probability_flow: bool = False) -> torch.Tensor:
        """Drift of the reverse-time SDE ``a(t)(y - x) - g(t)^2 score`` (ODE: half the score term)."""
        g2 = _image(self.diffusion(t) ** 2, x)
        return self.drift(x, y, t) - g2 * score * (0.5 if probability_flow else 1.0)

    def prior(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of ``x_1``: ``y + std(1) z`` (``noise`` = z)."""
        return y + float(self.std(1.0)[0]) * noise

    def config(self) -> dict[str, float | str]:
        return {"name": self.name, "gamma": self.gamma, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass(frozen=True)
class OUVE(DriftSDE):
    """Ornstein-Uhlenbeck variance-exploding SDE (constant stiffness)."""

    name = "ouve"

    def stiffness(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.full_like(_as_time(t), self.gamma)

    def big_gamma(self, t: torch.Tensor | float) -> torch.Tensor:
        return self.gamma * _as_time(t)

    def diffusion(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_time(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2 * (self.gamma + self.log_ratio))

    def std(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_time(t)
        var = self.sigma_min**2 * ((self.sigma_max / self.sigma_min) ** (2 * t) - torch.exp(-2 * self.gamma * t))
        return torch.sqrt(var.clamp_min(0))


@dataclass(frozen=True)
class CosVE(DriftSDE):
    """Variance-exploding SDE with cosine stiffness ``gamma (1 - cos(pi t))``, normalised to ``std(1) = sigma_max``."""

    name = "cosve"
    quadrature_nodes = 64

    def stiffness(self, t: torch.Tensor | float) -> torch.Tensor:
        return self.gamma * (1 - torch.cos(math.pi * _as_time(t)))

    def big_gamma(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_time(t)
        return self.gamma * (t - torch.sin(math.pi * t) / math.pi)

    def _unnormalised_var(self, t: torch.Tensor) -> torch.Tensor:
        """``e^{-2 Gamma(t)} int_0^t e^{2 Gamma(s)} sigma_min^2 (sigma_max/sigma_min)^{2s} ds`` (Gauss-Legendre)."""
        nodes, weights = _gauss_legendre(self.quadrature_nodes)
        s = 0.5 * t[:, None] * (nodes[None, :] + 1)  # [B, n] points in [0, t]
        f = torch.exp(2 * self.big_gamma(s.reshape(-1)).reshape(s.shape) + 2 * s * self.log_ratio) * self.sigma_min**2
        integral = 0.5 * t * (f * weights[None, :]).sum(dim=1)
        return torch.exp(-2 * self.big_gamma(t)) * integral

    @cached_property
    def normfac(self) -> float:
        """``c`` with ``std(1) = sigma_max``."""
        return self.sigma_max / math.sqrt(float(self._unnormalised_var(torch.ones(1, dtype=torch.float64))[0]))

    def diffusion(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_time(t)
        return self.normfac * self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def std(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_time(t)
        return self.normfac * torch.sqrt(self._unnormalised_var(t).clamp_min(0))


def make_sde(name: str = "ouve", gamma: float = 1.0, sigma_min: float = 0.01, sigma_max: float = 1.0) -> DriftSDE:
    """``ouve`` or ``cosve`` with the given parameters (official defaults: 1, 0.01, 1)."""
    key = str(name).strip().lower()
    if key == "ouve":
        return OUVE(float(gamma), float(sigma_min), float(sigma_max))
    if key == "cosve":
        return CosVE(float(gamma), float(sigma_min), float(sigma_max))
    raise InputError(f"unknown DriftRec SDE {name!r}; expected one of {', '.join(SDE_NAMES)} "
                     "(the official T2VE variant is not supported)")
