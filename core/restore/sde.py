"""The mean-reverting SDE of IR-SDE (Luo et al., ICML 2023), its schedules and samplers.

Forward process (images in 0..1, ``mu`` the degraded image, ``x0`` the clean one)::

    dx = theta_t (mu - x) dt + sigma_t dw,      sigma_t^2 = 2 lambda^2 theta_t,  lambda = max_sigma / 255

with a discrete schedule ``theta_0..theta_T`` (the official code's index convention: step
``t`` runs from 1 to T, index 0 is never a step). Writing ``Theta_t = sum_{k=1..t} theta_k``
(so ``Theta_0 = 0``) and choosing ``dt = -log(eps) / Theta_T`` so that
``exp(-Theta_T dt) = eps``, the marginal is Gaussian::

    x_t | x0 ~ N( mu + (x0 - mu) exp(-Theta_t dt),  sigma_bar_t^2 ),
    sigma_bar_t^2 = lambda^2 (1 - exp(-2 Theta_t dt)).

The network predicts the noise ``eps_hat`` of ``x_t``; the score is ``-eps_hat / sigma_bar_t``.
Samplers (all start from ``x_T = mu + lambda * noise``):

* ``posterior`` (official default): estimate ``x0_hat`` from ``eps_hat`` and draw ``x_s`` from
  the closed-form Gaussian ``q(x_s | x_t, x0_hat)``;
* ``reverse_sde``: Euler-Maruyama on the reverse-time SDE;
* ``reverse_ode``: Euler on the probability-flow ODE.

Fewer steps than trained: the sampler visits an evenly spaced subset of ``T..1`` and every
step integrates the schedule over the skipped interval (``Theta_t - Theta_s`` instead of
``theta_t``); with all ``T`` steps each formula is exactly the official one.

Numbers are kept in float64 on the CPU and moved to the image's device/dtype when used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError

SCHEDULES = ("cosine", "linear", "constant")
SAMPLERS = ("posterior", "reverse_sde", "reverse_ode")

#: ``noise_fn(x_t, mu, t) -> eps_hat``: ``t`` is a python int in 1..T.
NoiseFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
ProgressFn = Callable[[int, int], None]


def theta_schedule(name: str, T: int, s: float = 0.008) -> torch.Tensor:
    """The official ``theta_0..theta_T`` (``T + 1`` values, float64).

    * ``cosine``: the improved-DDPM cosine curve over ``T + 2`` intervals (offset ``s``):
      ``a(x) = cos^2(((x / (T+2)) + s) / (1 + s) * pi / 2) / a(0)`` for ``x = 0..T+2`` and
      ``theta = 1 - a[1:-1]`` (the first and the last point are dropped).
    * ``linear``: ``T + 1`` values from ``1e-4 * 1000/(T+1)`` to ``0.02 * 1000/(T+1)``.
    * ``constant``: ones.
    """
    if T < 1:
        raise InputError(f"the SDE needs at least one step (T >= 1), got T={T}")
    if name == "cosine":
        n = T + 2
        x = torch.linspace(0, n, n + 1, dtype=torch.float64)
        a = torch.cos(((x / n) + s) / (1 + s) * math.pi * 0.5) ** 2
        a = a / a[0]
        return 1 - a[1:-1]
    if name == "linear":
        scale = 1000 / (T + 1)
        return torch.linspace(scale * 1e-4, scale * 0.02, T + 1, dtype=torch.float64)
    if name == "constant":
        return torch.ones(T + 1, dtype=torch.float64)
    raise InputError(f"unknown theta schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class IRSDE:
    """Discretised mean-reverting SDE (all arrays float64 on the CPU, indexed by step 0..T).

    Build with :meth:`create`. ``lam`` is lambda = max_sigma/255 (the stationary std).
    """

    T: int
    lam: float
    dt: float
    thetas: torch.Tensor  # [T+1]
    thetas_cumsum: torch.Tensor  # [T+1], Theta_t, Theta_0 = 0
    sigmas: torch.Tensor  # [T+1], sqrt(2 lambda^2 theta_t)
    sigma_bars: torch.Tensor  # [T+1], marginal std
    schedule: str = "cosine"
    eps: float = 0.005

    @classmethod
    def create(cls, max_sigma: float, T: int = 100, schedule: str = "cosine", eps: float = 0.005) -> IRSDE:
        """``max_sigma`` in 0..255 units (values below 1 are taken as already divided by 255, as officially)."""
        if not (max_sigma > 0 and math.isfinite(max_sigma)):
            raise InputError(f"max_sigma must be a positive number (0..255 scale), got {max_sigma}")
        if not 0 < eps < 1:
            raise InputError(f"eps must be in (0, 1) (the remaining signal exp(-Theta_T dt)), got {eps}")
        lam = max_sigma / 255 if max_sigma >= 1 else float(max_sigma)
        thetas = theta_schedule(schedule, int(T))
        cumsum = torch.cumsum(thetas, 0) - thetas[0]
        dt = -math.log(eps) / float(cumsum[-1])
        sigmas = torch.sqrt(2 * lam**2 * thetas)
        sigma_bars = torch.sqrt(lam**2 * (1 - torch.exp(-2 * cumsum * dt)))
        return cls(int(T), lam, dt, thetas, cumsum, sigmas, sigma_bars, schedule, eps)

    # --- scalars ------------------------------------------------------------------------

    def decay(self, t: int, s: int = 0) -> float:
        """``exp(-(Theta_t - Theta_s) dt)``: how much of ``x_s - mu`` survives until ``t``."""
        return math.exp(-float(self.thetas_cumsum[t] - self.thetas_cumsum[s]) * self.dt)

    def sigma_bar(self, t: int) -> float:
        return float(self.sigma_bars[t])

    # --- forward marginal and conversions ----------------------------------------------

    def mu_bar(self, x0: torch.Tensor, mu: torch.Tensor, t: int) -> torch.Tensor:
        """Mean of ``x_t | x0``: ``mu + (x0 - mu) exp(-Theta_t dt)``."""
        return mu + (x0 - mu) * self.decay(t)

    def forward_sample(
        self, x0: torch.Tensor, mu: torch.Tensor, t: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``x_t ~ q(x_t | x0)``; returns ``(x_t, noise)`` (the training target of the network)."""
        noise = randn_like(x0, generator)
        return self.mu_bar(x0, mu, t) + self.sigma_bar(t) * noise, noise

    def score_from_noise(self, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Score ``-eps / sigma_bar_t``."""
        return -noise / self.sigma_bar(t)

    def x0_from_noise(self, xt: torch.Tensor, mu: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Invert the marginal: ``x0 = mu + (x_t - mu - sigma_bar_t eps) exp(+Theta_t dt)``."""
        return (xt - mu - self.sigma_bar(t) * noise) / self.decay(t) + mu

    def true_noise(self, xt: torch.Tensor, x0: torch.Tensor, mu: torch.Tensor, t: int) -> torch.Tensor:
        """The noise that produced ``x_t`` from ``x0`` (what a perfect network returns)."""
        return (xt - self.mu_bar(x0, mu, t)) / self.sigma_bar(t)

    # --- one reverse step from t to s < t ---------------------------------------------

    def posterior_coefficients(self, t: int, s: int) -> tuple[float, float, float]:
        """``(c_t, c_0, std)`` of ``q(x_s | x_t, x0) = N(mu + c_t (x_t - mu) + c_0 (x0 - mu), std^2)``.

        With ``A = exp(-(Theta_t - Theta_s) dt)``, ``B = exp(-Theta_t dt)``, ``C = exp(-Theta_s dt)``:
        ``c_t = A (1 - C^2) / (1 - B^2)``, ``c_0 = C (1 - A^2) / (1 - B^2)``,
        ``std = lambda sqrt((1 - A^2)(1 - C^2) / (1 - B^2))`` (variance floored at ``1e-20 dt``
        before the square root, as officially).
        """
        if not 0 <= s < t <= self.T:
            raise InputError(f"a reverse step needs 0 <= s < t <= T={self.T}, got t={t}, s={s}")
        A, B, C = self.decay(t, s), self.decay(t), self.decay(s)
        denom = 1 - B * B
        ct = A * (1 - C * C) / denom
        c0 = C * (1 - A * A) / denom
        var = max((1 - A * A) * (1 - C * C) / denom, 1e-20 * self.dt)
        return ct, c0, math.sqrt(var) * self.lam

    def posterior_mean(self, xt: torch.Tensor, x0: torch.Tensor, mu: torch.Tensor, t: int, s: int | None = None) -> torch.Tensor:
        s = t - 1 if s is None else s
        ct, c0, _ = self.posterior_coefficients(t, s)
        return ct * (xt - mu) + c0 * (x0 - mu) + mu

    def posterior_std(self, t: int, s: int | None = None) -> float:
        return self.posterior_coefficients(t, t - 1 if s is None else s)[2]

    def _interval(self, t: int, s: int) -> tuple[float, float]:
        """``(sum theta_k, sum sigma_k^2)`` over ``k = s+1..t`` (the step's share of the schedule)."""
        th = float(self.thetas[s + 1 : t + 1].sum())
        return th, 2 * self.lam**2 * th

    def reverse_sde_step(
        self, xt: torch.Tensor, score: torch.Tensor, mu: torch.Tensor, t: int, s: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler-Maruyama: ``x - [theta (mu - x) - sigma^2 score] dt - sigma sqrt(dt) z``."""
        s = t - 1 if s is None else s
        th, sig2 = self._interval(t, s)
        drift = (th * (mu - xt) - sig2 * score) * self.dt
        return xt - drift - math.sqrt(sig2 * self.dt) * randn_like(xt, generator)

    def reverse_ode_step(self, xt: torch.Tensor, score: torch.Tensor, mu: torch.Tensor, t: int, s: int | None = None) -> torch.Tensor:
        """Euler on the probability-flow ODE: ``x - [theta (mu - x) - sigma^2 score / 2] dt``."""
        s = t - 1 if s is None else s
        th, sig2 = self._interval(t, s)
        return xt - (th * (mu - xt) - 0.5 * sig2 * score) * self.dt

    def posterior_step(
        self, xt: torch.Tensor, noise: torch.Tensor, mu: torch.Tensor, t: int, s: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``x0_hat`` from the predicted noise, then a draw from ``q(x_s | x_t, x0_hat)``."""
        s = t - 1 if s is None else s
        x0 = self.x0_from_noise(xt, mu, noise, t)
        ct, c0, std = self.posterior_coefficients(t, s)
        mean = ct * (xt - mu) + c0 * (x0 - mu) + mu
        return mean + std * randn_like(xt, generator)

    # --- sampling -----------------------------------------------------------------------

    def timesteps(self, steps: int | None = None) -> list[int]:
        """Steps visited, from ``T`` down to ``1`` (all of them, or ``steps`` evenly spaced)."""
        if steps is None or steps <= 0 or steps >= self.T:
            return list(range(self.T, 0, -1))
        grid = torch.linspace(self.T, 1, steps, dtype=torch.float64).round().long().tolist()
        out: list[int] = []
        for t in grid:
            if not out or t < out[-1]:
                out.append(int(t))
        return out

    def initial_state(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_T = mu + lambda * noise`` (the official ``noise_state``)."""
        return mu + self.lam * randn_like(mu, generator)

    def sample(
        self,
        noise_fn: NoiseFn,
        mu: torch.Tensor,
        *,
        sampler: str = "posterior",
        steps: int | None = None,
        generator: torch.Generator | None = None,
        x_T: torch.Tensor | None = None,
        progress: ProgressFn | None = None,
    ) -> torch.Tensor:
        """Run the reverse process from ``x_T`` (drawn if not given) to ``x_0``; returns ``x_0`` (not clamped).

        ``noise_fn(x_t, mu, t)`` predicts the noise. ``progress(i, n)`` is called after every step.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        ts = self.timesteps(steps)
        x = self.initial_state(mu, generator) if x_T is None else x_T
        n = len(ts)
        if progress is not None:
            progress(0, n)
        for i, t in enumerate(ts):
            s = ts[i + 1] if i + 1 < n else 0
            eps_hat = noise_fn(x, mu, t).to(x.dtype)
            if sampler == "posterior":
                x = self.posterior_step(x, eps_hat, mu, t, s, generator)
            elif sampler == "reverse_sde":
                x = self.reverse_sde_step(x, self.score_from_noise(eps_hat, t), mu, t, s, generator)
            else:
                x = self.reverse_ode_step(x, self.score_from_noise(eps_hat, t), mu, t, s)
            if progress is not None:
                progress(i + 1, n)
        return x


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device then moved to ``x``'s.

    Drawing on the generator's device keeps results reproducible for a seed whatever device
    the model runs on when the generator lives on the CPU.
    """
    if generator is None:
        return torch.randn_like(x)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return z.to(device=x.device, dtype=x.dtype)
