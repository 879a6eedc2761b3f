"""Intensity filtering of generated pairs (the paper's dataset step): keep samples near the requested μ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError


@dataclass
class Kept:
    """Kept items, one single-image batch per entry (``[1,H,W,C]`` IMAGE tensors), aligned."""

    clean: list[torch.Tensor] = field(default_factory=list)
    degraded: list[torch.Tensor] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    filenames: list[str] = field(default_factory=list)
    dropped: int = 0


def accept(mu_requested: float, mu: float, abs_tol: float, rel_tol: float) -> bool:
    """``|μ − μ_req| <= max(abs_tol, rel_tol · μ_req)``."""
    return abs(float(mu) - float(mu_requested)) <= max(float(abs_tol), float(rel_tol) * float(mu_requested))


def _records(text: str, n: int, where: str) -> list[dict]:
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: metadata is not valid JSON ({exc})") from None
    rows = value if isinstance(value, list) else [value]
    if len(rows) == 1 and n > 1:
        rows = rows * n
    if len(rows) != n or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{where}: metadata has {len(rows)} records for {n} images; connect the metadata of the same node")
    for r in rows:
        if "mu" not in r or r.get("mu_requested") is None:
            raise InputError(f"{where}: metadata lacks 'mu' and 'mu_requested' (connect GenDeg Sample's metadata)")
    return rows


def filter_by_intensity(
    clean: Sequence[torch.Tensor],
    degraded: Sequence[torch.Tensor],
    metadata: Sequence[str],
    filenames: Sequence[str] | None,
    abs_tol: float,
    rel_tol: float,
) -> Kept:
    """Keep the images whose achieved μ is within tolerance of the requested μ.

    Inputs are lists of ComfyUI ``IMAGE`` batches (``[B,H,W,C]``); a clean batch of one image
    is shared by its degraded batch. Raises :class:`InputError` when nothing is kept (so a
    dataset run does not silently write nothing).
    """
    if not degraded:
        raise InputError("no degraded images to filter")
    out = Kept()
    total = 0
    for i, d in enumerate(degraded):
        c = clean[min(i, len(clean) - 1)]
        n = d.shape[0]
        if c.shape[0] not in (1, n):
            raise InputError(f"item {i}: {c.shape[0]} clean images for {n} degraded; connect GenDeg Sample's clean output")
        rows = _records(metadata[min(i, len(metadata) - 1)], n, f"item {i}")
        names_text = str(filenames[min(i, len(filenames) - 1)]) if filenames else ""
        names = names_text.splitlines() or [""]
        for j in range(n):
            total += 1
            r = rows[j]
            if accept(r["mu_requested"], r["mu"], abs_tol, rel_tol):
                out.clean.append(c[min(j, c.shape[0] - 1)][None])
                out.degraded.append(d[j][None])
                out.metadata.append(json.dumps({**r, "intensity_filter": {"abs": abs_tol, "rel": rel_tol}}))
                out.filenames.append(names[min(j, len(names) - 1)])
            else:
                out.dropped += 1
    if not out.degraded:
        raise InputError(
            f"the intensity filter dropped all {total} samples (achieved mu too far from the requested mu); raise "
            "abs_tolerance / rel_tolerance, or change the requested intensity"
        )
    return out
