"""GenDeg's intensity measure: (μ, σ) of |clean − degraded|, computed as the official code does.

The official GenDeg training code (``edit_dataset.py`` of sudraj2002/GenDeg) opens both
images as 8-bit RGB, resizes each to 256×256 with PIL's ``Image.resize(..., LANCZOS)``
(the aspect ratio is *not* kept), and takes the mean and population standard deviation of
``|clean/255 − degraded/255|`` over every pixel and channel.

:func:`measure_intensity` reproduces that bit for bit, batched and on any device: images in
0..1 are quantised to 8 bits (``floor(255·x + 0.5)``, as PNG writing does), then resized by
:func:`pil_lanczos_resize`, an exact re-implementation of Pillow's 8-bit resampler (Lanczos-3
with the support widened by the scale factor when shrinking, 22-bit fixed-point weights,
horizontal pass then vertical pass, each rounded and clipped to 0..255). Sums of integer
products are carried in float64, where they are exact in any order, so the result equals
Pillow's. Images are read in row strips (the horizontal pass, with each output reading only its
window of the row) and only the 256-wide result is kept for the vertical pass, so memory stays
at a few tens of MB for any size; :func:`reduce_for_measure` lets a caller reduce a clean image
once and compare many degraded versions with it.
The pass order is that of Pillow's C resampler up to at least 10.x (the versions the official
Python 3.8 environment installs); recent Pillow releases run the vertical pass first when that
is cheaper (tall reductions), which changes a few pixels by rounding and μ by ~1e-4.
The synthesizer's calibration, GenDeg's sampler and ``GenDegMeasureIntensity`` all use this
one function, so their numbers are comparable with GenDeg's training statistics.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .errors import InputError

MEASURE_SIZE = 256
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images
_LANCZOS_SUPPORT = 3.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3.0)
    return 0.0


@lru_cache(maxsize=64)
def _pil_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's fixed-point Lanczos weights as a dense float64 ``[out_size, in_size]`` matrix of integers."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ss = 1.0 / filterscale
    w = torch.zeros(out_size, in_size, dtype=torch.float64)
    one = float(1 << _PRECISION_BITS)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = sum(k)
        for x, v in enumerate(k):
            v = v / total if total != 0.0 else 0.0
            w[xx, xmin + x] = float(int(-0.5 + v * one) if v < 0 else int(0.5 + v * one))
    return w


def _resample_axis(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One Pillow pass along the last axis: ``x`` holds integers 0..255 (float64)."""
    acc = _banded_matmul(x, weights) + float(1 << (_PRECISION_BITS - 1))
    return torch.floor(acc / float(1 << _PRECISION_BITS)).clamp_(0, 255)


@lru_cache(maxsize=64)
def _bands(in_size: int, out_size: int, block: int = 16) -> tuple[tuple[int, int, int, int, torch.Tensor], ...]:
    """The non-zero part of Pillow's weight matrix as dense blocks of ``block`` outputs:
    ``(out0, out1, in0, in1, weights[in0:in1, out0:out1])`` (each output reads a narrow window)."""
    w = _pil_weights(in_size, out_size)
    nz = w != 0
    first = torch.where(nz.any(dim=1), nz.float().argmax(dim=1), torch.zeros(out_size, dtype=torch.long))
    last = in_size - 1 - nz.flip(1).float().argmax(dim=1)
    out = []
    for j0 in range(0, out_size, block):
        j1 = min(out_size, j0 + block)
        c0, c1 = int(first[j0:j1].min()), int(last[j0:j1].max()) + 1
        out.append((j0, j1, c0, c1, w[j0:j1, c0:c1].T.contiguous()))
    return tuple(out)


