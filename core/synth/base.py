"""Shared pieces of the procedural degradations: parameter specs, strength handling, kernels.

Every degradation is a function ``fn(x, strength, generator, **params) -> y`` on ``[B,3,H,W]``
float images in 0..1 (any device), ``strength`` a ``[B]`` tensor in 0..1 (0 = untouched,
1 = the strongest the default parameters give), ``generator`` a ``torch.Generator`` on the
images' device. All random fields are drawn *before* the strength is applied, in a fixed
order, so that re-running with a re-seeded generator and another strength changes only the
amount of degradation, never the pattern (the intensity calibration relies on this).

Strengths above 1 ("reach"): a degradation may declare how far past its default top the same
physical model extends (:meth:`Degradation.strength_limit`, e.g. haze up to β = 8, the top of
``beta_max``'s range). The calibration uses that extension only for requested intensities
that strength 1 does not reach, so results at strengths 0..1 are unchanged.

The second physical parameter (:attr:`Degradation.sigma_param`): the parameter that moves
GenDeg's σ at fixed μ (e.g. rain streak opacity: at the same μ, fainter streaks mean more of them
and more veil, so σ falls). The joint calibration searches it per image, so the degradation
function accepts it as one float or as a ``[B]`` tensor (one value per image).

Lengths that must look the same at any resolution (blur lengths, drop sizes) are given as
fractions of the image's shorter side, or in pixels "at 512 px" and scaled by ``min(H,W)/512``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .strips import conv_rows, conv_valid, fast_len
from .ufuncs import pool

REF_SIDE = 512.0


@dataclass(frozen=True)
class Param:
    """One expert parameter: default, allowed range (inclusive) and what it means (with units)."""

    default: Any
    lo: float | None = None
    hi: float | None = None
    doc: str = ""
    choices: tuple[str, ...] | None = None
    optional: bool = False  # ``None`` allowed (meaning: drawn at random from the seed, or a proxy)


@dataclass(frozen=True)
class Degradation:
    """A registered degradation: its function, parameters and documentation."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""
    stochastic: bool = True
    uses_depth: bool = False
    discrete: bool = False  # output changes in steps (JPEG quality), calibration keeps the closest step
    per_image: bool = False  # fn codes image by image itself (own threads): gets the batch as is, any memory layout
    passes: int = 1  # strip loops one call makes on a large image (progress is counted over them)
    accepts_uint8: bool = False  # fn takes 8-bit images (0..255) and returns 8-bit results itself
    #: fn (with ``out=``) also takes 8-bit ``x`` with an 8-bit ``out``: ⌊255·y + 0.5⌋ of its result y on x / 255
    writes_8bit: bool = False
    #: largest strength the resolved parameters allow (≥ 1; see module doc); ``None`` = 1
    reach: Callable[[dict[str, Any]], float] | None = None
    #: the second physical parameter: the one that moves σ at fixed μ (monotonically), which
    #: the joint calibration searches in ``sigma_range``; it may be given per image (see module doc)
    sigma_param: str | None = None
    sigma_range: tuple[float, float] | None = None
    sigma_increasing: bool = True  # σ at fixed μ grows with the parameter (false: falls)

    @functools.cached_property
    def writes_out(self) -> bool:
        """Whether ``fn`` takes ``out=`` (writes its result there and reads ``x`` in any memory layout)."""
        return "out" in inspect.signature(self.fn).parameters

    def strength_limit(self, params: dict[str, Any]) -> float:
        """The largest strength allowed with the resolved ``params`` (1 unless the model extends further)."""
        return max(1.0, float(self.reach(params))) if self.reach is not None else 1.0

    def resolve_params(self, params: dict[str, Any] | None, batch: int | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``params``, each checked; unknown names raise :class:`InputError`.

        The :attr:`sigma_param` may be one value per image (a list or ``[B]`` tensor, ``batch``
        values, each checked); it is then returned as a ``[B]`` float32 CPU tensor.
        """
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise InputError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid parameters are: {', '.join(sorted(self.params)) or '(none)'}"
            )
        out: dict[str, Any] = {}
        for key, spec in self.params.items():
            value = params.get(key, spec.default)
            if key == self.sigma_param and isinstance(value, (list, tuple, torch.Tensor)):
                out[key] = per_image_param(self.name, key, value, spec, batch)
                continue
            out[key] = check_param(self.name, key, value, spec)
        return out


def check_param(deg: str, key: str, value: Any, spec: Param) -> Any:
    """Validate one parameter value against its spec; returns the (converted) value."""
    if value is None:
        if spec.optional:
            return None
        raise InputError(f"{deg}: parameter {key} must be set ({spec.doc})")
    if spec.choices is not None:
        if value not in spec.choices:
            raise InputError(f"{deg}: parameter {key}={value!r} is not one of {', '.join(spec.choices)}")
        return value
    if isinstance(spec.default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{deg}: parameter {key} must be true or false, got {value!r}")
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{deg}: parameter {key} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{deg}: parameter {key} must be finite, got {value!r}")
    if (spec.lo is not None and v < spec.lo) or (spec.hi is not None and v > spec.hi):
        raise InputError(f"{deg}: parameter {key}={v:g} is outside its range {spec.lo:g}..{spec.hi:g} ({spec.doc})")
    return int(round(v)) if isinstance(spec.default, int) else v


def per_image_param(deg: str, key: str, value: Any, spec: Param, batch: int | None) -> torch.Tensor:
    """One value of parameter ``key`` per image (list or tensor) -> ``[B]`` float32 CPU tensor, each checked."""
    values = value.detach().cpu().flatten().tolist() if isinstance(value, torch.Tensor) else list(value)
    if batch is not None and len(values) not in (1, batch):
        raise InputError(f"{deg}: parameter {key}: expected one value or {batch} (one per image), got {len(values)}")
    checked = [float(check_param(deg, key, v, spec)) for v in values]
    t = torch.tensor(checked, dtype=torch.float32)
    return t.expand(batch).clone() if batch is not None and t.numel() == 1 else t


def param_values(value: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """A parameter given as one float or one value per image -> ``[B]`` float32 on ``device``."""
    t = torch.as_tensor(value, dtype=torch.float32).flatten().to(device)
    return t.expand(batch) if t.numel() == 1 else t


def as_strength(strength: float | torch.Tensor, batch: int, device: torch.device, limit: float = 1.0) -> torch.Tensor:
    """A float or ``[B]`` tensor of strengths -> ``[B]`` float32 on ``device``, checked to lie in 0..``limit``."""
    s = torch.as_tensor(strength, dtype=torch.float32, device=device).flatten()
    if s.numel() == 1:
        s = s.expand(batch)
    if s.numel() != batch:
        raise InputError(f"strength: expected one value or {batch} (one per image), got {s.numel()}")
    if not torch.isfinite(s).all() or float(s.min()) < 0.0 or float(s.max()) > limit * (1 + 1e-6):
        raise InputError(f"strength must be in 0..{limit:g}, got {s.tolist()}")
    return s.contiguous()


def reach_of(spec: Param, key: str) -> Callable[[dict[str, Any]], float]:
    """A :attr:`Degradation.reach` for degradations whose strength scales parameter ``key``
    (spec ``spec``) linearly: strength may grow until strength × ``key`` is the top of its range."""
    top = float(spec.hi)

    def limit(params: dict[str, Any]) -> float:
        value = float(params[key])
        return 1.0 if value <= 0 else top / value

    return limit


def reach_min(*limits: Callable[[dict[str, Any]], float]) -> Callable[[dict[str, Any]], float]:
    """A :attr:`Degradation.reach` that is the smallest of several (e.g. :func:`reach_of` of two parameters)."""

    def limit(params: dict[str, Any]) -> float:
        return min(f(params) for f in limits)

    return limit


#: random fields of at least this many values are drawn in RANDOM_PARTS parts (see random_field)
RANDOM_SPLIT_MIN = 1 << 17
RANDOM_PARTS = 4


def random_field(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, *, normal: bool = False,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A field of U(0, 1) (or N(0, 1) with ``normal``) values drawn from ``generator``.

    Torch's CPU random kernels run on one core (one generator, one sequence). Large CPU fields
    are therefore drawn in ``RANDOM_PARTS`` contiguous parts, each from its own generator
    seeded from ``generator``, filled in parallel threads when torch may use several (torch
    releases the GIL inside them). The number of parts is fixed, so the values depend only on
    the seed, never on the number of threads. Elsewhere (GPU, small fields): one draw.

    Normal fields on the CPU come from :func:`table_normals` (16 random bits per value, 2.3×
    faster than ``normal_``, whose Mersenne Twister dominates the noise of a 512² image).
    """
    t = torch.empty(shape, device=device, dtype=dtype)
    n = t.numel()
    cpu_normal = normal and t.device.type == "cpu"
    if t.device.type != "cpu" or n < RANDOM_SPLIT_MIN:
        if cpu_normal:
            table_normals(t.view(-1), int(torch.randint(0, 2**62, (1,), generator=generator)))
            return t
        return t.normal_(generator=generator) if normal else t.uniform_(generator=generator)
    seeds = torch.randint(0, 2**62, (RANDOM_PARTS,), generator=generator).tolist()
    flat = t.view(-1)
    bounds = [n * j // RANDOM_PARTS for j in range(RANDOM_PARTS + 1)]

    def fill(j: int) -> None:
        part = flat[bounds[j] : bounds[j + 1]]
        if cpu_normal:
            table_normals(part, seeds[j])
            return
        g = torch.Generator().manual_seed(seeds[j])
        part.normal_(generator=g) if normal else part.uniform_(generator=g)

    workers = min(RANDOM_PARTS, torch.get_num_threads())
    if workers > 1:
        list(pool().map(fill, range(RANDOM_PARTS)))
    else:
        for j in range(RANDOM_PARTS):
            fill(j)
    return t


#: levels of :func:`table_normals` (one per value of 16 random bits)
NORMAL_LEVELS = 1 << 16
#: values per block of :func:`table_normals` (a multiple of 4: whole 64-bit draws)
NORMAL_BLOCK = 1 << 20
_NORMAL_TABLES: dict[torch.dtype, torch.Tensor] = {}


def normal_table(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[65536]`` standard normal values of equal probability: the N(0, 1) quantiles at the
    midpoints of 65536 equal-probability bins, ``√2·erfinv(2p − 1)`` with ``p = (k + ½)/65536``,
    rescaled to unit variance (their mean is 0 by symmetry). Values within ±4.33: each level
    stands for its bin, the outermost for the tail beyond 3.97 (probability 1.5·10⁻⁵ a side)."""
    table = _NORMAL_TABLES.get(dtype)
    if table is None:
        p = (torch.arange(NORMAL_LEVELS, dtype=torch.float64) + 0.5) / NORMAL_LEVELS
        z = math.sqrt(2.0) * torch.special.erfinv(2.0 * p - 1.0)
        table = _NORMAL_TABLES[dtype] = (z / z.square().mean().sqrt()).to(dtype)
    return table


def table_normals(out: torch.Tensor, seed: int) -> torch.Tensor:
    """Fill the contiguous 1-D CPU tensor ``out`` with standard normal values (:func:`normal_table`
    indexed by 16-bit words of NumPy's SFC64 generator seeded with ``seed``, 4 values per
    64-bit draw); the same seed gives the same values. Returns ``out``."""
    n = out.numel()
    bits, table = np.random.SFC64(seed), normal_table(out.dtype)
    for start in range(0, n, NORMAL_BLOCK):  # bounded temporaries (the stream continues from block to block)
        m = min(NORMAL_BLOCK, n - start)
        words = bits.random_raw(-(-m // 4)).astype("<u8", copy=False).view("<u2")[:m]
        torch.index_select(table, 0, torch.from_numpy(words.astype(np.int32)), out=out[start : start + m])
    return out


def scale_of(x: torch.Tensor) -> float:
    """Pixels per "pixel at 512 px": ``min(H, W) / 512``."""
    return min(x.shape[-2:]) / REF_SIDE


def round_8bit_into(y: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``dst`` (uint8) ← ``floor(255·clamp(y, 0, 1) + 0.5)``, multiply then add in ``y``'s float
    type (the rounding of :func:`~..io.tensor_to_pil`); ``y`` is overwritten."""
    return dst.copy_(y.clamp_(0, 1).mul_(255.0).add_(0.5))  # the cast truncates: floor of values ≥ 0.5


def bview(v: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B,1,1,1]`` for broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (hi - lo) + lo


def fall_direction(
    batch: int, generator: torch.Generator, device: torch.device, angle: float | None, angle_range: float
) -> torch.Tensor:
    """Per-image direction of falling rain/snow as a kernel angle in radians, ``[B]`` (π/2 = straight down).

    ``angle`` (degrees from vertical) fixes it; else each image draws one in ±``angle_range``.
    The draw always happens, so the generator stream is the same either way.
    """
    a_rand = (torch.rand((batch,), generator=generator, device=device) * 2 - 1) * angle_range
    deg = torch.full_like(a_rand, float(angle)) if angle is not None else a_rand
    return (90.0 - deg) * math.pi / 180.0


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma weights on ``[B,3,H,W]`` -> ``[B,1,H,W]``."""
    w = torch.tensor([0.2126, 0.7152, 0.0722], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect borders), ``sigma`` in pixels; identity for ``sigma`` < 0.3.

    Exact sampled-Gaussian weights (radius ⌈3σ⌉), computed as a sum of shifted copies per
    axis (much faster on CPU than a depthwise convolution). For wide blurs of smooth fields
    see :func:`smooth_blur`.
    """
    if sigma < 0.3:
        return x
    radius = max(1, int(math.ceil(3.0 * sigma)))
    radius = min(radius, max(1, min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    weights = (k / k.sum()).tolist()
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    h, w = x.shape[-2:]
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    acc = y[..., :, 0:w] * weights[0]
    for i in range(1, len(weights)):
        acc.add_(y[..., :, i : i + w], alpha=weights[i])
    y = F.pad(acc, (0, 0, radius, radius), mode=mode)
    acc = y[..., 0:h, :] * weights[0]
    for i in range(1, len(weights)):
        acc.add_(y[..., i : i + h, :], alpha=weights[i])
    return acc


def box_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """Mean of every ``f × f`` block (``F.avg_pool2d(x, f, ceil_mode=True)``: partial blocks at the
    right and bottom edges are averaged over their pixels). Sums of strided views when ``f``
    divides both sides (≈ 5× faster than ``avg_pool2d`` on the CPU), equal up to rounding."""
    h, w = x.shape[-2:]
    if h % f or w % f:
        return F.avg_pool2d(x, f, ceil_mode=True)
    rows = x[..., 0::f, :].clone()
    for i in range(1, f):
        rows.add_(x[..., i::f, :])
    out = rows[..., 0::f].clone()
    for j in range(1, f):
        out.add_(rows[..., j::f])
    return out.mul_(1.0 / (f * f))


def smooth_blur(x: torch.Tensor, sigma: float, upsample: bool = True) -> torch.Tensor:
    """Gaussian blur of σ ``sigma`` pixels computed at a reduced resolution (for σ ≥ 3 px).

    The image is box-downsampled by ``f = ⌊σ/1.5⌋``, blurred there with the σ that makes the
    total (box + Gaussian + bilinear upsampling) variance equal σ², and upsampled bilinearly.
    Within ~1 % of :func:`gaussian_blur` on natural images; many times faster for wide blurs.
    ``upsample=False`` returns the reduced-resolution result (for callers that resample anyway).
    """
    f = int(sigma / 1.5)
    h, w = x.shape[-2:]
    if f < 2 or min(h, w) < 4 * f:
        return gaussian_blur(x, sigma)
    small = box_downsample(x, f)
    var = sigma * sigma - (f * f - 1) / 12.0 - f * f / 6.0
    small = gaussian_blur(small, math.sqrt(max(var, 0.0)) / f)
    if not upsample:  # the caller samples it bilinearly itself (same frame, align_corners=False)
        return small
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def render_sparse(seeds: torch.Tensor, kernels: torch.Tensor, pad_mode: str = "reflect", rel_threshold: float = 1e-4,
                  budget: int = 6_000_000) -> torch.Tensor:
    """Same result as :func:`fft_conv` for sparse ``seeds`` (mostly zeros), by splatting kernels.

    Each non-zero seed adds its kernel (taps above ``rel_threshold`` × the kernel's peak; the
    dropped tails change the result by less than that fraction of a seed's peak) at its
    position. Falls back to :func:`fft_conv` when seeds × taps exceeds ``budget`` (dense seeds).
    """
    h, w = seeds.shape[-2:]
    p = kernels.shape[-1] // 2
    sp = F.pad(seeds, (p, p, p, p), mode=border_mode(pad_mode, p, h, w)) if p > 0 else seeds
    return render_sparse_padded(sp, kernels, rel_threshold, budget)


def render_sparse_padded(sp: torch.Tensor, kernels: torch.Tensor, rel_threshold: float = 1e-4,
                         budget: int = 6_000_000) -> torch.Tensor:
    """:func:`render_sparse` of seeds already padded by ``K // 2`` on every side (``[B,C,h+2p,w+2p]``
    -> ``[B,C,h,w]``); falls back to the FFT ('valid' part) when seeds × taps exceeds ``budget``."""
    b, c = sp.shape[:2]
    k = kernels.shape[-1]
    p = k // 2
    hp, wp = sp.shape[-2:]
    h, w = hp - 2 * p, wp - 2 * p
    kern = kernels if kernels.ndim == 4 else kernels[:, None].expand(b, c, k, k)
    flat = sp.reshape(b * c, hp * wp)
    counts = (flat != 0).sum(dim=1).tolist()
    taps = (kern.reshape(b * c, -1) > rel_threshold * kern.reshape(b * c, -1).amax(dim=1, keepdim=True))
    ntaps = taps.sum(dim=1).tolist()
    if sum(n * t for n, t in zip(counts, ntaps, strict=True)) > budget:
        return conv_valid(sp, kernels)
    out = torch.zeros(b * c, h * w, device=sp.device, dtype=sp.dtype)
    t = torch.arange(k, device=sp.device)
    for i in range(b * c):
        if counts[i] == 0:
            continue
        pos = flat[i].nonzero().squeeze(1)
        val = flat[i, pos]
        tap = taps[i].view(k, k).nonzero()  # [T,2] (jy, jx)
        wt = kern.reshape(b * c, k, k)[i, tap[:, 0], tap[:, 1]]
        # output (y, x) = padded seed (my, mx) + tap (jy, jx) − 2p  (a true convolution)
        yy = (pos // wp)[:, None] + (t[tap[:, 0]] - 2 * p)[None, :]
        xx = (pos % wp)[:, None] + (t[tap[:, 1]] - 2 * p)[None, :]
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        contrib = val[:, None] * wt[None, :]
        out[i].index_add_(0, (yy * w + xx)[ok], contrib[ok])
    return out.view(b, c, h, w)


def fft_conv(x: torch.Tensor, kernels: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
    """Convolve each image with its own kernel: ``x`` ``[B,C,H,W]``, ``kernels`` ``[B,K,K]`` (K odd),
    or ``[B,C,K,K]`` for one kernel per image and channel.

    True convolution (the kernel is not flipped by the caller), output size = input size,
    borders extended by ``pad_mode`` (reflect, falling back to replicate for tiny images).
    Computed with real FFTs over the padded image, batched over images and channels.
    """
    h, w = x.shape[-2:]
    p = kernels.shape[-1] // 2
    # FFT sizes with only small prime factors are much faster; the extra zeros only touch
    # outputs that are cropped away (the linear part starts at index 2p ≥ K − 1)
    return conv_valid(F.pad(x, (p, p, p, p), mode=border_mode(pad_mode, p, h, w)) if p > 0 else x, kernels)


def border_mode(pad_mode: str, p: int, h: int, w: int) -> str:
    """``pad_mode``, or ``replicate`` where a reflection of ``p`` pixels does not fit an ``h × w`` image."""
    return pad_mode if (pad_mode != "reflect" or (p < h and p < w)) else "replicate"


def stationary_conv(seeds: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Render i.i.d. random seed maps ``[B,C,H,W]`` with kernels ``[B,C,K,K]`` (or ``[B,K,K]``).

    For random particle fields (rain streaks, snow flakes) the frame is a window on an
    unbounded, statistically stationary field. When ``H`` and ``W`` are fast FFT sizes the
    convolution is circular (particles leaving one edge enter at the opposite one: the same
    per-pixel statistics as seeds beyond the frame, with no padding and a power-of-two FFT);
    otherwise it is :func:`fft_conv` with reflected borders.
    """
    h, w = seeds.shape[-2:]
    k = kernels.shape[-1]
    if k > min(h, w) or fast_len(h) != h or fast_len(w) != w:
        return fft_conv(seeds, kernels)
    kf = torch.fft.rfft2(kernels.to(seeds.dtype), s=(h, w))
    yf = torch.fft.rfft2(seeds)
    yf.mul_(kf if kernels.ndim == 4 else kf[:, None])
    y = torch.fft.irfft2(yf, s=(h, w))
    p = k // 2
    return torch.roll(y, shifts=(-p, -p), dims=(-2, -1))  # kernel centre, not its corner, on the seed


def stationary_rows(seeds: torch.Tensor, kernels: torch.Tensor, y0: int, y1: int) -> torch.Tensor:
    """Rows ``y0..y1−1`` of :func:`stationary_conv` (the whole result when they are all rows)."""
    h, w = seeds.shape[-2:]
    if y0 == 0 and y1 == h:
        return stationary_conv(seeds, kernels)
    k = kernels.shape[-1]
    circular = not (k > min(h, w) or fast_len(h) != h or fast_len(w) != w)
    return conv_rows(seeds, kernels, y0, y1, "circular" if circular else border_mode("reflect", k // 2, h, w))


def segment_kernels(length: torch.Tensor, angle: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased line-segment ("capsule") kernels, one per row, normalised to sum 1.

    ``length``: segment length in pixels (``[B]``), ``angle``: direction in radians (0 = along
    +x, π/2 = straight down), ``width``: Gaussian cross-section std in pixels; ``size`` odd.
    Value at a pixel = exp(−d²/2w²) with d its distance to the centred segment.
    """
    r = size // 2
    t = torch.arange(-r, r + 1, device=length.device, dtype=torch.float32)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    dx, dy = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    half = (length / 2).view(-1, 1, 1)
    along = torch.maximum(torch.minimum(xx * dx + yy * dy, half), -half)
    px, py = along * dx, along * dy
    d2 = (xx - px) ** 2 + (yy - py) ** 2
    w = width.clamp_min(0.3).view(-1, 1, 1)
    k = torch.exp(-0.5 * d2 / w**2)
    return k / k.sum(dim=(-2, -1), keepdim=True)


def streak_area(length: float, width: float) -> float:
    """Area in px² of a :func:`segment_kernels` streak of peak 1: ``∫ exp(−d²/2w²)`` over the plane,
    ``√(2π)·w·L + 2π·w²`` (the width clamped at 0.3 px as there). Seed densities are scaled by the
    ratio of this area at 512 px to the area at the image's size, so particles cover the same
    fraction of the frame at any resolution."""
    w = max(0.3, width)
    return math.sqrt(2 * math.pi) * w * length + 2 * math.pi * w * w


def odd(n: float) -> int:
    """Smallest odd integer ≥ ``n`` (at least 1)."""
    m = max(1, int(math.ceil(n)))
    return m if m % 2 == 1 else m + 1


def screen(base: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Screen blend ``1 − (1 − a)(1 − b)`` (brightens, never exceeds 1)."""
    return 1.0 - (1.0 - base) * (1.0 - layer)
