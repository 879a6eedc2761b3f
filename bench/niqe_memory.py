"""Benchmark: NIQE feature extraction memory and time against image height (``gendeg quality fit-niqe``).

Ours streams over rows of 96×96 blocks (``core.quality.niqe.image_features``); the reference in
the same run is the whole-image float64 pipeline MATLAB's ``computequality.m`` describes (grey
image, μ, σ and MSCN maps of the whole image at both scales, MATLAB ``imresize``), measured up to
the MSCN maps only — a lower bound for any whole-image implementation. Peak memory is NumPy's
traced allocation (``tracemalloc``) above the 8-bit input; time is wall-clock. Usage::

    python bench/niqe_memory.py --smoke      # CPU, seconds: 384 px wide, 768..3072 px tall
    python bench/niqe_memory.py              # 2048 px wide, 2048..8192 px tall
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
from comfyui_gendeg.core.quality.matlab import filter_rows, gaussian_window, grey_rows, resize_contributions
from comfyui_gendeg.core.quality.niqe import image_features


def _whole_image_mscn(img: np.ndarray) -> None:
    """Reference: whole-image grey, μ/σ/MSCN at scale 1, ×0.5 resize, μ/σ/MSCN at scale 2."""
    h, w = img.shape[0] // 96 * 96, img.shape[1] // 96 * 96
    g = gaussian_window()
    im = grey_rows(img, np.arange(h), w)
    for scale in (1, 2):
        pad = np.pad(im, ((3, 3), (0, 0)), mode="edge")
        mu = filter_rows(pad, g)
        sigma = np.sqrt(np.abs(filter_rows(pad * pad, g) - mu * mu))
        mscn = (im - mu) / (sigma + 1)
        del pad, mscn
        if scale == 1:
            wr, ir = resize_contributions(im.shape[0], 0.5)
            wc, ic = resize_contributions(im.shape[1], 0.5)
            vert = sum(wr[:, p, None] * im[ir[:, p]] for p in range(ir.shape[1]))
            im = sum(wc[None, :, p] * vert[:, ic[:, p]] for p in range(ic.shape[1]))


def _measure(fn, img: np.ndarray) -> tuple[float, float]:
    """(peak traced MiB, seconds) of ``fn(img)``."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        fn(img)
        return tracemalloc.get_traced_memory()[1] / 2**20, time.perf_counter() - t
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="small images (seconds)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    width = args.width or (384 if args.smoke else 2048)
    heights = [768, 1536, 3072] if args.smoke else [2048, 4096, 8192]
    rng = np.random.default_rng(0)
    rows = []
    for h in heights:
        img = rng.integers(0, 256, (h, width, 3), dtype=np.uint8)
        ours_mib, ours_s = _measure(image_features, img)
        ref_mib, ref_s = _measure(_whole_image_mscn, img)
        rows.append({"width": width, "height": h, "megapixels": h * width / 1e6, "ours_peak_mib": ours_mib,
                     "ours_s": ours_s, "ours_s_per_mpix": ours_s / (h * width / 1e6),
                     "whole_image_peak_mib": ref_mib, "whole_image_s": ref_s})
    if args.json:
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
        return
    print(f"# NIQE features, 8-bit RGB input {width} px wide ({time.strftime('%Y-%m-%d')})")
    print("| size | ours peak MiB | ours s | ours s/MP | whole-image MSCN peak MiB (reference) | reference s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}×{r['height']} | {r['ours_peak_mib']:.1f} | {r['ours_s']:.2f} | {r['ours_s_per_mpix']:.2f} | "
              f"{r['whole_image_peak_mib']:.1f} | {r['whole_image_s']:.2f} |")


if __name__ == "__main__":
    main()
