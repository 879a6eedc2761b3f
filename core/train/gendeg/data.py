"""GenDeg fine-tuning data: pairs with their prompt and measured intensity, as a function of (seed, sample number).

Each pair gets a prompt ``"<caption>, <phrase>"`` (the caption from the dataset's metadata,
a text file ``gt/NAME.txt`` next to the clean image, or one fixed text; the phrase of its
type) and GenDeg's intensity (μ, σ) measured exactly as the official training code does
(:func:`core.intensity.measure_intensity`: 8-bit images, Pillow Lanczos to 256×256, mean and
population std of |clean − degraded|), binned into the two one-hots.

Sample ``k`` (see :mod:`core.train.data.datasets`) is pair ``perm_e[k mod N]``:

* ``squash`` (official): both images resized to ``size``×``size`` with Pillow's Lanczos on
  8 bits (as the official ``Image.resize``); μ/σ of the whole pair;
* ``crop``: the same random ``size``×``size`` window of both (full resolution); μ/σ of that crop;

then flipped left-right with probability 1/2 (one draw always made). A sample is
``{"clean", "degraded"}`` ``[3,size,size]`` float32 0..1, ``"prompt"``, ``"type"``,
``"one_hots"`` ``[2,129]``, ``"mu"``, ``"sigma"``.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...gendeg.conditioning import (
    TYPE_PHRASES,
    clean_phrase,
    compose_prompt,
    intensity_one_hots,
    normalize_type,
)
from ...intensity import measure_intensity, pil_lanczos_resize
from ..data import TrainData
from ..data.datasets import ImageCache, epoch_item, random_crop, read_rgb8, split_validation, to_float
from ..data.seeding import STREAM_DATA, generator
from ..data.sources import PairFiles, list_dataset_pairs, list_folder_pairs
from .config import GenDegDataConfig

log = logging.getLogger("gendeg")

#: Pairs measured per type for the intensity summary (presets of the new type, validation μ levels).
SUMMARY_PAIRS = 32


@dataclass(frozen=True)
class GenDegPair:
    gt: Path
    lq: Path
    name: str
    type: str
    phrase: str
    caption: str

    @property
    def prompt(self) -> str:
        return compose_prompt(self.caption, self.phrase)


def type_key(name: str) -> str:
    """A type name as pack datasets record it (lower case, spaces and hyphens as ``_``)."""
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def phrase_table(phrases: dict[str, Any]) -> dict[str, str]:
    """The config's ``data.phrases`` with normalised keys and phrases (one clear error for bad entries)."""
    out = {}
    for name, phrase in (phrases or {}).items():
        if not isinstance(phrase, str) or not clean_phrase(phrase):
            raise InputError(f"config: data.phrases.{name} must be a phrase such as 'in underwater conditions', got {phrase!r}")
        out[type_key(name)] = clean_phrase(phrase)
    return out


def resolve_type(name: str, phrases: dict[str, str]) -> tuple[str, str]:
    """(type name, phrase): the config's phrase for it, else GenDeg's own; unknown types without a phrase are refused."""
    key = type_key(name)
    if key in phrases:
        return key, phrases[key]
    try:
        official = normalize_type(name)
    except InputError:
        raise InputError(f"type {name!r} has no phrase: add it to data.phrases, e.g. {{{key}: 'in {key} conditions'}} "
                         f"(GenDeg's own types: {', '.join(TYPE_PHRASES)})") from None
    return official, TYPE_PHRASES[official]


def _caption_file(gt: Path) -> str | None:
    path = gt.with_suffix(".txt")
    if not path.is_file():
        return None
    try:
        text = " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read this caption file ({exc}); fix or remove it") from exc
    return text or None


def caption_for(pair: PairFiles, data: GenDegDataConfig) -> tuple[str, str]:
    """(caption, where it came from: ``metadata``, ``files`` or ``fixed``); None-caption modes raise in :func:`make_pairs`."""
    if data.caption in ("auto", "metadata") and pair.caption:
        return pair.caption, "metadata"
    if data.caption in ("auto", "files"):
        text = _caption_file(pair.gt)
        if text:
            return text, "files"
    if data.caption in ("auto", "fixed"):
        return data.caption_text, "fixed"
    return "", "missing"


def make_pairs(files: Sequence[PairFiles], data: GenDegDataConfig) -> tuple[list[GenDegPair], dict[str, int]]:
    """Pairs with type, phrase and caption; counts of caption sources. Missing strict captions are one error."""
    phrases = phrase_table(data.phrases)
    folder_type = resolve_type(data.type, phrases) if data.source == "folders" else None
    out, sources, missing = [], Counter(), []
    for f in files:
        kind, phrase = folder_type if folder_type is not None else resolve_type(f.type or "", phrases)
        caption, source = caption_for(f, data)
        if source == "missing":
            missing.append(f.gt)
            continue
        sources[source] += 1
        out.append(GenDegPair(f.gt, f.lq, f.name, kind, phrase, caption))
    if missing:
        where = "no 'caption' in its metadata record" if data.caption == "metadata" else f"no caption file {missing[0].with_suffix('.txt')}"
        raise InputError(f"{len(missing)} pair(s) have no caption (data.caption is {data.caption!r}; e.g. {missing[0].name}: "
                         f"{where}); add them, or set data.caption to auto or fixed")
    return out, dict(sources)


def list_pairs(data: GenDegDataConfig) -> tuple[list[GenDegPair], dict[str, int]]:
    """Every pair of the configured source (checked up front)."""
    if data.source == "pairs":
        assert data.pairs is not None
        files = list_dataset_pairs(data.pairs.root, data.pairs.types, data.pairs.mu_range)
    else:
        assert data.folders is not None
        files = list_folder_pairs(data.folders.gt, data.folders.lq)
    return make_pairs(files, data)


