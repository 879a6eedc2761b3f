"""Benchmark: quality metrics against scikit-image / piq in the same run, and big images in bounded memory.

Speed (default): a batch of random 512² RGB images and noisy copies. PSNR and SSIM are timed
against scikit-image (``peak_signal_noise_ratio(data_range=1)``, ``structural_similarity(
channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``,
per image, float64 NumPy as a user would call it), MS-SSIM against ``piq.multi_scale_ssim``
(batched torch). Everything runs with **one thread** (torch ``set_num_threads(1)``; NumPy/SciPy
single-threaded through the ``*_NUM_THREADS`` variables set before they load). Ours and the
reference alternate inside every repeat, so both see the same machine load; the table gives
the median wall-clock and process CPU time per batch, the ratios (reference / ours: above 1
means ours is faster) and the largest |ours − reference|. The 1-minute load average is printed
before and after (the machine may be shared). PIQE, NIQE (a random pristine model), LPIPS and
DISTS (random full-size backbones, one pair) are timed too, ours only. With CUDA present (and not
``--smoke``) our metrics are also timed on the GPU.

Big images (``--big``): one image pair per size (same aspect 3:2), each metric in its own child
process so that its peak resident memory (``VmHWM``, the whole process: interpreter, torch,
both images) and seconds are its own; the whole-image computation (the differentiable
``ssim_values`` / ``ms_ssim_values`` cores, a plain float64 MSE for PSNR) is the reference for
the values and for memory, up to ``--whole-max-mp`` (not in ``--smoke``). Then ``gendeg score REF IMG -m
psnr,ssim,ms_ssim`` end to end on PNG files of each size (loading included). Usage::

    python bench/quality.py --smoke        # CPU, ~25 s of CPU: 2 images of 512², networks at 256², one tiny --big size
    python bench/quality.py                # 8 images of 512², 9 repeats, CPU (and CUDA when present)
    python bench/quality.py --big          # 1.5, 6 and 24 MP pairs: peak RSS and seconds per metric and end to end
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULLREF = ("psnr", "ssim", "ms_ssim")


def _single_threaded() -> None:
    """One thread for NumPy/SciPy/BLAS; must run before they are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = "1"


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _time(fn, device=None) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    w, c = time.perf_counter(), time.process_time()
    fn()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - w), 1e3 * (time.process_time() - c)


def _versus(ours, ref, repeats: int, device=None) -> dict:
    """Median wall/CPU ms of ``ours`` and ``ref``, alternating inside each repeat (one warm-up each)."""
    ours(), ref()
    t_o, t_r = [], []
    for _ in range(repeats):
        t_o.append(_time(ours, device))
        t_r.append(_time(ref))
    med = lambda ts, i: statistics.median(t[i] for t in ts)  # noqa: E731
    return {"ours_ms": med(t_o, 0), "ours_cpu_ms": med(t_o, 1), "ref_ms": med(t_r, 0), "ref_cpu_ms": med(t_r, 1)}


