"""How realistic the synthesizer is, by GenDeg's numbers (issue 17).

"Realistic" is measurable: GenDeg publishes the joint (μ, σ) histograms of the real datasets it
learned from (:mod:`comfyui_gendeg.core.realism`). An image is *typical* of a type when its σ
lies inside the 5–95 % band of the real σ at the same μ. For each of GenDeg's six types, at the
light / medium / heavy presets, on ordinary photos, this bench synthesizes with the calibration
to μ and measures (μ, σ) independently (GenDeg's measure on the returned image), then reports
the fraction of images inside the band, the median percentile of σ among the real images at
that μ, and the median ratio σ / real median — for two configurations in the same run:

* ``before``: μ calibrated alone with the second parameter at its value before issue 17 (haze
  depth_exponent 1, rain opacity 0.7, snow opacity 1, motion blur rotation 0, low light falloff 0
  (an even exposure drop), raindrop refraction 3): the synthesizer's old behaviour;
* ``after``: the default now — σ calibrated jointly to the typical σ of real data at that μ.

Photos: the shipped samples and, when scikit-image is installed, its astronaut and motorcycle
photos (read from its package folder), each centre-cropped to 2:3 and also mirrored with another
seed. ``--pairs FOLDER --type TYPE`` instead reports the same numbers for your own pairs (a
folder with gt/ and lq/, as ``gendeg measure --realism`` reads them).

    python bench/realism.py --smoke              # CPU, < 1 min: 3 photos at 96x144
    python bench/realism.py                       # 12 images at 256x384 (a few minutes on a CPU)
    python bench/realism.py --pairs my_pairs --type rain
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT.parent))

from comfyui_gendeg.core import realism  # noqa: E402
from comfyui_gendeg.core.intensity import measure_intensity  # noqa: E402
from comfyui_gendeg.core.io import pil_to_tensor  # noqa: E402
from comfyui_gendeg.core.realism_check import check_pairs, find_pairs, summarize  # noqa: E402
from comfyui_gendeg.core.synth import get  # noqa: E402
from comfyui_gendeg.core.synth.joint import degrade_to_intensity  # noqa: E402
from comfyui_gendeg.core.synth.plan import LEVELS, PRESETS  # noqa: E402

KINDS = ("haze", "rain", "snow", "motion_blur", "low_light", "raindrop")
#: the second parameter's value before issue 17 (the synthesizer's old behaviour)
BEFORE = {"haze": 1.0, "rain": 0.7, "snow": 1.0, "motion_blur": 0.0, "low_light": 0.0, "raindrop": 3.0}
#: the figure measured before issue 17 with `gendeg synth --mu` (the issue's text), for reference
ISSUE_BASELINE = 0.63


def photos(h: int, w: int, smoke: bool) -> tuple[torch.Tensor, list[str]]:
    """``[N,3,h,w]`` ordinary photos (centre crop to w:h, Lanczos), and their names."""
    paths = [ROOT / "samples" / n for n in ("chelsea.png", "coffee.png", "rocket.png")]
    if not smoke:
        try:
            import skimage

            sk = Path(skimage.__file__).resolve().parent / "data"
            paths += [sk / n for n in ("astronaut.png", "motorcycle_left.png", "motorcycle_right.png") if (sk / n).is_file()]
        except ImportError:
            pass
    out, names = [], []
    for p in paths:
        img = Image.open(p).convert("RGB")
        iw, ih = img.size
        cw, ch = min(iw, ih * w // h), min(ih, iw * h // w)
        left, top = (iw - cw) // 2, (ih - ch) // 2
        img = img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.LANCZOS)
        t = pil_to_tensor(img, keep_alpha=False)[0]
        out.append(t)
        names.append(p.stem)
        if not smoke:
            out.append(t.flip(-1))
            names.append(p.stem + "-mirrored")
    return torch.stack(out), names


def measure(x: torch.Tensor, kind: str, mu: float, config: str, seed: int) -> list[dict]:
    """Synthesize ``x`` at ``mu`` in ``config`` (before / after); per image μ, σ, percentile, typical."""
    params = {get(kind).sigma_param: BEFORE[kind]} if config == "before" else None
    r = degrade_to_intensity(x, kind, mu, None, seed, params=params)
    m, s = measure_intensity(x, r.image)
    rows = []
    for mu_i, sg_i in zip(m.tolist(), s.tolist(), strict=True):
        dist = realism.conditional_sigma(kind, mu_i)
        pct = dist.percentile(sg_i)
        rows.append({"mu": mu_i, "sigma": sg_i, "percentile": pct, "typical": realism.in_band(pct),
                     "ratio": sg_i / dist.median, "mu_ok": abs(mu_i - mu) <= 0.005})
    return rows


def summary(rows: list[dict]) -> dict:
    return {
        "images": len(rows),
        "inside_band": round(sum(r["typical"] for r in rows) / len(rows), 4),
        "median_percentile": round(statistics.median(r["percentile"] for r in rows), 1),
        "median_ratio": round(statistics.median(r["ratio"] for r in rows), 3),
        "mu_reached": round(sum(r["mu_ok"] for r in rows) / len(rows), 4),
    }


def run_presets(args: argparse.Namespace) -> dict:
    h, w = (96, 144) if args.smoke else (args.height, args.width)
    x, names = photos(h, w, args.smoke)
    torch.set_num_threads(max(1, args.threads))
    result: dict = {"images": names, "size": [h, w], "types": {}}
    all_rows: dict[str, list[dict]] = {"before": [], "after": []}
    print(f"{len(names)} photos at {h}x{w}; presets {', '.join(LEVELS)}; seed {args.seed}", flush=True)
    print("| type | before: inside 5-95 % | median pct | sigma / real median | after: inside 5-95 % | median pct | "
          "sigma / real median | mu reached (after) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        t0 = time.perf_counter()
        per = {}
        for config in ("before", "after"):
            rows = []
            for level in LEVELS:
                rows += measure(x, kind, PRESETS[kind][level], config, args.seed)
            per[config] = summary(rows)
            all_rows[config] += rows
        dt = time.perf_counter() - t0
        result["types"][kind] = per
        b, a = per["before"], per["after"]
        print(f"| {kind} | {b['inside_band']:.0%} | {b['median_percentile']:.0f} | {b['median_ratio']:.2f} | "
              f"{a['inside_band']:.0%} | {a['median_percentile']:.0f} | {a['median_ratio']:.2f} | {a['mu_reached']:.0%} | "
              f"{dt:.0f} |", flush=True)
    result["overall"] = {c: summary(r) for c, r in all_rows.items()}
    ob, oa = result["overall"]["before"], result["overall"]["after"]
    print(f"| **all** | **{ob['inside_band']:.0%}** | {ob['median_percentile']:.0f} | {ob['median_ratio']:.2f} | "
          f"**{oa['inside_band']:.0%}** | {oa['median_percentile']:.0f} | {oa['median_ratio']:.2f} | {oa['mu_reached']:.0%} | |")
    print(f"target: >= 90 % inside the band after (issue 17; measured before the issue: {ISSUE_BASELINE:.0%})")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="3 photos at 96x144 (CPU, < 1 min)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--pairs", help="a folder of your own pairs (gt/ and lq/ inside) to report instead of the presets")
    ap.add_argument("--type", help="with --pairs: the type to compare with (" + ", ".join(realism.STATS_OF) + ")")
    ap.add_argument("--out", help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.pairs:
        if args.type not in realism.STATS_OF:
            print(f"error: --pairs needs --type, one of {', '.join(realism.STATS_OF)}", file=sys.stderr)
            return 2
        rows = check_pairs(find_pairs(args.pairs, None), args.type)
        result = {"pairs": rows, "summary": summarize(rows, args.type)}
        print(json.dumps(result["summary"]))
    else:
        result = run_presets(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
