"""Compiled CPU loops (optional: numba, the ``fast`` extra): rain and snow's particle layers, JPEG's conversions.

Eager PyTorch renders a rain frame in a dozen passes over full-size maps (stamping through an
index list, clamps, products, one blend per channel, each into fresh memory). Here the same
arithmetic runs as compiled loops: the kernels are built and their non-zero taps listed once,
the seed layers of :func:`.kernels.nested_sites` are merged in order, and the frame is rendered
in bands of :data:`BAND` rows — each layer's seeds that reach the band add their taps into a
small band canvas (the field wraps around: circular), and the masks are blended into those rows
of the colour image at once, reading the image in its own memory layout (ComfyUI's interleaved
channels in place) and writing float32 0..1 or, for 8-bit images, ``⌊255·I + 0.5⌋`` directly.
The masks never leave the core's cache: about one read and one write of the image.

JPEG's float images are converted to 8 bits and back in one compiled pass each (the same
values as NumPy's three).

Without numba, or with ``GENDEG_NO_JIT=1`` in the environment, :func:`available` is false and
rain and snow take their eager path; both give the same values up to float32 rounding (the
tests compare them). The loops compile on first use (about 20 s once, all variants: see
:func:`_probe`; cached beside this module where it is writable, then loaded in about a second).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

_F = np.float32

#: the numba module once :func:`_load` has imported it (``None`` before, or where it is not installed)
numba: Any = None
_tried = False
_LOCK = threading.Lock()
#: the functions compiled on first use: name, numba options, the Python function (rebound by :func:`_load`)
_COMPILED: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks ``fn`` for ``numba.njit`` on first use (cached on disk, no bounds checks, IEEE float32
    arithmetic: no fastmath)."""
    _COMPILED.append((fn.__name__, {"cache": True, "nogil": True, "boundscheck": False}, fn))
    return fn


def _inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks ``fn`` for ``numba.njit(inline="always")``: a helper compiled into its callers."""
    _COMPILED.append((fn.__name__, {"inline": "always"}, fn))
    return fn


def _load() -> Any:
    """Import numba (``pip install "comfyui-gendeg[fast]"``) once, replace the marked functions of this
    module by their compiled dispatchers and compile every variant the pack calls on a tiny probe
    (:func:`_probe`; from the on-disk cache after the first time); the module, or ``None`` where numba
    is not installed or fails (a broken install, a compiler error: one warning, then the eager path).
    Lazy, so that loading the pack (inside ComfyUI) does not import numba."""
    global numba, _tried
    if not _tried:
        with _LOCK:
            if not _tried:
                nb = None
                try:
                    import numba as nb

                    for name, options, fn in _COMPILED:
                        globals()[name] = nb.njit(**options)(fn)
                    _probe()
                except ImportError:
                    nb = None
                except Exception as e:  # noqa: BLE001 - any failure of numba means the eager path
                    for name, _, fn in _COMPILED:
                        globals()[name] = fn
                    warnings.warn(f"GenDeg: numba is installed but its compiled rain/snow/JPEG loops failed "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); using the "
                                  "slower eager path (pip install -U numba, or set GENDEG_NO_JIT=1 to silence this)",
                                  RuntimeWarning, stacklevel=3)
                    nb = None
                numba, _tried = nb, True
    return numba


def available() -> bool:
    """Whether the compiled loops are used: numba installed and working, ``GENDEG_NO_JIT`` unset (or ``0``)."""
    return os.environ.get("GENDEG_NO_JIT", "") in ("", "0") and _load() is not None


def used_on(device: torch.device | str) -> bool:
    """Whether data on ``device`` takes the compiled loops: :func:`available` and a CPU device."""
    return torch.device(device).type == "cpu" and available()


@_inline
def _clamp01(r: float) -> float:  # pragma: no cover - compiled
    r = r if r > _F(0.0) else _F(0.0)
    return r if r < _F(1.0) else _F(1.0)


@_jit
def streak_kernels(length: float, width: float, angle: np.ndarray, opacity: np.ndarray, size: int,
                   tail: float) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`.kernels.streak_kernels` in float32 (``angle``, ``opacity`` ``[B]`` float32): antialiased
    segments of ``length`` px, Gaussian cross-section ``width`` px (at least 0.3), normalised to sum 1,
    scaled to peak at ``opacity``, taps below ``tail`` × the peak set to 0; ``[B,size,size]``."""
    r = size // 2
    half = _F(length) / _F(2.0)
    ww = max(_F(width), _F(0.3))
    w2 = ww * ww
    out = np.empty((angle.shape[0], size, size), dtype=_F)
    for i in range(angle.shape[0]):
        dx, dy = np.cos(angle[i]), np.sin(angle[i])
        k = out[i]
        for iy in range(size):
            yy = _F(iy - r)
            for ix in range(size):
                xx = _F(ix - r)
                along = min(max(xx * dx + yy * dy, -half), half)
                ex, ey = xx - along * dx, yy - along * dy
                k[iy, ix] = np.exp((_F(-0.5) * (ex * ex + ey * ey)) / w2)
        total = _F(0.0)
        for iy in range(size):
            for ix in range(size):
                total += k[iy, ix]
        peak = _F(0.0)
        for iy in range(size):
            for ix in range(size):
                k[iy, ix] = k[iy, ix] / total
                peak = max(peak, k[iy, ix])
        scale = opacity[i] / peak
        cut = _F(tail) * (peak * scale)
        for iy in range(size):
            for ix in range(size):
                v = k[iy, ix] * scale
                k[iy, ix] = v if v >= cut else _F(0.0)
    return out


