"""Intensity calibration: find, per image, the strength that lands on a requested GenDeg μ.

μ (GenDeg's intensity, :func:`core.intensity.measure_intensity`: mean |clean − degraded| in
0..1 units at 256×256) grows monotonically with every degradation's strength. For each image
we search the strength that gives the requested μ, all images of the batch at once:

* the degradation is re-run with a generator re-seeded with the same seed at every trial,
  so the random pattern (streaks, drops, noise, trajectory) is fixed and only its amount
  changes, making μ(strength) a deterministic, monotone function per image;
* μ(0) and μ(1) bound the usual range; where a request lies above μ(1) and the degradation's
  model extends past its defaults (:meth:`~.base.Degradation.strength_limit`, e.g. haze up to
  β = 8), μ at that limit is measured too and the search continues there; a request outside
  the reachable range is clamped to the nearest end with a warning that states the range;
* inside it, a bracketing search (false position with the Illinois modification, every
  third step a plain bisection for robustness) runs until ``|μ − target| ≤ tol`` for every
  image (default tol 0.005) or ``max_iter`` trials; the best trial per image is returned;
* for discrete degradations (JPEG quality) the closest reachable step is kept.

Large images (more than :data:`LARGE_PIXELS` pixels) are calibrated in two stages: the search
above on a reduced copy (about :data:`REDUCED_PIXELS` pixels, where a trial is cheap), then a few
full-size trials, each correcting the reduced copy's answer by the ratio of full-size to
reduced μ at the last strength (bracketed, so it cannot diverge). The reported μ and σ are
always those of the full-size output. Full-size trials are synthesized in strips and measured
in strips, so memory stays bounded (see ``README``, "Large images").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..checks import finite_float
from ..errors import InputError
from ..intensity import measure_intensity, reduce_for_measure
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
    requested_sigma: torch.Tensor | None = None  # [B] the σ aimed at (requested or typical), or None
    sigma_param: str | None = None  # the second parameter searched for σ (its values per image in params)
    sigma_mode: str = "free"  # requested | typical | free (σ not aimed at)

    def params_of(self, i: int) -> dict[str, Any]:
        """Image ``i``'s parameters: the second parameter's own value where it was searched per image."""
        return {k: (v[i] if isinstance(v, list) and k == self.sigma_param else v) for k, v in self.params.items()}

    def intensity_of(self, i: int) -> dict[str, Any]:
        """Image ``i``'s strength and requested/achieved μ and σ (rounded to 6 decimals; ``None`` where
        not requested) and how σ was chosen: the intensity fields of a dataset record."""
        def value(v: torch.Tensor | None) -> float | None:
            return None if v is None else round(float(v[i]), 6)

        return {"strength": value(self.strength), "mu_requested": value(self.requested_mu),
                "sigma_requested": value(self.requested_sigma), "sigma_mode": self.sigma_mode,
                "mu": value(self.mu), "sigma": value(self.sigma)}


Finish = Callable[[torch.Tensor], torch.Tensor]


def grey_finish(y: torch.Tensor) -> torch.Tensor:
    """For grey inputs: the RGB result as the grey image it will be saved as (channel mean, repeated)."""
    return y.mean(dim=1, keepdim=True).expand_as(y).contiguous()


def degrade_at_strength(
    x: torch.Tensor, kind: str, strength: float | torch.Tensor, seed: int = 0, *,
    depth: torch.Tensor | None = None, params: dict[str, Any] | None = None, finish: Finish | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Degrade at given strength(s) and measure the achieved (μ, σ).

    ``finish`` maps the RGB result to what will really be output (e.g. :func:`grey_finish`)
    before it is measured, so the reported μ is that of the output. ``progress(i, n)``: strips
    done (large images are synthesized in strips; small ones report once).
    """
    y = synthesize(x, kind, strength, seed, depth=depth, params=params, progress=progress)
    y = finish(y) if finish is not None else y
    mu, sigma = measure_intensity(x, y)
    s = torch.as_tensor(strength, dtype=torch.float32).flatten().expand(x.shape[0]).clone()
    return SynthResult(y, s, mu.cpu(), sigma.cpu(), None, get(kind).resolve_params(params))


