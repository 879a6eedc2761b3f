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
products are carried in float64, where they are exact, so the result equals Pillow's.
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
    acc = x @ weights.T.to(x.device) + float(1 << (_PRECISION_BITS - 1))
    return torch.floor(acc / float(1 << _PRECISION_BITS)).clamp_(0, 255)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """0..1 floats -> integers 0..255 (as float64), rounding like 8-bit image writing."""
    return torch.floor(x.double().clamp(0, 1) * 255.0 + 0.5)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image GenDeg intensity (μ, σ), each ``[B]`` float32, of ``[B,C,H,W]`` images in 0..1.

    μ and σ are in 0..1 units (mean and population std of the absolute difference).
    Defaults follow the official code: 8-bit quantisation, RGB, Pillow Lanczos to 256×256.
    Like the official code, the two images may differ in size (each is squashed to 256×256).
    ``size=None`` measures at the native resolution; ``quantize=False`` skips the 8-bit
    rounding and uses a float Lanczos with the same weights (for differentiable-ish use).
    """
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


def _measure(clean: torch.Tensor, degraded: torch.Tensor, size: int | None, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _rgb(clean), _rgb(degraded)
    if a.device.type == "mps":  # no float64 on Apple GPUs: the exact integer sums run on the CPU
        a, b = a.cpu(), b.cpu()
    if quantize:
        a, b = quantize8(a), quantize8(b)
        if size is not None:
            a, b = pil_lanczos_resize(a, (size, size)), pil_lanczos_resize(b, (size, size))
        diff = ((a - b).abs() / 255.0).flatten(1)
    else:
        a, b = a.double(), b.double()
        if size is not None:
            a, b = _float_lanczos(a, size), _float_lanczos(b, size)
        diff = (a - b).abs().flatten(1)
    return diff.mean(dim=1).float(), diff.std(dim=1, unbiased=False).float()


def _float_lanczos(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    one = float(1 << _PRECISION_BITS)
    if w != size:
        x = x @ (_pil_weights(w, size) / one).T.to(x.device)
    if h != size:
        x = (x.transpose(-1, -2) @ (_pil_weights(h, size) / one).T.to(x.device)).transpose(-1, -2)
    return x
