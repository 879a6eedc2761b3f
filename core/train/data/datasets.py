"""Training samples as a pure function of (seed, sample number).

The loop asks for global sample numbers ``k = 0, 1, 2, …`` (:class:`StepSampler`): sample
``k`` is item ``perm_e[k mod N]`` of epoch ``e = k div N`` (``perm_e`` a seeded permutation),
cropped, flipped, rotated and (on the fly) degraded with a generator seeded from
``(seed, k)``. Which worker process makes it, and whether the run was resumed, never changes
it — a resumed run sees exactly the samples an uninterrupted run would.

A sample is ``{"lq": [3,h,w], "gt": [3,h,w]}`` float32 in 0..1 (plus ``type`` and ``mu``).
With ``positive`` (Perceive-IR's contrastive term) it also holds ``positive_lq``: another
crop of the same degraded image (pairs: another window of the lq file; on the fly: another
window of the clean photo degraded with the same type, intensity and pattern seed), drawn
from a stream of its own, so the main sample is the same with or without it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import InputError
from .. import config as cfg
from .seeding import (
    STREAM_DATA,
    STREAM_ORDER,
    STREAM_POSITIVE,
    STREAM_VAL,
    derive_seed,
    generator,
    randint,
    uniform,
)
from .sources import PairFiles

# ---------------------------------------------------------------------------------------
# images


class ImageCache:
    """Decoded RGB images as uint8 ``[3,H,W]``, the last ``size`` kept (one cache per worker)."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._items: OrderedDict[Path, torch.Tensor] = OrderedDict()

    def get(self, path: Path) -> torch.Tensor:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        img = read_rgb8(path)
        if self.size:
            self._items[path] = img
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return img

    def __getstate__(self) -> dict[str, Any]:  # workers start with an empty cache
        return {"size": self.size, "_items": OrderedDict()}


def read_rgb8(path: Path) -> torch.Tensor:
    """An image file as RGB uint8 ``[3,H,W]`` (grey repeated, alpha dropped)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > Image.MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {w}x{h} pixels is too large to train on; downscale it")
            arr = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read this image ({exc}); remove or replace it") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def to_float(x8: torch.Tensor) -> torch.Tensor:
    return x8.float().div_(255.0)


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad ``[C,H,W]`` bottom/right so both sides are at least ``size`` (replicate when too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x[None].float(), (0, pw, 0, ph), mode=mode)[0].to(x.dtype)


def random_crop(images: Sequence[torch.Tensor], size: int, g: torch.Generator) -> list[torch.Tensor]:
    """The same random ``size``² window of every image (they must have one size)."""
    shapes = {tuple(im.shape[-2:]) for im in images}
    if len(shapes) != 1:
        raise InputError(f"paired images have different sizes {sorted(shapes)}; ground truth and degraded must match")
    images = [pad_to(im, size) for im in images]
    h, w = images[0].shape[-2:]
    top, left = randint(g, h - size + 1), randint(g, w - size + 1)
    return [im[..., top : top + size, left : left + size] for im in images]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size``² window of ``[...,H,W]`` (the whole image when ``size`` is 0 or larger)."""
    if size <= 0:
        return x
    h, w = x.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def augment(images: Sequence[torch.Tensor], g: torch.Generator, flip: bool, rot90: bool) -> list[torch.Tensor]:
    """The same random flips / 90° rotation of every image (always three draws, so the stream never shifts)."""
    hflip, vflip, rot = (float(v) < 0.5 for v in torch.rand(3, generator=g, device=g.device))
    out = list(images)
    if flip and hflip:
        out = [im.flip(-1) for im in out]
    if flip and vflip:
        out = [im.flip(-2) for im in out]
    if rot90 and rot:
        out = [im.transpose(-1, -2) for im in out]
    return [im.contiguous() for im in out]


# ---------------------------------------------------------------------------------------
# sample order


class StepSampler(torch.utils.data.Sampler[int]):
    """Global sample numbers for one process, from ``start_step`` on, forever.

    Optimizer step ``s``, micro-batch ``m`` (of ``accum``), process ``r`` (of ``world``) and
    position ``i`` (of ``batch``) get ``k = ((s·accum + m)·world + r)·batch + i``: disjoint
    across processes, and the same whatever step the run (re)starts at.
    """

    def __init__(self, start_step: int, batch: int, accum: int = 1, rank: int = 0, world: int = 1) -> None:
        self.start_step, self.batch, self.accum, self.rank, self.world = start_step, batch, accum, rank, world

    def __iter__(self) -> Iterator[int]:
        s = self.start_step
        while True:
            for m in range(self.accum):
                base = ((s * self.accum + m) * self.world + self.rank) * self.batch
                yield from range(base, base + self.batch)
            s += 1

    def __len__(self) -> int:  # DataLoader only needs it for len(); the stream is endless
        return 2**62


