"""Benchmark of the physical synthesizer: throughput and calibration accuracy.

For every degradation at 512×512:

* ``batched``: our PyTorch implementation on a batch of ``--batch`` images;
* ``one-at-a-time``: the same code called once per image;
* ``reference``: a straightforward per-image NumPy / SciPy / Pillow implementation of the same
  operation (written here, independent of ``core``), as a CPU baseline.

Then calibration accuracy: |achieved μ − requested μ| over many images (the shipped samples
and crops / flips / exposures of them) and targets (the light/medium/heavy presets of every
type), counting only targets inside each image's reachable range.

Per core against albumentations (``--vs-albumentations``; ``pip install albumentations``, tested
with 2.0.8): our batched call against the closest albumentations transform, one thread each
(``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``, ``OMP/MKL/OPENBLAS_NUM_THREADS=1``, in a
fresh process), on the same 8 images of 512², interleaved repeats, medians, load average
reported; albumentations on 8-bit arrays (its native input) and on float32 arrays (the input we
get), ours on float32 (the nodes' input) and on the same 8-bit images (uint8 in, uint8 out, like
albumentations' 8-bit path), and the calibrated request (``degrade_to_mu`` to the medium preset) timed separately.
``--smoke`` runs it for jpeg and noise on 2 images when albumentations is installed, else says so
and skips it.

Elementwise functions (``--ufuncs``; also part of ``--smoke``): ns per value of torch's in-place
``exp``/``log``/``sqrt`` against :mod:`core.synth.ufuncs` (NumPy's SIMD ufuncs, what low light
uses on the CPU) on one 512² RGB image of float32, at one thread and at ``--threads``, with the
largest difference between the two.

Large photos (``--big``): 6, 12 and 24 MP JPEGs through ``gendeg synth`` (decode, calibrate to the
medium preset or a fixed strength, measure, encode), each run in a fresh process for its peak RSS,
against the whole-image path (no strips, every calibration trial at full size) at 24 MP.

    python bench/synth.py --smoke          # CPU, < 90 s (large-image part at 0.25-1 MP, small strips)
    python bench/synth.py --device cuda    # full run on a GPU (batch 64, more repeats)
    python bench/synth.py --big --threads 1  # large photos on the CPU (about half an hour)
    python bench/synth.py --vs-albumentations  # per core against albumentations (a few minutes)
    python bench/synth.py --ufuncs         # torch's exp/log/sqrt against NumPy's on the CPU (seconds)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage, signal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT.parent))

from comfyui_gendeg.core.io import load_image  # noqa: E402
from comfyui_gendeg.core.synth import TYPES, fused, get, synthesize  # noqa: E402
from comfyui_gendeg.core.synth.calibrate import degrade_to_mu, reachable_range  # noqa: E402
from comfyui_gendeg.core.synth.plan import PRESETS  # noqa: E402

# --- per-image NumPy references (same models, plain loops, one image at a time) ----------------


def _segment_kernel(length: float, angle: float, width: float, size: int) -> np.ndarray:
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    dx, dy = math.cos(angle), math.sin(angle)
    along = np.clip(xx * dx + yy * dy, -length / 2, length / 2)
    d2 = (xx - along * dx) ** 2 + (yy - along * dy) ** 2
    k = np.exp(-0.5 * d2 / max(width, 0.3) ** 2)
    return k / k.sum()


def _odd(n: float) -> int:
    m = max(1, int(math.ceil(n)))
    return m if m % 2 else m + 1


def ref_haze(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    lum = img @ np.array([0.2126, 0.7152, 0.0722])
    lum = ndimage.gaussian_filter(lum, min(h, w) / 32.0, mode="reflect")
    v = np.linspace(1, 0, h)[:, None] * np.ones((1, w))
    d = 0.6 * v + 0.4 * lum
    d = (d - d.min()) / max(d.max() - d.min(), 1e-6)
    a = rng.uniform(0.7, 1.0)
    t = np.exp(-s * 2.0 * d)[..., None]
    return np.clip(img * t + a * (1 - t), 0, 1)


def ref_rain(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    theta = math.radians(90 - rng.uniform(-20, 20))
    sc = min(h, w) / 512
    layer = np.zeros((h, w))
    for dens, length, width, opac in ((0.005, 0.1 * min(h, w), 1.2 * sc, 0.7), (0.01, 0.05 * min(h, w), 0.6 * sc, 0.42)):
        seeds = (rng.random((h, w)) < s * dens) * rng.uniform(0.5, 1.0, (h, w))
        k = _segment_kernel(length, theta, width, _odd(length + 6 * width))
        streak = np.clip(signal.fftconvolve(seeds, k, mode="same") / k.max() * opac, 0, 1)
        layer = 1 - (1 - layer) * (1 - streak)
    out = 1 - (1 - img) * (1 - layer[..., None])
    v = s * 0.12
    return np.clip(out * (1 - v) + v * 0.9, 0, 1)


def ref_snow(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    sc = min(h, w) / 512
    theta = math.radians(90 - rng.uniform(-30, 30))
    out = img.copy()
    for size_f, dens_f, streak_f, opac in ((0.5, 4.0, 0.5, 0.7), (1.0, 1.5, 1.0, 0.85), (2.0, 0.5, 2.0, 1.0)):
        seeds = (rng.random((h, w)) < s * 0.004 * dens_f).astype(np.float64)
        radius, length = max(0.3, 1.6 * size_f * sc), 4.0 * streak_f * sc
        k = _segment_kernel(length, theta, radius, _odd(length + 6 * radius))
        m = np.clip(signal.fftconvolve(seeds, k, mode="same") / k.max() * opac, 0, 1)[..., None]
        out = out * (1 - m) + 0.95 * m
    v = s * 0.25
    return np.clip(out * (1 - v) + v * 0.85, 0, 1)


def ref_motion_blur(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    steps = 128
    anxiety, centripetal, gauss, freq = rng.uniform(0, 0.1), rng.uniform(0, 0.7), rng.uniform(0, 10), rng.uniform(0, 0.2)
    step = 1.0 / (steps - 1)
    v = complex(math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)) * step
    x = np.zeros(steps, dtype=complex)
    for t in range(steps - 1):
        big = 2 * v * np.exp(1j * (math.pi + rng.uniform(-0.5, 0.5))) if rng.random() < freq * anxiety else 0
        v = v + big + anxiety * (gauss * complex(rng.normal(), rng.normal()) - centripetal * x[t]) * step
        v = v / abs(v) * step
        x[t + 1] = x[t] + v
    length = s * 0.15 * min(h, w)
    size = _odd(length + 3)
    pts = np.interp(np.linspace(0, steps - 1, max(steps, int(length * 4) + 1)), np.arange(steps), x) * length
    pts = pts - (pts.real.max() + pts.real.min()) / 2 - 1j * (pts.imag.max() + pts.imag.min()) / 2 + (size // 2) * (1 + 1j)
    k = np.zeros((size, size))
    for p in pts:  # bilinear splat, one point at a time
        x0, y0 = int(math.floor(p.real)), int(math.floor(p.imag))
        fx, fy = p.real - x0, p.imag - y0
        for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            k[min(max(y0 + dy, 0), size - 1), min(max(x0 + dx, 0), size - 1)] += wt
    k /= k.sum()
    pad = size // 2
    return np.stack([signal.fftconvolve(np.pad(img[..., c], pad, mode="reflect"), k, mode="valid") for c in range(3)], -1).clip(0, 1)


def ref_low_light(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    lin = img**2.2 * 2.0 ** (-s * 5.0)
    shot = s * 0.012
    read = math.exp(2.18 * math.log(max(shot, 1e-12)) + 1.2 + 0.26 * rng.normal()) if shot > 0 else 0.0
    lin = lin + rng.normal(size=img.shape) * np.sqrt(shot * lin + read)
    return np.clip(lin, 0, 1) ** (1 / 2.2)


def ref_raindrop(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    radii = [max(1.0, 0.025 * f * min(h, w)) for f in (0.6, 1.0, 1.6)]
    ks = _odd(2 * max(radii) + 1)
    r = ks // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    z = np.zeros((h, w))
    hn = np.zeros((h, w))
    for rad in radii:
        seeds = (rng.random((h, w)) < s * 0.7 / (3 * math.pi * rad * rad)).astype(np.float64)
        cap = np.sqrt(np.clip(rad**2 - xx**2 - yy**2, 0, None))
        zc = np.clip(signal.fftconvolve(seeds, cap, mode="same"), 0, None)
        z = np.maximum(z, zc)
        hn = np.maximum(hn, np.clip(zc / rad, 0, 1))
    gy, gx = np.gradient(0.5 * z * z)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.stack([ndimage.gaussian_filter(img[..., c], 0.35 * radii[1]) for c in range(3)], -1)
    coords = [ys + 4 * gy, xs + 4 * gx]
    through = np.stack([ndimage.map_coordinates(bg[..., c], coords, order=1, mode="mirror") for c in range(3)], -1)
    through = through * (1 - 0.35 * (1 - hn[..., None]) ** 2)
    alpha = ndimage.gaussian_filter(np.clip(hn * 4, 0, 1), 0.08 * radii[1])[..., None]
    return np.clip(img * (1 - alpha) + through * alpha, 0, 1)


def ref_jpeg(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(buf, format="JPEG", quality=int(round(100 - s * 95)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")) / 255.0


def ref_noise(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img + rng.normal(size=img.shape) * s * 0.3, 0, 1)


def ref_rain_haze(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return ref_rain(ref_haze(img, s, rng), s, rng)  # haze first, rain in front


def ref_snow_haze(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return ref_snow(ref_haze(img, s, rng), s, rng)


REFERENCES = {
    "haze": ref_haze, "rain": ref_rain, "snow": ref_snow, "motion_blur": ref_motion_blur,
    "low_light": ref_low_light, "raindrop": ref_raindrop, "jpeg": ref_jpeg, "noise": ref_noise,
    "rain+haze": ref_rain_haze, "snow+haze": ref_snow_haze,
}

# --- measurements -------------------------------------------------------------------------------


def sample_batch(n: int, size: int, device: torch.device) -> torch.Tensor:
    """``n`` images of ``size``² built from the shipped samples (crops, flips, exposure changes)."""
    photos = [load_image(p, keep_alpha=False) for p in sorted((ROOT / "samples").glob("*.png"))]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = photos[i % len(photos)]
        h, w = x.shape[-2:]
        ch, cw = int(h * (0.6 + 0.4 * float(torch.rand(1, generator=g)))), int(w * (0.6 + 0.4 * float(torch.rand(1, generator=g))))
        y0, x0 = int(torch.randint(0, h - ch + 1, (1,), generator=g)), int(torch.randint(0, w - cw + 1, (1,), generator=g))
        crop = x[..., y0 : y0 + ch, x0 : x0 + cw]
        if i % 2:
            crop = crop.flip(-1)
        crop = (crop * (0.7 + 0.6 * float(torch.rand(1, generator=g)))).clamp(0, 1)
        out.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1))
    return torch.cat(out).to(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(args: argparse.Namespace, device: torch.device) -> list[dict]:
    x = sample_batch(args.batch, args.size, device)
    rows = []
    for kind in args.types:
        torch.set_num_threads(args.batched_threads)  # our code: batched and one-at-a-time
        batched = timed(lambda kind=kind: synthesize(x, kind, 0.6, seed=1), device, args.repeats)
        single_n = min(args.batch, args.single)
        single = timed(lambda kind=kind, n=single_n: [synthesize(x[i : i + 1], kind, 0.6, seed=1) for i in range(n)], device,
                       args.repeats)
        torch.set_num_threads(args.threads)
        ref_n = min(args.batch, args.ref)
        imgs = [x[i].permute(1, 2, 0).double().cpu().numpy() for i in range(ref_n)]
        rng = np.random.default_rng(0)
        ref = timed(lambda kind=kind, imgs=imgs, rng=rng: [REFERENCES[kind](im, 0.6, rng) for im in imgs], torch.device("cpu"),
                    args.repeats)
        row = {
            "type": kind,
            "batched_ips": args.batch / batched,
            "single_ips": single_n / single,
            "reference_ips": ref_n / ref,
        }
        row["speedup_vs_reference"] = row["batched_ips"] / row["reference_ips"]
        rows.append(row)
        print(f"{kind:12s} batched {row['batched_ips']:8.1f} img/s | one-at-a-time {row['single_ips']:7.1f} | "
              f"reference {row['reference_ips']:7.1f} | x{row['speedup_vs_reference']:.1f}", flush=True)
    return rows


def calibration(args: argparse.Namespace, device: torch.device) -> list[dict]:
    x = sample_batch(args.calib_images, args.calib_size, device)
    rows = []
    for kind in args.types:
        lo, hi = reachable_range(x, kind, seed=2)
        errs, evals, clamped = [], 0, 0
        for level, target in PRESETS[kind].items():
            r = degrade_to_mu(x, kind, target, seed=2)
            evals += r.evaluations
            inside = (lo <= target) & (target <= hi)
            clamped += int((~inside).sum())
            errs += (r.mu[inside] - target).abs().tolist()
            del level
        e = np.array(errs) if errs else np.zeros(1)
        row = {"type": kind, "pairs": len(errs), "clamped": clamped, "mean_abs_err": float(e.mean()),
               "max_abs_err": float(e.max()), "within_0.005": float((e <= 0.005).mean()), "evals_per_target": evals / 3}
        rows.append(row)
        print(f"{kind:12s} calib: {row['pairs']} in range ({clamped} clamped), mean |err| {row['mean_abs_err']:.4f}, "
              f"max {row['max_abs_err']:.4f}, within 0.005: {100 * row['within_0.005']:.0f}%, "
              f"{row['evals_per_target']:.1f} trials/target", flush=True)
    return rows


# --- large images: seconds and peak process memory against the pixel count ------------------

BIG_SIZES = {6: (2000, 3000), 12: (2828, 4243), 24: (4000, 6000)}  # MP -> (H, W), 3:2 like a camera
SMOKE_SIZES = {0.25: (408, 612), 0.5: (578, 866), 1: (816, 1224)}


def big_inputs(sizes: dict, folder: Path) -> dict:
    """JPEG photos of each size (the shipped coffee photo, upscaled) -> {MP: path}."""
    src = Image.open(ROOT / "samples" / "coffee.png").convert("RGB")
    out = {}
    for mp, (h, w) in sizes.items():
        path = folder / f"photo_{h}x{w}.jpg"
        src.resize((w, h), Image.Resampling.BICUBIC).save(path, quality=92)
        out[mp] = path
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of its own address space (Linux; unlike
    ``ru_maxrss`` it does not inherit the parent's size across fork + exec), else ``ru_maxrss``."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def big_child(args: argparse.Namespace) -> int:
    """One ``gendeg synth`` run in this fresh process (so its peak RSS is the run's); prints one JSON line."""
    import contextlib

    from comfyui_gendeg import cli
    from comfyui_gendeg.core import intensity
    from comfyui_gendeg.core.synth import calibrate, strips

    kind, path, mode, task = args.big_child
    if mode == "whole":  # the reference: the whole-image path (no strips, every trial at full size)
        strips.STRIP_PIXELS = calibrate.LARGE_PIXELS = intensity.MEASURE_STRIP_PIXELS = 1 << 62
    elif args.smoke:  # small images, small strips: the same code paths in seconds
        strips.STRIP_PIXELS, calibrate.LARGE_PIXELS, calibrate.REDUCED_PIXELS = 1 << 16, 1 << 17, 1 << 15
    amount = ["--mu", str(PRESETS[kind]["medium"])] if task == "mu" else ["--strength", "0.5"]
    trial_pixels: list[int] = []  # pixels of every calibration trial (reduced copies are smaller)
    trial = calibrate._Trials.__call__

    def counted(self, s):  # noqa: ANN001, ANN202 - a counting wrapper
        trial_pixels.append(self.x.shape[-2] * self.x.shape[-1])
        return trial(self, s)

    calibrate._Trials.__call__ = counted
    buf = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["synth", path, str(Path(path).with_suffix(f".{kind}.{mode}.png")), "--type", kind, *amount])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    full_trials = sum(n == max(trial_pixels) for n in trial_pixels) if trial_pixels else 0
    report = json.loads(buf.getvalue()) if rc == 0 else {}
    peak = peak_rss_mib()
    print(json.dumps({"rc": rc, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak, "full_trials": full_trials,
                      "mu": report.get("mu"),
                      "strength": report.get("strength"), "warnings": report.get("warnings")}))
    return 0


