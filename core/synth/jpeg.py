"""JPEG compression with the real codec (libjpeg via torchvision or Pillow), per image.

``quality = round(100 − strength·(100 − quality_min))`` (default ``quality_min`` 5), or the
``quality`` parameter when set; strengths above 1 continue down to quality 1 (the calibration
uses them for intensities that quality_min does not reach); strength 0 returns the image untouched (quality 100 would
still change it). Each image is rounded to 8 bits, encoded with libjpeg at that quality
(``subsampling`` as given; 4:2:0 is Pillow's default for RGB) and decoded back, so the output
is exactly what a JPEG file written at that quality decodes to (4:2:0 runs through
torchvision's libjpeg binding, which decodes to the same pixels as Pillow; other
subsamplings through Pillow). Deterministic (no seed).
With Pillow, the images of a batch are coded in parallel threads (it releases the GIL), as
many as ``torch.get_num_threads()``.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from .base import Degradation, Param
from .strips import is_split, strips

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

PARAMS = {
    "quality": Param(None, 1, 100, "JPEG quality factor 1..100; empty = from strength", optional=True),
    "quality_min": Param(5, 1, 99, "quality at strength 1"),
    "subsampling": Param("4:2:0", doc="chroma subsampling", choices=tuple(SUBSAMPLING)),
}


def quality_for(strength: float, quality_min: int = 5) -> int:
    """JPEG quality factor that ``strength`` in 0..1 maps to (100 at 0, ``quality_min`` at 1)."""
    return max(1, int(round(100.0 - float(strength) * (100.0 - quality_min))))


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
    # 8-bit rounding (half up): x is checked to lie in 0..1 (±1e-3), so 255·x + 0.5 truncates to
    # 0..255 without a clamp. Computed in x's memory order (ComfyUI images are channels-last,
    # which is the HWC layout libjpeg reads: no transposing copies on the way in).
    h, w = x.shape[-2:]
    if is_split(h, w):  # large images: converted strip by strip (no full-size float temporaries)
        u8 = torch.empty_like(x, dtype=torch.uint8, device="cpu")
        for y0, y1 in strips(h, w):
            u8[..., y0:y1, :] = _to_u8(x[..., y0:y1, :])
    else:
        u8 = _to_u8(x)
    out = torch.empty(u8.shape, dtype=torch.uint8)
    strengths = strength.detach().cpu().tolist()
    coder = _torchvision_coder() if subsampling == "4:2:0" else None

    def one(i: int) -> None:
        if quality is None and strengths[i] <= 0.0:
            out[i] = u8[i]
            return
        q = int(quality) if quality is not None else quality_for(strengths[i], quality_min)
        if coder is not None:
            out[i] = coder(u8[i], q)
        else:
            out[i] = torch.from_numpy(jpeg_roundtrip_uint8(u8[i].permute(1, 2, 0).contiguous().numpy(), q, subsampling)).permute(2, 0, 1)

    # Pillow releases the GIL while coding: images in parallel threads (as many as torch may use);
    # torchvision's binding does not (threads only add overhead): one after the other
    workers = 1 if coder is not None else min(u8.shape[0], max(1, torch.get_num_threads()), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(u8.shape[0])))
    else:
        for i in range(u8.shape[0]):
            one(i)
    if not is_split(h, w):
        return out.to(dtype=x.dtype).div_(255.0).to(x.device)
    y = torch.empty(out.shape, dtype=x.dtype, device=x.device)
    for y0, y1 in strips(h, w):
        y[..., y0:y1, :] = out[..., y0:y1, :].to(dtype=x.dtype).div_(255.0)
    return y


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """0..1 floats (checked to lie within ±1e-3 of it) -> uint8 on the CPU, rounding half up, same memory order."""
    u8 = torch.add(torch.tensor(0.5, dtype=x.dtype, device=x.device), x.detach(), alpha=255.0)
    return u8.clamp_(0, 255).to(torch.uint8).cpu()


def _torchvision_coder():
    """``(chw_uint8, quality) -> chw_uint8`` JPEG round trip with torchvision's libjpeg, or ``None``.

    Same libjpeg defaults as Pillow for RGB (baseline, 4:2:0, islow DCT, fancy upsampling), so
    the decoded pixels are identical (tests compare them with Pillow's), without Pillow's
    4-byte pixel packing and copies: about 1.7× faster per image.
    """
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except Exception:  # noqa: BLE001 - torchvision missing, built without image support, or removed (deprecated)
        return None
    # torchvision ≥ 0.29 warns on every call that its image coders are deprecated (in favour
    # of torchcodec); silence exactly that message (Pillow takes over once they are removed)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)

    def code(img: torch.Tensor, quality: int) -> torch.Tensor:
        return decode_jpeg(encode_jpeg(img, quality=int(quality)))

    return code

def reach(params: dict[str, Any]) -> float:
    """Largest strength: the one that maps to quality 1 (1 when the quality is fixed)."""
    return 1.0 if params["quality"] is not None else 99.0 / (100.0 - params["quality_min"])


DEGRADATION = Degradation("jpeg", jpeg, PARAMS, __doc__ or "", stochastic=False, discrete=True, per_image=True, reach=reach,
                          passes=2)