def epoch_item(seed: int, k: int, n: int) -> int:
    """Which of ``n`` items sample ``k`` uses: a fresh seeded permutation every epoch (``n`` samples)."""
    epoch, pos = divmod(k, n)
    perm = torch.randperm(n, generator=generator(seed, STREAM_ORDER, epoch))
    return int(perm[pos])


@contextmanager
def quiet_calibration() -> Iterator[None]:
    """Calibration warns per image about clamped requests; on the fly that is noise, not news."""
    logger = logging.getLogger("gendeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------
# datasets


class CropDataset(torch.utils.data.Dataset):
    """Sample ``k``: item ``epoch_item(seed, k, N)`` and the generator of ``(seed, k)``, then the same
    random crop, flips and rotation of each of its images (uint8 ``[3,crop,crop]``)."""

    def __init__(self, items: Sequence[Any], seed: int, crop: int, flip: bool, rot90: bool, cache: int,
                 positive: bool = False) -> None:
        self.items, self.seed, self.crop, self.flip, self.rot90 = list(items), seed, crop, flip, rot90
        self.positive = positive
        self.cache = ImageCache(cache)

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, k: int, paths: Callable[[Any], Sequence[Path]]) -> tuple[Any, list[torch.Tensor], torch.Generator]:
        item = self.items[epoch_item(self.seed, k, len(self.items))]
        g = generator(self.seed, STREAM_DATA, k)
        crops = random_crop([self.cache.get(p) for p in paths(item)], self.crop, g)
        return item, augment(crops, g, self.flip, self.rot90), g

    def second_crop(self, k: int, path: Path) -> tuple[torch.Tensor, torch.Generator]:
        """Another random window (and flips) of ``path`` for sample ``k``, from its own stream: (uint8 crop, generator)."""
        g = generator(self.seed, STREAM_POSITIVE, k)
        (crop,) = random_crop([self.cache.get(path)], self.crop, g)
        (crop,) = augment([crop], g, self.flip, self.rot90)
        return crop, g


class PairedDataset(CropDataset):
    """Paired crops of (gt, lq) files (pack datasets and gt/ + lq/ folders)."""

    def __init__(self, pairs: Sequence[PairFiles], seed: int, crop: int, flip: bool, rot90: bool, cache: int,
                 positive: bool = False) -> None:
        if not pairs:
            raise InputError("no training pairs left (every pair went to validation?); add pairs or lower data.val_count")
        super().__init__(pairs, seed, crop, flip, rot90, cache, positive)

    def __getitem__(self, k: int) -> dict[str, Any]:
        pair, (gt, lq), _ = self.sample(k, lambda p: (p.gt, p.lq))
        out = {"gt": to_float(gt), "lq": to_float(lq), "type": pair.type, "mu": -1.0 if pair.mu is None else pair.mu}
        if self.positive:
            out["positive_lq"] = to_float(self.second_crop(k, pair.lq)[0])
        return out


