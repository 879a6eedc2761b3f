"""Training checkpoints (atomic, resumable) and the exported model file.

``<out>/checkpoints/step_0001000.pt`` holds everything a resumed run needs: the network,
the EMA, the optimizer (and the fp16 grad scaler), the step and the config fingerprint. It
is written under a temporary name and renamed, so a run killed at any moment leaves either
the previous checkpoint or the new one, never half of one; it is read back with
``torch.load(weights_only=True)`` (tensors and plain containers only).

The exported model ``<out>/<name>.safetensors`` is the network's ``state_dict`` in the key
layout spandrel detects, with training metadata (architecture, options, config, steps, data
summary) as JSON in the safetensors header: ComfyUI's Load Upscale Model, chaiNNer and
``GenDegRestorerLoader`` load it directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..io import atomic_path
from ..weights.safe_load import encode_metadata

log = logging.getLogger("gendeg")

_NAME = re.compile(r"^step_(\d{7,})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:07d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every finished checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def save_checkpoint(folder: Path, step: int, state: Mapping[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then drop all but the newest ``keep``."""
    path = checkpoint_path(folder, step)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (``weights_only``: no code is unpickled)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise WeightsError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise WeightsError(f"{path}: not a training checkpoint of gendeg train (no step/model)")
    return state


def latest_checkpoint(folder: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest readable checkpoint; an unreadable newest one is skipped with a warning."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return step, load_checkpoint(path)
        except WeightsError as exc:
            log.warning("[GenDeg] skipping %s", exc)
    return None


def export_model(path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write ``weights`` as safetensors (atomic) with ``metadata`` values as JSON strings in the header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    meta = {"format": "pt", **encode_metadata(metadata)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The training metadata of an exported model (JSON values decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    from ..weights import decode_metadata

    return decode_metadata(meta)