def _banded_matmul(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``x @ weights.T`` (float64, along the last axis) reading only each output's window.

    Sums of integer products are exact in float64 in any order, so this equals the dense product.
    """
    out_size, in_size = weights.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_size)  # rows of the image: each block reads a column window of them
    dev = x.device
    y = torch.cat([torch.mm(x2[:, c0:c1], blk.to(dev)) for _, _, c0, c1, blk in _bands(in_size, out_size)], dim=1)
    return y.view(*lead, out_size)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """0..1 floats -> integers 0..255 (as float64), rounding like 8-bit image writing."""
    q = x.to(torch.float64, copy=True)
    return q.clamp_(0, 1).mul_(255.0).add_(0.5).floor_()


def pil_lanczos_resize(x8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Exact equivalent of ``PIL.Image.resize((w, h), LANCZOS)`` on 8-bit images.

    ``x8``: ``[B,C,H,W]`` integers 0..255 in any float dtype; ``size`` = (H, W).
    Returns float64 integers 0..255.
    """
    h_out, w_out = size
    x = x8.double()
    h_in, w_in = x.shape[-2:]
    if w_out != w_in:
        x = _resample_axis(x, _pil_weights(w_in, w_out))
    if h_out != h_in:
        x = _resample_axis(x.transpose(-1, -2), _pil_weights(h_in, h_out)).transpose(-1, -2)
    return x


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """Like PIL's ``convert('RGB')``: grey is repeated, alpha dropped."""
    c = x.shape[1]
    if c in (1, 2):
        return x[:, :1].expand(-1, 3, -1, -1)
    if c == 4:
        return x[:, :3]
    if c == 3:
        return x
    raise InputError(f"expected 1-4 channels, got {c}")


def measure_intensity(
    clean: torch.Tensor,
    degraded: torch.Tensor,
    size: int | None = MEASURE_SIZE,
    quantize: bool = True,
    *,
    clean_reduced: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image GenDeg intensity (μ, σ), each ``[B]`` float32, of ``[B,C,H,W]`` images in 0..1.

    μ and σ are in 0..1 units (mean and population std of the absolute difference).
    Defaults follow the official code: 8-bit quantisation, RGB, Pillow Lanczos to 256×256.
    Like the official code, the two images may differ in size (each is squashed to 256×256).
    ``size=None`` measures at the native resolution; ``quantize=False`` skips the 8-bit
    rounding and uses a float Lanczos with the same weights (for differentiable-ish use).
    ``clean_reduced``: :func:`reduce_for_measure` of ``clean``, to compare many degraded
    versions of one clean image without reducing it again (default size and quantisation only).
    Images of any size are read in row strips: memory stays bounded (a few tens of MB).
    """
    if clean_reduced is not None:
        if size != MEASURE_SIZE or not quantize:
            raise InputError("clean_reduced only applies to the default measure (256x256, 8-bit)")
        if degraded.ndim != 4 or clean_reduced.shape[0] != degraded.shape[0]:
            raise InputError(f"clean_reduced has {clean_reduced.shape[0]} images, degraded {tuple(degraded.shape)}")
        reduced = reduce_for_measure(degraded).to(clean_reduced.device)
        return _stats_8bit((clean_reduced - reduced).abs_().flatten(1))
    if clean.ndim != 4 or degraded.ndim != 4:
        raise InputError(f"expected [B,C,H,W] images, got shapes {tuple(clean.shape)} and {tuple(degraded.shape)}")
    if clean.shape[0] != degraded.shape[0]:
        raise InputError(f"clean and degraded batches differ: {clean.shape[0]} and {degraded.shape[0]} images")
    if size is None and clean.shape[-2:] != degraded.shape[-2:]:
        raise InputError(
            f"clean and degraded must have the same size to measure at native resolution, got "
            f"{tuple(clean.shape[-2:])} and {tuple(degraded.shape[-2:])}; resize one of them first"
        )
    # one image at a time: the exact path works in float64 at the native size, which for a
    # batch of large images would cost several GB on an accelerator
    mus, sigmas = zip(
        *(_measure(clean[i : i + 1], degraded[i : i + 1], size, quantize) for i in range(clean.shape[0])),
        strict=True,
    )
    return torch.cat(mus), torch.cat(sigmas)


def reduce_for_measure(x: torch.Tensor, size: int = MEASURE_SIZE) -> torch.Tensor:
    """``[B,C,H,W]`` 0..1 -> ``[B,3,size,size]`` float64 8-bit values: what :func:`measure_intensity`
    compares (RGB, quantised, Pillow Lanczos), one image at a time, in row strips."""
    if x.ndim != 4:
        raise InputError(f"expected [B,C,H,W] images, got shape {tuple(x.shape)}")
    parts = []
    for i in range(x.shape[0]):
        xi = _rgb(x[i : i + 1])
        parts.append(_downscale(xi.cpu() if xi.device.type == "mps" else xi, size, True))
    return torch.cat(parts)


#: the measure reads images in row strips of about this many pixels (bounded memory for any size)
MEASURE_STRIP_PIXELS = 1 << 20


def _measure(clean: torch.Tensor, degraded: torch.Tensor, size: int | None, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _rgb(clean), _rgb(degraded)
    if a.device.type == "mps":  # no float64 on Apple GPUs: the exact integer sums run on the CPU
        a, b = a.cpu(), b.cpu()
    if size is None:
        n = a[0].numel()
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        total_sq = torch.zeros((), dtype=torch.float64, device=a.device)
        for y0, y1 in _row_strips(a.shape[-2], a.shape[-1]):
            d = (_prepare(a[..., y0:y1, :], quantize) - _prepare(b[..., y0:y1, :], quantize)).abs_()
            if quantize:
                d.div_(255.0)
            total += d.sum()
            total_sq += (d * d).sum()
        mean = total / n
        std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
        return mean.view(1).float(), std.view(1).float()
    a, b = _downscale(a, size, quantize), _downscale(b, size, quantize)
    diff = (a - b).abs_().flatten(1)
    if quantize:
        return _stats_8bit(diff)
    return diff.mean(dim=1).float(), diff.std(dim=1, unbiased=False).float()


def _stats_8bit(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of ``d / 255`` for ``[B,N]`` float64 integers ``d`` in 0..255, as float32.

    From the exact integer sums Σd and Σd² (exact in float64 in any order) with one rounding for
    the mean and one for the variance: the correctly rounded values, which the float32 results
    of summing the rounded ``d/255`` in float64 equal (no difference in 4800 random pairs); about
    6× cheaper than ``Tensor.std``. Falls back to that where the sums could exceed 2⁵³.
    """
    n = d.shape[1]
    if float(n) * n * 255.0 * 255.0 >= 2.0**53:
        v = d / 255.0
        return v.mean(dim=1).float(), v.std(dim=1, unbiased=False).float()
    s1 = d.sum(dim=1)
    # Σd² image by image with BLAS' dot: no [B,N] temporary (``vecdot`` makes one, and a fresh
    # multi-MB buffer is page-faulted in at every calibration trial: 5-40 ms against 0.2)
    s2 = torch.stack([torch.dot(row, row) for row in d])
    mean = s1 / (255.0 * n)
    var = (n * s2 - s1 * s1) / (float(n) * n * 255.0 * 255.0)  # exact numerator, one rounding
    return mean.float(), var.clamp_min_(0).sqrt_().float()


def _row_strips(h: int, w: int) -> list[tuple[int, int]]:
    rows = max(1, MEASURE_STRIP_PIXELS // max(w, 1))
    return [(y0, min(h, y0 + rows)) for y0 in range(0, h, rows)]


def _prepare(x: torch.Tensor, quantize: bool) -> torch.Tensor:
    return quantize8(x) if quantize else x.double()


def _downscale(x: torch.Tensor, size: int, quantize: bool) -> torch.Tensor:
    """``[1,3,H,W]`` -> ``[1,3,size,size]`` float64: Pillow's Lanczos on 8-bit values (``quantize``)
    or the same weights in floating point; horizontal pass strip by strip, then the vertical pass."""
    if quantize:
        return _downscale_8bit(x, size)
    h, w = x.shape[-2:]
    one = float(1 << _PRECISION_BITS)
    parts = []
    for y0, y1 in _row_strips(h, w):
        xr = _prepare(x[..., y0:y1, :], quantize)
        if w != size:
            xr = _banded_matmul(xr, _pil_weights(w, size)) / one
        parts.append(xr)
    xh = torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]
    if h != size:
        xt = xh.transpose(-1, -2).contiguous()
        xt = _banded_matmul(xt, _pil_weights(h, size)) / one
        xh = xt.transpose(-1, -2)
    return xh


#: the 8-bit path quantizes and resamples blocks of rows of about this many pixels (their float64
#: values, 24 bytes per RGB pixel, stay in the core's cache between the steps)
CACHE_PIXELS = 1 << 16


@lru_cache(maxsize=64)
def _scaled_bands(in_size: int, out_size: int) -> tuple[tuple[int, int, int, int, torch.Tensor], ...]:
    """:func:`_bands` with the weights times 2⁻²² (exact: a power of two), so that a product plus
    0.5 is Pillow's ``(Σ + 2²¹) >> 22`` before the floor."""
    return tuple((j0, j1, c0, c1, blk * 2.0**-_PRECISION_BITS) for j0, j1, c0, c1, blk in _bands(in_size, out_size))


def _downscale_8bit(x: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`_downscale` of 8-bit values: Pillow's integer arithmetic, exact in float64.

    Rows are laid out ``[H, C, W]`` so that a block of rows is one matrix: the horizontal pass
    quantizes a block, multiplies its banded weights into the ``[H, C, size]`` intermediate and
    rounds it, all in cache; the vertical pass multiplies the banded weights from the left into
    ``[size, C, size]``, so nothing is transposed. Sums of integer products (and their scaling by
    2⁻²²) are exact in float64 in any order: the result is that of whole rows and columns.
    """
    if x.shape[0] != 1:
        return torch.cat([_downscale_8bit(x[i : i + 1], size) for i in range(x.shape[0])])
    c, h, w = x.shape[-3:]
    dev = x.device
    half = torch.tensor(0.5, dtype=torch.float64, device=dev)
    rows = max(16, min(CACHE_PIXELS, MEASURE_STRIP_PIXELS) // max(w, 1))
    wo = size if w != size else w
    xh = torch.empty((h, c, wo), dtype=torch.float64, device=dev)
    buf = torch.empty((min(rows, h), c, w), dtype=torch.float64, device=dev)
    bands = [(j0, j1, c0, c1, blk.to(dev)) for j0, j1, c0, c1, blk in _scaled_bands(w, size)] if w != size else []
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        q = buf[: y1 - y0]
        # quantize8's floor(clamp(x, 0, 1)·255 + 0.5), as clamp(floor(255·x + 0.5), 0, 255) (the same
        # integers: both sides are monotone and agree at 0 and 1); 255·x + 0.5 is exact in float64
        q.copy_(x[0, :, y0:y1, :].permute(1, 0, 2))
        torch.add(half, q, alpha=255.0, out=q).floor_().clamp_(0, 255)
        if not bands:
            xh[y0:y1] = q
            continue
        q2, o2 = q.view(-1, w), xh[y0:y1].view(-1, size)
        for j0, j1, c0, c1, blk in bands:
            torch.mm(q2[:, c0:c1], blk, out=o2[:, j0:j1])
        o2.add_(half).floor_().clamp_(0, 255)
    if h != size:
        acc = torch.empty((size, c, wo), dtype=torch.float64, device=dev)
        a2, x2 = acc.view(size, -1), xh.view(h, -1)
        for j0, j1, c0, c1, blk in _scaled_bands(h, size):  # output rows j0..j1 read input rows c0..c1
            torch.mm(blk.T.to(dev), x2[c0:c1], out=a2[j0:j1])
        xh = acc.add_(half).floor_().clamp_(0, 255)
    return xh.permute(1, 0, 2).unsqueeze(0)