def mu_range(kind: str, spec: str | tuple[float, float]) -> tuple[float, float]:
    """μ range of ``kind``: its light..heavy presets, or the given ``[lo, hi]``."""
    if isinstance(spec, str):
        if spec != "presets":
            raise InputError(f"config: data.otf.mu must be 'presets' or [lo, hi], got {spec!r}")
        from ...synth.plan import PRESETS

        levels = PRESETS[kind]
        return float(levels["light"]), float(levels["heavy"])
    lo, hi = float(spec[0]), float(spec[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise InputError(f"config: data.otf.mu must be 0 <= lo <= hi <= 1, got {list(spec)}")
    return lo, hi


def draw_degradation(kind: str, g: torch.Generator, opts: cfg.OnTheFlyData, mu_spec: Any) -> tuple[int, float, float]:
    """(pattern seed, target μ, strength) of one degradation of ``kind``, drawn from ``g``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    lo, hi = mu_range(kind, mu_spec)
    target = uniform(g, lo, hi)
    strength = uniform(g, *opts.strength)
    return seed, target, strength


def degrade(clean: torch.Tensor, kind: str, g: torch.Generator, opts: cfg.OnTheFlyData, mu_spec: Any,
            drawn: tuple[int, float, float] | None = None) -> tuple[torch.Tensor, float]:
    """Degrade one ``[3,h,w]`` crop with ``kind``: μ drawn from ``mu_spec`` (calibrated) or a random strength
    (``drawn``: reuse a :func:`draw_degradation` result instead of drawing from ``g``)."""
    from ...synth.calibrate import degrade_at_strength, degrade_to_mu

    seed, target, strength = drawn if drawn is not None else draw_degradation(kind, g, opts, mu_spec)
    with quiet_calibration():
        if opts.calibrate:
            res = degrade_to_mu(clean[None], kind, target, seed, tol=opts.tol, max_iter=12)
        else:
            res = degrade_at_strength(clean[None], kind, strength, seed)
    return res.image[0].clamp_(0, 1), float(res.mu[0])


class OnTheFlyDataset(CropDataset):
    """Random crops of clean photos, each degraded by the synthesizer (type, μ and pattern drawn per sample)."""

    def __init__(self, files: Sequence[Path], opts: cfg.OnTheFlyData, seed: int, crop: int, flip: bool, rot90: bool,
                 cache: int, positive: bool = False) -> None:
        from ...synth import get

        if not files:
            raise InputError("no clean photos left for training (every photo went to validation?); add photos or lower data.val_count")
        if not opts.types:
            raise InputError("config: data.otf.types is empty; name at least one degradation type")
        self.types = [get(t).name for t in opts.types]
        self.chain_types = [get(t).name for t in opts.chain_types]
        for kind in self.types:
            mu_range(kind, opts.mu)
        self.opts = opts
        super().__init__(files, seed, crop, flip, rot90, cache, positive)

    @property
    def files(self) -> list[Path]:
        return self.items

    def __getitem__(self, k: int) -> dict[str, Any]:
        path, (clean8,), g = self.sample(k, lambda path: (path,))  # flipped before degrading: rain still falls down
        clean = to_float(clean8)
        kind = self.types[randint(g, len(self.types))]
        first = draw_degradation(kind, g, self.opts, self.opts.mu)
        lq, mu = degrade(clean, kind, g, self.opts, self.opts.mu, first)
        chained = uniform(g, 0.0, 1.0) < self.opts.chain_probability
        second = self.chain_types[randint(g, len(self.chain_types))] if self.chain_types else ""
        then = None
        if chained and second:
            then = draw_degradation(second, g, self.opts, tuple(self.opts.chain_mu))
            lq, _ = degrade(lq, second, g, self.opts, tuple(self.opts.chain_mu), then)
        out = {"gt": clean, "lq": lq, "type": f"{kind}>{second}" if then is not None else kind, "mu": mu}
        if self.positive:  # the same degradation on another window of the photo
            pos8, gp = self.second_crop(k, path)
            pos, _ = degrade(to_float(pos8), kind, gp, self.opts, self.opts.mu, first)
            if then is not None:
                pos, _ = degrade(pos, second, gp, self.opts, tuple(self.opts.chain_mu), then)
            out["positive_lq"] = pos
        return out


# ---------------------------------------------------------------------------------------
# validation


def split_validation(items: Sequence[Any], count: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, val): ``count`` items chosen by a seeded draw (never trained on), the rest for training."""
    n = len(items)
    if count <= 0 or n == 0:
        return list(items), []
    if count >= n:
        raise InputError(f"data.val_count {count} leaves nothing to train on ({n} images); lower it")
    perm = torch.randperm(n, generator=generator(seed, STREAM_VAL, n)).tolist()
    val_idx = sorted(perm[:count])
    chosen = set(val_idx)
    return [x for i, x in enumerate(items) if i not in chosen], [items[i] for i in val_idx]


def validation_pairs(val_items: Sequence[Any], data: cfg.DataConfig, seed: int) -> list[dict[str, Any]]:
    """Fixed validation samples ``{"gt", "lq", "name"}`` ([3,h,w] 0..1, centre crops of ``data.val_crop``).

    On the fly: validation photo ``i`` gets type ``types[i mod n]`` at the middle of its μ
    range, degraded with a fixed seed, so every validation sees the same pairs.
    """
    out = []
    for i, item in enumerate(val_items):
        if isinstance(item, PairFiles):
            gt, lq = to_float(read_rgb8(item.gt)), to_float(read_rgb8(item.lq))
            if gt.shape != lq.shape:
                raise InputError(f"{item.lq}: size {tuple(lq.shape[-2:])} differs from its ground truth {tuple(gt.shape[-2:])}")
            out.append({"gt": center_crop(gt, data.val_crop), "lq": center_crop(lq, data.val_crop), "name": item.name})
            continue
        from ...synth import get
        from ...synth.calibrate import degrade_to_mu

        clean = center_crop(to_float(read_rgb8(item)), data.val_crop).contiguous()
        kind = get(data.otf.types[i % len(data.otf.types)]).name
        lo, hi = mu_range(kind, data.otf.mu)
        with quiet_calibration():
            res = degrade_to_mu(clean[None], kind, (lo + hi) / 2, derive_seed(seed, STREAM_VAL, i), tol=data.otf.tol)
        out.append({"gt": clean, "lq": res.image[0].clamp(0, 1), "name": f"{Path(item).stem}:{kind}"})
    return out
