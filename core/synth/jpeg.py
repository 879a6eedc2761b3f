"""JPEG compression with the real codec (Pillow / libjpeg), per image.

``quality = round(100 − strength·(100 − quality_min))`` (default ``quality_min`` 5), or the
``quality`` parameter when set; strength 0 returns the image untouched (quality 100 would
still change it). Each image is rounded to 8 bits, encoded with Pillow at that quality
(``subsampling`` as given; Pillow's default for RGB is 4:2:0) and decoded back, so the output
is exactly what a JPEG file written at that quality decodes to. Deterministic (no seed).
Images of a batch are coded in parallel threads (libjpeg releases the GIL), as many as
``torch.get_num_threads()``.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from .base import Degradation, Param

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

PARAMS = {
    "quality": Param(None, 1, 100, "JPEG quality factor 1..100; empty = from strength", optional=True),
    "quality_min": Param(5, 1, 99, "quality at strength 1"),
    "subsampling": Param("4:2:0", doc="chroma subsampling", choices=tuple(SUBSAMPLING)),
}


def quality_for(strength: float, quality_min: int = 5) -> int:
    """JPEG quality factor that ``strength`` in 0..1 maps to (100 at 0, ``quality_min`` at 1)."""
    return int(round(100.0 - float(strength) * (100.0 - quality_min)))


def jpeg_roundtrip_uint8(arr: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode an ``[H,W,3]`` uint8 array as JPEG at ``quality`` and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=int(quality), subsampling=SUBSAMPLING[subsampling])
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"))


def jpeg(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    quality: int | None = None,
    quality_min: int = 5,
    subsampling: str = "4:2:0",
) -> torch.Tensor:
    """JPEG-compressed ``[B,3,H,W]`` 0..1 (computed on the CPU, returned on ``x``'s device)."""
    # 8-bit rounding (half up) in torch, then one cheap uint8 transpose to [B,H,W,3]
    q = x.detach().float().clamp(0, 1).mul_(255.0).add_(0.5).to(torch.uint8)
    arr = q.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = np.empty_like(arr)
    strengths = strength.detach().cpu().tolist()

    def one(i: int) -> None:
        if quality is None and strengths[i] <= 0.0:
            out[i] = arr[i]
            return
        q = int(quality) if quality is not None else quality_for(strengths[i], quality_min)
        out[i] = jpeg_roundtrip_uint8(arr[i], q, subsampling)

    # as many coder threads as torch may use on the CPU (torch.set_num_threads), at most one per image
    workers = min(arr.shape[0], max(1, torch.get_num_threads()), os.cpu_count() or 1)
    if workers > 1:  # libjpeg releases the GIL: images of a batch are coded in parallel threads
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(arr.shape[0])))
    else:
        for i in range(arr.shape[0]):
            one(i)
    y = torch.from_numpy(out).permute(0, 3, 1, 2).to(dtype=x.dtype).div_(255.0)
    return y.contiguous().to(x.device)


DEGRADATION = Degradation("jpeg", jpeg, PARAMS, __doc__ or "", stochastic=False, discrete=True)
