"""Image tensors: layout conversion, validation, channel handling, padding.

Conventions used across the pack:

* ComfyUI ``IMAGE``: float32 ``[B,H,W,C]`` in 0..1 on the CPU; ``MASK``: ``[B,H,W]``.
* ``core`` works on ``[B,C,H,W]`` float tensors in 0..1 on any device.
* Networks need RGB: :func:`to_rgb` expands grey and sets alpha aside; :func:`restore_channels`
  puts the original channel layout back (alpha carried around the model unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError

#: Largest image side accepted without an explicit override (guards against typos / bombs).
MAX_SIDE = 16384


def check_image(x: torch.Tensor, name: str = "image", *, layout: str = "BCHW", allow_range: bool = False,
                values: bool = True) -> None:
    """Raise :class:`InputError` unless ``x`` is a finite float image batch of 1-4 channels.

    ``layout`` is ``"BCHW"`` (core) or ``"BHWC"`` (ComfyUI IMAGE). Values must lie in 0..1
    (a tolerance of 1e-3 is allowed for rounding) unless ``allow_range``. ``values=False`` checks
    type and shape only, for callers that check the values in the same pass as their own work
    (with :func:`check_value_range`).
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (a single image? add a batch dimension)" if x.ndim == 3 else ""
        raise InputError(f"{name}: expected a 4-D {layout} tensor, got shape {tuple(x.shape)}{hint}")
    c = x.shape[1] if layout == "BCHW" else x.shape[3]
    h, w = (x.shape[2], x.shape[3]) if layout == "BCHW" else (x.shape[1], x.shape[2])
    if not 1 <= c <= 4:
        raise InputError(f"{name}: expected 1-4 channels ({layout}), got {c} (shape {tuple(x.shape)})")
    if x.shape[0] == 0:
        raise InputError(f"{name}: the batch is empty")
    if h == 0 or w == 0:
        raise InputError(f"{name}: image has zero size {h}x{w}")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{name}: {w}x{h} is larger than the {MAX_SIDE}px limit; downscale or tile it first")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a float tensor with values in 0..1, got dtype {x.dtype}")
    if not values:
        return
    # one pass: min and max propagate NaN, and an infinity shows up in one of them
    lo_t, hi_t = torch.aminmax(x.detach())
    check_value_range(float(lo_t), float(hi_t), name, allow_range=allow_range)


def check_value_range(lo: float, hi: float, name: str = "image", *, allow_range: bool = False) -> None:
    """Raise :class:`InputError` unless the minimum ``lo`` and maximum ``hi`` of an image are finite
    and (unless ``allow_range``) within 0..1 give or take 1e-3."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name}: contains NaN or infinite values; check the node that produced it")
    if not allow_range and (lo < -1e-3 or hi > 1 + 1e-3):
        raise InputError(f"{name}: values must be in 0..1, got {lo:.4g}..{hi:.4g}")


def flat_in_memory_order(x: torch.Tensor) -> torch.Tensor | None:
    """``x``'s values as a 1-D view in memory order when ``x`` fills its memory without gaps in some
    order of its dimensions (standard, channels-last, any permutation), so whole-tensor passes
    read it sequentially without a copy; ``None`` otherwise (e.g. rows cut from a larger image)."""
    v = x.permute(*sorted(range(x.ndim), key=lambda d: -x.stride(d)))
    return v.reshape(-1) if v.is_contiguous() else None


def from_comfy(image: torch.Tensor, device: torch.device | str | None = None, name: str = "image") -> torch.Tensor:
    """ComfyUI ``IMAGE`` ``[B,H,W,C]`` -> ``[B,C,H,W]`` float32 on ``device`` (validated)."""
    check_image(image, name, layout="BHWC")
    x = image.permute(0, 3, 1, 2).to(dtype=torch.float32)
    return x.to(device) if device is not None else x


def to_comfy(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` -> ComfyUI ``IMAGE`` ``[B,H,W,C]`` float32 in 0..1 on the CPU, contiguous."""
    return x.detach().clamp(0, 1).permute(0, 2, 3, 1).to(device="cpu", dtype=torch.float32).contiguous()


def mask_to_bchw(mask: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """ComfyUI ``MASK`` ``[B,H,W]`` (or ``[H,W]``) -> ``[B,1,H,W]`` float32."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InputError(f"mask: expected [B,H,W], got shape {tuple(mask.shape)}")
    x = mask[:, None].to(dtype=torch.float32)
    return x.to(device) if device is not None else x


@dataclass(frozen=True)
class ChannelLayout:
    """How to turn an RGB result back into the input's channel layout."""

    channels: int
    alpha: torch.Tensor | None = None  # [B,1,H,W] of the input, if it had one


def to_rgb(x: torch.Tensor) -> tuple[torch.Tensor, ChannelLayout]:
    """``[B,C,H,W]`` with C in 1..4 -> (``[B,3,H,W]``, layout to restore). Grey is repeated, alpha set aside."""
    c = x.shape[1]
    if c == 3:
        return x, ChannelLayout(3)
    if c == 1:
        return x.expand(-1, 3, -1, -1), ChannelLayout(1)
    if c == 2:  # grey + alpha
        return x[:, :1].expand(-1, 3, -1, -1), ChannelLayout(2, x[:, 1:2])
    if c == 4:
        return x[:, :3], ChannelLayout(4, x[:, 3:4])
    raise InputError(f"expected 1-4 channels, got {c}")


def restore_channels(rgb: torch.Tensor, layout: ChannelLayout) -> torch.Tensor:
    """Inverse of :func:`to_rgb`: RGB result -> the input's channel count (alpha resized if needed)."""
    alpha = layout.alpha
    if alpha is not None and alpha.shape[-2:] != rgb.shape[-2:]:
        alpha = F.interpolate(alpha, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    if alpha is not None:
        alpha = alpha.to(rgb)
    if layout.channels == 3:
        return rgb
    grey = rgb.mean(dim=1, keepdim=True) if layout.channels in (1, 2) else None
    if layout.channels == 1:
        return grey
    if layout.channels == 2:
        return torch.cat([grey, alpha], dim=1)
    return torch.cat([rgb, alpha], dim=1)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right so H and W are multiples of ``multiple``; returns (padded, (H, W) to crop back to)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect needs the pad to be smaller than the side
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``[...,H,W]`` back to ``size`` = (H, W) from the top-left."""
    return x[..., : size[0], : size[1]]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize ``[B,C,H,W]`` to (H, W) with antialiasing when shrinking; values clamped to 0..1."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    antialias = mode in ("bilinear", "bicubic")
    kwargs = {"align_corners": False, "antialias": antialias} if antialias else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs).clamp(0, 1)
