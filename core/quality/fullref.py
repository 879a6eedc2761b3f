"""Full-reference pixel metrics: PSNR, SSIM, MS-SSIM (no weights).

All take ``reference`` and ``image`` as ``[B,C,H,W]`` floats in 0..1 (data range 1) on any
device and return ``[B]``: one value per image (channels averaged for SSIM/MS-SSIM, pooled
for PSNR's MSE). A single reference is compared against every image of a batch.

* PSNR = 10·log10(1 / MSE); ``inf`` for identical images. Optional BT.601 Y channel and
  border crop, as restoration papers (BasicSR) report it.
* SSIM: Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, population (co)variances,
  mean over the "valid" region (5 pixels from each border dropped). This is exactly
  scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)``: its window has radius
  ``int(3.5·σ + 0.5) = 5`` and it crops the same 5 pixels before averaging.
* MS-SSIM (Wang et al. 2003): 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2×2 average pooling between scales (a replicate pad of one pixel on the top/left when a
  side is odd), contrast-structure terms at scales 1-4 and full SSIM at scale 5, negative
  terms clipped to 0; per channel, then averaged. Same as ``piq.multi_scale_ssim``.
  Images need a side of at least (11 − 1)·2⁴ + 1 = 161 pixels.

How the checked entry points (:func:`psnr`, :func:`ssim`, :func:`ms_ssim`) compute: they walk
each image in tiles of rows (and of columns when the image is wide) plus the 10-pixel halo
the 11×11 window needs, sized to stay in the CPU cache (:data:`CPU_TILE_ELEMENTS`; large tiles
on a GPU). A tile is read once: its pixels are checked (finite, 0..1), converted to float32
(and to Y), its five Gaussian-filtered moments are formed with separable 11-tap passes into
reused buffers, and its sums are added to float64 totals. The MS-SSIM pyramid is built the
same way, tile by tile (each level is a quarter of the one above). PSNR checks each CPU image
whole in one pass (its tiles are read twice anyway), then sums tile by tile. Memory is the inputs, the
pyramid (a third of one image in float32) and a few tile buffers, whatever the image size;
time is linear in the pixel count. The results equal the whole-image computation to float
rounding: :func:`ssim_values` / :func:`ms_ssim_values` are that computation, the
differentiable cores the training losses use (no validation, autograd through them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image import check_value_range, flat_in_memory_order
from .common import check_pair, crop_border, rgb_to_y

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

#: Float32 elements per moment map of one SSIM tile on the CPU (five maps and two filter
#: stages then fit a 2 MB L2 cache); PSNR tiles hold 4× as many. Measured in bench/quality.py.
CPU_TILE_ELEMENTS = 1 << 16
#: The same on a GPU: big tiles, few kernel launches, memory still bounded (about 100 MB a buffer).
DEVICE_TILE_ELEMENTS = 1 << 22
#: Narrowest tile interior (output rows or columns) next to the 10-pixel halo.
MIN_TILE = 32

Progress = Callable[[int, int], None]
_HALO = SSIM_WINDOW - 1


# --- checked entry points ----------------------------------------------------------------


def psnr(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0,
         progress: Progress | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1), ``[B]``; ``inf`` where the images are identical.

    ``y_channel`` scores BT.601 luma only (see :data:`.common.Y_WEIGHTS`); ``crop`` removes
    that many pixels from every border first. ``progress(i, n)`` is called after each tile.
    """
    ref, img = _prepare(reference, image, y_channel, crop)
    sse = _sse(ref, img, _Ticker(progress, _sse_tiles(ref)))
    _check_values(ref, img)
    mse = sse / (ref.c * ref.h * ref.w)
    return (10.0 * torch.log10(1.0 / mse)).float()


def ssim(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0,
         progress: Progress | None = None) -> torch.Tensor:
    """Structural similarity, ``[B]`` in [-1, 1] (1 for identical images); see the module doc."""
    ref, img = _prepare(reference, image, y_channel, crop)
    _check_ssim_size(ref.h, ref.w, SSIM_WINDOW, "SSIM")
    s, _ = _ssim_sums(ref, img, _Ticker(progress, _ssim_tiles(ref.b, ref.c, ref.h, ref.w, ref.tile_elements)), want_ssim=True, want_cs=False)
    _check_values(ref, img)
    return (s / ((ref.h - _HALO) * (ref.w - _HALO))).mean(dim=1).float()


