"""Low light: exposure drop in linear light plus sensor noise, in the style of "Unprocessing".

1. Inverse gamma: ``L = J^gamma`` (display values to linear light; gamma 2.2).
2. Exposure drop by ``strength · stops_max`` stops: ``L' = L · 2^(−strength·stops_max)``.
3. Sensor noise with the heteroscedastic model of Brooks et al. (CVPR 2019, "Unprocessing
   Images for Learned Raw Denoising"): variance ``λ_shot·L' + λ_read`` where the read noise
   follows their log-linear fit to real sensors,
   ``log λ_read = 2.18·log λ_shot + 1.20 + N(0, 0.26)``. Here ``λ_shot = strength·shot_max``
   (default 0.012, the top of their range), the ``N(0, 0.26)`` term is drawn per image.
4. Clip to 0..1 and re-apply the gamma: ``I = L_noisy^(1/gamma)``.

Uneven light (``falloff``, the second parameter): a scene in low light is lit unevenly (a lamp,
a street light), so the exposure drop varies over the frame. A point light above a point drawn
uniformly in the frame (per image), at a height of one shorter side ``h`` above it, lights the
scene with the inverse-square law: ``ρ(p) = log₂(1 + r²/h²)`` stops darker at distance ``r``
from that point. The drop is ``strength·stops_max·((1 − falloff) + falloff·ρ(p)/mean(ρ))``
stops: its mean over the frame is ``strength·stops_max`` whatever the falloff; 0 = even
exposure drop, 1 = all of it from the fall-off (no drop under the light). At the same μ, more
fall-off concentrates the darkening, so σ grows (the exposure drop alone gives σ = μ × the
photo's contrast, below real low-light data; sensor noise is averaged away by GenDeg's
256×256 measure). The map is evaluated at every pixel centre (two passes over
a one-channel map: the squared distance is a row term plus a column term), its mean over the frame
exactly (by blocks of rows).

For intensities that strength 1 does not reach, the calibration continues up to the top of
``stops_max``'s range (12 stops); the noise stays at its strength-1 level (the top of Brooks et
al.'s range by default).
"""

from __future__ import annotations

import math

import torch

from .base import Degradation, Param, param_values, random_field, reach_of
from .strips import is_split, strips
from .ufuncs import exp_, log_, sqrt_

#: default share of the exposure drop that follows the light's fall-off
FALLOFF = 0.7

PARAMS = {
    "stops_max": Param(5.0, 0.0, 12.0, "exposure drop at strength 1, in stops (factor 2^-stops)"),
    "gamma": Param(2.2, 1.0, 3.0, "display gamma used to go to linear light and back"),
    "shot_max": Param(0.012, 0.0, 0.1, "shot-noise gain λ_shot at strength 1 (linear units; Brooks et al.: 1e-4..0.012)"),
    "noise": Param(True, doc="add shot + read noise (false: exposure drop only)"),
    "falloff": Param(FALLOFF, 0.0, 1.0, "uneven light: share of the exposure drop that follows a point light's "
                     "inverse-square fall-off (the second parameter: at the same mu, more fall-off gives more sigma)"),
}

#: the range in which the joint calibration searches ``falloff`` to set σ at a μ
SIGMA_RANGE = (0.0, 1.0)
#: height of the light above the scene, as a fraction of the shorter side
LIGHT_HEIGHT = 1.0
#: floors of the display value, the exponent and the linear value in the exp/log powers (see ``rows``)
TINY_DISPLAY, MIN_EXPONENT, TINY_LINEAR = 1e-8, -80.0, 1e-30


