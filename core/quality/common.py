"""Shared checks and helpers for the quality metrics.

Every metric takes ``[B,C,H,W]`` float images in 0..1 on any device and returns one value
per image, a ``[B]`` float tensor. Alpha channels are ignored (scores are about colour);
grey images stay grey for the pixel metrics and are expanded to RGB for networks.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..image import check_image

#: ITU-R BT.601 luma as restoration papers compute it (BasicSR, MATLAB ``rgb2ycbcr``):
#: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B)/255 for R, G, B in 0..1 (Y in 16/255..235/255).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0


def drop_alpha(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` -> colour channels only (grey 1, RGB 3): alpha of 2/4-channel images is dropped."""
    c = x.shape[1]
    if c == 2:
        return x[:, :1]
    if c == 4:
        return x[:, :3]
    return x


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` RGB in 0..1 -> ``[B,1,H,W]`` BT.601 luma Y in 16/255..235/255 (grey is returned as is)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (Y_OFFSET + (x[:, :3] * w).sum(dim=1, keepdim=True)) / 255.0


def check_pair(reference: torch.Tensor, image: torch.Tensor, *, values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a full-reference pair; returns both with alpha dropped and batch sizes matched.

    A reference batch of 1 is compared against every image of ``image`` (expanded, not copied).
    Shapes must agree otherwise (same H, W and channel count); the error says what to do.
    ``values=False`` skips the pass over the pixels (finite, 0..1) for callers that check them
    while they compute (see :func:`check_value_range`).
    """
    check_image(reference, "reference", values=values)
    check_image(image, "image", values=values)
    if reference.shape[1] != image.shape[1]:
        raise InputError(
            f"reference has {reference.shape[1]} channels and image has {image.shape[1]}; "
            "convert both to the same layout (e.g. both RGB) before scoring"
        )
    if reference.shape[-2:] != image.shape[-2:]:
        raise InputError(
            f"reference is {reference.shape[-1]}x{reference.shape[-2]} but image is "
            f"{image.shape[-1]}x{image.shape[-2]} (WxH); full-reference metrics need the same size: "
            "resize or crop one of them first"
        )
    if reference.shape[0] != image.shape[0]:
        if reference.shape[0] == 1:
            reference = reference.expand(image.shape[0], -1, -1, -1)
        else:
            raise InputError(
                f"reference batch has {reference.shape[0]} images and image batch has {image.shape[0]}; "
                "give one reference for all, or one per image"
            )
    return drop_alpha(reference), drop_alpha(image.to(reference.device))


def crop_border(x: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels from every side (as restoration papers do for PSNR/SSIM)."""
    if border < 0:
        raise InputError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return x
    h, w = x.shape[-2:]
    if 2 * border >= min(h, w):
        raise InputError(f"crop_border {border} leaves nothing of a {w}x{h} image; use a smaller border")
    return x[..., border:-border, border:-border]


def as_rgb3(x: torch.Tensor) -> torch.Tensor:
    """Colour channels as RGB for networks: grey repeated, alpha dropped."""
    x = drop_alpha(x)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