def intensity_per_image(value: float | torch.Tensor, b: int, name: str) -> torch.Tensor:
    """A GenDeg intensity (``mu`` or ``sigma``) given once or per image -> ``[B]`` float32 (a new tensor),
    checked to be finite and in 0..1."""
    t = torch.as_tensor(value, dtype=torch.float32).flatten().clone()
    if t.numel() == 1:
        t = t.expand(b).clone()
    if t.numel() != b:
        raise InputError(f"{name}: expected one value or {b} (one per image), got {t.numel()}")
    if not torch.isfinite(t).all() or float(t.min()) < 0.0 or float(t.max()) > 1.0:
        raise InputError(f"{name} must be in 0..1 (GenDeg's {name}: of |clean − degraded|), got {t.tolist()}")
    return t


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
    ``progress(i, n)`` hears about every trial (and, for large images, every strip of one).
    """
    deg = get(kind)
    b = x.shape[0]
    target = intensity_per_image(target_mu, b, "mu")
    tol = finite_float(tol, "tol")  # a NaN tolerance would end the search at once, untouched
    if tol <= 0:
        raise InputError(f"tol must be positive, got {tol}")
    resolved = deg.resolve_params(params)
    limit = deg.strength_limit(resolved)
    if x.shape[-2] * x.shape[-1] > LARGE_PIXELS:
        return _degrade_large(x, kind, target, seed, depth, params, resolved, limit, tol, max_iter, progress, finish)
    total = max_iter + 3
    trials = _Trials(x, kind, seed, depth, params, finish, target, keep_images=True,
                     progress=None if progress is None else lambda k: progress(min(k, total), total))
    warnings = _search(trials, target, limit, tol, max_iter, deg.name, deg.discrete)
    if progress is not None:
        progress(total, total)
    return SynthResult(trials.best_y, trials.best_s, trials.best_mu, trials.best_sg, target, resolved, warnings,
                       trials.count)


#: images with more pixels than this are calibrated on a reduced copy first (see module doc)
LARGE_PIXELS = 1 << 22
#: pixels of that reduced copy
REDUCED_PIXELS = 1 << 20
#: full-size trials at most for a large image
MAX_FULL_TRIALS = 8


class _Trials:
    """Runs trials (synthesize + measure) and keeps the best one per image (closest μ)."""

    def __init__(self, x: torch.Tensor, kind: str, seed: int, depth: torch.Tensor | None,
                 params: dict[str, Any] | None, finish: Finish | None, target: torch.Tensor, *, keep_images: bool,
                 progress: Callable[[int], None] | None = None,
                 strip_progress: Callable[[int, int], None] | None = None) -> None:
        self.x, self.kind, self.seed, self.depth, self.params, self.finish = x, kind, seed, depth, params, finish
        self.target, self.keep_images = target, keep_images
        self.progress, self.strip_progress = progress, strip_progress
        b = x.shape[0]
        self.best_y: torch.Tensor | None = None
        self.x_reduced: torch.Tensor | None = None
        self.history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, μ, σ) of every trial
        self.memo: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.best_s = torch.zeros(b)
        self.best_mu = torch.zeros(b)
        self.best_sg = torch.zeros(b)
        self.best_err = torch.full((b,), float("inf"))
        self.count = 0

    def retarget(self, target: torch.Tensor) -> None:
        """Aim at ``target`` from now on; the best trials so far are re-picked from the history
        (trials without kept images only)."""
        self.target = target
        self.best_err = torch.full_like(target, float("inf"))
        for s, mu, sg in self.history:
            self._update(s, mu, sg)

    def _update(self, s: torch.Tensor, mu: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
        err = (mu - self.target).abs()
        better = err < self.best_err
        self.best_s = torch.where(better, s, self.best_s)
        self.best_mu = torch.where(better, mu, self.best_mu)
        self.best_sg = torch.where(better, sg, self.best_sg)
        self.best_err = torch.minimum(err, self.best_err)
        return better

    def __call__(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and σ (``[B]``, CPU) of one trial at strengths ``s`` (``[B]``); updates the best trial per image."""
        s = s.float().cpu()
        key = tuple(s.tolist())
        if not self.keep_images and key in self.memo:  # deterministic: a repeated trial is not re-run
            mu, sg = self.memo[key]
            self._update(s, mu, sg)
            return mu, sg
        y = synthesize(self.x, self.kind, s.to(self.x.device), self.seed, depth=self.depth, params=self.params,
                       progress=self.strip_progress)
        y = self.finish(y) if self.finish is not None else y
        if self.x_reduced is None:  # the clean side of μ is the same in every trial: reduced once
            self.x_reduced = reduce_for_measure(self.x)
        mu, sg = (v.cpu() for v in measure_intensity(self.x, y, clean_reduced=self.x_reduced))
        better = self._update(s, mu, sg)
        if self.keep_images:
            if self.best_y is None or bool(better.all()):
                self.best_y = y  # no copy: the whole trial is the best so far
            elif bool(better.any()):
                self.best_y[better.to(y.device)] = y[better.to(y.device)]
        else:
            self.memo[key] = (mu, sg)
        del y
        self.history.append((s, mu, sg))
        self.count += 1
        if self.progress is not None:
            self.progress(self.count)
        return mu, sg