def ms_ssim(reference: torch.Tensor, image: torch.Tensor, *, y_channel: bool = False, crop: int = 0,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS, progress: Progress | None = None) -> torch.Tensor:
    """Multi-scale SSIM, ``[B]`` in 0..1 (1 for identical images); see the module doc."""
    ref, img = _prepare(reference, image, y_channel, crop)
    levels = len(weights)
    _check_ssim_size(ref.h, ref.w, ms_ssim_min_side(levels), f"MS-SSIM ({levels} scales)")
    tick = _Ticker(progress, _ms_ssim_tiles(ref, levels))
    terms = []
    for level in range(levels):
        last = level == levels - 1
        s, cs = _ssim_sums(ref, img, tick, want_ssim=last, want_cs=not last)
        terms.append((s if last else cs) / ((ref.h - _HALO) * (ref.w - _HALO)))  # [B,C] means
        if level == 0:
            _check_values(ref, img)
        if not last:
            ref, img = _downsample(ref, tick), _downsample(img, tick)
    return _combine(terms, weights).float()


def ms_ssim_min_side(levels: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side MS-SSIM with ``levels`` scales accepts: (11 − 1)·2^(levels−1) + 1."""
    return (SSIM_WINDOW - 1) * 2 ** (levels - 1) + 1


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on data range 1 (``inf`` for 0)."""
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _check_ssim_size(h: int, w: int, min_side: int, what: str) -> None:
    if min(h, w) < min_side:
        raise InputError(f"{what} needs images of at least {min_side}x{min_side} pixels, got {w}x{h}")


# --- whole-image, differentiable cores (training losses) ---------------------------------


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (centred), as used separably by SSIM."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid region only (no padding), per channel."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map) over the valid region, ``[B,C,h,w]``."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    # One grouped filter pass for the five moments.
    c = x.shape[1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(stack, g).split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return lum * cs, cs


def ssim_values(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM ``[B]`` of two float ``[B,C,H,W]`` batches, without validation (differentiable; training losses)."""
    g = gaussian_window(dtype=x.dtype, device=x.device)
    s, _ = _ssim_maps(x, y, g)
    return s.double().mean(dim=(2, 3)).mean(dim=1).float()


def ms_ssim_values(x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM ``[B]`` of two float ``[B,C,H,W]`` batches, without validation (differentiable; training losses)."""
    levels = len(weights)
    g = gaussian_window(dtype=x.dtype, device=x.device)
    terms = []
    for level in range(levels):
        if level > 0:
            pad = max(x.shape[2] % 2, x.shape[3] % 2)
            if pad:
                x = F.pad(x, (pad, 0, pad, 0), mode="replicate")
                y = F.pad(y, (pad, 0, pad, 0), mode="replicate")
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        s, cs = _ssim_maps(x, y, g)
        terms.append((s if level == levels - 1 else cs).double().mean(dim=(2, 3)))  # [B,C]
    return _combine(terms, weights).float()


def _combine(terms: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """MS-SSIM from the per-level ``[B,C]`` means: Π relu(term)^weight, averaged over channels."""
    stacked = torch.relu(torch.stack(terms, dim=0))  # [L,B,C]
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device).view(-1, 1, 1)
    return torch.prod(stacked**w, dim=0).mean(dim=1)


# --- tiled engine --------------------------------------------------------------------------


class _Source:
    """One batch of images read tile by tile: float32, optional Y, and the pixel check on the way.

    ``t`` is ``[B,C,H,W]`` (any float dtype, layout or device; a reference expanded over the
    batch is read and checked once). ``name`` turns the check on; the extremes of every tile
    read are kept and :meth:`check` raises the usual one-line error.
    """

    def __init__(self, t: torch.Tensor, *, y_channel: bool = False, name: str | None = None) -> None:
        self.t = t.detach()
        self.y = y_channel and t.shape[1] == 3
        self.c = 1 if self.y else t.shape[1]
        self.b, self.h, self.w = t.shape[0], t.shape[2], t.shape[3]
        self.name = name
        self.shared = t.shape[0] > 1 and t.stride(0) == 0
        # NumPy's min/max are several times faster than torch's on the CPU and read any strides
        self._numpy = self.t.device.type == "cpu" and self.t.dtype in (torch.float32, torch.float64, torch.float16)
        self._lo: list = []
        self._hi: list = []

    @property
    def tile_elements(self) -> int:
        return CPU_TILE_ELEMENTS if self.t.device.type == "cpu" else DEVICE_TILE_ELEMENTS

    def check_whole(self, b: int) -> bool:
        """Check image ``b`` in one pass over its memory (CPU, a dense layout): fewer, longer reads
        than tile by tile where a tile is read twice anyway (PSNR). False: let its tiles check it."""
        if self.name is None or (self.shared and b > 0):
            return True  # nothing (more) to check
        flat = flat_in_memory_order(self.t[b])
        if flat is None or flat.device.type != "cpu":
            return False
        lo, hi = torch.aminmax(flat)  # one pass (NumPy's min and max are two); NaN propagates
        self._lo.append(lo.item() if self._numpy else lo)
        self._hi.append(hi.item() if self._numpy else hi)
        return True

    def tile(self, b: int, r0: int, r1: int, c0: int = 0, c1: int | None = None, *, check: bool = True) -> torch.Tensor:
        """Rows ``r0:r1``, columns ``c0:c1`` of image ``b`` as float32 ``[C,h,w]`` (a view when it can be);
        ``check=False``: the image was checked whole."""
        x = self.t[b, :, r0:r1, c0:c1]
        if check and self.name is not None and (b == 0 or not self.shared):
            a = x.numpy() if self._numpy else x
            self._lo.append(a.min())
            self._hi.append(a.max())
        x = x.float()
        return rgb_to_y(x[None])[0] if self.y else x

    def check(self) -> None:
        """Raise :class:`InputError` if any pixel read so far was NaN, infinite or outside 0..1."""
        if self.name is not None and self._lo:
            if self._numpy:  # NumPy's min/max propagate NaN, as torch's do
                lo, hi = float(np.min(self._lo)), float(np.max(self._hi))
            else:
                lo, hi = float(torch.stack(self._lo).min()), float(torch.stack(self._hi).max())
            check_value_range(lo, hi, self.name)
            self._lo, self._hi = [], []


class _Ticker:
    """Counts finished tiles and reports them to a ``progress(i, n)`` callable."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


def _prepare(reference: torch.Tensor, image: torch.Tensor, y_channel: bool, border: int) -> tuple[_Source, _Source]:
    ref, img = check_pair(reference, image, values=False)
    if border:
        for t, name in ((ref, "reference"), (img, "image")):
            _check_border(t, border, name)
    return (_Source(crop_border(ref, border), y_channel=y_channel, name="reference"),
            _Source(crop_border(img, border), y_channel=y_channel, name="image"))


def _check_border(t: torch.Tensor, border: int, name: str) -> None:
    """Check the pixels ``crop`` removes (the tiles only read the rest), so no bad value goes unnoticed."""
    h, w = t.shape[-2:]
    if 2 * border >= min(h, w):
        crop_border(t, border)  # raises the usual message
    t = t[:1] if t.stride(0) == 0 else t
    parts = (t[..., :border, :], t[..., h - border:, :], t[..., border:h - border, :border], t[..., border:h - border, w - border:])
    ext = torch.stack([torch.stack(torch.aminmax(p.detach())) for p in parts])  # [4, (min, max)]; NaN propagates
    check_value_range(float(ext[:, 0].min()), float(ext[:, 1].max()), name)


def _check_values(*sources: _Source) -> None:
    for s in sources:
        s.check()


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, max(step, 1))]


# PSNR: tiles of whole rows, no halo.


def _sse_rows(src: _Source) -> int:
    return min(src.h, max(1, 4 * src.tile_elements // (src.t.shape[1] * src.w)))


def _sse_tiles(src: _Source) -> int:
    return src.b * len(_spans(src.h, _sse_rows(src)))


def _memory_order(x: torch.Tensor) -> list[int]:
    """Dimensions of ``x`` from the largest stride to the smallest (channels last first for a
    ComfyUI image): reading in this order walks memory forward."""
    return sorted(range(x.ndim), key=lambda k: -x.stride(k))


def _sse(a: _Source, b: _Source, tick: _Ticker) -> torch.Tensor:
    """Sum of squared differences per image, ``[B]`` float64 (a float32 cascaded sum within a tile, float64 across)."""
    rows = _sse_rows(a)
    flat = torch.empty(a.c * rows * a.w, dtype=torch.float32, device=a.t.device)
    out = []
    for i in range(a.b):
        parts = []
        check_a, check_b = not a.check_whole(i), not b.check_whole(i)
        for r0, r1 in _spans(a.h, rows):
            x, y = a.tile(i, r0, r1, check=check_a), b.tile(i, r0, r1, check=check_b)
            order = _memory_order(y)  # the sum does not care about the order: read both in the image's
            x, y = x.permute(order), y.permute(order)
            d = flat[: x.numel()]
            torch.sub(x, y, out=d.view(x.shape))
            # torch's cascaded float32 sum: ~1e-8 relative on a 512² RGB tile, where one BLAS dot's
            # running sums lose ~1e-5 (2e-5 dB of PSNR) and change with the tiling; as fast
            parts.append(d.square_().sum())
            tick()
        out.append(torch.stack(parts).double().sum())
    return torch.stack(out)


# SSIM: tiles with a 10-pixel halo; five moment maps filtered by separable 11-tap passes.


def _ssim_plan(c: int, h: int, w: int, budget: int) -> tuple[int, int]:
    """(output rows, output columns) per tile of a ``c``-channel ``h``×``w`` image."""
    ho, wo = h - _HALO, w - _HALO
    cols = wo if c * w * (MIN_TILE + _HALO) <= budget else max(MIN_TILE, budget // (c * (MIN_TILE + _HALO)) - _HALO)
    rows = max(MIN_TILE, budget // (c * (min(cols, wo) + _HALO)) - _HALO)
    return min(rows, ho), min(cols, wo)


def _ssim_tiles(b: int, c: int, h: int, w: int, budget: int) -> int:
    rows, cols = _ssim_plan(c, h, w, budget)
    return b * len(_spans(h - _HALO, rows)) * len(_spans(w - _HALO, cols))


class _SsimBuffers:
    """Reused tile buffers: the moments (later the filtered moments), the horizontal pass, one temporary."""

    def __init__(self, c: int, rows: int, cols: int, device: torch.device) -> None:
        f = dict(dtype=torch.float32, device=device)
        self.m = torch.empty(5, c, rows + _HALO, cols + _HALO, **f)
        self.h = torch.empty(5, c, rows + _HALO, cols, **f)
        self.t = torch.empty(c, rows, cols, **f)
        self.g = gaussian_window(dtype=torch.float32).tolist()


def _ssim_tile(x: torch.Tensor, y: torch.Tensor, buf: _SsimBuffers, want_ssim: bool, want_cs: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-channel sums ``[C]`` of the SSIM and contrast-structure maps of one tile (``[C,r+10,w+10]`` inputs).

    The operations and their order are those of :func:`_ssim_maps` (horizontal pass, then
    vertical, taps in order; the same formula terms), so a tile gives the whole-image values.
    """
    c, rin, win = x.shape
    r, wo = rin - _HALO, win - _HALO
    g = buf.g
    m = buf.m[:, :c, :rin, :win]
    m[0].copy_(x)
    m[1].copy_(y)
    torch.mul(m[0], m[0], out=m[2])
    torch.mul(m[1], m[1], out=m[3])
    torch.mul(m[0], m[1], out=m[4])
    h = buf.h[:, :c, :rin, :wo]
    torch.mul(m[..., :wo], g[0], out=h)
    for k in range(1, SSIM_WINDOW):
        h.add_(m[..., k : k + wo], alpha=g[k])
    f = buf.m[:, :c, :r, :wo]  # the moments are no longer needed: filter into their storage
    torch.mul(h[:, :, :r], g[0], out=f)
    for k in range(1, SSIM_WINDOW):
        f.add_(h[:, :, k : k + r], alpha=g[k])
    mu_x, mu_y, e_xx, e_yy, e_xy = f
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    t = buf.t[:c, :r, :wo]
    torch.mul(mu_x, mu_y, out=t)  # μxμy
    e_xy.sub_(t).mul_(2).add_(c2)  # 2σxy + c2
    mu_x.mul_(mu_x)
    mu_y.mul_(mu_y)
    e_xx.sub_(mu_x).add_(e_yy.sub_(mu_y)).add_(c2)  # σx² + σy² + c2
    e_xy.div_(e_xx)  # contrast-structure map
    cs = e_xy.sum(dim=(1, 2)) if want_cs else None
    if not want_ssim:
        return None, cs
    t.mul_(2).add_(c1).div_(mu_x.add_(mu_y).add_(c1)).mul_(e_xy)  # luminance × cs
    return t.sum(dim=(1, 2)), cs


def _ssim_sums(a: _Source, b: _Source, tick: _Ticker, *, want_ssim: bool, want_cs: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Sums over the valid region of the SSIM / contrast-structure maps, ``[B,C]`` float64 each."""
    rows, cols = _ssim_plan(a.c, a.h, a.w, a.tile_elements)
    buf = _SsimBuffers(a.c, rows, cols, a.t.device)
    ho, wo = a.h - _HALO, a.w - _HALO
    s_out, cs_out = [], []
    for i in range(a.b):
        s_parts, cs_parts = [], []
        for r0, r1 in _spans(ho, rows):
            for c0, c1 in _spans(wo, cols):
                s, cs = _ssim_tile(a.tile(i, r0, r1 + _HALO, c0, c1 + _HALO), b.tile(i, r0, r1 + _HALO, c0, c1 + _HALO),
                                   buf, want_ssim, want_cs)
                s_parts.append(s)
                cs_parts.append(cs)
                tick()
        if want_ssim:
            s_out.append(torch.stack(s_parts).double().sum(dim=0))
        if want_cs:
            cs_out.append(torch.stack(cs_parts).double().sum(dim=0))
    return (torch.stack(s_out) if want_ssim else None), (torch.stack(cs_out) if want_cs else None)


# MS-SSIM pyramid: 2×2 average pooling, tile by tile.


def _down_rows(c: int, w: int, budget: int) -> int:
    return max(1, 2 * budget // (c * w))


def _downsample(src: _Source, tick: _Ticker) -> _Source:
    """The next pyramid level (float32, Y already applied): replicate-pad one pixel on the top and
    left when a side is odd, then 2×2 average pooling (the last row/column drops when still odd)."""
    pad = max(src.h % 2, src.w % 2)
    ho, wo = (src.h + pad) // 2, (src.w + pad) // 2
    out = torch.empty(src.b, src.c, ho, wo, dtype=torch.float32, device=src.t.device)
    for i in range(src.b):
        for o0, o1 in _spans(ho, _down_rows(src.t.shape[1], src.w, src.tile_elements)):
            a0, a1 = 2 * o0 - pad, 2 * o1 - pad
            x = src.tile(i, max(a0, 0), a1)
            if a0 < 0:
                x = torch.cat([x[:, :1], x], dim=1)
            if pad:
                x = F.pad(x, (pad, 0), mode="replicate")
            # avg_pool2d's sum in its order, from strided slices (several times faster than it)
            o = out[i, :, o0:o1]
            torch.add(x[:, 0::2, 0 : 2 * wo : 2], x[:, 0::2, 1 : 2 * wo : 2], out=o)
            o.add_(x[:, 1::2, 0 : 2 * wo : 2]).add_(x[:, 1::2, 1 : 2 * wo : 2]).div_(4)
            tick()
    return _Source(out)


def _ms_ssim_tiles(src: _Source, levels: int) -> int:
    """Tiles of every pass of an MS-SSIM (for progress), from the level sizes alone."""
    total, c_read, h, w, budget = 0, src.t.shape[1], src.h, src.w, src.tile_elements
    for level in range(levels):
        total += _ssim_tiles(src.b, src.c, h, w, budget)
        if level < levels - 1:
            pad = max(h % 2, w % 2)
            total += 2 * src.b * len(_spans((h + pad) // 2, _down_rows(c_read, w, budget)))  # both images
            h, w, c_read = (h + pad) // 2, (w + pad) // 2, src.c
    return total
