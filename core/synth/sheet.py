"""Contact sheets: a labelled grid of images (for sweeps and quick looks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError


def _fit(x: torch.Tensor, tile: int) -> torch.Tensor:
    """``[3,H,W]`` -> ``[3,tile_h,tile]`` keeping the aspect ratio (width = tile)."""
    h, w = x.shape[-2:]
    th = max(1, round(h * tile / w))
    return F.interpolate(x[None], size=(th, tile), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def contact_sheet(
    images: Sequence[torch.Tensor],
    labels: Sequence[str] | None = None,
    columns: int = 3,
    tile: int = 256,
    gap: int = 4,
    label_height: int = 16,
) -> torch.Tensor:
    """Grid of ``[C,H,W]`` images (0..1, C in 1..4; alpha dropped, grey expanded) -> ``[1,3,H,W]`` 0..1.

    Tiles are ``tile`` pixels wide (height keeps each aspect ratio; rows take their tallest
    tile), laid out ``columns`` per row on a dark background, each with its label drawn
    beneath it in Pillow's default font.
    """
    if len(images) == 0:
        raise InputError("contact sheet: no images")
    if columns < 1 or tile < 8:
        raise InputError(f"contact sheet: columns must be ≥ 1 and tile ≥ 8 px, got {columns} and {tile}")
    labels = list(labels or [])
    tiles = []
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[0] not in (1, 2, 3, 4):
            raise InputError(f"contact sheet: image {i} has shape {tuple(im.shape)}, expected [C,H,W] with 1-4 channels")
        im = im.float().cpu()
        rgb = im[:1].expand(3, -1, -1) if im.shape[0] in (1, 2) else im[:3]
        tiles.append(_fit(rgb, tile))
    rows = [tiles[r : r + columns] for r in range(0, len(tiles), columns)]
    row_h = [max(t.shape[-2] for t in row) + label_height for row in rows]
    cols = min(columns, len(tiles))
    width = cols * tile + (cols + 1) * gap
    height = sum(row_h) + (len(rows) + 1) * gap
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    y = gap
    for r, row in enumerate(rows):
        for c, t in enumerate(row):
            x0 = gap + c * (tile + gap)
            arr = (t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            canvas[y : y + arr.shape[0], x0 : x0 + tile] = arr
        y += row_h[r] + gap
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    y = gap
    for r, row in enumerate(rows):
        for c in range(len(row)):
            k = r * columns + c
            if k < len(labels) and labels[k]:
                x0 = gap + c * (tile + gap)
                draw.text((x0 + 2, y + row_h[r] - label_height + 2), str(labels[k]), fill=(235, 235, 235), font=font)
        y += row_h[r] + gap
    out = torch.from_numpy(np.asarray(img).copy()).float().div(255).permute(2, 0, 1)[None]
    return out
