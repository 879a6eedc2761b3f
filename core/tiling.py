"""Tiled application of an image-to-image function, with feathered blending.

Shared by every restorer of the pack (feed-forward nets, IR-SDE, DA-CLIP): large images are
split into overlapping tiles, the function runs on batches of tiles, and the results are
blended back with smooth weights that sum to exactly 1 at every pixel.

How tiles are laid out (per axis, independently for height and width):

* An axis no longer than ``tile`` is one tile covering it (padded only if the network needs
  a multiple or a minimum size, see ``pad_multiple``/``min_size``).
* A longer axis gets the smallest number of tiles ``n`` whose pairwise overlap is at least
  ``overlap`` (``n = ceil((L - overlap) / (tile - overlap))``), all of the same length, the
  smallest that still needs only ``n`` tiles (about ``(L + (n - 1) * overlap) / n``), with
  starts spread evenly from 0 to ``L - t``. So the tiles cover the image exactly: no tile
  sticks out, no thin leftover tile is computed, and the work is close to the minimum
  ``L + (n - 1) * overlap`` pixels per axis. Equal tile sizes also let tiles of all images in
  a batch run together (``tile_batch``).
* Grid alignment: with ``pad_multiple`` (or ``align``) ``a`` > 1, tile starts and lengths are
  multiples of ``a`` and the image is reflect-padded at the bottom/right to a multiple of
  ``a`` (as whole-image inference pads it). A UNet that downsamples by ``a`` then samples
  every tile on the same grid as the whole image; without it, a tile starting at an odd
  offset gives a different result everywhere, not just at its seams. Pass the network's
  total stride (e.g. 16 for a 4-level UNet) even when it pads internally.

ComfyUI's ``comfy.utils.tiled_scale`` (which its upscale-model node uses) steps by
``tile - overlap`` from 0 and truncates the last tile at the border, so tiles come in
different sizes (one at a time, never batched), and its linear feather also darkens the
image border before dividing by the accumulated weights. Here the weight profile only
ramps where a neighbouring tile exists (the image border keeps weight 1) and uses a
raised cosine over the whole overlap, normalised per axis so that the 2-D weights (outer
products of the 1-D ones) form a partition of unity; no division image is accumulated.
The outer quarter of every overlap gets weight 0 from the tile whose edge it is, so a
network whose receptive-field radius is below ``overlap // 4`` gives exactly the untiled
result (up to float rounding); beyond that, seams are hidden by the ramp.

For a pointwise ``fn`` the result equals ``fn(x)`` up to float rounding; for a network with a
larger receptive field it differs from the untiled result only near tile seams, by an amount
that shrinks as ``overlap`` grows.

Everything here is plain PyTorch on ``[B,C,H,W]`` tensors. Out-of-memory detection is a
predicate passed in by the caller (the node layer passes ``nodes.host.is_oom``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import GenDegError, InputError

__all__ = [
    "TilePlan",
    "TilingOutOfMemoryError",
    "ShrinkingTile",
    "blend_weights_1d",
    "pad_for_model",
    "plan_axis",
    "plan_tiles",
    "tiled_apply",
    "tiled_apply_oom_safe",
]

ProgressFn = Callable[[int, int], None]


class TilingOutOfMemoryError(GenDegError, MemoryError):
    """Still out of memory with the smallest allowed tile."""


# --- layout -------------------------------------------------------------------------------


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Tile starts and the common tile length for one axis of ``length`` pixels.

    ``tile`` <= 0 means "one tile for the whole axis". With ``multiple`` > 1 the axis is first
    rounded up to a multiple of it (the caller pads the image that far, reflecting) and every
    tile start and length is a multiple of it, so a network that downsamples by ``multiple``
    sees each tile on the same pixel grid as the whole image. An axis that fits in one tile is
    left as it is (``([0], length)``): the network then pads it as it would the whole image.
    Returns ``(starts, tile_length)``; consecutive tiles overlap by at least ``overlap`` (or by
    ``tile - multiple`` where the grid leaves no room for more) and the last tile ends at the
    (rounded-up) axis length.
    """
    if length <= 0:
        raise InputError(f"cannot tile an axis of length {length}")
    a = max(1, int(multiple))
    padded = math.ceil(length / a) * a
    big = max(a, tile - tile % a)  # largest allowed tile length, a multiple of `a`
    if tile <= 0 or length <= tile or padded <= big:
        return [0], length  # one tile: the network sees the axis as in whole-image inference
    if overlap < 0 or overlap >= big:
        raise InputError(
            f"tile overlap must be between 0 and the tile size minus 1 (tile {big}, overlap {overlap}); "
            "use a smaller overlap or a larger tile"
        )
    lu = padded // a  # everything below in units of `a`

    def n_tiles(tu: int) -> int:
        # largest step (units) keeping the overlap; at least one grid cell (the overlap is then
        # tile - grid, the most the grid allows)
        step = max(1, (tu * a - overlap) // a)
        return math.ceil((lu - tu) / step) + 1

    tu = big // a
    n = n_tiles(tu)
    while tu > 1 and n_tiles(tu - 1) <= n:  # shrink the tile while the count stays minimal
        tu -= 1
    if n == 1:
        return [0], length
    starts = [round(i * (lu - tu) / (n - 1)) * a for i in range(n)]
    return starts, tu * a


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of an ``height`` x ``width`` image lie (input pixels)."""

    height: int
    width: int
    starts_h: tuple[int, ...]
    starts_w: tuple[int, ...]
    tile_h: int
    tile_w: int

    @property
    def n_tiles(self) -> int:
        return len(self.starts_h) * len(self.starts_w)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """``(i, j, top, left)`` for every tile, row-major."""
        return [(i, j, y, x) for i, y in enumerate(self.starts_h) for j, x in enumerate(self.starts_w)]

    def work(self) -> int:
        """Input pixels processed per image (before any padding to a model multiple)."""
        return self.n_tiles * self.tile_h * self.tile_w


def plan_tiles(height: int, width: int, tile: int | tuple[int, int], overlap: int, multiple: int = 1) -> TilePlan:
    """Lay out tiles of at most ``tile`` (or ``(tile_h, tile_w)``) pixels; ``tile`` <= 0: whole image."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    sh, lh = plan_axis(height, th, overlap, multiple)
    sw, lw = plan_axis(width, tw, overlap, multiple)
    return TilePlan(height, width, tuple(sh), tuple(sw), lh, lw)


def _ramp(m: int) -> torch.Tensor:
    """Raised-cosine ramp 0 -> 1 over an overlap of ``m`` pixels (float64, length ``m``).

    The outer quarter on each side is flat (0 then 1) so that pixels a network computed next
    to a tile edge (where its receptive field saw padding) get no weight at all; the middle
    half rises as ``sin^2``, sampled at pixel centres. ``ramp + ramp.flip(0) == 1``.
    """
    margin = m // 4
    band = m - 2 * margin
    k = torch.arange(m, dtype=torch.float64)
    u = ((k - margin + 0.5) / band).clamp(0.0, 1.0)
    return torch.sin(0.5 * math.pi * u) ** 2


def blend_weights_1d(starts: list[int] | tuple[int, ...], tile_len: int, length: int, scale: int = 1) -> torch.Tensor:
    """Per-tile weights along one axis, ``[n_tiles, length * scale]`` float64, summing to 1.

    Each tile's raw profile is 1 except over the part it shares with a neighbour, where it
    ramps (see :func:`_ramp`: up from the previous tile, down to the next). With two tiles
    over a pixel the two ramps already sum to 1; the final normalisation makes that hold for
    any layout (overlaps wider than half a tile included).
    """
    n = len(starts)
    L = length * scale
    w = torch.zeros(n, L, dtype=torch.float64)
    cover = torch.zeros(n, L, dtype=torch.float64)
    for i, s in enumerate(starts):
        a, b = s * scale, (s + tile_len) * scale
        prof = torch.ones(b - a, dtype=torch.float64)
        if i > 0:  # ramp up over the overlap with the previous tile
            m = (starts[i - 1] + tile_len) * scale - a
            if m > 0:
                prof[:m] *= _ramp(m)
        if i < n - 1:  # ramp down over the overlap with the next tile
            m = b - starts[i + 1] * scale
            if m > 0:
                prof[b - a - m :] *= _ramp(m).flip(0)
        w[i, a:b] = prof
        cover[i, a:b] = 1.0
    total = w.sum(dim=0, keepdim=True)
    w = torch.where(total > 0, w, cover)  # (only reachable with very wide overlaps)
    return w / w.sum(dim=0, keepdim=True)


# --- padding for networks with size requirements ----------------------------------------


def pad_for_model(
    x: torch.Tensor, multiple: int = 1, minimum: int = 0, square: bool = False, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``[B,C,H,W]`` at the bottom/right so a network accepts it; returns (padded, (H, W)).

    ``multiple``: H and W become multiples of it; ``minimum``: at least that many pixels;
    ``square``: H == W. Reflect padding (replicate where the pad exceeds the side). Crop the
    output back with ``out[..., :H*scale, :W*scale]``.
    """
    h, w = x.shape[-2:]
    multiple = max(1, int(multiple))
    th, tw = max(h, minimum), max(w, minimum)
    if square:
        th = tw = max(th, tw)
    th, tw = math.ceil(th / multiple) * multiple, math.ceil(tw / multiple) * multiple
    if (th, tw) == (h, w):
        return x, (h, w)
    if mode != "reflect":
        return F.pad(x, (0, tw - w, 0, th - h), mode=mode), (h, w)
    return _pad_to(x, th, tw), (h, w)


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad ``x`` at the bottom/right to ``height`` x ``width`` (see :func:`pad_for_model`)."""
    out = x
    while out.shape[-2] < height or out.shape[-1] < width:
        ch, cw = out.shape[-2:]
        ph, pw = min(height - ch, ch - 1), min(width - cw, cw - 1)
        if ph <= 0 and pw <= 0:  # 1-pixel sides cannot reflect
            return F.pad(out, (0, width - cw, 0, height - ch), mode="replicate")
        out = F.pad(out, (0, max(pw, 0), 0, max(ph, 0)), mode="reflect")
    return out


# --- tiled application --------------------------------------------------------------------


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int | tuple[int, int] = 512,
    overlap: int = 32,
    *,
    scale: int = 1,
    pad_multiple: int = 1,
    min_size: int = 0,
    square: bool = False,
    align: int = 1,
    tile_batch: int = 1,
    progress: ProgressFn | None = None,
    device: torch.device | str | None = None,
    output_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` [B,C,H,W] tile by tile and blend; returns [B,C',H*scale,W*scale] float32.

    Args:
        fn: maps a batch of tiles ``[N,C,h,w]`` (on ``device``) to ``[N,C',h*scale,w*scale]``;
            values in whatever range ``fn`` uses (the pack's restorers: 0..1).
        x: input batch (any device; tiles are moved to ``device`` one batch at a time, so a
            huge image may stay on the CPU while ``fn`` runs on an accelerator).
        tile: largest tile side in input pixels (or ``(h, w)``); 0 or less: whole image.
        overlap: minimum overlap between neighbouring tiles, input pixels; should exceed the
            network's receptive-field radius for seamless results.
        scale: integer output/input size ratio (1 for restorers, 2/4 for upscalers).
        pad_multiple, min_size, square: the network's size requirements; every tile is
            reflect-padded to meet all three, then cropped back (see :func:`pad_for_model`).
        align: the network's total stride if larger than ``pad_multiple`` (e.g. a UNet that pads
            internally); tiles start and end on multiples of ``lcm(pad_multiple, align)`` of the
            image, which is reflect-padded at the bottom/right to such a multiple first.
        tile_batch: how many tiles (across the whole batch of images) go through ``fn`` at once.
        progress: ``progress(done_tiles, total_tiles)``; may raise to interrupt.
        device: where ``fn`` runs (default: ``x.device``).
        output_device: where the result is accumulated (default: ``x.device``).
    """
    if x.ndim != 4:
        raise InputError(f"tiled_apply expects [B,C,H,W], got shape {tuple(x.shape)}")
    if int(scale) != scale or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    tile_batch = max(1, int(tile_batch))
    device = torch.device(device) if device is not None else x.device
    output_device = torch.device(output_device) if output_device is not None else x.device
    b, _, h, w = x.shape
    grid = math.lcm(max(1, int(pad_multiple)), max(1, int(align)))
    plan = plan_tiles(h, w, tile, overlap, grid)
    hp, wp = plan.starts_h[-1] + plan.tile_h, plan.starts_w[-1] + plan.tile_w
    if (hp, wp) != (h, w):  # split axes rounded up to the grid: reflect-pad bottom/right, crop at the end
        x = _pad_to(x, hp, wp)
    wh = blend_weights_1d(plan.starts_h, plan.tile_h, hp, scale).to(torch.float32)
    ww = blend_weights_1d(plan.starts_w, plan.tile_w, wp, scale).to(torch.float32)
    oth, otw = plan.tile_h * scale, plan.tile_w * scale
    jobs = [(bi, i, j, y0, x0) for bi in range(b) for (i, j, y0, x0) in plan.boxes()]
    total = len(jobs)
    out: torch.Tensor | None = None
    single = plan.n_tiles == 1
    if progress is not None:
        progress(0, total)
    for k0 in range(0, total, tile_batch):
        chunk = jobs[k0 : k0 + tile_batch]
        tiles = torch.stack([x[bi, :, y0 : y0 + plan.tile_h, x0 : x0 + plan.tile_w] for bi, _, _, y0, x0 in chunk])
        tiles = tiles.to(device, non_blocking=True)
        padded, _ = pad_for_model(tiles, pad_multiple, min_size, square)
        y = fn(padded)
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != len(chunk):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise GenDegError(f"the tiled function returned {got}; expected a [N,C,H,W] tensor for {len(chunk)} tiles")
        eh, ew = padded.shape[-2] * scale, padded.shape[-1] * scale
        if tuple(y.shape[-2:]) != (eh, ew):
            raise GenDegError(
                f"the tiled function turned a {padded.shape[-2]}x{padded.shape[-1]} tile into "
                f"{y.shape[-2]}x{y.shape[-1]}; expected scale {scale} ({eh}x{ew})"
            )
        y = y[..., :oth, :otw].to(device=output_device, dtype=torch.float32)
        if out is None:
            out = torch.zeros(b, y.shape[1], hp * scale, wp * scale, dtype=torch.float32, device=output_device)
        for t, (bi, i, j, y0, x0) in enumerate(chunk):
            oy, ox = y0 * scale, x0 * scale
            if single:
                out[bi] = y[t]
                continue
            wt = wh[i, oy : oy + oth, None].to(output_device) * ww[j, None, ox : ox + otw].to(output_device)
            out[bi, :, oy : oy + oth, ox : ox + otw].addcmul_(y[t], wt)
        if progress is not None:
            progress(min(k0 + tile_batch, total), total)
    assert out is not None
    return out if (hp, wp) == (h, w) else out[..., : h * scale, : w * scale].contiguous()


def tiled_apply_oom_safe(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int | tuple[int, int] = 512,
    overlap: int = 32,
    *,
    is_oom: Callable[[BaseException], bool],
    min_tile: int = 64,
    on_oom: Callable[[], None] | None = None,
    tile_batch: int = 1,
    **kwargs,
) -> torch.Tensor:
    """:func:`tiled_apply`, retried with smaller work after an out-of-memory error.

    On an error for which ``is_oom(exc)`` is true, ``on_oom()`` is called (e.g. to empty the
    accelerator cache), then the tile batch is halved down to 1, then the tile side is halved
    (a whole-image request starts from the image's longer side), keeping the overlap at most half
    the tile, until the tile would drop below ``min_tile``; then
    :class:`TilingOutOfMemoryError` says what to do. Other errors pass through unchanged.
    ``kwargs`` go to :func:`tiled_apply` (``scale``, ``pad_multiple``, ``progress``, ...).
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    h, w = x.shape[-2:]
    th = h if th <= 0 else min(th, h)
    tw = w if tw <= 0 else min(tw, w)
    batch = max(1, int(tile_batch))
    ov = overlap
    while True:
        try:
            return tiled_apply(fn, x, (th, tw), ov, tile_batch=batch, **kwargs)
        except Exception as exc:  # noqa: BLE001 - filtered by the predicate
            if not is_oom(exc):
                raise
            if on_oom is not None:
                on_oom()
            if batch > 1:
                batch //= 2
                continue
            if max(th, tw) // 2 < min_tile:
                raise TilingOutOfMemoryError(
                    f"out of memory even with {tw}x{th} tiles, one at a time (the smallest tile allowed is "
                    f"{min_tile}px): free memory (close other models/apps), use fp16/bf16 if the model allows, "
                    f"or run on the CPU. Original error: {exc}"
                ) from exc
            th, tw = max(min_tile, th // 2), max(min_tile, tw // 2)
            ov = min(ov, min(th, tw) // 2)


class ShrinkingTile:
    """The tile side of a network evaluated many times (a sampler's steps), halved on out-of-memory
    and kept halved for the later calls.

    ``tile`` <= 0 means the whole image; the first out-of-memory error then starts from the
    image's longer side. ``run(evaluate, h, w)`` calls ``evaluate(tile)``; on an error for which
    ``is_oom(exc)`` is true it calls ``on_oom()`` and retries with half the tile, until the tile
    would drop below ``min_tile`` (then :class:`TilingOutOfMemoryError`). Other errors pass through.
    """

    def __init__(self, tile: int, min_tile: int = 64, is_oom: Callable[[BaseException], bool] | None = None,
                 on_oom: Callable[[], None] | None = None) -> None:
        self.tile, self.min_tile, self.is_oom, self.on_oom = int(tile), int(min_tile), is_oom, on_oom

    def run(self, evaluate: Callable[[int], torch.Tensor], h: int, w: int) -> torch.Tensor:
        while True:
            try:
                return evaluate(self.tile)
            except Exception as exc:  # noqa: BLE001 - filtered by the predicate
                if self.is_oom is None or not self.is_oom(exc):
                    raise
                if self.on_oom is not None:
                    self.on_oom()
                current = self.tile if self.tile > 0 else max(h, w)
                if current // 2 < self.min_tile:
                    raise TilingOutOfMemoryError(
                        f"out of memory even with {current}px tiles (the smallest allowed is {self.min_tile}px): free "
                        f"memory, use fp16/bf16, or run on the CPU. Original error: {exc}"
                    ) from exc
                self.tile = current // 2
