"""MATLAB building blocks that NIQE needs bit for bit (float64 NumPy, no SciPy).

* :func:`grey_rows` — ``rgb2gray`` of an 8-bit image (weights 0.298936021293775,
  0.587043074451121, 0.114020904255103; result rounded half away from zero to 0..255),
  computed for a few rows at a time so that huge images never exist twice in memory.
* :func:`gaussian_window` — ``fspecial('gaussian', 7, 7/6)`` normalised to sum 1.
* :func:`filter_rows` — ``imfilter(x, window, 'replicate')`` for a band of rows whose
  vertical context (3 rows above and below, border rows repeated) is supplied by the caller.
* :func:`resize_contributions` — the weights and source indices of ``imresize(A, scale)``
  along one dimension (``contributions`` of ``imresize.m``): Keys cubic kernel (a = −0.5),
  widened by 1/scale when shrinking (antialiasing), mirrored borders, all-zero taps removed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: MATLAB ``rgb2gray``: the first row of inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703]).
GREY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """1-D factor ``g`` of ``fspecial('gaussian', size, sigma)`` (normalised): the 2-D window is ``outer(g, g)``."""
    c = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(c * c) / (2 * sigma * sigma))
    return g / g.sum()


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)


def grey_rows(image: torch.Tensor | np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """MATLAB grey values (0..255, float64) of ``rows`` (indices) and the first ``width`` columns.

    ``image`` is a ``[C,H,W]`` float tensor in 0..1 (quantised to 8 bits first, as saving it
    as an 8-bit file and reading it in MATLAB would) or an 8-bit array ``[H,W]`` / ``[H,W,C]``.
    C = 2 or 4 carries alpha, which is ignored; 3 colour channels go through ``rgb2gray``.
    """
    if isinstance(image, torch.Tensor):
        idx = torch.as_tensor(rows, dtype=torch.long, device=image.device)
        part = image[:, :, :width].index_select(1, idx).detach().to("cpu", torch.float64).numpy()
        chans = [_round_half_away(np.clip(part[c] * 255.0, 0.0, 255.0)) for c in range(part.shape[0])]
    else:
        part = image[rows, :width]
        chans = [part.astype(np.float64)] if part.ndim == 2 else [part[..., c].astype(np.float64) for c in range(part.shape[-1])]
    if len(chans) >= 3:
        w0, w1, w2 = GREY_WEIGHTS
        return _round_half_away(w0 * chans[0] + w1 * chans[1] + w2 * chans[2])
    return chans[0]


def image_size(image: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """(H, W) of a ``[C,H,W]`` tensor or an ``[H,W(,C)]`` array."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.shape[0]), int(image.shape[1])


def filter_rows(padded: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``outer(g, g)``: rows 'valid' (``padded`` carries the vertical
    context), columns with replicated borders (MATLAB ``imfilter(..., 'replicate')``)."""
    k = len(g)
    r = k // 2
    n = padded.shape[0] - 2 * r
    v = g[0] * padded[0:n]
    for i in range(1, k):
        v = v + g[i] * padded[i : i + n]
    p = np.pad(v, ((0, 0), (r, r)), mode="edge")
    w = v.shape[1]
    out = g[0] * p[:, 0:w]
    for i in range(1, k):
        out = out + g[i] * p[:, i : i + w]
    return out


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def resize_contributions(in_len: int, scale: float, antialias: bool = True,
                         out_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``imresize`` bicubic along one dimension: (weights [out, P], 0-based source indices [out, P]).

    ``out = ceil(in_len * scale)``; output sample ``y[i] = Σ_p weights[i, p] · x[indices[i, p]]``.
    ``out_index`` (0-based) computes only those output samples; their rows keep taps whose
    weight is zero everywhere (MATLAB drops those columns), which adds exact zeros only.
    """
    out_len = math.ceil(in_len * scale)
    width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * _cubic(scale * t)  # noqa: E731
        width = width / scale
    else:
        kernel = _cubic
    x = (np.arange(out_len) if out_index is None else np.asarray(out_index)).astype(np.float64) + 1
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - ind)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    ind = aux[np.mod(ind.astype(np.int64) - 1, len(aux))] - 1
    if out_index is not None:
        return weights, ind
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], ind[:, keep]