@_jit
def gap_sites(v: np.ndarray, inv_log_q: float, last: int, n: int) -> tuple[np.ndarray, bool]:  # pragma: no cover
    """Sites ``last + cumsum(⌊ln(1 − v) / ln(1 − p)⌋ + 1)`` of a Bernoulli process from uniforms ``v`` in
    [0, 1) (float64), ``inv_log_q = 1 / ln(1 − p)``; cut below ``n`` and ``True`` once they pass it."""
    out = np.empty(v.shape[0], dtype=np.int64)
    site = last
    for i in range(v.shape[0]):
        site += np.int64(math.floor(math.log1p(-v[i]) * inv_log_q)) + 1
        if site >= n:
            return out[:i], True
        out[i] = site
    return out, False


@_jit
def merge_new(cells: np.ndarray, us: np.ndarray, vals: np.ndarray, c: np.ndarray, u: np.ndarray, v: np.ndarray,
              lo: float, span: float, with_vals: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The sorted union of the sorted ``cells`` and ``c`` with their ``us`` and ``u·span + lo`` (``u`` uniform
    in [0, 1), float32 arithmetic) and, ``with_vals``, ``vals``/``v`` (else empty); a cell in both keeps
    its entry from ``cells``."""
    n1, n2 = cells.shape[0], c.shape[0]
    lo32, span32 = _F(lo), _F(span)
    oc = np.empty(n1 + n2, dtype=np.int64)
    ou = np.empty(n1 + n2, dtype=_F)
    ov = np.empty(n1 + n2 if with_vals else 0, dtype=_F)
    i = j = k = 0
    while i < n1 or j < n2:
        if j >= n2 or (i < n1 and cells[i] <= c[j]):
            if j < n2 and cells[i] == c[j]:
                j += 1  # already a candidate of a lower layer
            oc[k], ou[k] = cells[i], us[i]
            if with_vals:
                ov[k] = vals[i]
            i += 1
        else:
            oc[k], ou[k] = c[j], u[j] * span32 + lo32
            if with_vals:
                ov[k] = v[j]
            j += 1
        k += 1
    return oc[:k], ou[:k], ov[:k] if with_vals else ov


@_jit
def select_below(cand: np.ndarray, us: np.ndarray, vals: np.ndarray, thresholds: np.ndarray, hw: int,
                 with_vals: bool) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The candidates (flat into ``[B, hw]``) whose ``u`` is below their image's threshold, and, ``with_vals``,
    their values (else empty)."""
    oc = np.empty(cand.shape[0], dtype=np.int64)
    ov = np.empty(cand.shape[0] if with_vals else 0, dtype=_F)
    k = 0
    for i in range(cand.shape[0]):
        if us[i] < thresholds[cand[i] // hw]:
            oc[k] = cand[i]
            if with_vals:
                ov[k] = vals[i]
            k += 1
    return oc[:k], ov[:k] if with_vals else ov


@_jit
def _apply_row(x: np.ndarray, out: np.ndarray, a: np.ndarray, c: np.ndarray, i: int, y: int,
               eight: bool) -> None:  # pragma: no cover - compiled
    """Row ``y`` of image ``i`` of ``x``/``out`` ``[B,P,H,L]`` (planar: ``P`` channels of ``L = W`` pixels;
    interleaved: one plane of ``L = W·C`` values): ``out = clamp(c + x·a, 0, 1)`` in every plane (``a``,
    ``c`` ``[L]``). 8-bit: ``x`` is 0..255, read as ``x / 255``, and ``out`` gets ``⌊255·I + 0.5⌋``."""
    for k in range(x.shape[1]):
        xr, o = x[i, k, y], out[i, k, y]
        if eight:
            for t in range(a.shape[0]):
                r = _clamp01(c[t] + (_F(xr[t]) / _F(255.0)) * a[t])
                o[t] = r * _F(255.0) + _F(0.5)  # the cast to uint8 truncates: the floor of values ≥ 0.5
        else:
            for t in range(a.shape[0]):
                o[t] = _clamp01(c[t] + xr[t] * a[t])


@_jit
def _spread(a: np.ndarray, c: np.ndarray, a_rep: np.ndarray, c_rep: np.ndarray, w: int,
            rep: int) -> None:  # pragma: no cover - compiled
    """Interleaved rows: ``a_rep``, ``c_rep`` ``[W·rep]`` ← ``a``, ``c`` ``[W]`` (one value per pixel) repeated per channel."""
    if rep == 3:  # RGB: a fixed count the compiler unrolls
        for t in range(w):
            at, ct = a[t], c[t]
            a_rep[3 * t], a_rep[3 * t + 1], a_rep[3 * t + 2] = at, at, at
            c_rep[3 * t], c_rep[3 * t + 1], c_rep[3 * t + 2] = ct, ct, ct
    else:
        for t in range(w):
            for k in range(rep):
                a_rep[t * rep + k] = a[t]
                c_rep[t * rep + k] = c[t]


@_jit
def _blend_row(x: np.ndarray, out: np.ndarray, a: np.ndarray, c: np.ndarray, bufs: np.ndarray, i: int, y: int,
               eight: bool) -> None:  # pragma: no cover - compiled
    """Row ``y`` of image ``i``: ``out = clamp(c + x·a, 0, 1)`` with ``a``, ``c`` one value per pixel ``[W]``
    (planar images use them as they are; interleaved ones repeat them per channel into ``bufs`` ``[2, W·C]``)."""
    w = a.shape[0]
    if x.shape[3] == w:
        _apply_row(x, out, a, c, i, y, eight)
    else:
        _spread(a, c, bufs[0], bufs[1], w, x.shape[3] // w)
        _apply_row(x, out, bufs[0], bufs[1], i, y, eight)


#: rows of the frame per band: the band's masks (one row of every layer per frame row) stay in the core's cache
BAND = 32


@_jit
def _row_taps(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Each kernel's non-zero taps row by row: columns ``[B,T]`` uint64, weights ``[B,T]`` float32, and
    ``[B,K+1]`` the index where row ``ty`` of the tap list starts (row-major order)."""
    b, k = kernels.shape[0], kernels.shape[1]
    n = 0
    for i in range(b):
        m = 0
        for ty in range(k):
            for tx in range(k):
                if kernels[i, ty, tx] != 0.0:
                    m += 1
        n = max(n, m)
    cols = np.zeros((b, n), dtype=np.uint64)
    wts = np.zeros((b, n), dtype=_F)
    starts = np.zeros((b, k + 1), dtype=np.int64)
    for i in range(b):
        j = 0
        for ty in range(k):
            starts[i, ty] = j
            for tx in range(k):
                if kernels[i, ty, tx] != 0.0:
                    cols[i, j] = tx
                    wts[i, j] = kernels[i, ty, tx]
                    j += 1
        starts[i, k] = j
    return cols, wts, starts


@_jit
def _stamp_band(cv: np.ndarray, sites: np.ndarray, rows: np.ndarray, values: np.ndarray, cols: np.ndarray,
                wts: np.ndarray, starts: np.ndarray, k: int, img: int, y0: int, y1: int, h: int,
                w: int) -> None:  # pragma: no cover - compiled
    """Band canvas ``cv`` ``[≥ y1−y0, w+2p]`` ← zeros, plus the taps of image ``img``'s seeds (flat ``sites``
    into ``[B,h,w]``, sorted; their frame ``rows``) that land on frame rows ``y0..y1−1`` (rows wrap around
    the frame: the field is circular), a seed at ``(y, x)`` putting tap ``(ty, tx)`` on row ``y+ty−p``,
    padded column ``x+tx``; then the ``p``-wide column margins folded onto the opposite sides."""
    p = k // 2
    wp = w + 2 * p
    cv[:] = 0.0
    flat = cv.reshape(-1)
    first, last = np.searchsorted(sites, img * h * w), np.searchsorted(sites, (img + 1) * h * w)
    ones = values.shape[0] == 0
    seg = rows[first:last]
    for shift in (-h, 0, h):  # seeds below the frame's bottom reach its top rows and the other way round
        a = first + np.searchsorted(seg, y0 + p - k + 1 - shift)
        e = first + np.searchsorted(seg, y1 - 1 + p - shift, side="right")
        for i in range(a, e):
            ys = rows[i] + shift
            x = sites[i] % w
            v = _F(1.0) if ones else values[i]
            for ty in range(max(0, y0 - ys + p), min(k, y1 - ys + p)):
                base = np.uint64((ys + ty - p - y0) * wp + x)
                for t in range(starts[ty], starts[ty + 1]):
                    flat[base + cols[t]] += v * wts[t]
    for r in range(y1 - y0):
        row = cv[r]
        for xx in range(p):
            row[w + xx] += row[xx]
            row[p + xx] += row[w + p + xx]


def prepare(sites: torch.Tensor, values: torch.Tensor | None, kernels: torch.Tensor, h: int, w: int) -> tuple:
    """One particle layer for the banded renderers (:func:`rain_render`, :func:`snow_render`): seeds of
    ``values`` (1 where ``None``) at the flat, sorted ``sites`` into ``[B,h,w]``, kernels ``[B,K,K]`` (K odd,
    ``K ≤ min(h, w)``; the kernel's centre on the seed), convolved circularly."""
    s = sites.contiguous().numpy()
    kn = kernels.detach().float().contiguous().numpy()
    cols, wts, starts = _row_taps(kn)
    vals = np.empty(0, dtype=_F) if values is None else values.float().contiguous().numpy()
    return s, (s % (h * w)) // w, vals, cols, wts, starts, kn.shape[-1]


@_jit
def _rain_frame(x: np.ndarray, out: np.ndarray, sn: np.ndarray, rn: np.ndarray, vn: np.ndarray, cn: np.ndarray,
                wn: np.ndarray, stn: np.ndarray, kn: int, sf: np.ndarray, rf: np.ndarray, vf: np.ndarray,
                cf: np.ndarray, wf: np.ndarray, stf: np.ndarray, kf: int, v: np.ndarray, h: int, w: int,
                eight: bool) -> None:  # pragma: no cover - compiled
    """Rain (:func:`rain_render`) band by band: the near and far masks of :data:`BAND` rows stamped, then
    blended into those rows of the image."""
    pn, pf = kn // 2, kf // 2
    near, far = np.empty((BAND, w + 2 * pn), dtype=_F), np.empty((BAND, w + 2 * pf), dtype=_F)
    a, c = np.empty(w, dtype=_F), np.empty(w, dtype=_F)
    bufs = np.empty((2, x.shape[3]), dtype=_F)  # a and c per value of an image row (interleaved: per channel)
    for i in range(x.shape[0]):
        keep = _F(1.0) - v[i]
        base = _F(1.0) - _F(0.1) * v[i]
        for y0 in range(0, h, BAND):
            y1 = min(h, y0 + BAND)
            _stamp_band(near, sn, rn, vn, cn[i], wn[i], stn[i], kn, i, y0, y1, h, w)
            _stamp_band(far, sf, rf, vf, cf[i], wf[i], stf[i], kf, i, y0, y1, h, w)
            for y in range(y0, y1):
                nr, fr = near[y - y0, pn : pn + w], far[y - y0, pf : pf + w]
                for t in range(w):
                    a[t] = (_clamp01(nr[t]) - _F(1.0)) * (_clamp01(fr[t]) - _F(1.0)) * keep
                    c[t] = base - a[t]
                _blend_row(x, out, a, c, bufs, i, y, eight)


@_jit
def _snow_frame(x: np.ndarray, out: np.ndarray, s0: np.ndarray, r0: np.ndarray, c0: np.ndarray, w0: np.ndarray,
                st0: np.ndarray, k0: int, s1: np.ndarray, r1: np.ndarray, c1: np.ndarray, w1: np.ndarray,
                st1: np.ndarray, k1: int, s2: np.ndarray, r2: np.ndarray, c2: np.ndarray, w2: np.ndarray,
                st2: np.ndarray, k2: int, tones: np.ndarray, v: np.ndarray, h: int, w: int,
                eight: bool) -> None:  # pragma: no cover - compiled
    """Snow (:func:`snow_render`) band by band: the three flake masks (far to near, seeds of value 1) of
    :data:`BAND` rows stamped, then composited into those rows of the image."""
    p0, p1, p2 = k0 // 2, k1 // 2, k2 // 2
    m0 = np.empty((BAND, w + 2 * p0), dtype=_F)
    m1 = np.empty((BAND, w + 2 * p1), dtype=_F)
    m2 = np.empty((BAND, w + 2 * p2), dtype=_F)
    ones = np.empty(0, dtype=_F)
    a, c = np.empty(w, dtype=_F), np.empty(w, dtype=_F)
    bufs = np.empty((2, x.shape[3]), dtype=_F)  # a and c per value of an image row (interleaved: per channel)
    for i in range(x.shape[0]):
        keep = _F(1.0) - v[i]
        t0, t1, t2 = tones[0, i], tones[1, i], tones[2, i]
        veil = _F(0.85) * v[i]
        for y0 in range(0, h, BAND):
            y1 = min(h, y0 + BAND)
            _stamp_band(m0, s0, r0, ones, c0[i], w0[i], st0[i], k0, i, y0, y1, h, w)
            _stamp_band(m1, s1, r1, ones, c1[i], w1[i], st1[i], k1, i, y0, y1, h, w)
            _stamp_band(m2, s2, r2, ones, c2[i], w2[i], st2[i], k2, i, y0, y1, h, w)
            for y in range(y0, y1):
                q0, q1, q2 = m0[y - y0, p0 : p0 + w], m1[y - y0, p1 : p1 + w], m2[y - y0, p2 : p2 + w]
                for t in range(w):
                    f0, f1, f2 = _clamp01(q0[t]), _clamp01(q1[t]), _clamp01(q2[t])
                    q = f0 * t0
                    pp = (_F(1.0) - f0) * keep
                    q = (q - t1) * (_F(1.0) - f1) + t1
                    pp = pp * (_F(1.0) - f1)
                    q = (q - t2) * (_F(1.0) - f2) + t2
                    pp = pp * (_F(1.0) - f2)
                    a[t] = pp
                    c[t] = q * keep + veil
                _blend_row(x, out, a, c, bufs, i, y, eight)


def rain_render(x: torch.Tensor, near: tuple, far: tuple, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` ← rain over ``x`` ``[B,3,H,W]``: the near and far streak layers of :func:`prepare` screen
    blended with the veil, ``I = J·A + (1 − 0.1·v − A)``, ``A = (1 − v)(1 − near)(1 − far)`` (masks clamped
    to 0..1), clamped to 0..1; ``v`` ``[B]`` the veil. Band by band: the masks of :data:`BAND` rows are
    stamped and blended at once, so they never leave the core's cache. ``x`` float32 0..1 or uint8 0..255,
    ``out`` the same dtype (8-bit: ``⌊255·I + 0.5⌋`` of the result on ``x / 255``); ``out`` may be ``x``."""
    vv = v.detach().float().contiguous().numpy()
    h, w, eight = x.shape[-2], x.shape[-1], x.dtype == torch.uint8
    return _blend(x, out, lambda xa, oa: _rain_frame(xa, oa, *near, *far, vv, h, w, eight))


def snow_render(x: torch.Tensor, layers: Sequence[tuple], tones: torch.Tensor, v: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """``out`` ← snow over ``x``: the three flake layers of :func:`prepare` (far to near, seeds of value 1,
    masks clamped to 0..1) composited ``I ← I·(1 − m) + c·m`` with the tones ``c`` ``[3,B]``, then the veil
    ``I ← I·(1 − v) + 0.85·v``, clamped to 0..1; band by band, dtypes and ``out`` as :func:`rain_render`."""
    tt = tones.detach().float().contiguous().numpy()
    vv = v.detach().float().contiguous().numpy()
    h, w, eight = x.shape[-2], x.shape[-1], x.dtype == torch.uint8
    flat = [part for lay in layers for j, part in enumerate(lay) if j != 2]  # no values (all 1)
    return _blend(x, out, lambda xa, oa: _snow_frame(xa, oa, *flat, tt, vv, h, w, eight))


def _views(x: torch.Tensor, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """``x`` and ``out`` as NumPy arrays ``[B,P,H,L]`` of one shared layout — planar ``[B,C,H,W]`` (both
    standard) or interleaved ``[B,1,H,W·C]`` (both channels-last); ``None`` for other layouts."""
    if x.is_contiguous() and out.is_contiguous():
        return x.numpy(), out.numpy()
    cl = torch.channels_last
    if x.is_contiguous(memory_format=cl) and out.is_contiguous(memory_format=cl):
        b, ch, h, w = x.shape
        return (x.permute(0, 2, 3, 1).reshape(b, 1, h, w * ch).numpy(),
                out.permute(0, 2, 3, 1).reshape(b, 1, h, w * ch).numpy())
    return None


def _blend(x: torch.Tensor, out: torch.Tensor, run: Callable[[np.ndarray, np.ndarray], None]) -> torch.Tensor:
    """``run(x, out)`` on NumPy views of one layout; other pairs of layouts go through standard-layout copies."""
    views = _views(x, out)
    if views is None:
        tmp = torch.empty(x.shape, dtype=out.dtype)
        run(*_views(x.contiguous(), tmp))
        return out.copy_(tmp)
    run(*views)
    return out


@_jit
def _quantize(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """``dst`` ``[H,W,C]`` uint8 ← ``⌊255·src + 0.5⌋`` of ``src`` ``[H,W,C]`` float32 (any strides; values in
    0..1 ± 1e-3: the cast truncates, the floor of values ≥ 0.5), multiply then add in float32."""
    h, w, c = src.shape
    for y in range(h):
        for x in range(w):
            for k in range(c):
                dst[y, x, k] = np.uint8(src[y, x, k] * _F(255.0) + _F(0.5))


@_jit
def _quantize_flat(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """:func:`_quantize` of C-contiguous arrays, as one flat (vectorized) loop."""
    s, d = src.reshape(-1), dst.reshape(-1)
    for i in range(s.shape[0]):
        d[i] = np.uint8(s[i] * _F(255.0) + _F(0.5))


@_jit
def _dequantize(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """``dst`` float32 ← ``src / 255`` (uint8, same shape, both C-contiguous), divided in float32."""
    s, d = src.reshape(-1), dst.reshape(-1)
    for i in range(s.shape[0]):
        d[i] = _F(s[i]) / _F(255.0)


def to_8bit_into(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst`` ``[H,W,C]`` uint8 ← ``⌊255·src + 0.5⌋`` of float32 ``src`` ``[H,W,C]`` in 0..1 (±1e-3), any
    strides (a channels-last image is read in order): JPEG's float → 8-bit conversion in one pass."""
    if src.flags.c_contiguous and dst.flags.c_contiguous:
        _quantize_flat(src, dst)
    else:
        _quantize(src, dst)


def from_8bit_into(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst`` float32 ← ``src / 255`` for C-contiguous uint8 ``src`` and float32 ``dst`` of one shape."""
    _dequantize(src, dst)


def _probe() -> None:
    """Call every compiled function once on tiny inputs, in each variant the pack uses (float32 and 8-bit,
    planar and interleaved images, contiguous and strided JPEG inputs), so that a compiler failure shows
    at load time (:func:`_load`), not in the middle of a job."""
    h = w = 8
    kernels = streak_kernels(4.0, 1.0, np.array([1.5], dtype=_F), np.array([0.5], dtype=_F), 5, 1e-3)
    sites, done = gap_sites(np.linspace(0.0, 0.9, 16), 1.0 / math.log1p(-0.2), -1, h * w)
    vals = np.ones(sites.shape[0], dtype=_F)
    merged = merge_new(sites[:0], vals[:0], vals[:0], sites, vals, vals, 0.0, 1.0, True)
    kept, kept_vals = select_below(*merged, np.ones(1, dtype=_F), h * w, True)
    cols, wts, starts = _row_taps(kernels)
    rows = (kept % (h * w)) // w
    with_values = (kept, rows, kept_vals, cols, wts, starts, 5)
    ones = (kept, rows, cols, wts, starts, 5)
    veil, tones = np.zeros(1, dtype=_F), np.ones((3, 1), dtype=_F)
    for dtype in (_F, np.uint8):
        for shape in ((1, 3, h, w), (1, 1, h, w * 3)):  # planar, interleaved
            x, out = np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype)
            eight = dtype == np.uint8
            _rain_frame(x, out, *with_values, *with_values, veil, h, w, eight)
            _snow_frame(x, out, *ones, *ones, *ones, tones, veil, h, w, eight)
    hwc = np.zeros((h, w, 3), dtype=_F)
    u8 = np.zeros((h, w, 3), dtype=np.uint8)
    _quantize_flat(hwc, u8)
    _quantize(np.zeros((3, h, w), dtype=_F).transpose(1, 2, 0), u8)  # a standard-layout image seen as [h,w,3]
    _dequantize(u8, hwc)
