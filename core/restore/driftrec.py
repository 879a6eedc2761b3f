"""DriftRec sampling: restore JPEG-compressed images with a trained score network.

Reverse process (official defaults): start at ``x_1 = y + std(1) z``, visit ``N = 100`` times
evenly spaced from ``t = 1`` down to ``t = 0.03`` and at each take one Euler-Maruyama step of
the reverse SDE with ``dt = 1/N`` (the official step size, not the grid spacing)::

    x_mean = x - [a(t)(y - x) - g(t)^2 s(x, y, t)] / N,      x = x_mean + g(t) sqrt(1/N) z

and return the **last** ``x_mean`` (the official "denoise" output), clamped to 0..1.

Options (all off by default):

* ``corrector="langevin"``: before each predictor step, ``corrector_steps`` annealed Langevin
  steps with step size ``2 (snr ||z|| / ||s||)^2`` (``snr`` 0.15 as in the official enhance
  script). The norms are per image; the official code averages them over the batch, which
  is the same for one image at a time;
* ``sampler="probability_flow"``: the deterministic probability-flow ODE on the same grid
  (Euler, half the score term, no noise after the prior draw). The official ODE sampler uses
  an adaptive RK45 solver instead;
* fewer ``steps`` (each still uses ``dt = 1/steps``);
* ``samples=K``: the mean of K independent samples (the official ``avg_samples.py`` does it
  on 8-bit files);
* ``colour_correction``: shift each channel of the result so that its mean equals the
  input's (the official ``color_correct.py`` applied against the JPEG input).

The score network runs on ``cat(x_t, y)`` and sees only ``std(t)``; large images evaluate it in
overlapping tiles blended with feathered weights (:mod:`core.tiling`) while the sampler state
and noise stay whole-image, so a tile covering the image gives exactly the untiled result.
Noise comes from ``generator`` (a CPU generator gives the same noise on every device).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch

from ..errors import InputError
from ..tiling import ShrinkingTile, tiled_apply
from .driftrec_sde import DriftSDE
from .sde import randn_like

SAMPLERS = ("euler_maruyama", "probability_flow")
CORRECTORS = ("none", "langevin")
PRECISIONS = ("fp32", "bf16", "fp16")

#: ``score_fn(x_t, y, t) -> score`` with ``t`` a float64 ``[B]`` tensor of process times.
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]


def time_grid(steps: int, t_end: float = 0.03, t_start: float = 1.0) -> torch.Tensor:
    """The ``steps`` process times visited, from ``t_start`` down to ``t_end`` inclusive (float64)."""
    if steps < 1:
        raise InputError(f"DriftRec needs at least 1 sampling step, got {steps}")
    if not 0.0 < t_end < t_start <= 1.0:
        raise InputError(f"need 0 < t_end < t_start <= 1, got t_end={t_end}, t_start={t_start}")
    return torch.linspace(t_start, t_end, steps, dtype=torch.float64)


def langevin_step(x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, snr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrector step: ``(x, x_mean)`` with step size ``2 (snr ||noise|| / ||score||)^2`` per image."""
    dims = tuple(range(1, x.ndim))
    g = score.flatten(1).norm(dim=1).clamp_min(1e-12)
    n = noise.flatten(1).norm(dim=1)
    step = (2 * (snr * n / g) ** 2).reshape(-1, *([1] * len(dims)))
    x_mean = x + step * score
    return x_mean + torch.sqrt(2 * step) * noise, x_mean


