"""Export a pack dataset as ``gt/`` + ``lq/`` folders (BasicSR / traiNNer-redux paired layout).

``<out>/gt/<name>`` is the clean image of a pair and ``<out>/lq/<name>`` its degraded image,
with the same relative name (the dataset's own file name, sub-folders kept), so a
``PairedImageDataset`` with ``dataroot_gt``/``dataroot_lq`` reads them directly. Files are
copied (or hard-linked) under a temporary name and renamed; files already there with the
same size are skipped, so an interrupted export resumes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_path
from ..weights.store import safe_join
from .data.sources import list_dataset_pairs


@dataclass
class ExportReport:
    pairs: int
    written: int
    skipped: int
    out: Path


def _place(src: Path, dst: Path, link: bool) -> bool:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return False
    with atomic_path(dst) as tmp:
        if link:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)
    return True


def export_pairs(dataset: str | Path, out: str | Path, *, types: list[str] | None = None,
                 mu_range: tuple[float, float] | None = None, link: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Write every pair of ``dataset`` (filtered by type / achieved μ) into ``out/gt`` and ``out/lq``."""
    root = Path(dataset)
    pairs = list_dataset_pairs(root, types, mu_range)
    out = Path(out)
    written = skipped = 0
    for i, pair in enumerate(pairs):
        rel = pair.gt.relative_to(root / "clean").as_posix() if pair.gt.is_relative_to(root / "clean") else pair.gt.name
        for src, sub in ((pair.gt, "gt"), (pair.lq, "lq")):
            if _place(src, safe_join(out / sub, rel), link):
                written += 1
            else:
                skipped += 1
        if progress is not None:
            progress(i + 1, len(pairs))
    return ExportReport(len(pairs), written, skipped, out)
