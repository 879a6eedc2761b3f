"""Benchmark: quality metrics, images/s at 512², ours (batched) against scikit-image (PSNR,
SSIM, per image, float64 numpy) and piq (MS-SSIM, batched torch) in the same run.

Ours runs batched on every available device (CPU; CUDA when present, timed with
synchronisation after a warm-up). Also reported: PIQE, NIQE (a random pristine model: the
cost does not depend on its values), LPIPS-alex, LPIPS-vgg and DISTS (random weights of the
full-size torchvision backbones: speed only), each with the largest |ours − reference|
where a reference exists. Usage::

    python bench/quality.py --smoke        # CPU, < 60 s: 2 images of 512² (networks: 1 image of 256²)
    python bench/quality.py                # 32 images of 512², CPU and CUDA
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from comfyui_gendeg.core.quality import fullref
from comfyui_gendeg.core.quality.dists import DISTS
from comfyui_gendeg.core.quality.lpips import LPIPS
from comfyui_gendeg.core.quality.niqe import niqe
from comfyui_gendeg.core.quality.piqe import piqe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(fn, n_images: int, device: torch.device | None = None, repeats: int = 1) -> float:
    """Images per second of ``fn`` (best of ``repeats`` after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device is not None:
            _sync(device)
        t = time.perf_counter()
        fn()
        if device is not None:
            _sync(device)
        best = min(best, time.perf_counter() - t)
    return n_images / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU only, 2 images, one repeat, networks at 256² (< 60 s)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default 2 smoke, 32 full)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default 1 with --smoke: CI machines are shared and oversubscribed "
                    "threads make every op several times slower; scikit-image is single-threaded too)")
    args = ap.parse_args()
    threads = args.threads or (1 if args.smoke else None)
    if threads:
        torch.set_num_threads(threads)
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    b = args.batch or (2 if args.smoke else 32)
    repeats = 1 if args.smoke else 3
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(b, 3, args.size, args.size, generator=g)
    img = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    rows: list[dict] = []

    # references, per image on the CPU
    ref_np = [r.permute(1, 2, 0).double().numpy() for r in ref]
    img_np = [r.permute(1, 2, 0).double().numpy() for r in img]
    sk_psnr = np.array([peak_signal_noise_ratio(a, c, data_range=1) for a, c in zip(ref_np, img_np, strict=True)])
    sk_ssim = np.array([structural_similarity(a, c, channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False) for a, c in zip(ref_np, img_np, strict=True)])
    refs = {
        "psnr": ("scikit-image", _rate(lambda: [peak_signal_noise_ratio(a, c, data_range=1) for a, c in zip(ref_np, img_np, strict=True)], b, repeats=repeats), sk_psnr),
        "ssim": ("scikit-image", _rate(lambda: [structural_similarity(a, c, channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False) for a, c in zip(ref_np, img_np, strict=True)], b, repeats=repeats), sk_ssim),
    }
    try:
        import piq

        refs["ms_ssim"] = ("piq", _rate(lambda: piq.multi_scale_ssim(ref, img, data_range=1.0, reduction="none"), b, repeats=repeats),
                           piq.multi_scale_ssim(ref, img, data_range=1.0, reduction="none").numpy())
    except ImportError:  # pragma: no cover
        pass

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() and not args.smoke else [])
    mu, cov = torch.zeros(36), torch.eye(36)
    for dev in devices:
        r, x = ref.to(dev), img.to(dev)
        nets = {
            "lpips_alex": LPIPS("alex").to(dev),
            "lpips_vgg": LPIPS("vgg").to(dev),
            "dists": DISTS().to(dev),
        }
        cases = {
            "psnr": lambda r=r, x=x: fullref.psnr(r, x),
            "ssim": lambda r=r, x=x: fullref.ssim(r, x),
            "ms_ssim": lambda r=r, x=x: fullref.ms_ssim(r, x),
            "piqe": lambda x=x: piqe(x),
            "niqe": lambda x=x: niqe(x, mu, cov),
        }
        small = {"niqe", *nets} if args.smoke else set()  # smoke: one image; networks at 256²
        cases["niqe"] = (lambda x=x: niqe(x[:1], mu, cov)) if args.smoke else cases["niqe"]
        with torch.no_grad():
            for name, net in nets.items():
                if args.smoke:
                    r2, x2 = r[:1, :, :256, :256], x[:1, :, :256, :256]
                    cases[name] = lambda net=net, r2=r2, x2=x2: net(r2, x2)
                else:
                    cases[name] = lambda net=net, r=r, x=x: net(r, x)
            for name, fn in cases.items():
                n_img = 1 if name in small else b
                rate = _rate(fn, n_img, dev, repeats)
                size = 256 if (args.smoke and name in nets) else args.size
                row = {"metric": name, "device": dev.type, "images_per_s": rate, "batch": n_img, "size": size}
                if name in refs:
                    lib, ref_rate, ref_val = refs[name]
                    ours = fn().double().cpu().numpy()
                    row.update(reference=lib, reference_images_per_s=ref_rate, speedup=rate / ref_rate,
                               max_abs_diff=float(np.abs(ours - ref_val).max()))
                rows.append(row)
    meta = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "batch": b, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"# quality metrics, {args.size}², batch {b}, {meta}")
    print("| metric | device | size | ours img/s | reference | ref img/s | speed-up | max |diff| |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['metric']} | {row['device']} | {row['size']}² ×{row['batch']} | {row['images_per_s']:.2f} | {row.get('reference', '-')} | "
              f"{row.get('reference_images_per_s', float('nan')):.2f} | {row.get('speedup', float('nan')):.2f}× | "
              f"{row.get('max_abs_diff', float('nan')):.1e} |")


if __name__ == "__main__":
    main()