def sample(
    sde: DriftSDE,
    score_fn: ScoreFn,
    y: torch.Tensor,
    *,
    steps: int = 100,
    t_end: float = 0.03,
    sampler: str = "euler_maruyama",
    corrector: str = "none",
    snr: float = 0.15,
    corrector_steps: int = 1,
    generator: torch.Generator | None = None,
    x_start: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Run the reverse process for ``y`` (``[B,C,H,W]``); returns the last step's mean (not clamped).

    ``x_start`` replaces the prior draw; ``progress(i, steps)`` is called before the first and
    after every step (it may raise to interrupt).
    """
    if sampler not in SAMPLERS:
        raise InputError(f"unknown DriftRec sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if corrector not in CORRECTORS:
        raise InputError(f"unknown corrector {corrector!r}; expected one of {', '.join(CORRECTORS)}")
    if corrector == "langevin" and not (snr > 0 and math.isfinite(snr)):
        raise InputError(f"the Langevin corrector needs snr > 0, got {snr}")
    ts = time_grid(int(steps), t_end)
    pf = sampler == "probability_flow"
    b = y.shape[0]
    x = sde.prior(y, randn_like(y, generator)) if x_start is None else x_start.to(y)
    x_mean = x
    dt = 1.0 / len(ts)
    if progress is not None:
        progress(0, len(ts))
    for i, t in enumerate(ts.tolist()):
        tb = torch.full((b,), t, dtype=torch.float64)
        if corrector == "langevin":
            for _ in range(max(0, int(corrector_steps))):
                x, _ = langevin_step(x, score_fn(x, y, tb), randn_like(x, generator), snr)
        score = score_fn(x, y, tb)
        x_mean = x - sde.reverse_drift(x, y, tb, score, probability_flow=pf) * dt
        if pf:
            x = x_mean
        else:
            g = float(sde.diffusion(t)[0])
            x = x_mean + g * math.sqrt(dt) * randn_like(x, generator)
        if progress is not None:
            progress(i + 1, len(ts))
    return x_mean


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def colour_correct(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Shift each channel of ``out`` so its mean equals ``reference``'s (per image), then clamp to 0..1."""
    shift = reference.mean(dim=(-2, -1), keepdim=True) - out.mean(dim=(-2, -1), keepdim=True)
    return (out + shift).clamp(0, 1)


@torch.inference_mode()
def restore_driftrec(
    restorer,  # DriftRecRestorer (driftrec_loader); not imported here to keep this module light
    y: torch.Tensor,
    *,
    steps: int = 100,
    t_end: float = 0.03,
    sampler: str = "euler_maruyama",
    corrector: str = "none",
    snr: float = 0.15,
    corrector_steps: int = 1,
    samples: int = 1,
    colour_correction: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    tile: int = 0,
    overlap: int = 64,
    tile_batch: int = 1,
    min_tile: int = 64,
    is_oom: Callable[[BaseException], bool] | None = None,
    on_oom: Callable[[], None] | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Restore JPEG-compressed ``y`` (``[B,3,H,W]``, 0..1); returns ``[B,3,H,W]`` 0..1 float32 on ``y``'s device.

    Args:
        steps, t_end, sampler, corrector, snr, corrector_steps: see :func:`sample`.
        samples: average of this many independent samples (>= 1).
        colour_correction: match the per-channel means of the input (see the module doc).
        generator: source of all noise.
        device: where the network runs (default ``y.device``); precision: ``fp32``/``bf16``/``fp16`` autocast.
        tile, overlap, tile_batch: tiled network evaluation (``tile`` <= 0: whole image).
        is_oom, on_oom: out-of-memory predicate and cleanup (from the host): enables tile halving.
        progress: ``progress(step, samples * steps)``.
    """
    if y.ndim != 4 or y.shape[1] != 3:
        raise InputError(f"DriftRec expects [B,3,H,W] RGB images, got shape {tuple(y.shape)}")
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    device = torch.device(device) if device is not None else y.device
    out_device = y.device
    net = restorer.net.to(device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    sde = restorer.sde
    yd = y.to(device=device, dtype=torch.float32)
    tiles = ShrinkingTile(tile, min_tile, is_oom, on_oom)
    align = int(getattr(net, "min_size", 1))

    def run_net(pair: torch.Tensor, sigma: float) -> torch.Tensor:
        with _autocast(device, precision):
            out = net(pair.contiguous(memory_format=mf), torch.full((pair.shape[0],), sigma, device=device))
        return out.float()

    def evaluate(x: torch.Tensor, sigma: float, tl: int) -> torch.Tensor:
        pair = torch.cat([x, yd], dim=1)
        h, w = x.shape[-2:]
        if tl <= 0 or (h <= tl and w <= tl):
            return run_net(pair, sigma)
        ov = min(overlap, tl // 2)
        return tiled_apply(lambda p: run_net(p, sigma), pair, tl, ov, align=align, tile_batch=tile_batch)

    def score_fn(x: torch.Tensor, _y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = float(sde.std(t[:1])[0])
        return tiles.run(lambda tl: evaluate(x, sigma, tl), *x.shape[-2:])

    total = samples * int(steps)
    acc = torch.zeros_like(yd)
    for k in range(samples):
        prog = None if progress is None else (lambda i, n, k=k: progress(k * n + i, total))
        x = sample(sde, score_fn, yd, steps=steps, t_end=t_end, sampler=sampler, corrector=corrector, snr=snr,
                   corrector_steps=corrector_steps, generator=generator, progress=prog)
        acc += x.clamp(0, 1)
    out = acc / samples
    if colour_correction:
        out = colour_correct(out, yd)
    return out.clamp(0, 1).to(out_device)
