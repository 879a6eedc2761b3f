"""Joint calibration: land on a requested GenDeg (μ, σ) with two physical parameters per image.

μ is set by the strength (:mod:`.calibrate`); σ at that μ by the degradation's second physical
parameter (:attr:`~.base.Degradation.sigma_param`, e.g. rain streak opacity, snow flake opacity,
low-light fall-off, haze depth exponent, motion-blur rotation, raindrop refraction). Each trial
re-runs the degradation with the same seed, so μ and σ are deterministic functions of the two.

The search, for all images of a batch at once:

* *inner*: at a given value ``p`` of the second parameter, the strength that lands on the
  requested μ (a bracketing search: a first guess, then proportional steps until the target is
  bracketed, then log-log secant / false position with a bisection every third step);
* *outer*: σ at the requested μ is taken to change monotonically with ``p`` (in the direction
  the degradation declares); the search starts at the parameter's default, solves the end of its
  range on the side of the requested σ (that end's σ is the edge of the reachable region; where
  μ* is out of reach at that end, the way there is halved up to :data:`SHRINK_STEPS` times), then
  runs false position (Illinois) on ``p`` inside that bracket, each step warm-started with the
  strength interpolated between its neighbours;
* it stops when ``|μ − μ*| ≤ tol`` (default 0.005) and ``|σ − σ*| ≤ sigma_tol`` (default 0.01)
  for every image, or after ``max_outer`` steps; the best trial per image is returned (within the
  μ tolerance, the closest σ). A σ outside the reachable region at that μ is clamped to its
  nearest edge with a warning that states the region.

σ targets: a number (requested), or — without one — the *typical* σ of GenDeg's real data at
that μ (the conditional median, :func:`..realism.typical_sigma`), so defaults look like real
data; a σ without μ takes the typical μ at that σ. Types without real-data statistics (JPEG,
sensor noise) or without a second parameter, and calls that fix the second parameter in
``params``, calibrate μ only (:func:`.calibrate.degrade_to_mu`).

Large images (more than :data:`.calibrate.LARGE_PIXELS` pixels): the joint search runs on a
reduced copy; then a few full-size trials correct both parameters with Newton steps whose
Jacobian is measured on the reduced copy. The μ and σ reported are always the full-size ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .. import realism
from ..checks import finite_float
from ..errors import InputError
from ..intensity import measure_intensity, reduce_for_measure
from . import get, synthesize
from .calibrate import (
    DEFAULT_TOL,
    LARGE_PIXELS,
    MAX_FULL_TRIALS,
    Finish,
    SynthResult,
    degrade_to_mu,
    intensity_per_image,
    reduced_copy,
)

log = logging.getLogger("gendeg")

DEFAULT_SIGMA_TOL = 0.01
#: halvings towards the default when μ* is out of reach at an end of the second parameter's range
SHRINK_STEPS = 3
#: σ modes recorded in the metadata
REQUESTED, TYPICAL, FREE = "requested", "typical", "free"


def degrade_to_intensity(
    x: torch.Tensor,
    kind: str,
    mu: float | torch.Tensor | None,
    sigma: float | torch.Tensor | None = None,
    seed: int = 0,
    *,
    depth: torch.Tensor | None = None,
    params: dict[str, Any] | None = None,
    tol: float = DEFAULT_TOL,
    sigma_tol: float = DEFAULT_SIGMA_TOL,
    typical: bool = True,
    max_iter: int = 20,
    max_outer: int = 8,
    progress: Callable[[int, int], None] | None = None,
    finish: Finish | None = None,
) -> SynthResult:
    """Degrade ``[B,3,H,W]`` images (0..1) to GenDeg intensity (``mu``, ``sigma``), each a float or ``[B]``.

    ``sigma=None``: the typical σ of real data at ``mu`` when ``typical`` and the type has
    statistics and a second parameter that ``params`` leaves free; otherwise μ only.
    ``mu=None``: the typical μ at ``sigma``. Returns the best trial per image with the achieved
    (μ, σ), the second parameter's value per image in ``result.params`` and warnings for targets
    outside the reachable region (see module doc).
    """
    deg = get(kind)
    b = x.shape[0]
    if mu is None and sigma is None:
        raise InputError("give mu, sigma or both (GenDeg's intensity)")
    tol = finite_float(tol, "tol")
    sigma_tol = finite_float(sigma_tol, "sigma_tol")
    if tol <= 0 or sigma_tol <= 0:
        raise InputError(f"tolerances must be positive, got tol={tol}, sigma_tol={sigma_tol}")
    fixed = deg.sigma_param is not None and deg.sigma_param in (params or {})
    stats = realism.stats_type(deg.name) is not None
    if sigma is not None or mu is None:
        if deg.sigma_param is None:
            raise InputError(f"{deg.name} has no second parameter to set sigma with (its sigma follows from mu); "
                             "leave sigma empty or 0")
        if fixed:
            raise InputError(f"{deg.name}: sigma is reached by calibrating {deg.sigma_param}; remove "
                             f"{deg.sigma_param} from the expert parameters or leave sigma empty")
    if mu is None:
        if not stats:
            raise InputError(f"a sigma without mu takes the typical mu of GenDeg's real data, which has no {deg.name}; "
                             "give mu too")
        sg = intensity_per_image(sigma, b, "sigma")
        target_mu = torch.tensor([realism.typical_mu(deg.name, float(v)) for v in sg])
    else:
        target_mu = intensity_per_image(mu, b, "mu")
    if sigma is None:
        if not (typical and stats and deg.sigma_param is not None and not fixed):
            result = degrade_to_mu(x, kind, target_mu, seed, depth=depth, params=params, tol=tol, max_iter=max_iter,
                                   progress=progress, finish=finish)
            result.sigma_mode = FREE
            return result
        target_sigma = torch.tensor([realism.typical_sigma(deg.name, float(m)) for m in target_mu])
        mode = TYPICAL
    else:
        target_sigma = intensity_per_image(sigma, b, "sigma")
        if float(target_sigma.min()) <= 0:
            raise InputError("sigma must be above 0 (0 means: the typical sigma of real data at this mu)")
        mode = REQUESTED
    search = _JointSearch(x, deg.name, seed, depth, params, finish, target_mu, target_sigma, tol, sigma_tol,
                          max_iter, max_outer, warn=mode == REQUESTED)
    if x.shape[-2] * x.shape[-1] > LARGE_PIXELS:
        result = search.run_large(progress)
    else:
        result = search.run(progress)
    result.sigma_mode = mode
    return result


class _JointSearch:
    """Trials at per-image (strength, second parameter) and the search of the module doc."""

    def __init__(self, x: torch.Tensor, kind: str, seed: int, depth: torch.Tensor | None,
                 params: dict[str, Any] | None, finish: Finish | None, target_mu: torch.Tensor,
                 target_sigma: torch.Tensor, tol: float, sigma_tol: float, max_iter: int, max_outer: int,
                 *, warn: bool) -> None:
        self.deg = get(kind)
        self.x, self.kind, self.seed, self.depth, self.finish = x, kind, seed, depth, finish
        self.params = dict(params or {})
        self.resolved = self.deg.resolve_params(self.params)
        self.key = self.deg.sigma_param
        spec = self.deg.params[self.key]
        self.p_lo, self.p_hi = self.deg.sigma_range or (spec.lo, spec.hi)
        self.p_default = float(self.resolved[self.key])
        self.limit = self.deg.strength_limit(self.resolved)
        self.mu_t, self.sg_t = target_mu, target_sigma
        self.tol, self.sigma_tol, self.max_iter, self.max_outer = tol, sigma_tol, max_iter, max_outer
        self.warn_unreachable = warn
        b = x.shape[0]
        self.b = b
        self.count = 0
        self.best_y: torch.Tensor | None = None
        self.best_s, self.best_p = torch.zeros(b), torch.full((b,), self.p_default)
        self.best_mu, self.best_sg = torch.zeros(b), torch.zeros(b)
        self.best_score = torch.full((b,), float("inf"))
        self.x_reduced: torch.Tensor | None = None
        self.keep_images = True
        self.on_trial: Callable[[], None] | None = None
        self.strip_progress: Callable[[int, int], None] | None = None

    # --- one trial ------------------------------------------------------------------------------

    def score(self, mu: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
        """Lower is better: within the μ tolerance, the σ error; else 10 + the μ error."""
        dmu, dsg = (mu - self.mu_t).abs(), (sg - self.sg_t).abs()
        return torch.where(dmu <= self.tol, dsg, 10.0 + dmu)

    def trial(self, s: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and σ (``[B]``, CPU) at strengths ``s`` and second-parameter values ``p``; keeps the best per image."""
        s, p = s.float().cpu().clamp(0, self.limit), p.float().cpu().clamp(self.p_lo, self.p_hi)
        params = {**self.params, self.key: p}
        y = synthesize(self.x, self.kind, s.to(self.x.device), self.seed, depth=self.depth, params=params,
                       progress=self.strip_progress)
        y = self.finish(y) if self.finish is not None else y
        if self.x_reduced is None:
            self.x_reduced = reduce_for_measure(self.x)
        mu, sg = (v.cpu() for v in measure_intensity(self.x, y, clean_reduced=self.x_reduced))
        sc = self.score(mu, sg)
        better = sc < self.best_score
        self.best_s = torch.where(better, s, self.best_s)
        self.best_p = torch.where(better, p, self.best_p)
        self.best_mu = torch.where(better, mu, self.best_mu)
        self.best_sg = torch.where(better, sg, self.best_sg)
        self.best_score = torch.minimum(sc, self.best_score)
        if self.keep_images:
            if self.best_y is None or bool(better.all()):
                self.best_y = y
            elif bool(better.any()):
                m = better.to(y.device)
                self.best_y[m] = y[m]
        del y
        self.count += 1
        if self.on_trial is not None:
            self.on_trial()
        return mu, sg

    # --- inner: the strength for μ at fixed p ----------------------------------------------------

    def solve_mu(self, p: torch.Tensor, active: torch.Tensor, guess: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per active image, the strength landing on μ* at ``p`` (bracketing search from ``guess``).

        Returns (strength, μ, σ, reached): ``reached`` is false where μ* is above μ at the
        strength limit (the closest trial is returned then).
        """
        b, aim = self.b, self.tol / 2
        lo_s, lo_f = torch.zeros(b), -self.mu_t.clone()  # μ(0) = 0: the image untouched
        hi_s, hi_f = torch.full((b,), float("nan")), torch.full((b,), float("nan"))
        s = torch.ones(b).clamp(max=self.limit) if guess is None else guess.clamp(1e-4, self.limit)
        out_s, out_mu, out_sg = torch.zeros(b), torch.zeros(b), torch.zeros(b)
        out_err = torch.full((b,), float("inf"))
        todo = active.clone()
        side = torch.zeros(b)
        for it in range(1, self.max_iter + 1):
            mu, sg = self.trial(torch.where(todo, s, out_s), p)
            f = mu - self.mu_t
            err = f.abs()
            better = todo & (err < out_err)
            out_s, out_mu, out_sg = torch.where(better, s, out_s), torch.where(better, mu, out_mu), torch.where(better, sg, out_sg)
            out_err = torch.where(better, err, out_err)
            low, high = todo & (f < 0), todo & (f >= 0)
            lo_f = torch.where(high & (side == 1), lo_f / 2, lo_f)  # Illinois
            hi_f = torch.where(low & (side == -1), hi_f / 2, hi_f)
            side = torch.where(high, torch.ones_like(side), torch.where(low, -torch.ones_like(side), side))
            lo_s, lo_f = torch.where(low, s, lo_s), torch.where(low, f, lo_f)
            hi_s, hi_f = torch.where(high, s, hi_s), torch.where(high, f, hi_f)
            at_top = low & (s >= self.limit * (1 - 1e-6))
            todo = todo & (out_err > aim) & ~at_top
            has_hi = ~torch.isnan(hi_s)
            todo = todo & ~(has_hi & ((hi_s - lo_s) < 1e-5))
            if not bool(todo.any()):
                break
            # next strength: without an upper end, a proportional step (μ grows about like s);
            # inside a bracket, a log-log secant between its ends (false position every other
            # step, bisection every third)
            grow = torch.where(lo_f + self.mu_t > 1e-6, self.mu_t / (lo_f + self.mu_t).clamp_min(1e-6), torch.full((b,), 4.0))
            up = torch.minimum(torch.full((b,), self.limit), lo_s.clamp_min(1e-4) * grow.clamp(1.2, 8.0) * 1.05)
            mu_lo, mu_hi = lo_f + self.mu_t, hi_f + self.mu_t
            ok_log = (lo_s > 0) & (mu_lo > 1e-6) & (mu_hi > mu_lo * 1.0001)
            ls = torch.log(lo_s.clamp_min(1e-9)) + (torch.log(self.mu_t) - torch.log(mu_lo.clamp_min(1e-9))) * (
                torch.log(hi_s.nan_to_num(1.0).clamp_min(1e-9)) - torch.log(lo_s.clamp_min(1e-9))) / (
                torch.log(mu_hi.nan_to_num(1.0).clamp_min(1e-9)) - torch.log(mu_lo.clamp_min(1e-9))).clamp_min(1e-9)
            denom = torch.where((hi_f - lo_f).abs() > 1e-12, hi_f - lo_f, torch.ones(b))
            fp = lo_s - lo_f * (hi_s - lo_s) / denom
            inner = torch.where(ok_log & (it % 2 == 1), torch.exp(ls), fp)
            if it % 3 == 0:
                inner = (lo_s + hi_s) / 2
            margin = 0.02 * (hi_s - lo_s)
            inner = torch.minimum(torch.maximum(inner.nan_to_num(0.0), lo_s + margin), hi_s - margin)
            s = torch.where(has_hi, inner, up)
        reached = out_err <= self.tol
        return out_s, out_mu, out_sg, reached

    # --- outer: the second parameter for σ -------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None, *, quiet: bool = False) -> SynthResult:
        """The joint search of the module doc on ``self.x``."""
        b = self.b
        total = 6 * (self.max_outer + 2)
        if progress is not None:
            self.on_trial = lambda: progress(min(self.count, total - 1), total)
        inc = self.deg.sigma_increasing
        aim_sg = self.sigma_tol / 2
        everyone = torch.ones(b, dtype=torch.bool)
        p0 = torch.full((b,), self.p_default)
        s0, mu0, sg0, ok0 = self.solve_mu(p0, everyone, None)
        e0 = sg0 - self.sg_t
        # the end of the range on the side of the requested σ
        want_up = e0 < 0
        p_end = torch.where(want_up == inc, torch.full((b,), self.p_hi), torch.full((b,), self.p_lo))
        active = (e0.abs() > aim_sg) & ok0 & (p_end != p0)
        s_end, sg_end, ok_end = s0.clone(), sg0.clone(), ok0.clone()
        if bool(active.any()):
            s1, _, sg1, ok1 = self.solve_mu(p_end, active, s0)
            s_end, sg_end, ok_end = (torch.where(active, a, c) for a, c in ((s1, s0), (sg1, sg0), (ok1, ok0)))
        # where μ* is out of reach at that end (the strength limit), halve the way towards the
        # default until it is reached: the region's edge is the last parameter value that lands on μ*
        for _ in range(SHRINK_STEPS):
            shrink = active & ~ok_end
            if not bool(shrink.any()):
                break
            p_end = torch.where(shrink, (p0 + p_end) / 2, p_end)
            s1, _, sg1, ok1 = self.solve_mu(p_end, shrink, s0)
            s_end, sg_end, ok_end = (torch.where(shrink, a, c) for a, c in ((s1, s_end), (sg1, sg_end), (ok1, ok_end)))
        sg_end = torch.where(ok_end, sg_end, sg0)  # no end reached: the default is the only known point
        e_end = sg_end - self.sg_t
        beyond = active & ((e_end * e0) > 0) & (e_end.abs() > aim_sg)  # the requested σ is past the end
        # bracket [pa, pb] with errors ea, eb of opposite signs
        pa, sa, ea = p0.clone(), s0.clone(), e0.clone()
        pb, sb, eb = p_end.clone(), s_end.clone(), e_end.clone()
        active = active & ~beyond & ok_end & ((e_end * e0) < 0)
        side = torch.zeros(b)
        for it in range(1, self.max_outer + 1):
            if not bool(active.any()):
                break
            denom = torch.where((eb - ea).abs() > 1e-12, eb - ea, torch.ones(b))
            t = (-ea / denom).clamp(0.0, 1.0)
            if it % 3 == 0:
                t = torch.full((b,), 0.5)
            t = t.clamp(0.03, 0.97)
            p = pa + t * (pb - pa)
            guess = sa + t * (sb - sa)
            s, _, sg, ok = self.solve_mu(p, active, guess)
            e = sg - self.sg_t
            same_a = active & ((e * ea) > 0)
            same_b = active & ~same_a
            eb = torch.where(same_a & (side == -1), eb / 2, eb)  # Illinois
            ea = torch.where(same_b & (side == 1), ea / 2, ea)
            side = torch.where(same_a, -torch.ones_like(side), torch.where(same_b, torch.ones_like(side), side))
            pa, sa, ea = torch.where(same_a, p, pa), torch.where(same_a, s, sa), torch.where(same_a, e, ea)
            pb, sb, eb = torch.where(same_b, p, pb), torch.where(same_b, s, sb), torch.where(same_b, e, eb)
            active = active & (self.best_score > aim_sg) & ((pb - pa).abs() > 1e-4 * (self.p_hi - self.p_lo))
        if progress is not None:
            progress(total, total)
        self.region = (sg0, sg_end, p0, p_end)
        warnings = self.report(*self.region, quiet=quiet)
        return self.result(warnings)

    def report(self, sg0: torch.Tensor, sg_end: torch.Tensor, p0: torch.Tensor, p_end: torch.Tensor, *,
               quiet: bool = False, note: str = "") -> list[str]:
        """Warnings for targets not reached (the reachable region stated), also logged unless ``quiet``."""
        out: list[str] = []
        name, key = self.deg.name, self.key
        for i in range(self.b):
            dmu = abs(float(self.best_mu[i]) - float(self.mu_t[i]))
            dsg = abs(float(self.best_sg[i]) - float(self.sg_t[i]))
            if dmu > self.tol:
                msg = (f"{name}: image {i} reached mu={float(self.best_mu[i]):.4f} for a requested "
                       f"{float(self.mu_t[i]):.4f} (|error| {dmu:.4f} > {self.tol}); the requested mu is outside the "
                       f"reachable range with these parameters (sigma={float(self.best_sg[i]):.4f}). Change the expert "
                       "parameters to reach further.")
            elif dsg > self.sigma_tol:
                if not self.warn_unreachable:
                    continue  # the typical σ is a default, not a request: the closest reachable one is kept
                up = float(self.sg_t[i]) > float(self.best_sg[i])
                edge = max(float(sg0[i]), float(sg_end[i])) if up else min(float(sg0[i]), float(sg_end[i]))
                # the kept result reached μ, so the region reaches at least as far as its σ
                edge = max(edge, float(self.best_sg[i])) if up else min(edge, float(self.best_sg[i]))
                msg = (f"{name}: requested (mu={float(self.mu_t[i]):.4f}, sigma={float(self.sg_t[i]):.4f}) for image {i} "
                       f"is outside the reachable region: at mu={float(self.mu_t[i]):.4f} the {'largest' if up else 'smallest'} "
                       f"sigma this image reaches{note} is {edge:.4f} ({key} searched in {self.p_lo:g}..{self.p_hi:g}); "
                       f"clamped to sigma={float(self.best_sg[i]):.4f} ({key}={float(self.best_p[i]):.4g}). Ask for a sigma "
                       f"{'below' if up else 'above'} {edge:.4f} or another mu.")
            else:
                continue
            out.append(msg)
            if not quiet:
                log.warning("[GenDeg] %s", msg)
        return out

    def result(self, warnings: list[str]) -> SynthResult:
        params = {**self.resolved, self.key: [round(float(v), 6) for v in self.best_p]}
        res = SynthResult(self.best_y, self.best_s.clone(), self.best_mu.clone(), self.best_sg.clone(), self.mu_t.clone(),
                          params, warnings, self.count)
        res.requested_sigma = self.sg_t.clone()
        res.sigma_param = self.key
        return res

    # --- large images --------------------------------------------------------------------------

    def run_large(self, progress: Callable[[int, int], None] | None = None) -> SynthResult:
        """Joint search on a reduced copy, then Newton steps at full size (module doc)."""
        b = self.b
        steps = 100
        total = (1 + MAX_FULL_TRIALS) * steps

        def report(done: float) -> None:
            if progress is not None:
                progress(min(int(done), total), total)

        small = _JointSearch(reduced_copy(self.x), self.kind, self.seed, self.depth, self.params, self.finish,
                             self.mu_t, self.sg_t, self.tol / 2, self.sigma_tol / 2, self.max_iter, self.max_outer,
                             warn=False)
        small.keep_images = False
        report(0)
        small.run(quiet=True)
        s, p = small.best_s.clone(), small.best_p.clone()
        # the reduced copy's Jacobian d(μ, σ)/d(s, p) at its answer, by forward differences
        ds = (0.05 * s).clamp_min(1e-3)
        dp = torch.full((b,), 0.05 * (self.p_hi - self.p_lo))
        dp = torch.where(p + dp > self.p_hi, -dp, dp)
        mu_a, sg_a = small.best_mu.clone(), small.best_sg.clone()
        mu_s, sg_s = small.trial(s + ds, p)
        mu_p, sg_p = small.trial(s, p + dp)
        jac = torch.stack([torch.stack([(mu_s - mu_a) / ds, (mu_p - mu_a) / dp], -1),
                           torch.stack([(sg_s - sg_a) / ds, (sg_p - sg_a) / dp], -1)], -2)  # [B,2,2]
        report(steps)
        k_done = 0

        def strip_progress(i: int, n: int) -> None:
            report(steps * (1 + k_done) + steps * i / max(n, 1))

        self.strip_progress = strip_progress
        active = torch.ones(b, dtype=torch.bool)
        aim_mu, aim_sg = self.tol / 2, self.sigma_tol / 2
        while k_done < MAX_FULL_TRIALS and bool(active.any()):
            s_try, p_try = torch.where(active, s, self.best_s), torch.where(active, p, self.best_p)
            mu, sg = self.trial(s_try, p_try)
            k_done += 1
            r = torch.stack([mu - self.mu_t, sg - self.sg_t], -1)  # [B,2]
            active = active & ~(((mu - self.mu_t).abs() <= aim_mu) & ((sg - self.sg_t).abs() <= aim_sg))
            det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
            good = det.abs() > 1e-9
            inv = torch.stack([torch.stack([jac[:, 1, 1], -jac[:, 0, 1]], -1),
                               torch.stack([-jac[:, 1, 0], jac[:, 0, 0]], -1)], -2) / torch.where(good, det, torch.ones(b)).view(-1, 1, 1)
            step = -(inv @ r.unsqueeze(-1)).squeeze(-1)  # Newton step [Δs, Δp]
            # σ out of reach (p at an end) or a singular Jacobian: correct the strength for μ only
            mu_only = ~good | ((p_try <= self.p_lo) & (step[:, 1] < 0)) | ((p_try >= self.p_hi) & (step[:, 1] > 0))
            dmu_ds = jac[:, 0, 0].clamp_min(1e-6)
            step_s = torch.where(mu_only, -r[:, 0] / dmu_ds, step[:, 0])
            step_p = torch.where(mu_only, torch.zeros(b), step[:, 1])
            s = (s_try + step_s).clamp(1e-4, self.limit)
            p = (p_try + step_p).clamp(self.p_lo, self.p_hi)
            stalled = ((s - s_try).abs() < 1e-6) & ((p - p_try).abs() < 1e-9)
            active = active & ~stalled
        report(total)
        res = self.result(self.report(*small.region, note=" (on a reduced copy)"))  # the region the reduced copy found
        res.evaluations = self.count + small.count
        return res


def reachable_sigma(x: torch.Tensor, kind: str, mu: float, seed: int = 0, *, depth: torch.Tensor | None = None,
                    params: dict[str, Any] | None = None, tol: float = DEFAULT_TOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image σ interval ``(lo, hi)`` reachable at ``mu``: σ at the default of the second
    parameter and at the two ends of its search range, each end moved halfway towards the default
    (up to :data:`SHRINK_STEPS` times) while μ is out of reach there. Points where ``mu`` is not
    reached within ``tol`` are left out; an image that misses ``mu`` everywhere gets ``(nan, nan)``."""
    deg = get(kind)
    if deg.sigma_param is None:
        raise InputError(f"{deg.name} has no second parameter")
    key = deg.sigma_param
    lo, hi = deg.sigma_range or (deg.params[key].lo, deg.params[key].hi)
    default = float(deg.resolve_params(dict(params or {}))[key])
    b = x.shape[0]
    low, high = torch.full((b,), float("inf")), torch.full((b,), float("-inf"))

    def at(p: float) -> torch.Tensor:
        r = degrade_to_mu(x, kind, mu, seed, depth=depth, params={**(params or {}), key: p}, tol=tol)
        ok = (r.mu - mu).abs() <= tol
        low.copy_(torch.where(ok, torch.minimum(low, r.sigma), low))
        high.copy_(torch.where(ok, torch.maximum(high, r.sigma), high))
        return ok

    at(default)
    for end in (lo, hi):
        p, todo = end, torch.ones(b, dtype=torch.bool)
        for _ in range(SHRINK_STEPS + 1):
            if p == default:
                break
            todo = todo & ~at(p)
            if not bool(todo.any()):
                break
            p = (p + default) / 2
    nan = torch.full((b,), float("nan"))
    return torch.where(torch.isfinite(low), low, nan), torch.where(torch.isfinite(high), high, nan)


__all__ = ["DEFAULT_SIGMA_TOL", "FREE", "REQUESTED", "TYPICAL", "degrade_to_intensity", "reachable_sigma"]
