"""Score reports (CSV / JSONL appends) and quality gates (thresholds on any score).

Appends are safe for several writers: an exclusive lock on the report file itself around
each append (``core.locks``: no lock file is left beside it), each batch of rows written
with one ``write`` on a file opened in append mode and fsynced, and a CSV header written
only when the file is new or empty.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..locks import locked_file


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def append_rows(path: str | Path, rows: Sequence[Mapping[str, Any]], fmt: str | None = None) -> Path:
    """Append ``rows`` to a ``.csv`` or ``.jsonl`` file (``fmt`` overrides the suffix).

    CSV: the header is written once; later rows must use the same columns (missing ones
    are left empty; new ones are an error naming them). JSONL: one JSON object per line;
    infinities are written as the strings ``"inf"``/``"-inf"``.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "jsonl"):
        raise InputError(f"{path.name}: report format must be csv or jsonl, got {fmt!r}")
    if not rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8", newline="") as fh, locked_file(fh):
        if fmt == "jsonl":
            data = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, ensure_ascii=False) + "\n" for r in rows)
        else:
            fh.seek(0)
            header: list[str] | None = next(csv.reader(fh), None)
            new = header is None
            if new:
                header = []
                for r in rows:
                    header += [k for k in r if k not in header]
            extra = sorted({k for r in rows for k in r} - set(header))
            if extra:
                raise InputError(
                    f"{path.name} has the columns {', '.join(header)}; these rows add {', '.join(extra)}. "
                    "Write them to another file (or delete the old one)"
                )
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({k: _clean(v) for k, v in r.items()})
            data = buf.getvalue()
        fh.seek(0, os.SEEK_END)
        fh.write(data)  # append mode: always at the end, in one write
        fh.flush()
        os.fsync(fh.fileno())
    return path


# --- gates -------------------------------------------------------------------------------

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf)\s*$")


def parse_rules(spec: str) -> list[tuple[str, str, float]]:
    """``"psnr >= 25, lpips < 0.2"`` -> ``[("psnr", ">=", 25.0), ("lpips", "<", 0.2)]`` (comma or newline separated)."""
    out = []
    for part in re.split(r"[,\n;]", spec):
        if not part.strip():
            continue
        m = _RULE.match(part)
        if not m:
            raise InputError(f"cannot read the gate rule {part.strip()!r}; write e.g. 'psnr >= 25' or 'niqe < 6'")
        out.append((m.group(1).lower().replace("-", "_"), m.group(2), float(m.group(3))))
    return out


def gate(records: Sequence[Mapping[str, Any]], rules: Sequence[tuple[str, str, float]], mode: str = "all") -> list[bool]:
    """Which records pass: every rule (``mode="all"``) or at least one (``"any"``). No rules: all pass.

    A rule on a score a record lacks is an error naming the scores it has.
    """
    if mode not in ("all", "any"):
        raise InputError(f"gate mode must be 'all' or 'any', got {mode!r}")
    passed = []
    for i, r in enumerate(records):
        checks = []
        for name, op, value in rules:
            if name not in r:
                raise InputError(f"gate rule on {name!r}, but image {i} only has the scores {', '.join(sorted(map(str, r))) or 'none'}")
            checks.append(_OPS[op](float(r[name]), value))
        passed.append(True if not checks else (all(checks) if mode == "all" else any(checks)))
    return passed
