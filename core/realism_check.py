"""How typical of GenDeg's real data a user's own (clean, degraded) pairs are (``gendeg measure --realism``).

For each pair: GenDeg's intensity (μ, σ) (:func:`.intensity.measure_intensity`) and, for a type,
where σ lies among the real images of that type at the same μ (:func:`.realism.sigma_percentile`;
typical = inside the 5–95 % band). A summary gives the fraction of typical pairs and the median
percentile. Pairs are read one at a time (bounded memory).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from . import realism
from .errors import InputError, explain_out_of_memory
from .intensity import measure_intensity
from .io import list_images, load_image


def find_pairs(clean: str | Path, degraded: str | Path | None) -> list[tuple[Path, Path]]:
    """(clean, degraded) files: two files; two folders matched by relative path without suffix (any
    image suffix, sub-folders too; clean images without a degraded one are skipped); or one folder
    holding ``gt/`` and ``lq/`` (the layout ``gendeg dataset export`` writes, with its sub-folders)."""
    c = Path(clean)
    if degraded is None:
        if c.is_dir() and (c / "gt").is_dir() and (c / "lq").is_dir():
            c, d = c / "gt", c / "lq"
        else:
            raise InputError(f"{clean}: give a DEGRADED file or folder too, or a folder with gt/ and lq/ inside")
    else:
        d = Path(degraded)
    for path in (c, d):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if c.is_file() and d.is_file():
        return [(c, d)]
    if c.is_dir() != d.is_dir():
        raise InputError(f"{c} and {d}: give two image files or two folders of images")
    def key(p: Path, root: Path) -> str:  # the relative path without suffix (sub-folders of an export too)
        return p.relative_to(root).with_suffix("").as_posix()

    cleans = {key(p, c): p for p in list_images(c, recursive=True)}
    pairs = [(cleans[k], p) for p in list_images(d, recursive=True) if (k := key(p, d)) in cleans]
    if not pairs:
        raise InputError(f"no pairs: no file name of {d} matches one of {c} (pairs share a file name, e.g. 0001.png)")
    return pairs


def check_pairs(pairs: list[tuple[Path, Path]], kind: str | None) -> list[dict[str, Any]]:
    """One record per pair: μ, σ and (with ``kind``) σ's percentile among real data at that μ and
    whether it is typical; files named when there is more than one pair."""
    if kind is not None and realism.stats_type(kind) is None:
        raise InputError(f"no real-data statistics for {kind!r}; choose one of {', '.join(realism.STATS_OF)}")
    rows = []
    for c, d in pairs:
        x, y = load_image(c), load_image(d)
        with explain_out_of_memory("measure", x.shape[-1], x.shape[-2]):
            mu_t, sg_t = measure_intensity(x, y)
        mu, sg = float(mu_t[0]), float(sg_t[0])
        row: dict[str, Any] = {}
        if len(pairs) > 1:
            row.update({"clean": str(c), "degraded": str(d)})
        row.update({"mu": round(mu, 6), "sigma": round(sg, 6)})
        if kind is not None:
            dist = realism.conditional_sigma(kind, mu)
            lo, hi = dist.band()
            pct = dist.percentile(sg)
            row.update({"type": kind, "sigma_percentile": round(pct, 2), "typical": realism.in_band(pct),
                        "real_sigma_median": round(dist.median, 6), "real_sigma_band": [round(lo, 6), round(hi, 6)]})
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]], kind: str | None) -> dict[str, Any]:
    """Pairs, mean μ and σ and, with a type: the fraction of typical pairs and the median percentile."""
    out: dict[str, Any] = {"pairs": len(rows), "mu_mean": round(statistics.fmean(r["mu"] for r in rows), 6),
                           "sigma_mean": round(statistics.fmean(r["sigma"] for r in rows), 6)}
    if kind is not None:
        pct = [r["sigma_percentile"] for r in rows]
        out.update({"type": kind, "typical_fraction": round(sum(r["typical"] for r in rows) / len(rows), 4),
                    "median_percentile": round(statistics.median(pct), 2),
                    "below_band": sum(p < realism.BAND[0] for p in pct), "above_band": sum(p > realism.BAND[1] for p in pct)})
    return out
