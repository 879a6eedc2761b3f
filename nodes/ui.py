"""What nodes show in the editor after a run (the ``"ui"`` part of a node's return value).

Conventions (read by ``js/``):

* ``ui["gendeg_stats"]``: a list with one mapping of named numbers per image, e.g.
  ``{"mu": 0.12, "sigma": 0.05}`` or scores; shown on the node.
* ``ui["gendeg_compare"]``: a list of ``{"before": ref, "after": ref}`` where a ref is
  ``{"filename", "subfolder", "type": "temp"}`` as ComfyUI's ``/view`` expects; drives the
  before/after slider widget.
* ``ui["text"]``: a list of messages (e.g. "12 rows -> output/scores.csv"), shown on the node
  below the stats.

A node returns ``{"ui": ..., "result": (...)}`` as ComfyUI's own output nodes do.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..core.io import save_image
from . import host

_counter = itertools.count()
PREVIEW_MAX_IMAGES = 4
PREVIEW_MAX_SIDE = 1024


def _preview_ref(image_bhwc: torch.Tensor, index: int, tag: str) -> dict[str, str]:
    x = image_bhwc[index].permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    if max(h, w) > PREVIEW_MAX_SIDE:  # previews are for eyes, not for pixels
        s = PREVIEW_MAX_SIDE / max(h, w)
        x = torch.nn.functional.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    name = f"gendeg_{tag}_{uuid.uuid4().hex[:8]}_{next(_counter):05d}.png"
    save_image(host.temp_dir() / name, x)
    return {"filename": name, "subfolder": "", "type": "temp"}


def compare_ui(before: torch.Tensor, after: torch.Tensor) -> dict[str, list]:
    """Save small previews of the first images of two ``IMAGE`` batches for the comparison slider.

    Headless runs without an editor (``host.SETTINGS.compare_previews`` off) save none.
    """
    n = min(before.shape[0], after.shape[0], PREVIEW_MAX_IMAGES)
    if not host.IN_COMFYUI and not host.SETTINGS.compare_previews:
        n = 0
    return {
        "gendeg_compare": [
            {"before": _preview_ref(before, i, "before"), "after": _preview_ref(after, i, "after")} for i in range(n)
        ]
    }


def _display_number(v: float | int) -> float | int:
    """Counts stay whole numbers (shown as such); anything else is a float rounded to 5 decimals."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return round(float(v), 5)


def stats_ui(rows: Sequence[Mapping[str, float | int]]) -> dict[str, list]:
    """Named numbers per image for display (counts as ints, measurements rounded)."""
    return {"gendeg_stats": [{k: _display_number(v) for k, v in row.items()} for row in rows]}


def merge_ui(*parts: Mapping[str, list]) -> dict[str, list]:
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return out


#: Preview files this pack (and the PreviewImage stand-in) writes into the temp folder.
_PREVIEW_NAME = re.compile(r"^(gendeg_(before|after)_[0-9a-f]{8}_\d+\.png|.*_temp_[0-9a-z]{5}_\d{5}_\.png)$")


def prune_previews(folder: str | Path, max_age_s: float = 3600.0) -> int:
    """Delete preview PNGs older than ``max_age_s`` from ``folder`` (as ComfyUI clears its temp
    folder at start-up); only files named like this pack's previews are touched. Returns the count."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for path in folder.iterdir():
        try:
            if _PREVIEW_NAME.match(path.name) and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
