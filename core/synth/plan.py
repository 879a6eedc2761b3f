"""Degradation plans: which (type, μ, seed) to synthesize, for sweeps and balanced datasets.

Intensity presets ``light``, ``medium`` and ``heavy`` are GenDeg μ values per type: the 20th,
50th and 80th percentiles of the μ histograms GenDeg publishes for its training sets
(``data/<type>/Mu_*.json`` of the official repository, pooled per type as GenDeg's loader
does), shared with GenDeg Condition's presets (:data:`..presets.GENDEG_PRESETS`) so both
engines mean the same amount by the same word. JPEG and sensor noise are not GenDeg types:
their presets are ours (visible, clear and strong artefacts).

* ``grid``: every type × every intensity × ``seeds`` seeds (seed = base_seed + k), in that
  nesting order (type outermost), so a sweep reads row by row.
* ``random``: ``count`` items, each with a type and an intensity drawn uniformly (balanced
  in expectation) and a random seed, reproducible from ``base_seed``. ``balanced``
  instead cycles through the type × intensity grid in a shuffled order so every
  combination occurs equally often (± 1).
* ``gendeg_sampling``: (μ, σ) drawn as GenDeg's own dataset synthesis draws them from its real
  datasets' histograms (:func:`..realism.sample_official`: a source dataset with the official
  weights, μ from its histogram, σ from the conditional at that μ, every 20th draw uniform);
  the types take turns (one random stream per type, seeded from ``base_seed`` and the type, so
  each type's draws are the official sequence), ``intensities`` is not used, and each item
  records its source dataset. Draws from ORD / CSD are GenDeg's rain+haze / snow+haze.

Every item has a σ too: the drawn one, or for presets and μ values the typical σ of GenDeg's
real data at that μ (:func:`..realism.typical_sigma`; 0 for JPEG and noise, which have none).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .. import realism
from ..errors import InputError
from ..presets import GENDEG_PRESETS, LEVELS
from . import TYPES, get

#: type -> level -> GenDeg μ. One source for both engines: the GenDeg types use the μ of
#: :data:`..presets.GENDEG_PRESETS` (so "medium snow" asks both engines for the same
#: amount); JPEG and sensor noise are not GenDeg types and their presets are ours.
PRESETS: dict[str, dict[str, float]] = {
    **{kind: {level: mu for level, (mu, _sigma) in levels.items()} for kind, levels in GENDEG_PRESETS.items()},
    "jpeg": {"light": 0.006, "medium": 0.01, "heavy": 0.018},
    "noise": {"light": 0.02, "medium": 0.05, "heavy": 0.09},
}
MODES = ("grid", "random", "balanced", "gendeg_sampling")
SAMPLING = "gendeg_sampling"


@dataclass(frozen=True)
class PlanItem:
    type: str
    mu: float
    seed: int
    label: str
    level: str  # preset name, "mu=<value>" for a number, or the source dataset of a GenDeg-style draw
    sigma: float = 0.0  # the σ to aim at (typical of real data at μ, or drawn); 0 = none (JPEG, noise)
    dataset: str = ""  # the real dataset a GenDeg-style draw came from
    uniform: bool = False  # one of GenDeg's every-20th uniform draws


def sigma_of(kind: str, token: str, mu: float) -> float:
    """The σ of a planned (type, intensity): the preset's, or the typical σ of real data at ``mu``; 0 without statistics."""
    if token in LEVELS and kind in GENDEG_PRESETS:
        return GENDEG_PRESETS[kind][token][1]
    return round(realism.typical_sigma(kind, mu), 4) if realism.stats_type(kind) else 0.0