def squash(x8: torch.Tensor, size: int) -> torch.Tensor:
    """``[3,H,W]`` uint8 -> ``[3,size,size]`` uint8, as ``PIL.Image.resize((size, size), LANCZOS)``."""
    if tuple(x8.shape[-2:]) == (size, size):
        return x8
    return pil_lanczos_resize(x8[None], (size, size))[0].to(torch.uint8)


def pair_intensity(gt: torch.Tensor, lq: torch.Tensor) -> tuple[float, float]:
    """GenDeg's (μ, σ) of one pair (``[3,H,W]`` uint8 or 0..1; sizes may differ, as officially)."""
    a = gt.float() / 255.0 if gt.dtype == torch.uint8 else gt
    b = lq.float() / 255.0 if lq.dtype == torch.uint8 else lq
    mu, sigma = measure_intensity(a[None], b[None])
    return float(mu[0]), float(sigma[0])


class GenDegPairDataset(torch.utils.data.Dataset):
    """Training samples of :class:`GenDegPair` s (see the module doc)."""

    def __init__(self, pairs: Sequence[GenDegPair], seed: int, size: int, resize: str, flip: bool, cache: int) -> None:
        if not pairs:
            raise InputError("no training pairs left (every pair went to validation?); add pairs or lower data.val_count")
        self.pairs, self.seed, self.size, self.resize, self.flip = list(pairs), seed, size, resize, flip
        self.cache = ImageCache(cache)
        self.cache_size = max(0, int(cache))
        self._squashed: OrderedDict[int, tuple[torch.Tensor, torch.Tensor, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getstate__(self) -> dict[str, Any]:  # workers start with empty caches
        return {**self.__dict__, "_squashed": OrderedDict()}

    def _squashed_pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        if i in self._squashed:
            self._squashed.move_to_end(i)
            return self._squashed[i]
        pair = self.pairs[i]
        gt8, lq8 = read_rgb8(pair.gt), read_rgb8(pair.lq)
        mu, sigma = pair_intensity(gt8, lq8)  # of the whole pair, each squashed to 256² (official)
        item = (squash(gt8, self.size), squash(lq8, self.size), mu, sigma)
        if self.cache_size:
            self._squashed[i] = item
            while len(self._squashed) > self.cache_size:
                self._squashed.popitem(last=False)
        return item

    def __getitem__(self, k: int) -> dict[str, Any]:
        i = epoch_item(self.seed, k, len(self.pairs))
        pair = self.pairs[i]
        g = generator(self.seed, STREAM_DATA, k)
        if self.resize == "squash":
            gt8, lq8, mu, sigma = self._squashed_pair(i)
        else:
            gt8, lq8 = random_crop([self.cache.get(pair.gt), self.cache.get(pair.lq)], self.size, g)
            mu, sigma = pair_intensity(gt8, lq8)  # of the crop the model sees
        if float(torch.rand((), generator=g)) < 0.5 and self.flip:
            gt8, lq8 = gt8.flip(-1), lq8.flip(-1)
        return {"clean": to_float(gt8.contiguous()), "degraded": to_float(lq8.contiguous()), "prompt": pair.prompt,
                "type": pair.type, "one_hots": intensity_one_hots(mu, sigma), "mu": mu, "sigma": sigma}


def intensity_summary(pairs: Sequence[GenDegPair], per_type: int = SUMMARY_PAIRS) -> dict[str, dict[str, Any]]:
    """Per type: pair count, phrase and light/medium/heavy (μ, σ) = 20th/50th/80th percentiles of up to
    ``per_type`` evenly spaced pairs (how the pack's presets of GenDeg's own types are defined)."""
    out: dict[str, dict[str, Any]] = {}
    by_type: dict[str, list[GenDegPair]] = {}
    for p in pairs:
        by_type.setdefault(p.type, []).append(p)
    for kind, items in sorted(by_type.items()):
        idx = sorted({round(j) for j in np.linspace(0, len(items) - 1, min(per_type, len(items)))})
        stats = np.array([pair_intensity(read_rgb8(items[j].gt), read_rgb8(items[j].lq)) for j in idx])
        levels = {name: [round(float(np.percentile(stats[:, 0], q)), 4), round(float(np.percentile(stats[:, 1], q)), 4)]
                  for name, q in (("light", 20), ("medium", 50), ("heavy", 80))}
        out[kind] = {"pairs": len(items), "phrase": items[0].phrase, "measured": len(idx), **levels}
    return out


def build_gendeg_data(data: GenDegDataConfig, seed: int) -> TrainData:
    """Training dataset, held-out pairs (``{"gt", "lq", "name", "prompt", "type"}``, whole images) and a summary."""
    pairs, caption_sources = list_pairs(data)
    train_pairs, val_pairs = split_validation(pairs, data.val_count, seed)
    ds = GenDegPairDataset(train_pairs, seed, data.size, data.resize, data.flip, data.cache_images)
    types = intensity_summary(train_pairs)
    val = []
    for p in val_pairs:
        gt, lq = to_float(read_rgb8(p.gt)), to_float(read_rgb8(p.lq))
        val.append({"gt": gt, "lq": lq, "name": p.name, "prompt": p.prompt, "type": p.type})
    summary = {"source": data.source, "pairs": len(train_pairs), "val_pairs": len(val_pairs), "types": types,
               "captions": caption_sources, "resize": data.resize, "size": data.size,
               "first_clean": str(train_pairs[0].gt) if train_pairs else ""}
    if data.source == "pairs":
        assert data.pairs is not None
        summary["root"] = str(data.pairs.root)
    else:
        assert data.folders is not None
        summary.update(gt=str(data.folders.gt), lq=str(data.folders.lq))
    return TrainData(ds, val, summary)
