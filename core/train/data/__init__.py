"""Training data: the three sources, deterministic samples, the fixed validation split.

:func:`build_data` turns a config's ``data`` section into the training dataset (indexed by
global sample number, see :mod:`.datasets`) and the list of validation pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...errors import InputError
from .. import config as cfg
from .datasets import OnTheFlyDataset, PairedDataset, StepSampler, split_validation, validation_pairs
from .sources import list_clean, list_dataset_pairs, list_folder_pairs


@dataclass
class TrainData:
    train: torch.utils.data.Dataset
    val: list[dict[str, Any]]
    summary: dict[str, Any]


def build_data(data: cfg.DataConfig, seed: int, positive: bool = False) -> TrainData:
    """The training dataset and validation pairs for ``data`` (file lists checked up front).

    ``positive``: samples also carry ``positive_lq``, a second crop of the same degraded image.
    """
    if data.source == "otf":
        try:
            files = list_clean(data.otf.clean)
        except InputError as exc:
            raise InputError(f"data.otf.clean: {exc}; put clean photos there or set data.otf.clean") from exc
        train_files, val_files = split_validation(files, data.val_count, seed)
        ds = OnTheFlyDataset(train_files, data.otf, seed, data.crop, data.flip, data.rot90, data.cache_images, positive)
        summary = {"source": "otf", "clean": str(data.otf.clean), "images": len(train_files), "val_images": len(val_files),
                   "types": ds.types, "mu": data.otf.mu if isinstance(data.otf.mu, str) else list(data.otf.mu),
                   "calibrate": data.otf.calibrate, "chain_probability": data.otf.chain_probability}
        return TrainData(ds, validation_pairs(val_files, data, seed), summary)
    if data.source == "pairs":
        assert data.pairs is not None
        pairs = list_dataset_pairs(data.pairs.root, data.pairs.types, data.pairs.mu_range)
        summary = {"source": "pairs", "root": str(data.pairs.root), "types": sorted({p.type for p in pairs})}
    else:
        assert data.folders is not None
        pairs = list_folder_pairs(data.folders.gt, data.folders.lq)
        summary = {"source": "folders", "gt": str(data.folders.gt), "lq": str(data.folders.lq)}
    train_pairs, val_pairs = split_validation(pairs, data.val_count, seed)
    summary.update(pairs=len(train_pairs), val_pairs=len(val_pairs))
    ds = PairedDataset(train_pairs, seed, data.crop, data.flip, data.rot90, data.cache_images, positive)
    return TrainData(ds, validation_pairs(val_pairs, data, seed), summary)


__all__ = ["StepSampler", "TrainData", "build_data"]