def parse_types(text: str) -> list[str]:
    """Comma-separated type names (``all`` = every type) -> canonical names, checked."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts or parts == ["all"]:
        return list(TYPES)
    return [get(p).name for p in parts]


def parse_intensities(text: str) -> list[str]:
    """Comma-separated presets (light, medium, heavy) and/or μ numbers in 0..1 -> tokens, checked."""
    parts = [p.strip().lower() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise InputError("intensities: give presets (light, medium, heavy) and/or mu values such as 0.05")
    for p in parts:
        if p in LEVELS:
            continue
        try:
            v = float(p)
        except ValueError:
            raise InputError(f"intensities: {p!r} is neither a preset ({', '.join(LEVELS)}) nor a number") from None
        if not 0.0 <= v <= 1.0:
            raise InputError(f"intensities: mu {v} is outside 0..1")
    return parts


def mu_of(kind: str, token: str) -> float:
    return PRESETS[kind][token] if token in LEVELS else float(token)


def make_plan(
    types: str = "all",
    intensities: str = "light,medium,heavy",
    mode: str = "grid",
    seeds: int = 1,
    count: int = 0,
    base_seed: int = 0,
    keys: list[str] | None = None,
    positions: list[int] | None = None,
) -> list[PlanItem]:
    """The planned items (see module doc). ``count`` is used by random/balanced modes (0 = one full grid).

    ``keys`` (e.g. the file names of a loaded folder) plan one item per key in random/balanced
    mode, aligned with them: random draws each key's combination and seed from a hash of
    (base_seed, key), so a file gets the same degradation whichever shard or chunk of the
    folder it is processed in; balanced gives the key at position ``q`` the ``q``-th item of
    the shuffled cycles through the combinations. ``positions`` (balanced, one per key) are
    those positions in the complete, unsharded list — for shard ``i`` of ``n`` they are
    ``i, i + n, i + 2n, …`` (see :func:`shard_positions`) — so every shard plans exactly the
    items the unsharded run plans for its files. Default: ``0, 1, 2, …``.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if seeds < 1:
        raise InputError(f"seeds must be at least 1, got {seeds}")
    if count < 0:
        raise InputError(f"count must be 0 or more, got {count}")
    if positions is not None:
        if not keys or len(positions) != len(keys):
            raise InputError(f"positions: expected one per key ({len(keys or [])}), got {len(positions)}")
        if min(positions) < 0:
            raise InputError("positions must be 0 or more")
    if mode == SAMPLING:
        return _sampling_plan(types, count, base_seed, keys, positions)
    kinds = parse_types(types)
    levels = parse_intensities(intensities)
    combos = [(k, lv) for k in kinds for lv in levels]

    def item(kind: str, token: str, seed: int) -> PlanItem:
        level = token if token in LEVELS else f"mu={float(token):g}"
        mu = mu_of(kind, token)
        return PlanItem(kind, mu, seed, f"{kind} {level} (mu {mu:.3f})", level, sigma_of(kind, token, mu))

    if mode == "grid":
        return [item(k, lv, base_seed + s) for k, lv in combos for s in range(seeds)]
    rng = random.Random(base_seed)
    n = count or len(combos) * seeds
    if keys:
        n = len(keys)
        if mode == "random":
            out = []
            for key in keys:
                r = random.Random(hashlib.sha256(f"{base_seed}\0{key}".encode()).digest())
                out.append(item(*r.choice(combos), r.randrange(2**31)))
            return out
    if mode == "random":
        return [item(*rng.choice(combos), rng.randrange(2**31)) for _ in range(n)]
    wanted = positions if positions is not None else list(range(n))
    total = max(wanted) + 1 if wanted else 0
    out: list[PlanItem] = []
    while len(out) < total:
        order = combos[:]
        rng.shuffle(order)
        out.extend(item(k, lv, rng.randrange(2**31)) for k, lv in order[: total - len(out)])
    return [out[q] for q in wanted]


def _sampling_plan(types: str, count: int, base_seed: int, keys: list[str] | None,
                   positions: list[int] | None) -> list[PlanItem]:
    """The ``gendeg_sampling`` mode (module doc): item ``q`` is draw ``q // K`` of type ``q mod K``."""
    text = str(types).strip().lower()
    kinds = list(realism.TYPES) if text in ("", "all") else parse_types(types)
    bad = [k for k in kinds if k not in realism.TYPES]
    if bad:
        raise InputError(f"gendeg_sampling draws for GenDeg's types with real-data statistics ({', '.join(realism.TYPES)}), "
                         f"not {', '.join(bad)} (its rain+haze and snow+haze come from rain's ORD and snow's CSD draws)")
    n = len(keys) if keys else (count or len(kinds))
    wanted = positions if positions is not None else list(range(n))
    total = max(wanted) + 1 if wanted else 0
    streams = {k: random.Random(hashlib.sha256(f"{base_seed}\0{k}".encode()).digest()) for k in kinds}
    seed_rng = random.Random(base_seed)
    out: list[PlanItem] = []
    for q in range(total):
        kind = kinds[q % len(kinds)]
        d = realism.sample_official(kind, streams[kind], q // len(kinds))
        label = f"{d.type} {d.dataset}{' uniform' if d.uniform else ''} (mu {d.mu:.3f}, sigma {d.sigma:.3f})"
        out.append(PlanItem(d.type, d.mu, seed_rng.randrange(2**31), label, d.dataset, d.sigma, d.dataset, d.uniform))
    return [out[q] for q in wanted]


def shard_positions(count: int, shard: tuple[int, int], start: int = 0) -> list[int]:
    """Positions in the complete list of the ``count`` files that shard ``(i, n)`` loads.

    Folder loaders keep the files whose index in the sorted folder is ``i`` modulo ``n``
    (indices counted before the ``start`` window), so with the window starting at ``start``
    the shard's ``k``-th file is at position ``(i − start) mod n + k·n`` of the unsharded window.
    """
    index, n = shard
    if n < 1 or not 0 <= index < n:
        raise InputError(f"shard {index}/{n}: need 0 ≤ index < count")
    first = (index - start) % n
    return [first + k * n for k in range(count)]
