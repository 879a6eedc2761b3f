"""JPEG compression with the real codec (libjpeg via torchvision or Pillow), per image.

``quality = round(100 − strength·(100 − quality_min))`` (default ``quality_min`` 5), or the
``quality`` parameter when set; strengths above 1 continue down to quality 1 (the calibration
uses them for intensities that quality_min does not reach); strength 0 returns the image
rounded to 8 bits and not coded (quality 100 would still change it). Each image is rounded to
8 bits (``floor(255·x + 0.5)``), encoded with libjpeg at that quality (``subsampling`` as given;
4:2:0 is Pillow's default for RGB) and decoded back, so the output is exactly what a JPEG file
written at that quality decodes to (4:2:0 runs through torchvision's libjpeg binding, which
decodes to the same pixels as Pillow; other subsamplings through Pillow). Deterministic (no seed).

8-bit images (``uint8`` 0..255, e.g. decoded files) are coded as they are and come back 8-bit:
the codec's cost alone.

Cost (float images): the codec's, plus two cache-sized conversion passes per image (float → 8-bit
interleaved rows, decoded 8-bit → float); the result is returned in the interleaved
(channels-last) memory order the codec produces, which is also ComfyUI's image layout. With
Pillow, the images of a batch are coded in parallel threads (it releases the GIL), as many as
``torch.get_num_threads()``.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import fused
from .base import Degradation, Param
from .strips import is_split, strips

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

PARAMS = {
    "quality": Param(None, 1, 100, "JPEG quality factor 1..100; empty = from strength", optional=True),
    "quality_min": Param(5, 1, 99, "quality at strength 1"),
    "subsampling": Param("4:2:0", doc="chroma subsampling", choices=tuple(SUBSAMPLING)),
}

#: the float → 8-bit conversion works on row blocks of about this many pixels (its float
#: temporary, 12 bytes per pixel, stays in the core's cache)
CHUNK_PIXELS = 1 << 15

#: ``(hwc_uint8, quality) -> hwc_uint8``: one JPEG round trip of an ``[H,W,3]`` C-contiguous array
Coder = Callable[[np.ndarray, int], np.ndarray]


def quality_for(strength: float, quality_min: int = 5) -> int:
    """JPEG quality factor that ``strength`` in 0..1 maps to (100 at 0, ``quality_min`` at 1)."""
    return max(1, int(round(100.0 - float(strength) * (100.0 - quality_min))))


def jpeg_roundtrip_uint8(arr: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode an ``[H,W,3]`` uint8 array as JPEG at ``quality`` with Pillow and decode it again."""
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
    """JPEG-compressed ``[B,3,H,W]`` 0..1 (coded on the CPU, returned on ``x``'s device, channels-last).

    ``x`` must lie in 0..1 within ±1e-3 (as :func:`~.synthesize` checks): ``255·x + 0.5`` then
    truncates to 0..255 without a clamp.
    """
    b, _, h, w = x.shape
    qualities = [None if quality is None and s <= 0.0 else int(quality) if quality is not None else quality_for(s, quality_min)
                 for s in strength.detach().cpu().tolist()]
    fast = _torchvision_coder() if subsampling == "4:2:0" else None
    coder: Coder = fast if fast is not None else lambda arr, q: jpeg_roundtrip_uint8(arr, q, subsampling)
    pillow = fast is None  # Pillow releases the GIL while coding: images in parallel threads (see _each)
    if x.dtype == torch.uint8:  # 8-bit images: the codec alone, 8-bit results
        return _jpeg_8bit(x, qualities, coder, pillow)
    out = torch.empty((b, h, w, 3), dtype=x.dtype)  # interleaved, like the codec's pixels
    out_np = out.numpy()
    if is_split(h, w):  # large images: two strip loops (bounded float temporaries, progress per strip)
        u8 = np.empty((b, h, w, 3), dtype=np.uint8)
        for y0, y1 in strips(h, w):
            for i in range(b):
                _to_u8_into(x[i, :, y0:y1], u8[i, y0:y1])
        coded = _each(lambda i: u8[i] if qualities[i] is None else coder(u8[i], qualities[i]), b, pillow)
        for y0, y1 in strips(h, w):
            for i in range(b):
                _from_u8_into(coded[i][y0:y1], out_np[i, y0:y1])
    else:

        def one(i: int) -> None:  # convert, code, convert back: the image's 8-bit copy stays in cache
            u8 = np.empty((h, w, 3), dtype=np.uint8)
            _to_u8_into(x[i], u8)
            coded = u8 if qualities[i] is None else coder(u8, qualities[i])
            _from_u8_into(coded, out_np[i])

        _each(one, b, pillow)
    return out.permute(0, 3, 1, 2).to(x.device)


def _each(fn: Callable[[int], Any], b: int, threaded: bool) -> list[Any]:
    """``[fn(0), …, fn(b − 1)]``; with ``threaded`` (Pillow, which releases the GIL while coding) in
    parallel threads, as many as torch may use; torchvision's binding does not (threads only add
    overhead): one after the other."""
    workers = min(b, max(1, torch.get_num_threads()), os.cpu_count() or 1) if threaded else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, range(b)))
    return [fn(i) for i in range(b)]