def _search(trials: _Trials, target: torch.Tensor, limit: float, tol: float, max_iter: int, name: str,
            discrete: bool, *, quiet: bool = False) -> list[str]:
    """The bracketing search of the module doc on ``trials``; returns the warnings (also logged unless ``quiet``)."""
    b = target.shape[0]
    lo, hi = torch.zeros(b), torch.ones(b)
    mu0, _ = trials(lo)
    mu1, _ = trials(hi)
    f_lo, f_hi = mu0 - target, mu1 - target
    top_s, top_mu = torch.ones(b), mu1.clone()
    extend = (target > mu1 + tol) & (limit > 1.0)
    if bool(extend.any()):  # past the defaults' top: measure at the model's limit, search in 1..limit
        mu_top, _ = trials(torch.where(extend, torch.full((b,), limit), trials.best_s))
        top_s = torch.where(extend, torch.full((b,), limit), top_s)
        top_mu = torch.where(extend, mu_top, top_mu)
        lo, f_lo = torch.where(extend, hi, lo), torch.where(extend, f_hi, f_lo)
        hi, f_hi = top_s.clone(), top_mu - target

    # earlier trials of the same images (a reused reduced copy) narrow the bracket
    for s_k, mu_k, _ in trials.history:
        inside = (s_k > lo) & (s_k < hi)
        new_lo, new_hi = inside & (mu_k < target), inside & (mu_k > target)
        lo, f_lo = torch.where(new_lo, s_k, lo), torch.where(new_lo, mu_k - target, f_lo)
        hi, f_hi = torch.where(new_hi, s_k, hi), torch.where(new_hi, mu_k - target, f_hi)

    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        if not quiet:
            log.warning("[GenDeg] %s", msg)

    below, above = target < mu0 - tol, target > top_mu + tol
    for i in torch.nonzero(below | above).flatten().tolist():
        end = "0 (untouched)" if bool(below[i]) else f"{float(top_s[i]):g}"
        warn(f"{name}: requested mu={float(target[i]):.4f} for image {i} is outside the reachable range "
             f"{float(mu0[i]):.4f}..{float(top_mu[i]):.4f} with these parameters; clamped to strength {end} "
             f"(mu={float(trials.best_mu[i]):.4f}). Change the expert parameters to reach further.")

    aim = tol / 2  # search a little past the tolerance so the achieved error is usually well inside it
    active = (trials.best_err > aim) & ~below & ~above
    side = torch.zeros(b)  # Illinois: which end was kept last time (-1 lo, +1 hi)
    it = 0
    while bool(active.any()) and it < max_iter:
        it += 1
        denom = f_hi - f_lo
        ok = denom.abs() > 1e-9
        fp = torch.where(ok, lo - f_lo * (hi - lo) / torch.where(ok, denom, torch.ones_like(denom)), (lo + hi) / 2)
        s = fp if it % 3 else (lo + hi) / 2
        s = torch.minimum(torch.maximum(s, lo + 0.02 * (hi - lo)), hi - 0.02 * (hi - lo))
        s = torch.where(active, s, trials.best_s)
        mu, _ = trials(s)
        f = mu - target
        go_hi = active & (f > 0)  # too strong: s becomes the new upper end
        go_lo = active & (f <= 0)
        hi, f_hi = torch.where(go_hi, s, hi), torch.where(go_hi, f, f_hi)
        lo, f_lo = torch.where(go_lo, s, lo), torch.where(go_lo, f, f_lo)
        # Illinois: halve the function value at the end that stayed twice in a row
        f_lo = torch.where(go_hi & (side == 1), f_lo / 2, f_lo)
        f_hi = torch.where(go_lo & (side == -1), f_hi / 2, f_hi)
        side = torch.where(go_hi, torch.ones_like(side), torch.where(go_lo, -torch.ones_like(side), side))
        active = active & (trials.best_err > aim) & ((hi - lo) > (2e-3 if discrete else 1e-5))
    for i in torch.nonzero((trials.best_err > tol) & ~below & ~above).flatten().tolist():
        warn(f"{name}: image {i} reached mu={float(trials.best_mu[i]):.4f} for a requested {float(target[i]):.4f} "
             f"(|error| {float(trials.best_err[i]):.4f} > {tol}); "
             + ("JPEG quality changes in steps." if discrete else "increase max_iter or check the parameters."))
    return warnings


