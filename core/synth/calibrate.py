"""Intensity calibration: find, per image, the strength that lands on a requested GenDeg μ.

μ (GenDeg's intensity, :func:`core.intensity.measure_intensity`: mean |clean − degraded| in
0..1 units at 256×256) grows monotonically with every degradation's strength. For each image
we search the strength in 0..1 that gives the requested μ, all images of the batch at once:

* the degradation is re-run with a generator re-seeded with the same seed at every trial,
  so the random pattern (streaks, drops, noise, trajectory) is fixed and only its amount
  changes, making μ(strength) a deterministic, monotone function per image;
* μ(0) and μ(1) give the reachable range; a request outside it is clamped to the nearest
  end with a warning that states the range;
* inside it, a bracketing search (false position with the Illinois modification, every
  third step a plain bisection for robustness) runs until ``|μ − target| ≤ tol`` for every
  image (default tol 0.005) or ``max_iter`` trials; the best trial per image is returned;
* for discrete degradations (JPEG quality) the closest reachable step is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import finite_float
from ..errors import InputError
from ..intensity import measure_intensity
from . import get, synthesize

log = logging.getLogger("gendeg")

DEFAULT_TOL = 0.005


@dataclass
class SynthResult:
    """Degraded images with the numbers a dataset records."""

    image: torch.Tensor  # [B,3,H,W] 0..1
    strength: torch.Tensor  # [B] the strength used
    mu: torch.Tensor  # [B] achieved μ
    sigma: torch.Tensor  # [B] achieved σ
    requested_mu: torch.Tensor | None = None  # [B] or None when the strength was given
    params: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evaluations: int = 1


Finish = Callable[[torch.Tensor], torch.Tensor]


def grey_finish(y: torch.Tensor) -> torch.Tensor:
    """For grey inputs: the RGB result as the grey image it will be saved as (channel mean, repeated)."""
    return y.mean(dim=1, keepdim=True).expand_as(y).contiguous()


def degrade_at_strength(
    x: torch.Tensor, kind: str, strength: float | torch.Tensor, seed: int = 0, *,
    depth: torch.Tensor | None = None, params: dict[str, Any] | None = None, finish: Finish | None = None,
) -> SynthResult:
    """Degrade at given strength(s) and measure the achieved (μ, σ).

    ``finish`` maps the RGB result to what will really be output (e.g. :func:`grey_finish`)
    before it is measured, so the reported μ is that of the output.
    """
    y = synthesize(x, kind, strength, seed, depth=depth, params=params)
    y = finish(y) if finish is not None else y
    mu, sigma = measure_intensity(x, y)
    s = torch.as_tensor(strength, dtype=torch.float32).flatten().expand(x.shape[0]).clone()
    return SynthResult(y, s, mu.cpu(), sigma.cpu(), None, get(kind).resolve_params(params))


def degrade_to_mu(
    x: torch.Tensor,
    kind: str,
    target_mu: float | torch.Tensor,
    seed: int = 0,
    *,
    depth: torch.Tensor | None = None,
    params: dict[str, Any] | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = 20,
    progress: Callable[[int, int], None] | None = None,
    finish: Finish | None = None,
) -> SynthResult:
    """Degrade ``[B,3,H,W]`` images (0..1) so each reaches GenDeg intensity ``target_mu`` (float or ``[B]``).

    Returns the best trial per image with achieved μ/σ; unreachable targets are clamped
    (warning in ``result.warnings`` and the log). ``finish``: see :func:`degrade_at_strength`.
    """
    deg = get(kind)
    b = x.shape[0]
    target = torch.as_tensor(target_mu, dtype=torch.float32).flatten()
    if target.numel() == 1:
        target = target.expand(b)
    if target.numel() != b:
        raise InputError(f"mu: expected one value or {b} (one per image), got {target.numel()}")
    if not torch.isfinite(target).all() or float(target.min()) < 0.0 or float(target.max()) > 1.0:
        raise InputError(f"mu must be in 0..1 (GenDeg's μ: mean |clean − degraded|), got {target.tolist()}")
    tol = finite_float(tol, "tol")  # a NaN tolerance would end the search at once, untouched
    if tol <= 0:
        raise InputError(f"tol must be positive, got {tol}")
    target = target.clone()
    resolved = deg.resolve_params(params)
    total = max_iter + 2
    n_eval = 0

    def run(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal n_eval
        y = synthesize(x, kind, s.to(x.device), seed, depth=depth, params=params)
        y = finish(y) if finish is not None else y
        mu, sigma = measure_intensity(x, y)
        n_eval += 1
        if progress is not None:
            progress(min(n_eval, total), total)
        return y, mu.cpu(), sigma.cpu()

    lo = torch.zeros(b)
    hi = torch.ones(b)
    y0, mu0, sg0 = run(lo)
    y1, mu1, sg1 = run(hi)
    best_y = y0.clone()
    best_s, best_mu, best_sg = lo.clone(), mu0.clone(), sg0.clone()
    err0, err1 = (mu0 - target).abs(), (mu1 - target).abs()
    take1 = err1 < err0
    best_y[take1.to(y1.device)] = y1[take1.to(y1.device)]
    best_s[take1], best_mu[take1], best_sg[take1] = 1.0, mu1[take1], sg1[take1]
    best_err = torch.minimum(err0, err1)

    warnings: list[str] = []
    below, above = target < mu0 - tol, target > mu1 + tol
    for i in torch.nonzero(below | above).flatten().tolist():
        end = "0 (untouched)" if bool(below[i]) else "1"
        msg = (
            f"{deg.name}: requested mu={float(target[i]):.4f} for image {i} is outside the reachable range "
            f"{float(mu0[i]):.4f}..{float(mu1[i]):.4f} with these parameters; clamped to strength {end} "
            f"(mu={float(best_mu[i]):.4f}). Change the expert parameters to reach further."
        )
        warnings.append(msg)
        log.warning("[GenDeg] %s", msg)

    f_lo, f_hi = mu0 - target, mu1 - target
    aim = tol / 2  # search a little past the tolerance so the achieved error is usually well inside it
    active = (best_err > aim) & ~below & ~above
    side = torch.zeros(b)  # Illinois: which end was kept last time (-1 lo, +1 hi)
    it = 0
    while bool(active.any()) and it < max_iter:
        it += 1
        denom = f_hi - f_lo
        ok = denom.abs() > 1e-9
        fp = torch.where(ok, lo - f_lo * (hi - lo) / torch.where(ok, denom, torch.ones_like(denom)), (lo + hi) / 2)
        s = fp if it % 3 else (lo + hi) / 2
        s = torch.minimum(torch.maximum(s, lo + 0.02 * (hi - lo)), hi - 0.02 * (hi - lo))
        s = torch.where(active, s, best_s)
        y, mu, sg = run(s)
        f = mu - target
        err = f.abs()
        better = active & (err < best_err)
        mask = better.to(y.device)
        best_y[mask] = y[mask]
        best_s[better], best_mu[better], best_sg[better], best_err[better] = s[better], mu[better], sg[better], err[better]
        go_hi = active & (f > 0)  # too strong: s becomes the new upper end
        go_lo = active & (f <= 0)
        hi, f_hi = torch.where(go_hi, s, hi), torch.where(go_hi, f, f_hi)
        lo, f_lo = torch.where(go_lo, s, lo), torch.where(go_lo, f, f_lo)
        # Illinois: halve the function value at the end that stayed twice in a row
        f_lo = torch.where(go_hi & (side == 1), f_lo / 2, f_lo)
        f_hi = torch.where(go_lo & (side == -1), f_hi / 2, f_hi)
        side = torch.where(go_hi, torch.ones_like(side), torch.where(go_lo, -torch.ones_like(side), side))
        active = active & (best_err > aim) & ((hi - lo) > (2e-3 if deg.discrete else 1e-5))
    for i in torch.nonzero((best_err > tol) & ~below & ~above).flatten().tolist():
        msg = (
            f"{deg.name}: image {i} reached mu={float(best_mu[i]):.4f} for a requested {float(target[i]):.4f} "
            f"(|error| {float(best_err[i]):.4f} > {tol}); "
            + ("JPEG quality changes in steps." if deg.discrete else "increase max_iter or check the parameters.")
        )
        warnings.append(msg)
        log.warning("[GenDeg] %s", msg)
    if progress is not None:
        progress(total, total)
    return SynthResult(best_y, best_s, best_mu, best_sg, target, resolved, warnings, n_eval)


def reachable_range(
    x: torch.Tensor, kind: str, seed: int = 0, *, depth: torch.Tensor | None = None, params: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image μ at strength 0 and at strength 1 (the calibration's reachable range)."""
    lo = degrade_at_strength(x, kind, 0.0, seed, depth=depth, params=params).mu
    hi = degrade_at_strength(x, kind, 1.0, seed, depth=depth, params=params).mu
    return lo, hi
