"""Large images in bounded memory: horizontal strips, their halos, and strip progress.

A degradation whose output at a pixel depends only on a neighbourhood of it (convolutions,
blurs, pointwise compositing) computes its output strip by strip: rows ``y0..y1`` from the
input rows ``y0 − halo .. y1 + halo``, where rows outside the image are mapped back with the
same border rule (reflect, replicate or circular) that the whole-image computation uses. The
result is therefore the whole-image result (up to float rounding in FFTs, ~1e-6), whatever
the strip height. Random fields and whole-image statistics (the haze depth proxy, a drop
map's downscaled background) are drawn or computed once, before the strips, exactly as the
whole-image path draws them, so the same seed gives the same image either way.

An image is split when it has more than :data:`STRIP_PIXELS` pixels; strips hold about that
many pixels (more when a halo needs it: at least twice the halo, so halos cost ≤ 2× work).
``progress(i, n)`` from :func:`reporting` hears about every finished strip.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

#: images with more pixels are processed in strips of about this many pixels
STRIP_PIXELS = 1 << 21

#: strips are at least this many times their halo high (the halo rows are computed twice)
HALO_FACTOR = 2.0

class _Reporter:
    """Progress over ``passes`` strip loops of one call (e.g. haze then rain for rain+haze)."""

    def __init__(self, progress: Callable[[int, int], None], passes: int) -> None:
        self.progress, self.passes, self.started = progress, max(1, passes), 0

    def step(self, i: int, n: int) -> None:
        if self.passes == 1:
            self.progress(i, n)
            return
        k = min(self.started, self.passes) - 1  # loops already finished before this one
        unit = 100  # each loop counts as 100 steps (loops may have different strip counts)
        self.progress(k * unit + (unit * i) // n, self.passes * unit)


_PROGRESS: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar("gendeg_strip_progress", default=None)


def fast_len(n: int) -> int:
    """Smallest integer ≥ ``n`` whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


@contextlib.contextmanager
def reporting(progress: Callable[[int, int], None] | None, passes: int = 1) -> Iterator[None]:
    """Within the block, strip loops report ``progress(done, total)`` after each strip, the
    ``passes`` loops of one degradation counted one after the other (monotone)."""
    token = _PROGRESS.set(_Reporter(progress, passes) if progress is not None else None)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def is_split(h: int, w: int) -> bool:
    """Whether an ``h × w`` image is processed in more than one strip."""
    return h * w > STRIP_PIXELS


def strips(h: int, w: int, halo: int = 0) -> Iterator[tuple[int, int]]:
    """Row ranges ``(y0, y1)`` covering ``0..h``: one when the image is small, else strips of
    about :data:`STRIP_PIXELS` pixels and at least ``2·halo`` rows. Reports progress after each."""
    rows = h if not is_split(h, w) else min(h, max(8, int(HALO_FACTOR * halo), STRIP_PIXELS // max(w, 1)))
    n = math.ceil(h / rows)
    report = _PROGRESS.get()
    if report is not None:
        report.started += 1
    for i in range(n):
        yield i * rows, min(h, (i + 1) * rows)
        if report is not None:
            report.step(i + 1, n)


def row_index(y0: int, y1: int, h: int, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source rows for rows ``y0..y1−1`` of an image of ``h`` rows extended past its borders by
    ``mode`` (``reflect`` without repeating the edge, as ``F.pad``; ``replicate``; ``circular``)."""
    r = torch.arange(y0, y1, device=device)
    if mode == "circular":
        return r.remainder(h)
    if mode == "replicate" or h == 1:
        return r.clamp(0, h - 1)
    period = 2 * (h - 1)
    r = r.remainder(period)
    return torch.where(r >= h, period - r, r)


def rows_with_border(x: torch.Tensor, y0: int, y1: int, mode: str) -> torch.Tensor:
    """Rows ``y0..y1−1`` of ``x`` (``[..., H, W]``), extended past the top/bottom by ``mode``."""
    h = x.shape[-2]
    if 0 <= y0 and y1 <= h:
        return x[..., y0:y1, :]
    return x.index_select(-2, row_index(y0, y1, h, mode, x.device))


def pad_columns(x: torch.Tensor, p: int, mode: str) -> torch.Tensor:
    """``x`` padded by ``p`` columns on each side with ``mode`` (any ``p``, like the rows)."""
    if p == 0:
        return x
    w = x.shape[-1]
    if p < w:
        return F.pad(x, (p, p, 0, 0), mode=mode)
    return x.index_select(-1, row_index(-p, w + p, w, mode, x.device))


def conv_valid(xp: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """'Valid' true convolution of a pre-padded ``[B,C,h+2p,w+2p]`` input with ``[B,K,K]`` or
    ``[B,C,K,K]`` kernels (K = 2p+1) by real FFTs: ``[B,C,h,w]``. With ``F.pad``-padded input this
    is exactly :func:`~.base.fft_conv`'s computation (same FFT sizes and crop)."""
    k = kernels.shape[-1]
    p = k // 2
    h, w = xp.shape[-2] - 2 * p, xp.shape[-1] - 2 * p
    hp, wp = fast_len(xp.shape[-2]), fast_len(xp.shape[-1])
    kf = torch.fft.rfft2(kernels.to(xp.dtype), s=(hp, wp))  # [B,(C,)hp,wp//2+1]
    yf = torch.fft.rfft2(xp, s=(hp, wp))
    yf.mul_(kf if kernels.ndim == 4 else kf[:, None])
    y = torch.fft.irfft2(yf, s=(hp, wp))
    return y[..., 2 * p : 2 * p + h, 2 * p : 2 * p + w]


def conv_rows(x: torch.Tensor, kernels: torch.Tensor, y0: int, y1: int, mode: str) -> torch.Tensor:
    """Rows ``y0..y1−1`` of ``x`` (``[B,C,H,W]``) convolved with ``kernels`` (see :func:`conv_valid`),
    borders extended by ``mode``; channels one at a time when per-channel kernels are not given
    (bounded FFT memory)."""
    p = kernels.shape[-1] // 2
    xp = pad_columns(rows_with_border(x, y0 - p, y1 + p, mode), p, mode)
    if kernels.ndim == 4 or xp.shape[1] == 1:
        return conv_valid(xp, kernels)
    return torch.cat([conv_valid(xp[:, c : c + 1], kernels) for c in range(xp.shape[1])], dim=1)


def bilinear_rows(small: torch.Tensor, size: tuple[int, int], y0: int, y1: int) -> torch.Tensor:
    """Rows ``y0..y1−1`` of ``F.interpolate(small, size, mode="bilinear", align_corners=False)``
    without the full-size result: horizontal pass at the small height, then the vertical
    interpolation of just these rows (same source coordinates as PyTorch; equal up to rounding)."""
    h, w = size
    hs = small.shape[-2]
    wide = F.interpolate(small, size=(hs, w), mode="bilinear", align_corners=False) if small.shape[-1] != w else small
    if hs == h:
        return wide[..., y0:y1, :]
    src = ((torch.arange(y0, y1, dtype=torch.float64) + 0.5) * (hs / h) - 0.5).clamp_(min=0.0)
    i0 = src.floor().long().clamp_(max=hs - 1)
    i1 = (i0 + 1).clamp_(max=hs - 1)
    lam = (src - i0).to(small.dtype).to(small.device).view(-1, 1)
    a = wide.index_select(-2, i0.to(small.device))
    b = wide.index_select(-2, i1.to(small.device))
    return a.mul_(1 - lam).add_(b * lam)