def reduced_copy(x: torch.Tensor, pixels: int | None = None) -> torch.Tensor:
    """``x`` downscaled (antialiased bilinear, aspect kept) to about ``pixels`` pixels (default
    :data:`REDUCED_PIXELS`); ``x`` itself if it is not larger."""
    pixels = REDUCED_PIXELS if pixels is None else pixels
    h, w = x.shape[-2:]
    f = (pixels / (h * w)) ** 0.5
    if f >= 1:
        return x
    size = (max(8, round(h * f)), max(8, round(w * f)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def _degrade_large(
    x: torch.Tensor, kind: str, target: torch.Tensor, seed: int, depth: torch.Tensor | None,
    params: dict[str, Any] | None, resolved: dict[str, Any], limit: float, tol: float, max_iter: int,
    progress: Callable[[int, int], None] | None, finish: Finish | None,
) -> SynthResult:
    """The two-stage calibration of large images (module doc)."""
    deg = get(kind)
    b = x.shape[0]
    steps = 100  # progress units per stage: the reduced search, then each full-size trial
    total = (1 + MAX_FULL_TRIALS) * steps

    def report(done: float) -> None:
        if progress is not None:
            progress(min(int(done), total), total)

    small = reduced_copy(x)
    small_trials = _Trials(small, kind, seed, depth, params, finish, target, keep_images=False)

    def solve_small(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Strength and reduced-copy μ that land the reduced copy on ``t`` (cheap; earlier trials reused)."""
        small_trials.retarget(t)
        _search(small_trials, t, limit, tol / 4, max_iter, deg.name, deg.discrete, quiet=True)
        return small_trials.best_s, small_trials.best_mu

    report(0)
    s, r_at_s = solve_small(target)
    report(steps)
    k_done = 0

    def strip_progress(i: int, n: int) -> None:
        report(steps * (1 + k_done) + steps * i / max(n, 1))

    full = _Trials(x, kind, seed, depth, params, finish, target, keep_images=True, strip_progress=strip_progress)
    lo = torch.zeros(b)  # full-size bracket: μ(lo) < target < μ(hi)
    hi = torch.full((b,), limit)
    lo_known, hi_known = torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)
    f_lo, f_hi = torch.zeros(b), torch.zeros(b)
    side = torch.zeros(b)  # Illinois: which end moved last (-1 lo, +1 hi)
    aim = tol / 2
    tried_top = torch.zeros(b, dtype=torch.bool)
    top_mu = torch.zeros(b)
    active = torch.ones(b, dtype=torch.bool)
    prev_err = torch.full((b,), float("inf"))
    while k_done < MAX_FULL_TRIALS:
        s = torch.where(active, s, full.best_s)
        mu, _ = full(s)
        k_done += 1
        f = mu - target
        at_top = active & (s >= limit * (1 - 1e-6))
        tried_top |= at_top
        top_mu = torch.where(at_top, mu, top_mu)
        low = active & (f < 0)
        high = active & (f > 0)
        # Illinois: halve the value kept at the end that did not move twice in a row
        f_lo = torch.where(high & (side == 1), f_lo / 2, f_lo)
        f_hi = torch.where(low & (side == -1), f_hi / 2, f_hi)
        side = torch.where(high, torch.ones_like(side), torch.where(low, -torch.ones_like(side), side))
        lo, f_lo, lo_known = torch.where(low, s, lo), torch.where(low, f, f_lo), lo_known | low
        hi, f_hi, hi_known = torch.where(high, s, hi), torch.where(high, f, f_hi), hi_known | high
        active = active & (full.best_err > aim) & ~(at_top & low) & ((hi - lo) > (2e-3 if deg.discrete else 1e-5))
        if not bool(active.any()):
            break
        # the model's step: the reduced copy's answer, corrected by the full-size / reduced μ ratio
        # at this strength; used while it keeps at least halving the error, and inside the bracket
        model_ok = full.best_err < prev_err / 2
        prev_err = full.best_err.clone()
        ratio = torch.where(r_at_s > 1e-6, mu / r_at_s.clamp_min(1e-6), torch.ones_like(mu))
        s_new, r_new = solve_small((target / ratio.clamp_min(1e-3)).clamp(0, 1))
        both = lo_known & hi_known
        margin = 0.02 * (hi - lo)
        inside = (s_new > lo + margin) & (s_new < hi - margin)
        denom = torch.where((f_hi - f_lo).abs() > 1e-9, f_hi - f_lo, torch.ones(b))
        fp = (lo - f_lo * (hi - lo) / denom).clamp(lo + margin, hi - margin)  # false position in the bracket
        one_sided = torch.where(lo_known, torch.minimum(hi, torch.maximum(2 * lo, s_new)), (lo + hi) / 2)
        use_model = inside & (model_ok | ~both)
        s = torch.where(use_model, s_new, torch.where(both, fp, one_sided))
        r_at_s = torch.where(use_model, r_new, r_at_s)
        if bool((active & ~use_model).any()):  # reduced μ at the other strengths, for the next ratio
            r_at_s = torch.where(active & ~use_model, small_trials(s)[0], r_at_s)
    report(total)
    warnings: list[str] = []
    for i in range(b):
        err = float(full.best_err[i])
        if err <= tol:
            continue
        if bool(tried_top[i]) and float(full.best_mu[i]) < float(target[i]):
            msg = (f"{deg.name}: requested mu={float(target[i]):.4f} for image {i} is outside the reachable range "
                   f"0..{float(top_mu[i]):.4f} at this size with these parameters; clamped to strength {limit:g} "
                   f"(mu={float(full.best_mu[i]):.4f}). Change the expert parameters to reach further.")
        else:
            msg = (f"{deg.name}: image {i} reached mu={float(full.best_mu[i]):.4f} for a requested "
                   f"{float(target[i]):.4f} (|error| {err:.4f} > {tol}) after {k_done} full-size trials; "
                   + ("JPEG quality changes in steps." if deg.discrete else "check the parameters."))
        warnings.append(msg)
        log.warning("[GenDeg] %s", msg)
    return SynthResult(full.best_y, full.best_s, full.best_mu, full.best_sg, target, resolved, warnings,
                       full.count + small_trials.count)


def reachable_range(
    x: torch.Tensor, kind: str, seed: int = 0, *, depth: torch.Tensor | None = None, params: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image μ at strength 0 and at the largest strength (1, or the model's
    :meth:`~.base.Degradation.strength_limit`): the calibration's reachable range."""
    limit = get(kind).strength_limit(get(kind).resolve_params(params))
    lo = degrade_at_strength(x, kind, 0.0, seed, depth=depth, params=params).mu
    hi = degrade_at_strength(x, kind, limit, seed, depth=depth, params=params).mu
    return lo, hi
