"""JPEG-compressed training pairs made on the fly from clean photos (DriftRec's data).

Sample ``k`` (a pure function of ``(seed, k)``, like every training source of the pack):
photo ``perm_e[k mod N]``; a square crop of side ``crop`` — with ``crop_scale`` a *random
resized crop* as the official training (``RandomResizedCrop(crop, scale, ratio 1)``: a square
window covering a fraction of the photo's area drawn uniformly from ``crop_scale``, placed
uniformly, resized to ``crop`` with antialiasing) else a plain random crop —, optional flips
/ 90° rotations, rounded to 8 bits; then a JPEG quality drawn uniformly from the integers
``quality[0]..quality[1]`` (both ends included; official 0..100) and the crop encoded and
decoded with Pillow's libjpeg (4:2:0 chroma, Pillow's defaults, as the official
``JPEGCompression``). Quality 0 codes like 1 (libjpeg's floor).

A sample is ``{"gt": [3,c,c], "lq": [3,c,c]}`` float32 in 0..1 (ground truth and JPEG), plus
``type`` (``"jpeg:<quality>"``) and ``mu`` (-1: no GenDeg intensity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...synth.jpeg import jpeg_roundtrip_uint8
from .datasets import ImageCache, augment, center_crop, epoch_item, random_crop, read_rgb8, to_float
from .seeding import STREAM_DATA, generator, randint, uniform


def jpeg_u8(img: torch.Tensor, quality: int) -> torch.Tensor:
    """``[3,H,W]`` uint8 coded as JPEG at ``quality`` (0..100) and decoded: ``[3,H,W]`` uint8."""
    arr = img.permute(1, 2, 0).contiguous().numpy()
    return torch.from_numpy(jpeg_roundtrip_uint8(arr, max(0, min(100, int(quality)))).copy()).permute(2, 0, 1).contiguous()


def random_resized_crop(img8: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """A square window of ``uniform(scale)`` of the area (clipped to the short side), resized to ``size``² (uint8 out)."""
    h, w = img8.shape[-2:]
    side = int(round(math.sqrt(uniform(g, *scale) * h * w)))
    side = max(1, min(side, h, w))
    top, left = randint(g, h - side + 1), randint(g, w - side + 1)
    win = img8[:, top : top + side, left : left + side]
    if side == size:
        return win.contiguous()
    out = F.interpolate(win[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


class JpegDataset(torch.utils.data.Dataset):
    """Crops of clean photos and their JPEG versions at a random quality (see the module doc)."""

    def __init__(self, files: Sequence[Path], seed: int, crop: int, crop_scale: tuple[float, float] | None,
                 quality: tuple[int, int], flip: bool, rot90: bool, cache: int) -> None:
        if not files:
            raise InputError("no clean photos left for training (every photo went to validation?); add photos or lower "
                             "data.val_count")
        lo, hi = int(quality[0]), int(quality[1])
        if not 0 <= lo <= hi <= 100:
            raise InputError(f"config: data.jpeg.quality must be 0 <= lo <= hi <= 100, got {list(quality)}")
        if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise InputError(f"config: data.crop_scale must be 0 < lo <= hi <= 1 (fractions of the area), got {list(crop_scale)}")
        self.files, self.seed, self.crop, self.crop_scale = list(files), seed, crop, crop_scale
        self.quality, self.flip, self.rot90 = (lo, hi), flip, rot90
        self.cache = ImageCache(cache)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> dict[str, Any]:
        path = self.files[epoch_item(self.seed, k, len(self.files))]
        g = generator(self.seed, STREAM_DATA, k)
        img = self.cache.get(path)
        if self.crop_scale is not None:
            clean8 = random_resized_crop(img, self.crop, self.crop_scale, g)
        else:
            (clean8,) = random_crop([img], self.crop, g)
        (clean8,) = augment([clean8], g, self.flip, self.rot90)
        q = self.quality[0] + randint(g, self.quality[1] - self.quality[0] + 1)
        return {"gt": to_float(clean8), "lq": to_float(jpeg_u8(clean8, q)), "type": f"jpeg:{q}", "mu": -1.0}


def jpeg_validation_pairs(files: Sequence[Path], quality: int, val_crop: int) -> list[dict[str, Any]]:
    """Fixed validation pairs: the centre ``val_crop``² of each photo and its JPEG at ``quality``."""
    out = []
    for path in files:
        clean8 = center_crop(read_rgb8(Path(path)), val_crop).contiguous()
        out.append({"gt": to_float(clean8), "lq": to_float(jpeg_u8(clean8, quality)), "name": f"{Path(path).stem}:q{quality}"})
    return out
