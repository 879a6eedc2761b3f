"""GenDeg's intensity measure: (μ, σ) of |clean − degraded|.

Both images in 0..1 are resized to 256×256 (as GenDeg measures its training pairs), then
μ and σ are the mean and (population) standard deviation of the absolute difference over
all pixels and channels. The synthesizer's calibration, GenDeg's sampler and
``GenDegIntensityFromPair`` all use this one function, so their numbers are comparable.
"""

from __future__ import annotations

import torch

from .errors import InputError
from .image import resize

MEASURE_SIZE = 256


def measure_intensity(clean: torch.Tensor, degraded: torch.Tensor, size: int | None = MEASURE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (μ, σ), each ``[B]``, of ``|clean − degraded|`` for ``[B,C,H,W]`` images in 0..1.

    ``size=None`` measures at the native resolution instead of 256×256.
    """
    if clean.shape != degraded.shape:
        raise InputError(
            f"clean and degraded must have the same shape, got {tuple(clean.shape)} and {tuple(degraded.shape)}; "
            "resize one of them first"
        )
    if clean.ndim != 4:
        raise InputError(f"expected [B,C,H,W] images, got shape {tuple(clean.shape)}")
    a, b = clean.float(), degraded.float()
    if size is not None:
        a, b = resize(a, (size, size), mode="bilinear"), resize(b, (size, size), mode="bilinear")
    diff = (a - b).abs().flatten(1)
    return diff.mean(dim=1), diff.std(dim=1, unbiased=False)