def _jpeg_8bit(x: torch.Tensor, qualities: list[int | None], coder: Coder, threaded: bool) -> torch.Tensor:
    """JPEG round trips of 8-bit ``[B,3,H,W]`` images (any layout, any device) -> 8-bit channels-last
    ``[B,3,H,W]`` on ``x``'s device; ``None`` qualities pass the image through."""
    b, _, h, w = x.shape
    if b == 1 and qualities[0] is not None:  # one image: the decoded pixels are the result (no copy)
        coded = torch.from_numpy(np.require(coder(x[0].permute(1, 2, 0).cpu().contiguous().numpy(), qualities[0]),
                                            requirements="W"))  # Pillow's arrays are read-only: copied
        return coded.permute(2, 0, 1).unsqueeze(0).to(x.device)
    out = torch.empty((b, h, w, 3), dtype=torch.uint8)
    out_np = out.numpy()

    def one(i: int) -> None:
        hwc = x[i].permute(1, 2, 0).cpu()
        if qualities[i] is None:
            out[i].copy_(hwc)
        else:
            np.copyto(out_np[i], coder(hwc.contiguous().numpy(), qualities[i]))

    _each(one, b, threaded)
    return out.permute(0, 3, 1, 2).to(x.device)


def _from_u8_into(coded: np.ndarray, dst: np.ndarray) -> None:
    """``dst`` (float, ``[h,w,3]``) ← the decoded 8-bit pixels ``coded`` / 255, in ``dst``'s float type."""
    if dst.dtype == np.float32 and coded.flags.c_contiguous and dst.flags.c_contiguous and fused.available():
        fused.from_8bit_into(coded, dst)
    else:
        np.divide(coded, dst.dtype.type(255), out=dst)


def _to_u8_into(src: torch.Tensor, dst: np.ndarray) -> None:
    """``[3,h,w]`` floats in 0..1 (±1e-3) -> ``dst`` ``[h,w,3]`` uint8, ``floor(255·x + 0.5)`` computed
    in ``src``'s float type, row block by row block (transposed on the way, in cache)."""
    if src.device.type != "cpu":  # accelerators: converted there, only 8-bit values travel
        hwc = torch.add(torch.tensor(0.5, dtype=src.dtype, device=src.device), src.detach(), alpha=255.0)
        dst[...] = hwc.clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        return
    a = src.detach().permute(1, 2, 0).numpy()  # a view: [h,w,3] in whatever order src is stored
    if a.dtype == np.float32 and fused.available():  # one compiled pass, same values
        fused.to_8bit_into(a, dst)
        return
    h, w = a.shape[:2]
    rows = max(1, CHUNK_PIXELS // max(w, 1))
    tmp = np.empty((min(rows, h), w, 3), dtype=a.dtype)
    scale, half = a.dtype.type(255.0), a.dtype.type(0.5)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        t = tmp[: y1 - y0]
        np.multiply(a[y0:y1], scale, out=t)
        np.add(t, half, out=t)
        np.copyto(dst[y0:y1], t, casting="unsafe")  # truncation toward zero: floor for the values ≥ −0.5 here


@functools.lru_cache(maxsize=1)
def _torchvision_coder() -> Coder | None:
    """A :data:`Coder` with torchvision's libjpeg binding, or ``None`` (torchvision missing, or
    built without image support, or its coders removed).

    Same libjpeg defaults as Pillow for RGB (baseline, 4:2:0, islow DCT, fancy upsampling), so
    the decoded pixels are identical (tests compare them with Pillow's), without Pillow's
    4-byte pixel packing and copies. It reads and writes interleaved ``[H,W,3]`` memory, so the
    CHW views passed and returned here cost no copy. The registered operators are called
    directly (the public wrappers add 0.1 ms of checks and warnings per image) when they give
    the wrappers' result on a probe image; else the wrappers.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    except Exception:  # noqa: BLE001 - torchvision missing, built without image support, or removed (deprecated)
        return None
    # torchvision ≥ 0.29 warns on every call that its image coders are deprecated (in favour
    # of torchcodec); silence exactly that message (Pillow takes over once they are removed)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)

    def public(arr: np.ndarray, quality: int) -> np.ndarray:
        return decode_jpeg(encode_jpeg(torch.from_numpy(arr).permute(2, 0, 1), quality=int(quality))).permute(1, 2, 0).numpy()

    try:
        enc, dec, mode = torch.ops.image.encode_jpeg, torch.ops.image.decode_jpeg, ImageReadMode.UNCHANGED.value

        def direct(arr: np.ndarray, quality: int) -> np.ndarray:
            return dec(enc(torch.from_numpy(arr).permute(2, 0, 1), int(quality)), mode, False).permute(1, 2, 0).numpy()

        probe = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
        if np.array_equal(direct(probe, 50), public(probe, 50)):
            return direct
    except Exception:  # noqa: BLE001 - the operators' signature changed: the public functions
        pass
    return public


def reach(params: dict[str, Any]) -> float:
    """Largest strength: the one that maps to quality 1 (1 when the quality is fixed)."""
    return 1.0 if params["quality"] is not None else 99.0 / (100.0 - params["quality_min"])


DEGRADATION = Degradation("jpeg", jpeg, PARAMS, __doc__ or "", stochastic=False, discrete=True, per_image=True, reach=reach,
                          passes=2, accepts_uint8=True)