def light_position(b: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[B,2]``: the point under each image's light, as fractions (row, column) of the frame."""
    return torch.rand((b, 2), generator=generator, device=device)


def falloff_rows(pos: torch.Tensor, h: int, w: int, y0: int, y1: int) -> torch.Tensor:
    """``[B,1,y1−y0,W]``: ``ln(1 + r²/LIGHT_HEIGHT²)`` at the centres of rows ``y0..y1−1``, ``r`` the
    distance (in shorter sides) to the point under the light at ``pos`` (``ln 2 ×`` the stops of
    fall-off); two passes over the rows (the squared distance is a sum of a row and a column term)."""
    side = min(h, w)
    dev = pos.device
    ys = (torch.arange(y0, y1, device=dev, dtype=torch.float32) + 0.5) / side
    xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / side
    dy2 = (ys.view(1, -1) - (pos[:, 0:1] * (h / side))).square_().div_(LIGHT_HEIGHT**2).add_(1.0)  # [B,rows]
    dx2 = (xs.view(1, -1) - (pos[:, 1:2] * (w / side))).square_().div_(LIGHT_HEIGHT**2)  # [B,W]
    return log_(torch.add(dy2.unsqueeze(2), dx2.unsqueeze(1))).unsqueeze(1)  # (log is vectorised, log1p is not)


def falloff_mean(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B]``: the mean of :func:`falloff_rows` over the frame (by blocks of rows: bounded memory)."""
    step = max(1, (1 << 20) // max(w, 1))
    total = sum(row_sums(falloff_rows(pos, h, w, y0, min(h, y0 + step))) for y0 in range(0, h, step))
    return (total / (h * w)).float()


def row_sums(q: torch.Tensor) -> torch.Tensor:
    """``[B]`` float64 sums of ``[B,1,rows,W]``, in an order that does not depend on the thread count
    (each row summed by one thread, then the row sums)."""
    return q.sum(dim=-1).double().sum(dim=(1, 2))


def low_light(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    stops_max: float = 5.0,
    gamma: float = 2.2,
    shot_max: float = 0.012,
    noise: bool = True,
    falloff: float | torch.Tensor = FALLOFF,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dark, noisy ``[B,3,H,W]`` 0..1 from clean ``x``; ``strength`` ``[B]`` in 0..1; ``falloff`` one value or ``[B]``.

    ``out``: where the result is written (``[B,3,H,W]``, standard layout; ``x`` is then read in
    any memory layout, e.g. a channels-last ComfyUI image, without a copy).
    """
    b, _, h, w = x.shape
    z_read = torch.randn((b,), generator=generator, device=x.device)
    add_noise = noise and shot_max > 0
    n = random_field(tuple(x.shape), generator, x.device, normal=True, dtype=x.dtype) if add_noise else None
    fo = param_values(falloff, b, x.device)
    pos = light_position(b, generator, x.device)
    even = bool((fo == 0).all())
    if add_noise:
        shot = strength.clamp(max=1.0) * shot_max  # past strength 1 only the exposure drop grows
        log_read = 2.18 * torch.log(shot.clamp_min(1e-12)) + 1.20 + 0.26 * z_read
        read = torch.where(shot > 0, torch.exp(log_read), torch.zeros_like(shot))

    ln2 = math.log(2.0)
    ln_gain = (strength * (-stops_max * ln2)).tolist()  # per image, Python floats: one fused pass per step
    shot_l, read_l = (shot.tolist(), read.tolist()) if add_noise else ([], [])
    # the drop in stops, (1 − falloff) + falloff·ρ/mean(ρ) times the mean drop, is affine in the
    # fall-off's q = ln(1 + r²/h²): ln of the exposure factor = a + c·q per image
    stops = strength * stops_max
    q_whole = None
    if even:
        max_stops = float(stops.max())
    else:
        split = is_split(h, w)
        q_whole = None if split else falloff_rows(pos, h, w, 0, h)  # the whole map once (mean and drop)
        q_mean = (falloff_mean(pos, h, w) if split else (row_sums(q_whole) / (h * w)).float()).clamp_min(1e-6)
        a_l = (stops * (1.0 - fo) * -ln2).tolist()
        c_l = (stops * fo * -ln2 / q_mean).tolist()
        # the largest q is at the corner farthest from the point under the light
        side = min(h, w)
        far2 = ((torch.maximum(pos[:, 0], 1 - pos[:, 0]) * h / side) ** 2
                + (torch.maximum(pos[:, 1], 1 - pos[:, 1]) * w / side) ** 2) / LIGHT_HEIGHT**2
        max_stops = float((stops * ((1.0 - fo) + fo * torch.log1p(far2) / q_mean)).max())
    # the exponent's floor only matters where an uneven drop reaches past ~30 stops
    floor_exponent = gamma * math.log(TINY_DISPLAY) - max_stops * ln2 < MIN_EXPONENT

    def rows(xr: torch.Tensor, nr: torch.Tensor | None, y0: int, y1: int, dst: torch.Tensor | None) -> torch.Tensor:
        drop = None
        if not even:  # ln of the exposure factor, [B,1,rows,W]
            # (a whole image's map was computed for its mean: turned into the drop in place, once)
            drop = falloff_rows(pos, h, w, y0, y1) if q_whole is None or (y0, y1) != (0, h) else q_whole
            for i in range(b):
                torch.add(torch.tensor(a_l[i]), drop[i], alpha=c_l[i], out=drop[i])
        if not add_noise:  # (J^γ·g)^(1/γ) = J·g^(1/γ): one product per value (g ≤ 1, nothing to clip)
            res = xr.clamp(0, 1) if dst is None else torch.clamp(xr, 0, 1, out=dst)
            for i in range(b):
                if even:
                    res[i].mul_(math.exp(ln_gain[i] / gamma))
                else:
                    res[i].mul_(exp_(drop[i].mul(1.0 / gamma)))
            return res
        # powers as exp(γ·ln J): a non-integer pow costs 4-8× a log and an exp on the CPU (NumPy's
        # SIMD log and exp on the CPU, :mod:`.ufuncs`: 2-3× torch's there). The
        # exposure drop folds into the exponent (L' = exp(γ·ln J − stops·ln 2)). Floors keep the
        # vectorised log/exp off their slow paths (log 0, subnormal results), changing values by < 1e-7
        lin = log_(xr.clamp(TINY_DISPLAY, 1) if dst is None else torch.clamp(xr, TINY_DISPLAY, 1, out=dst))
        std = torch.empty_like(lin[0])  # one image's noise std, reused
        for i in range(b):  # per image and channel, with scalars: one pass per step, no broadcasting
            li = lin[i]
            if even:
                torch.add(torch.tensor(ln_gain[i]), li, alpha=gamma, out=li)
            else:
                for c in range(li.shape[0]):
                    torch.add(drop[i, 0], li[c], alpha=gamma, out=li[c])
            if floor_exponent:
                li.clamp_(min=MIN_EXPONENT)
            exp_(li)
            sqrt_(torch.mul(li, shot_l[i], out=std).add_(read_l[i]))  # shot·L' + read
            li.addcmul_(nr[i], std)
        return exp_(log_(lin.clamp_(TINY_LINEAR, 1)).mul_(1.0 / gamma))

    if not is_split(h, w):
        return rows(x, n, 0, h, out)
    if out is None and n is not None:  # large images: in place over the noise field, strip by strip
        for y0, y1 in strips(h, w):
            n[..., y0:y1, :] = rows(x[..., y0:y1, :], n[..., y0:y1, :], y0, y1, None)
        return n
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    for y0, y1 in strips(h, w):
        rows(x[..., y0:y1, :], None if n is None else n[..., y0:y1, :], y0, y1, out[..., y0:y1, :])
    return out


DEGRADATION = Degradation("low_light", low_light, PARAMS, __doc__ or "", reach=reach_of(PARAMS["stops_max"], "stops_max"),
                          sigma_param="falloff", sigma_range=SIGMA_RANGE)

#: Brooks et al.'s published range of λ_shot (for documentation and tests).
SHOT_RANGE = (1e-4, 0.012)
LOG_READ_SLOPE, LOG_READ_INTERCEPT, LOG_READ_STD = 2.18, 1.20, 0.26
