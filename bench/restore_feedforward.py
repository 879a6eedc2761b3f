"""Benchmark: feed-forward restoration, our tiling vs ComfyUI-style tiling, in the same run.

For each image size (512² and 2048² by default) a random-weight NAFNet (built through the
same spandrel loader the nodes use) restores one image three ways:

* ``ours``   : :func:`core.restore.feedforward.restore` (equal-size balanced tiles,
  raised-cosine partition-of-unity weights, ``--tile-batch`` tiles per call);
* ``comfy``  : a re-implementation of ComfyUI's ``comfy.utils.tiled_scale`` as its "Upscale
  Image (using Model)" node calls it: tile origins stepped by ``tile - overlap`` from 0 and
  the last tile truncated at the border, one tile per call, a linear feather of ``overlap``
  pixels on every tile edge (image borders included), accumulated weights divided out;
* ``whole``  : the untiled image (where it fits, ``--whole-max``), the reference for both.

Reported per size: seconds per image (wall, and CPU time of the process), peak memory (CUDA: ``max_memory_allocated``; CPU: peak
resident-set growth sampled every 2 ms), pixels computed, and the max / mean absolute
difference of each tiled output against the untiled one and between the two tilings.

Note: NAFNet's channel attention pools over the whole input, so any tiling changes its output
a little; the comparison against ``whole`` shows how well each blending hides that.

Usage::

    python bench/restore_feedforward.py --smoke            # CPU, < 60 s: tiny NAFNet, 256² and 512², tile 128
    python bench/restore_feedforward.py --device cuda      # full: NAFNet width 32 [1,1,1,28]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import torch
from comfyui_gendeg.core.restore.feedforward import Restorer, restore, restorer_from_state_dict
from comfyui_gendeg.core.tiling import plan_tiles
from memory import PeakMemory


# --- ComfyUI-style reference (facts from comfy/utils.py tiled_scale_multidim, re-implemented) ---
def comfy_style_tiled(fn, x: torch.Tensor, tile: int, overlap: int, scale: int = 1) -> torch.Tensor:
    b, _, h, w = x.shape
    out_all = None
    for bi in range(b):
        s = x[bi : bi + 1]
        if h <= tile and w <= tile:
            y = fn(s)
            out_all = y.new_zeros(b, y.shape[1], h * scale, w * scale) if out_all is None else out_all
            out_all[bi : bi + 1] = y
            continue
        pos = [range(0, n - overlap, tile - overlap) if n > tile else [0] for n in (h, w)]
        out = div = None
        for py, px in itertools.product(*pos):
            y0, x0 = max(0, min(h - overlap, py)), max(0, min(w - overlap, px))
            th, tw = min(tile, h - y0), min(tile, w - x0)
            ps = fn(s[:, :, y0 : y0 + th, x0 : x0 + tw]).float()
            if out is None:
                out = ps.new_zeros(1, ps.shape[1], h * scale, w * scale)
                div = torch.zeros_like(out)
            mask = torch.ones_like(ps)
            feather = round(overlap * scale)
            for d in (2, 3):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            oy, ox = y0 * scale, x0 * scale
            out[:, :, oy : oy + ps.shape[2], ox : ox + ps.shape[3]] += ps * mask
            div[:, :, oy : oy + ps.shape[2], ox : ox + ps.shape[3]] += mask
        if out_all is None:
            out_all = out.new_zeros(b, out.shape[1], h * scale, w * scale)
        out_all[bi] = (out / div)[0]
    return out_all


def comfy_work(h: int, w: int, tile: int, overlap: int) -> int:
    def axis(n: int) -> int:
        if n <= tile:
            return n
        return sum(min(tile, n - max(0, min(n - overlap, p))) for p in range(0, n - overlap, tile - overlap))

    return axis(h) * axis(w)


def build(width: int, enc: list[int], middle: int, dec: list[int], dtype: str, device: torch.device) -> Restorer:
    from spandrel.architectures.NAFNet import NAFNet

    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=width, middle_blk_num=middle, enc_blk_nums=enc, dec_blk_nums=dec)
    with torch.no_grad():  # NAFNet initialises its block scales to 0 (blocks = identity); open them
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.2)
    return restorer_from_state_dict(net.state_dict(), f"nafnet-w{width}-random", dtype=dtype, device=device)


def timed(fn, device: torch.device, repeats: int):
    """(result, best wall seconds, best process CPU seconds, peak MiB) over ``repeats`` runs.

    CPU seconds (all threads of this process) are what a shared, oversubscribed CPU cannot
    inflate; on a GPU the wall time is the number to read.
    """
    result = None
    best = best_cpu = float("inf")
    peak = 0.0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        peak = max(peak, mem.peak_mib)
    return result, best, best_cpu, peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke run (< 60 s): tiny NAFNet")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--sizes", default=None, help="square image sides (default 512,2048; smoke 256,512)")
    p.add_argument("--tile", type=int, default=None, help="tile side (default 512; smoke 128)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--tile-batch", type=int, default=None, help="tiles per call for ours (default 4; smoke 1)")
    p.add_argument("--dtype", default="fp32", help="auto | fp32 | fp16 | bf16 (NAFNet: no fp16)")
    p.add_argument("--whole-max", type=int, default=None, help="largest side run untiled as reference")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--json", default=None, help="write results here")
    a = p.parse_args(argv)

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not a.smoke else "cpu"))
    if a.smoke:
        # one thread: on a shared small CPU, OpenMP barriers make many small tile calls look slow
        torch.set_num_threads(1)
        cfg = dict(width=8, enc=[1, 1], middle=1, dec=[1, 1])
        tile, tile_batch, repeats = a.tile or 128, a.tile_batch or 1, a.repeats or 1
        whole_max = a.whole_max or 2048
        sizes = a.sizes or "256,512"
    else:
        cfg = dict(width=32, enc=[1, 1, 1, 28], middle=1, dec=[1, 1, 1, 1])  # NAFNet-SIDD-width32 shape
        tile, tile_batch, repeats = a.tile or 512, a.tile_batch or 4, a.repeats or 3
        whole_max = a.whole_max or 2048
        sizes = a.sizes or "512,2048"
    r = build(**cfg, dtype=a.dtype, device=device)
    desc = r.descriptor
    desc.to(device)
    fn = lambda t: desc(t.to(device=device, dtype=r.dtype)).float()  # noqa: E731

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} load1={load:.1f} model={r.name} "
          f"params={r.info['parameters']} dtype={r.info['dtype']} grid={r.info['tile_grid']} tile={tile} "
          f"overlap={a.overlap} tile_batch={tile_batch}")
    rows = []
    for side in [int(v) for v in sizes.split(",")]:
        g = torch.Generator().manual_seed(side)
        x = torch.rand(1, 3, side, side, generator=g)
        xd = x.to(device)
        fn(xd[..., :64, :64])  # warm-up
        ours, t_ours, c_ours, m_ours = timed(
            lambda xd=xd: restore(r, xd, device=device, tile=tile, overlap=a.overlap, tile_batch=tile_batch, offload_device=None),
            device,
            repeats,
        )
        comfy, t_comfy, c_comfy, m_comfy = timed(lambda xd=xd: comfy_style_tiled(fn, xd, tile, a.overlap), device, repeats)
        row = {
            "side": side,
            "ours_s": round(t_ours, 3),
            "comfy_s": round(t_comfy, 3),
            "ours_cpu_s": round(c_ours, 3),
            "comfy_cpu_s": round(c_comfy, 3),
            "ours_peak_mib": round(m_ours, 1),
            "comfy_peak_mib": round(m_comfy, 1),
            "ours_pixels": None,
            "comfy_pixels": comfy_work(side, side, tile, a.overlap),
            "max_diff_ours_vs_comfy": float((ours - comfy).abs().max()),
        }
        row["ours_pixels"] = plan_tiles(side, side, tile, a.overlap, r.info["tile_grid"]).work()
        if side <= whole_max:
            whole, t_whole, c_whole, m_whole = timed(lambda xd=xd: fn(xd).clamp(0, 1), device, 1)
            row.update(
                whole_s=round(t_whole, 3),
                whole_cpu_s=round(c_whole, 3),
                whole_peak_mib=round(m_whole, 1),
                ours_vs_whole_max=float((ours - whole).abs().max()),
                ours_vs_whole_mean=float((ours - whole).abs().mean()),
                comfy_vs_whole_max=float((comfy - whole).abs().max()),
                comfy_vs_whole_mean=float((comfy - whole).abs().mean()),
            )
        rows.append(row)
        print(json.dumps(row))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": str(device), "model": r.info, "tile": tile, "overlap": a.overlap, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
