"""Where training images come from: the file lists of the three data sources.

* ``pairs``: a dataset written by GenDeg Save Dataset Pairs (``metadata.jsonl`` with one
  record per pair: ``clean``/``degraded`` paths relative to the dataset, ``type``, ``mu``),
  filtered by type and achieved μ;
* ``folders``: BasicSR / traiNNer-redux style ``gt/`` and ``lq/`` folders, matched by file
  stem;
* ``otf``: a folder of clean photos, degraded on the fly (see :mod:`.otf`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...io import list_images
from ...weights.store import safe_join


@dataclass(frozen=True)
class PairFiles:
    gt: Path
    lq: Path
    name: str
    type: str = ""
    mu: float | None = None
    caption: str | None = None  # the record's scene caption (pack datasets made by GenDeg Sample)


def _normal_type(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def list_dataset_pairs(root: str | Path, types: list[str] | None = None, mu_range: tuple[float, float] | None = None) -> list[PairFiles]:
    """Pairs of a pack dataset (``<root>/metadata.jsonl``), sorted, filtered by type and achieved μ."""
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        hint = ""
        if root.is_dir() and any(p.is_dir() and (p / "metadata.jsonl").is_file() for p in root.iterdir()):
            hint = " (it contains datasets: point data.pairs.root at one of its sub-folders)"
        raise InputError(f"{root}: no metadata.jsonl; data.pairs.root must be a dataset folder written by "
                         f"GenDeg Save Dataset Pairs{hint}")
    wanted = {_normal_type(t) for t in types or []}
    out: list[PairFiles] = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            clean, degraded = rec["clean"], rec["degraded"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{meta}: line {n} is not a pair record (needs clean and degraded paths)") from exc
        kind = _normal_type(rec.get("type", ""))
        mu = rec.get("mu")
        if wanted and kind not in wanted:
            continue
        if mu_range is not None and (mu is None or not mu_range[0] <= float(mu) <= mu_range[1]):
            continue
        gt, lq = safe_join(root, clean), safe_join(root, degraded)
        for p in (gt, lq):
            if not p.is_file():
                raise InputError(f"{meta}: line {n} names {p}, which does not exist (was the dataset moved or pruned?)")
        caption = rec.get("caption")
        caption = caption.strip() if isinstance(caption, str) and caption.strip() else None
        out.append(PairFiles(gt, lq, str(rec.get("pair_id", Path(clean).stem)), kind, None if mu is None else float(mu),
                             caption))
    if not out:
        what = f" after filtering (types {sorted(wanted) or 'any'}, mu_range {mu_range})" if wanted or mu_range else ""
        raise InputError(f"{meta}: no pairs{what}")
    out.sort(key=lambda p: p.name)
    return out


def list_folder_pairs(gt: str | Path, lq: str | Path) -> list[PairFiles]:
    """``gt/NAME.*`` with ``lq/NAME.*`` (same relative path without suffix), sorted; every gt needs its lq."""
    gt_dir, lq_dir = Path(gt), Path(lq)
    gts = list_images(gt_dir, recursive=True)
    lqs = {p.relative_to(lq_dir).with_suffix("").as_posix(): p for p in list_images(lq_dir, recursive=True)}
    if not gts:
        raise InputError(f"{gt_dir}: no images (png, jpg, webp, bmp, tif)")
    out, missing = [], []
    for g in gts:
        key = g.relative_to(gt_dir).with_suffix("").as_posix()
        if key in lqs:
            out.append(PairFiles(g, lqs[key], key))
        else:
            missing.append(key)
    if missing:
        raise InputError(f"{lq_dir}: no degraded image for {len(missing)} ground-truth image(s), e.g. {missing[0]!r}; "
                         "lq/ must hold the same file names as gt/")
    return out


def list_clean(folder: str | Path) -> list[Path]:
    """Clean photos for on-the-fly degradation (recursive, sorted)."""
    files = list_images(Path(folder), recursive=True)
    if not files:
        raise InputError(f"{folder}: no images to train on (png, jpg, webp, bmp, tif)")
    return files