def big(args: argparse.Namespace) -> list[dict]:
    """Large photos through ``gendeg synth`` (decode, calibrate or fixed strength, measure, encode), each
    run in a fresh process: seconds and peak RSS per pixel count, and the whole-image path as the
    reference at the largest size."""
    import subprocess
    import tempfile

    sizes = SMOKE_SIZES if args.smoke else BIG_SIZES
    rows = []
    env = {**os.environ, "GENDEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="gendeg-bench-big-") as tmp:
        inputs = big_inputs(sizes, Path(tmp))
        top = max(sizes)
        for kind in args.big_types:
            for task in args.big_tasks:
                runs = [(mp, "strips") for mp in sizes] + ([(top, "whole")] if args.big_reference else [])
                for mp, mode in runs:
                    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--big-child", kind, str(inputs[mp]), mode,
                           task] + (["--smoke"] if args.smoke else [])
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
                    if proc.returncode != 0 or not proc.stdout.strip():
                        raise RuntimeError(f"big run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    h, w = sizes[mp]
                    row = {"type": kind, "task": task, "mode": mode, "mp": h * w / 1e6, **r}
                    row["s_per_mp"] = row["seconds"] / row["mp"]
                    row["cpu_s_per_mp"] = row["cpu_seconds"] / row["mp"]
                    rows.append(row)
                    print(f"{kind:12s} {task:8s} {mode:6s} {h}x{w} ({row['mp']:.1f} MP): {row['seconds']:7.1f} s "
                          f"({row['s_per_mp']:.2f} s/MP; CPU {row['cpu_seconds']:.1f} s, {row['cpu_s_per_mp']:.2f} s/MP), "
                          f"peak RSS {row['peak_rss_mib']:7.0f} MiB, {row['full_trials']} full-size trials, mu {row['mu']}"
                          + (f", strength {row['strength']}" if task == "mu" else ""), flush=True)
            ours = [r for r in rows if r["type"] == kind and r["mode"] == "strips" and r["task"] == args.big_tasks[0]]
            if len(ours) > 1:
                lin = ours[-1]["s_per_mp"] / ours[0]["s_per_mp"]
                lin_cpu = ours[-1]["cpu_s_per_mp"] / ours[0]["cpu_s_per_mp"]
                print(f"{kind:12s} linearity: s/MP at {ours[-1]['mp']:.1f} MP / at {ours[0]['mp']:.1f} MP = {lin:.2f} "
                      f"(CPU time: {lin_cpu:.2f})", flush=True)
    return rows


# --- per core against albumentations ----------------------------------------------------------

#: our type -> the closest albumentations transform(s) (issue 15), built by :func:`albu_transform`.
#: Defaults everywhere (what a dataset builder runs), except the parameters that are the strength:
#: JPEG quality, Gaussian std and the motion-blur length are those of our strength 0.6.
ALBU_CLOSEST = {
    "haze": "RandomFog", "rain": "RandomRain", "snow": "RandomSnow", "motion_blur": "MotionBlur(blur_limit 51: our path's kernel)",
    "low_light": "RandomBrightnessContrast(-0.5) + RandomGamma(150) + GaussNoise(0.05)",
    "raindrop": "Spatter(mode=rain)", "jpeg": "ImageCompression(quality 43)", "noise": "GaussNoise(std 0.18)",
    "rain+haze": "RandomFog + RandomRain", "snow+haze": "RandomFog + RandomSnow",
}
PER_CORE_STRENGTH = 0.6
#: odd side of our motion-blur kernel at PER_CORE_STRENGTH on 512² (path 0.6 · 0.15 · 512 px, + 3)
MOTION_KERNEL = 51


def albu_transform(A, kind: str):  # noqa: ANN001, ANN201 - albumentations is optional
    """The albumentations transform closest to ``kind`` (see :data:`ALBU_CLOSEST`), applied with p=1."""
    from comfyui_gendeg.core.synth.jpeg import quality_for

    q = quality_for(PER_CORE_STRENGTH)
    one = {
        "haze": lambda: [A.RandomFog(p=1)],
        "rain": lambda: [A.RandomRain(p=1)],
        "snow": lambda: [A.RandomSnow(p=1)],
        # the same extent of blur: a line as long as our camera path's kernel at strength 0.6 and 512²
        # (MotionBlur's default blur_limit of 3..7 px is a blur of another size, 0.6 ms against 28 ms)
        "motion_blur": lambda: [A.MotionBlur(blur_limit=(MOTION_KERNEL, MOTION_KERNEL), p=1)],
        "low_light": lambda: [A.RandomBrightnessContrast(brightness_limit=(-0.5, -0.5), contrast_limit=(0, 0), p=1),
                              A.RandomGamma(gamma_limit=(150, 150), p=1), A.GaussNoise(std_range=(0.05, 0.05), p=1)],
        "raindrop": lambda: [A.Spatter(mode="rain", p=1)],
        "jpeg": lambda: [A.ImageCompression(quality_range=(q, q), p=1)],
        "noise": lambda: [A.GaussNoise(std_range=(0.3 * PER_CORE_STRENGTH,) * 2, p=1)],
        "rain+haze": lambda: [A.RandomFog(p=1), A.RandomRain(p=1)],
        "snow+haze": lambda: [A.RandomFog(p=1), A.RandomSnow(p=1)],
    }[kind]()
    return A.Compose(one, seed=0)


def _eager(fn):  # noqa: ANN001, ANN202
    """``fn()`` with the compiled loops off (``GENDEG_NO_JIT=1``)."""
    old = os.environ.get("GENDEG_NO_JIT")
    os.environ["GENDEG_NO_JIT"] = "1"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["GENDEG_NO_JIT"]
        else:
            os.environ["GENDEG_NO_JIT"] = old


def per_core_child(args: argparse.Namespace) -> int:
    """The per-core comparison in this process (started with one thread everywhere); prints its rows
    and, last, one JSON line."""
    torch.set_num_threads(1)
    try:
        import albumentations as A
        import cv2
    except ImportError as e:
        print(json.dumps({"skipped": f"albumentations is not installed ({e}); pip install albumentations"}))
        return 0
    cv2.setNumThreads(1)
    from comfyui_gendeg.core.synth.jpeg import _torchvision_coder, quality_for

    n, repeats, calib_repeats = args.pc_images, args.pc_repeats, args.pc_calib_repeats
    # ComfyUI's layout (interleaved [B,H,W,C] seen as [B,C,H,W]), which is what the nodes pass us
    hwc = sample_batch(n, 512, torch.device("cpu")).permute(0, 2, 3, 1).contiguous()
    x = hwc.permute(0, 3, 1, 2)
    u8 = [(hwc[i].numpy() * 255 + 0.5).astype(np.uint8) for i in range(n)]
    x8 = torch.from_numpy(np.stack(u8)).permute(0, 3, 1, 2)  # the same 8-bit images for our uint8 path
    f32 = [hwc[i].numpy().copy() for i in range(n)]
    print(f"per core: torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}, OMP "
          f"{os.environ.get('OMP_NUM_THREADS')}, albumentations {A.__version__}, OpenCV {cv2.__version__}, "
          f"{n} images of 512x512, median of {repeats} interleaved repeats; xN = albumentations' time / ours "
          f"(above 1: ours is faster); compiled rain/snow loops (numba): "
          f"{'on' if fused.available() else 'off'}", flush=True)

    def once(fn) -> tuple[float, float]:  # noqa: ANN001
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0

    rows = []
    for kind in args.types:
        tr = albu_transform(A, kind)
        sides = {
            "ours": lambda kind=kind: synthesize(x, kind, PER_CORE_STRENGTH, seed=1),
            "ours_u8": lambda kind=kind: synthesize(x8, kind, PER_CORE_STRENGTH, seed=1),
            "albu_u8": lambda tr=tr: [tr(image=im) for im in u8],
            "albu_f32": lambda tr=tr: [tr(image=im) for im in f32],
        }
        if kind == "jpeg":  # the codec alone on the same 8-bit images: ours (libjpeg via torchvision), OpenCV's
            coder, q = _torchvision_coder(), quality_for(PER_CORE_STRENGTH)
            if coder is not None:
                sides["codec_ours"] = lambda coder=coder, q=q: [coder(im, q) for im in u8]
            sides["codec_cv2"] = lambda q=q: [cv2.imdecode(cv2.imencode(".jpg", im, (cv2.IMWRITE_JPEG_QUALITY, q))[1],
                                                           cv2.IMREAD_UNCHANGED) for im in u8]
            # image by image, as albumentations is called (no batch to assemble)
            sides["ours_u8_each"] = lambda: [synthesize(x8[i : i + 1], "jpeg", PER_CORE_STRENGTH, seed=1) for i in range(n)]
        if fused.available() and get(kind).writes_8bit:  # the eager path too, for the compiled loops' gain
            sides["ours_eager"] = lambda kind=kind: _eager(lambda: synthesize(x, kind, PER_CORE_STRENGTH, seed=1))
        load = [os.getloadavg()[0]]
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        for fn in sides.values():
            fn()  # warm-up
        for _ in range(repeats):  # interleaved: a change of load hits every side alike
            for k, fn in sides.items():
                times[k].append(once(fn))
        calib, trials = [], 0
        if calib_repeats:  # the warm-up tells the number of trials
            trials = degrade_to_mu(x, kind, PRESETS[kind]["medium"], seed=1).evaluations
        for _ in range(calib_repeats):
            calib.append(once(lambda kind=kind: degrade_to_mu(x, kind, PRESETS[kind]["medium"], seed=1)))
        load.append(os.getloadavg()[0])

        def med(v: list[tuple[float, float]], j: int) -> float:
            return 1000 * float(np.median([t[j] for t in v])) / n

        cpu = {k: med(v, 1) for k, v in times.items()}  # CPU time: the per-core cost, robust to a busy machine
        wall = {k: med(v, 0) for k, v in times.items()}
        row = {"type": kind, "albumentations": ALBU_CLOSEST[kind], **{f"{k}_cpu_ms": v for k, v in cpu.items()},
               **{f"{k}_wall_ms": v for k, v in wall.items()},
               "ratio_u8": cpu["albu_u8"] / cpu["ours"], "ratio_f32": cpu["albu_f32"] / cpu["ours"],
               "ratio_u8_both": cpu["albu_u8"] / cpu["ours_u8"],
               "ratio_u8_wall": wall["albu_u8"] / wall["ours"],
               "calibrated_cpu_ms": med(calib, 1) if calib else None, "calibration_trials": trials, "load": load}
        rows.append(row)
        extra = "".join(f" | {k} {v:.2f}" for k, v in cpu.items() if k.startswith(("codec", "ours_u8_each", "ours_eager")))
        cal = f" | calibrated {row['calibrated_cpu_ms']:.1f} ms/img ({trials} trials)" if calib else ""
        print(f"{kind:12s} CPU ms/img: ours {cpu['ours']:7.2f} (uint8 in/out {cpu['ours_u8']:.2f}) | {ALBU_CLOSEST[kind]}: "
              f"uint8 {cpu['albu_u8']:7.2f} (x{row['ratio_u8']:.2f}; wall x{row['ratio_u8_wall']:.2f}; both uint8 "
              f"x{row['ratio_u8_both']:.2f}), float32 {cpu['albu_f32']:7.2f} (x{row['ratio_f32']:.2f}){extra}{cal} | "
              f"load {load[0]:.2f}-{load[1]:.2f}", flush=True)
    print(json.dumps({"per_core": rows}))
    return 0


def per_core(args: argparse.Namespace) -> list[dict]:
    """:func:`per_core_child` in a fresh process with one thread for torch, OpenCV, OpenMP, MKL and OpenBLAS."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "GENDEG_NO_PROGRESS": "1"}
    cmd = [sys.executable, __file__, "--per-core-child", "--types", ",".join(args.pc_types),
           "--pc-images", str(args.pc_images), "--pc-repeats", str(args.pc_repeats),
           "--pc-calib-repeats", str(args.pc_calib_repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"per-core run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    print("\n".join(lines[:-1]), flush=True)
    result = json.loads(lines[-1])
    if "skipped" in result:
        print(f"per core against albumentations: skipped, {result['skipped']}", flush=True)
        return []
    return result["per_core"]


def ufunc_speed(threads: list[int], repeats: int = 30) -> list[dict]:
    """ns per value of torch's in-place exp/log/sqrt and of :mod:`core.synth.ufuncs`' on one 512² RGB
    float32 image (values in 0.05..0.95; log's result is fed to exp), best of ``repeats``, per thread count."""
    from comfyui_gendeg.core.synth import ufuncs

    x = torch.rand(3 * 512 * 512, generator=torch.Generator().manual_seed(0)).mul_(0.9).add_(0.05)
    ops = {"exp": (torch.Tensor.exp_, ufuncs.exp_), "log": (torch.Tensor.log_, ufuncs.log_),
           "sqrt": (torch.Tensor.sqrt_, ufuncs.sqrt_)}
    saved, rows = torch.get_num_threads(), []
    try:
        for th in threads:
            torch.set_num_threads(th)
            for name, (theirs, ours) in ops.items():
                src = x.log() if name == "exp" else x
                row = {"op": name, "threads": th}
                for side, fn in (("torch", theirs), ("numpy", ours)):
                    y = src.clone()
                    best = float("inf")
                    for _ in range(repeats):
                        y.copy_(src)
                        t0 = time.perf_counter()
                        fn(y)
                        best = min(best, time.perf_counter() - t0)
                    row[f"{side}_ns_per_value"] = 1e9 * best / x.numel()
                    row[f"{side}_result"] = y
                a, b = row.pop("torch_result"), row.pop("numpy_result")
                row["max_rel_diff"] = float(((a - b).abs() / a.abs().clamp_min(1e-30)).max())
                rows.append(row)
    finally:
        torch.set_num_threads(saved)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="small CPU run (< 60 s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default; --smoke uses 1)")
    p.add_argument("--batched-threads", type=int, default=0,
                   help="torch CPU threads while timing our code (0 = --threads; --smoke: 2 when the 1-minute load "
                        "average is below 1, else 1). The NumPy/SciPy/Pillow reference is single-threaded either way")
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--calibration-only", action="store_true", help="skip the throughput part")
    p.add_argument("--big", action="store_true",
                   help="only the large-image part: 6, 12 and 24 MP photos through gendeg synth, seconds and peak RSS "
                        "(with --smoke: 0.25-1 MP with small strips; --smoke alone runs it too)")
    p.add_argument("--big-types", default="haze,rain,snow,motion_blur,low_light,raindrop,jpeg,noise,rain+haze,snow+haze")
    p.add_argument("--big-tasks", default="mu,strength", help="mu: calibrated to the medium preset; strength: 0.5")
    p.add_argument("--no-big-reference", dest="big_reference", action="store_false",
                   help="skip the whole-image reference run at the largest size")
    p.add_argument("--big-child", nargs=4, metavar=("TYPE", "IMAGE", "MODE", "TASK"), help=argparse.SUPPRESS)
    p.add_argument("--vs-albumentations", action="store_true",
                   help="only the per-core comparison with albumentations (one thread each, 8 images of 512x512)")
    p.add_argument("--ufuncs", action="store_true",
                   help="only torch's exp/log/sqrt against NumPy's (core.synth.ufuncs) on the CPU, at 1 and --threads threads")
    p.add_argument("--per-core-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pc-images", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--pc-repeats", type=int, default=9, help=argparse.SUPPRESS)
    p.add_argument("--pc-calib-repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.per_core_child:
        args.types = [t.strip() for t in args.types.split(",") if t.strip()]
        return per_core_child(args)
    if args.big_child:
        if args.threads:
            torch.set_num_threads(args.threads)
        return big_child(args)
    device = torch.device(args.device)
    if args.smoke and not args.threads:
        args.threads = 1  # CI smoke: one thread is the fastest on small shared runners (oversubscription)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    if args.smoke and not args.batched_threads:
        # both cores when they are free; one on a busy shared runner, where torch's intra-op
        # threads wait on each other at every operation (measured up to 10x slower than one)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        args.batched_threads = min(2, os.cpu_count() or 1) if load < 1.0 else 1
    args.batched_threads = args.batched_threads or args.threads
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    args.size = 512
    if args.smoke:
        args.batch, args.single, args.ref, args.repeats = 4, 2, 2, 3  # best of 3 for every side (shared, noisy runners)
        args.calib_images, args.calib_size = 4, 128
    else:
        args.batch, args.single, args.ref, args.repeats = (64 if device.type == "cuda" else 16), 8, 4, 3
        args.calib_images, args.calib_size = 32, 256
    t0 = time.time()
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"device {device}, torch {torch.__version__}, threads: ours {args.batched_threads}, reference/calibration "
          f"{args.threads}{load}, {args.size}x{args.size}, "
          f"batch {args.batch}", flush=True)
    args.big_types = [t.strip() for t in args.big_types.split(",") if t.strip()]
    args.big_tasks = [t.strip() for t in args.big_tasks.split(",") if t.strip()]
    if args.smoke and not args.big:
        args.big_types, args.big_tasks = ["haze", "rain"], ["mu"]
    if args.ufuncs or args.smoke:
        uf_rows = ufunc_speed(sorted({1, args.batched_threads}))
        for r in uf_rows:
            print(f"ufunc {r['op']:5s} threads {r['threads']}: torch {r['torch_ns_per_value']:.3f} ns/value, NumPy "
                  f"{r['numpy_ns_per_value']:.3f} (x{r['torch_ns_per_value'] / r['numpy_ns_per_value']:.2f}), "
                  f"max relative difference {r['max_rel_diff']:.1e}", flush=True)
        if args.ufuncs:
            if args.json:
                Path(args.json).write_text(json.dumps({"ufuncs": uf_rows}, indent=1))
            return 0
    else:
        uf_rows = []
    if args.vs_albumentations:
        args.pc_types = args.types
        pc_rows = per_core(args)
        print(f"total {time.time() - t0:.1f} s")
        if args.json:
            Path(args.json).write_text(json.dumps({"per_core": pc_rows}, indent=1))
        return 0
    rows = [] if (args.calibration_only or args.big) else throughput(args, device)
    calib = [] if args.big else calibration(args, device)
    pc_rows = []
    if args.smoke and not (args.big or args.calibration_only):  # JPEG and noise on 2 images, when installed
        args.pc_types, args.pc_images, args.pc_repeats, args.pc_calib_repeats = ["jpeg", "noise"], 2, 3, 1
        pc_rows = per_core(args)
    big_rows = big(args) if (args.big or args.smoke) else []
    print(f"total {time.time() - t0:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": rows, "calibration": calib, "per_core": pc_rows,
                                               "big": big_rows, "ufuncs": uf_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
