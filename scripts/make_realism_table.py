"""Write ``core/realism_table.py``: GenDeg's published real-data intensity counts, compactly.

GenDeg (sudraj2002/GenDeg) publishes, per degradation type, three histograms per real dataset
in ``GenDeg/data/<type>/``: ``Mu_<dataset>.json`` (128 μ bins on [0, 0.7]),
``Sigma_<dataset>.json`` (128 σ bins on [0, 0.4]) and ``Mu-Sigma-[_]<dataset>.json`` (the joint:
for each μ bin, its σ histogram). This script reads those files from a folder you give (a
checkout of the official repository, ``.../GenDeg/data``) and writes the counts as a Python
module the pack imports (``core/realism_table.py``): the per-dataset μ and σ counts, and the
joint counts. The JSON files themselves are not part of the pack.

What the script checks (and refuses to write a table if it does not hold):

* every histogram has 128 bins with GenDeg's edges (``linspace(0, 0.7, 129)``,
  ``linspace(0, 0.4, 129)``) and non-negative integer counts;
* the joint file of every dataset of a type holds the *same* counts (in the published data the
  joint is the histogram of all datasets of the type pooled, repeated under each dataset's
  name), so the table stores it once per type;
* the joint's μ marginal equals the sum of the datasets' μ counts, its σ marginal the sum of
  their σ counts;
* the joint's ``Mu range`` keys are the μ bins' ``"{min:.3f} - {max:.3f}"`` (the key the
  official sampler looks the conditional σ histogram up by).

Run from the repository root:

    python scripts/make_realism_table.py /path/to/GenDeg/GenDeg/data            # writes core/realism_table.py
    python scripts/make_realism_table.py /path/to/GenDeg/GenDeg/data --check    # exit 1 if the table is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "core" / "realism_table.py"

#: folder name in GenDeg/data -> the pack's type name
TYPE_DIRS = {
    "haze": "haze",
    "rain": "rain",
    "snow": "snow",
    "motion blur": "motion_blur",
    "low-light": "low_light",
    "raindrop": "raindrop",
}
NUM_BINS = 128
MU_EDGES = np.linspace(0.0, 0.7, NUM_BINS + 1)
SIGMA_EDGES = np.linspace(0.0, 0.4, NUM_BINS + 1)


class TableError(Exception):
    """The published files are not what the table assumes."""


def _counts(entries: list[dict], key: str, edges: np.ndarray, where: str) -> np.ndarray:
    if len(entries) != NUM_BINS:
        raise TableError(f"{where}: expected {NUM_BINS} bins, found {len(entries)}")
    lo = np.array([e[f"{key} min"] for e in entries], dtype=np.float64)
    hi = np.array([e[f"{key} max"] for e in entries], dtype=np.float64)
    if not (np.allclose(lo, edges[:-1], rtol=0, atol=1e-12) and np.allclose(hi, edges[1:], rtol=0, atol=1e-12)):
        raise TableError(f"{where}: bin edges differ from linspace({edges[0]}, {edges[-1]}, {NUM_BINS + 1})")
    counts = np.array([e["Count"] for e in entries])
    if counts.dtype.kind not in "iu" or (counts < 0).any():
        raise TableError(f"{where}: counts must be non-negative integers")
    return counts.astype(np.int64)


def _dataset_of(entries: list[dict], where: str) -> str:
    names = {e.get("Dataset") for e in entries}
    if len(names) != 1 or None in names:
        raise TableError(f"{where}: expected one 'Dataset' name in every bin, found {sorted(map(str, names))}")
    return str(names.pop())


def read_type(folder: Path) -> dict:
    """Per-dataset μ and σ counts and the (pooled) joint counts of one type folder."""
    mu, sigma, joints = {}, {}, {}
    for path in sorted(folder.glob("*.json")):
        name = path.name
        if name.startswith("Mu-Sigma-"):
            kind = "joint"
        elif name.startswith("Mu_"):
            kind = "mu"
        elif name.startswith("Sigma_"):
            kind = "sigma"
        else:
            continue  # e.g. rain/mu_sigma_weighted_rain.json: not a per-dataset histogram
        entries = json.loads(path.read_text())
        where = f"{folder.name}/{name}"
        ds = _dataset_of(entries, where)
        if kind == "mu":
            mu[ds] = _counts(entries, "Mu", MU_EDGES, where)
        elif kind == "sigma":
            sigma[ds] = _counts(entries, "Sigma", SIGMA_EDGES, where)
        else:
            if len(entries) != NUM_BINS:
                raise TableError(f"{where}: expected {NUM_BINS} mu rows, found {len(entries)}")
            keys = [e["Mu range"] for e in entries]
            want = [f"{a:.3f} - {b:.3f}" for a, b in zip(MU_EDGES[:-1], MU_EDGES[1:], strict=True)]
            if keys != want:
                raise TableError(f"{where}: 'Mu range' keys are not the mu bins' '{{min:.3f}} - {{max:.3f}}'")
            joints[ds] = np.stack([_counts(e["Count"], "Sigma", SIGMA_EDGES, f"{where} row {i}")
                                   for i, e in enumerate(entries)])
    if not mu:
        raise TableError(f"{folder}: no Mu_<dataset>.json files")
    if set(mu) != set(sigma) or set(mu) != set(joints):
        raise TableError(f"{folder}: datasets differ between Mu_ {sorted(mu)}, Sigma_ {sorted(sigma)} and "
                         f"Mu-Sigma- {sorted(joints)} files")
    first = next(iter(joints.values()))
    if any(not np.array_equal(j, first) for j in joints.values()):
        raise TableError(f"{folder}: the Mu-Sigma files differ between datasets; this table stores one pooled joint")
    for ds in mu:
        if mu[ds].sum() != sigma[ds].sum():
            raise TableError(f"{folder}/{ds}: {mu[ds].sum()} mu counts but {sigma[ds].sum()} sigma counts")
    if not np.array_equal(first.sum(axis=1), sum(mu.values())):
        raise TableError(f"{folder}: the joint's mu marginal is not the sum of the datasets' mu counts")
    if not np.array_equal(first.sum(axis=0), sum(sigma.values())):
        raise TableError(f"{folder}: the joint's sigma marginal is not the sum of the datasets' sigma counts")
    return {"mu": mu, "sigma": sigma, "joint": first}


def _sparse(counts: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """``(first, values)``: the counts from the first to the last non-zero bin (zeros elsewhere)."""
    nz = np.nonzero(counts)[0]
    if nz.size == 0:
        return 0, ()
    return int(nz[0]), tuple(int(v) for v in counts[nz[0] : nz[-1] + 1])


def render(tables: dict[str, dict]) -> str:
    """The Python source of ``core/realism_table.py``."""
    lines = [
        '"""GenDeg\'s real-data intensity counts (generated; do not edit).',
        "",
        "Generated by ``scripts/make_realism_table.py`` from the histograms GenDeg publishes in",
        "``GenDeg/data/<type>/`` of sudraj2002/GenDeg (``Mu_<dataset>.json``, ``Sigma_<dataset>.json``,",
        "``Mu-Sigma-[_]<dataset>.json``). Bins: 128 on μ ∈ [0, 0.7], 128 on σ ∈ [0, 0.4] (GenDeg's).",
        "",
        "* :data:`MU_COUNTS` / :data:`SIGMA_COUNTS`: type -> dataset -> ``(first_bin, counts)``: the",
        "  dataset's μ (σ) histogram from its first to its last non-empty bin (zeros elsewhere).",
        "* :data:`JOINT`: type -> rows ``(mu_bin, first_sigma_bin, counts)``: for each non-empty μ bin,",
        "  the σ histogram of the type's images in that μ bin, all datasets pooled (the published",
        "  ``Mu-Sigma`` file of every dataset of a type holds these same pooled counts).",
        "",
        "Read it through :mod:`.realism`.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "NUM_BINS = 128",
        "MU_RANGE = (0.0, 0.7)",
        "SIGMA_RANGE = (0.0, 0.4)",
        "",
    ]

    def block(name: str, key: str, doc: str) -> None:
        lines.append(f"#: {doc}")
        lines.append(f"{name}: dict[str, dict[str, tuple[int, tuple[int, ...]]]] = {{")
        for kind, t in tables.items():
            lines.append(f"    {kind!r}: {{")
            for ds in sorted(t[key]):
                first, vals = _sparse(t[key][ds])
                lines.append(f"        {ds!r}: ({first}, {vals!r}),")
            lines.append("    },")
        lines.append("}")
        lines.append("")

    block("MU_COUNTS", "mu", "type -> dataset -> (first μ bin, counts): ``Mu_<dataset>.json``")
    block("SIGMA_COUNTS", "sigma", "type -> dataset -> (first σ bin, counts): ``Sigma_<dataset>.json``")
    lines.append("#: type -> ((μ bin, first σ bin, counts), ...): ``Mu-Sigma-[_]<dataset>.json`` (pooled over datasets)")
    lines.append("JOINT: dict[str, tuple[tuple[int, int, tuple[int, ...]], ...]] = {")
    for kind, t in tables.items():
        lines.append(f"    {kind!r}: (")
        for i, row in enumerate(t["joint"]):
            first, vals = _sparse(row)
            if vals:
                lines.append(f"        ({i}, {first}, {vals!r}),")
        lines.append("    ),")
    lines.append("}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the GenDeg/data folder of a checkout of sudraj2002/GenDeg")
    ap.add_argument("--out", type=Path, default=OUT, help=f"module to write (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--check", action="store_true", help="compare with the existing module instead of writing it")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder; give the GenDeg/data folder of the official repository",
              file=sys.stderr)
        return 2
    missing = [d for d in TYPE_DIRS if not (args.data / d).is_dir()]
    if missing:
        print(f"error: {args.data} lacks the type folder(s) {', '.join(missing)}; give the GenDeg/data folder",
              file=sys.stderr)
        return 2
    try:
        tables = {kind: read_type(args.data / d) for d, kind in TYPE_DIRS.items()}
    except (TableError, json.JSONDecodeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = render(tables)
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print("up to date" if same else f"{args.out} is stale: run without --check")
        return 0 if same else 1
    args.out.write_text(text)
    for kind, t in tables.items():
        print(f"{kind}: {', '.join(f'{ds} {int(c.sum())}' for ds, c in sorted(t['mu'].items()))}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