def speed(args) -> dict:
    import numpy as np
    import piq
    import torch
    from comfyui_gendeg.core.quality import fullref
    from comfyui_gendeg.core.quality.dists import DISTS
    from comfyui_gendeg.core.quality.lpips import LPIPS
    from comfyui_gendeg.core.quality.niqe import niqe
    from comfyui_gendeg.core.quality.piqe import piqe
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    b, s = args.batch, args.size
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(b, 3, s, s, generator=g)
    img = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    ref_np = [r.permute(1, 2, 0).double().numpy() for r in ref]
    img_np = [r.permute(1, 2, 0).double().numpy() for r in img]
    pairs = list(zip(ref_np, img_np, strict=True))
    references = {
        "psnr": ("scikit-image", lambda: np.array([peak_signal_noise_ratio(a, c, data_range=1) for a, c in pairs])),
        "ssim": ("scikit-image", lambda: np.array([structural_similarity(
            a, c, channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False) for a, c in pairs])),
        "ms_ssim": ("piq", lambda: piq.multi_scale_ssim(ref, img, data_range=1.0, reduction="none").numpy()),
    }
    rows = []
    load_before = _load()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() and not args.smoke else [])
    for dev in devices:
        r, x = ref.to(dev), img.to(dev)
        for name in FULLREF:
            fn = getattr(fullref, name)
            ours = lambda fn=fn, r=r, x=x: fn(r, x)  # noqa: E731
            lib, ref_fn = references[name]
            t = _versus(ours, ref_fn, args.repeats, dev)
            diff = float(np.abs(ours().double().cpu().numpy() - ref_fn()).max())
            rows.append({"metric": name, "device": dev.type, "batch": b, "size": s, "reference": lib, **t,
                         "speedup_wall": t["ref_ms"] / t["ours_ms"], "speedup_cpu": t["ref_cpu_ms"] / t["ours_cpu_ms"],
                         "max_abs_diff": diff})
    load_after = _load()
    if not args.no_nets:  # speed only, ours: one pair for the networks (their memory grows with the batch)
        mu, cov = torch.zeros(36), torch.eye(36)
        s_net = 256 if args.smoke else s
        n_niqe = 1 if args.smoke else b
        cases = [("piqe", "cpu", lambda: piqe(img), b, s), ("niqe", "cpu", lambda: niqe(img[:n_niqe], mu, cov), n_niqe, s)]
        for dev in devices:
            r, x = ref[:1, :, :s_net, :s_net].to(dev), img[:1, :, :s_net, :s_net].to(dev)
            for name, net in (("lpips_alex", LPIPS("alex")), ("lpips_vgg", LPIPS("vgg")), ("dists", DISTS())):
                cases.append((name, dev.type, lambda net=net.to(dev), r=r, x=x: net(r, x), 1, s_net))
        with torch.no_grad():
            for name, dev_type, fn, n, size in cases:
                dev = torch.device(dev_type)
                fn()
                ts = [_time(fn, dev) for _ in range(max(1, args.repeats // 3))]
                rows.append({"metric": name, "device": dev_type, "batch": n, "size": size, "ours_ms": statistics.median(t[0] for t in ts),
                             "ours_cpu_ms": statistics.median(t[1] for t in ts)})
    return {"load_before": load_before, "load_after": load_after, "rows": rows}


# --- big images ------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``; reset by exec, unlike ``ru_maxrss``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - not Linux


def _child(spec: str) -> None:
    """Run one metric on one in-memory pair (``metric:impl:w:h``) and print seconds and peak RSS as JSON."""
    import torch
    from comfyui_gendeg.core.quality import fullref

    metric, impl, w, h = spec.split(":")
    w, h = int(w), int(h)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, h, w, generator=g)
    img = torch.randn(1, 3, h, w, generator=g).mul_(0.1).add_(ref).clamp_(0, 1)
    rss_inputs = _peak_rss_mib()
    t = time.perf_counter()
    with torch.no_grad():
        if impl == "ours":
            value = getattr(fullref, metric)(ref, img)
        elif metric == "psnr":
            value = 10 * torch.log10(1 / (ref.double() - img.double()).pow(2).mean()).view(1)
        else:
            value = getattr(fullref, f"{metric}_values")(ref, img)
    sec = time.perf_counter() - t
    print(json.dumps({"value": float(value[0]), "seconds": sec, "rss_inputs_mib": rss_inputs, "peak_rss_mib": _peak_rss_mib()}))


def _child_cli(argv: list[str]) -> None:
    """``gendeg ARGV`` in this process; its peak RSS goes to stderr as the last line (JSON)."""
    from comfyui_gendeg.cli import main as gendeg

    rc = gendeg(argv)
    sys.stdout.flush()
    print(json.dumps({"peak_rss_mib": _peak_rss_mib()}), file=sys.stderr)
    raise SystemExit(rc)


def _run(cmd: list[str], env: dict) -> tuple[str, str, float]:
    """(stdout, stderr, wall seconds) of a child; a failure stops the benchmark with its output."""
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p.stdout, p.stderr, time.perf_counter() - t


def _write_pair(folder: Path, w: int, h: int) -> tuple[Path, Path]:
    """A natural-looking RGB pair (skimage's astronaut tiled, and a noisy copy) as 8-bit PNGs."""
    import numpy as np
    from PIL import Image
    from skimage import data

    tile = data.astronaut()
    reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
    a = np.tile(tile, reps)[:h, :w]
    rng = np.random.default_rng(0)
    noisy = np.clip(a.astype(np.int16) + rng.integers(-12, 13, a.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    paths = folder / f"ref_{w}x{h}.png", folder / f"img_{w}x{h}.png"
    Image.fromarray(a).save(paths[0], compress_level=1)
    Image.fromarray(noisy).save(paths[1], compress_level=1)
    return paths


def big(args) -> dict:
    sizes = [(384, 256)] if args.smoke else [(1500, 1000), (3000, 2000), (6000, 4000)]
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    env = {**os.environ, "GENDEG_NO_PROGRESS": "1"}
    me = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
    impls = ("ours",) if args.smoke else ("ours", "whole")
    rows = []
    for w, h in sizes:
        mp = w * h / 1e6
        for metric in FULLREF:
            for impl in impls:
                if impl == "whole" and mp > args.whole_max_mp:
                    continue
                out, _, _ = _run([*me, "--child", f"{metric}:{impl}:{w}:{h}"], env)
                r = json.loads(out.strip().splitlines()[-1])
                rows.append({"what": metric, "impl": impl, "width": w, "height": h, "megapixels": mp, "seconds": r["seconds"],
                             "s_per_mp": r["seconds"] / mp, "peak_rss_mib": r["peak_rss_mib"], "rss_inputs_mib": r["rss_inputs_mib"],
                             "value": r["value"]})
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            a, c = _write_pair(Path(tmp), w, h)
            cli = ["score", str(a), str(c), "-m", "psnr,ssim,ms_ssim", "--device", "cpu"]
            out, err, sec = _run([*me, "--child-cli", *cli], env)
            mean = json.loads(out)["mean"]
            mp = w * h / 1e6
            rows.append({"what": "gendeg score -m psnr,ssim,ms_ssim (PNG files)", "impl": "ours", "width": w, "height": h,
                         "megapixels": mp, "seconds": sec, "s_per_mp": sec / mp,
                         "peak_rss_mib": json.loads(err.strip().splitlines()[-1])["peak_rss_mib"], "value": mean["ssim"]})
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU only, 2 images, 3 repeats, networks at 256², tiny --big sizes")
    ap.add_argument("--big", action="store_true", help="big images: peak RSS and seconds against pixel count")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default 2 smoke, 8 full)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (medians; default 3 smoke, 9 full)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as scikit-image)")
    ap.add_argument("--no-nets", action="store_true", help="skip PIQE, NIQE, LPIPS and DISTS")
    ap.add_argument("--sizes", default="", help="--big sizes as WxH,WxH (default 1500x1000,3000x2000,6000x4000)")
    ap.add_argument("--whole-max-mp", type=float, default=6.0, help="largest size (MP) for the whole-image reference in --big")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads == 1:
        _single_threaded()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        _child(args.child)
        return
    if args.child_cli:
        _child_cli(args.child_cli)
    args.batch = args.batch or (2 if args.smoke else 8)
    args.repeats = args.repeats or (3 if args.smoke else 9)
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    result = {"meta": meta}
    if not args.big or args.smoke:
        result["speed"] = speed(args)
    if args.big or args.smoke:
        result["big"] = big(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "speed" in result:
        sp = result["speed"]
        print(f"# quality metrics, {args.batch}×{args.size}², {meta}; load average {sp['load_before']:.2f} -> {sp['load_after']:.2f}")
        print("| metric | device | ours ms/batch (cpu ms) | reference | ref ms/batch (cpu ms) | × reference wall | × reference cpu | max |diff| |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sp["rows"]:
            if "reference" in r:
                print(f"| {r['metric']} | {r['device']} | {r['ours_ms']:.1f} ({r['ours_cpu_ms']:.1f}) | {r['reference']} | "
                      f"{r['ref_ms']:.1f} ({r['ref_cpu_ms']:.1f}) | {r['speedup_wall']:.2f} | {r['speedup_cpu']:.2f} | {r['max_abs_diff']:.1e} |")
            else:
                print(f"| {r['metric']} | {r['device']} {r['batch']}×{r['size']}² | {r['ours_ms']:.1f} ({r['ours_cpu_ms']:.1f}) | - | - | - | - | - |")
    if "big" in result:
        print("\n# big images: one child process per row; peak RSS of the whole process")
        print("| what | impl | size | MP | seconds | s/MP | peak RSS MiB | RSS with inputs MiB | value |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in result["big"]["rows"]:
            print(f"| {r['what']} | {r['impl']} | {r['width']}×{r['height']} | {r['megapixels']:.2f} | {r['seconds']:.2f} | {r['s_per_mp']:.2f} | "
                  f"{r['peak_rss_mib']:.0f} | {r.get('rss_inputs_mib', float('nan')):.0f} | {r['value']:.6f} |")


if __name__ == "__main__":
    main()
