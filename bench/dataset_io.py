"""Benchmark: dataset and weights I/O, each against a plain reference in the same run.

* ``pairs``   : :class:`core.dataset.PairWriter` (atomic temp+rename with fsync, per-pair
  JSON record, ``metadata.jsonl`` rebuild) vs. a plain ``PIL.Image.save`` of the same two
  PNGs per pair (no temp file, no fsync, no record). Also: the cost of a resumed run that
  finds every pair finished (skip check only).
* ``load``    : :func:`core.dataset.list_folder` + :func:`load_folder_images` vs. plain
  ``sorted(glob)`` + PIL + numpy.
* ``sha256``  : :func:`core.weights.sha256_file` on a fresh file (first hash), on the same
  file again (cache hit), vs. ``hashlib`` over the file.
* ``convert`` : :func:`core.weights.convert_to_safetensors` of a pickled state dict vs. the
  reference ``torch.load(weights_only=True)`` + ``safetensors.torch.save_file``.

This is I/O and CPU work: there is no GPU part. Usage::

    python bench/dataset_io.py --smoke     # < 60 s: 24 pairs of 128², 32 MiB files
    python bench/dataset_io.py             # 400 pairs of 512², 1 GiB files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from comfyui_gendeg.core.dataset import PairWriter, list_folder, load_folder_images
from comfyui_gendeg.core.io import tensor_to_pil
from comfyui_gendeg.core.weights import convert_to_safetensors, sha256_file
from comfyui_gendeg.core.weights.safe_load import load_state_dict
from PIL import Image


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_pairs(work: Path, n: int, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, size, size, generator=g) for _ in range(n)]
    degraded = [(0.5 * x + 0.2).clamp(0, 1) for x in images]

    def ours():
        w = PairWriter(work / "out", "bench")
        for i, (c, d) in enumerate(zip(images, degraded, strict=True)):
            w.write(c, d, f"img{i:05d}.png", {"type": "haze", "strength": 0.5}, seed=1)
        w.finalize()

    def reference():
        root = work / "ref"
        (root / "clean").mkdir(parents=True, exist_ok=True)
        (root / "degraded").mkdir(parents=True, exist_ok=True)
        for i, (c, d) in enumerate(zip(images, degraded, strict=True)):
            tensor_to_pil(c).save(root / "clean" / f"img{i:05d}.png", compress_level=4)
            tensor_to_pil(d).save(root / "degraded" / f"img{i:05d}.png", compress_level=4)

    t_ref, _ = _timed(reference)
    t_ours, _ = _timed(ours)
    t_skip, _ = _timed(ours)  # everything finished: skip checks + metadata rebuild
    return {
        "pairs": n,
        "size": size,
        "reference_pairs_per_s": n / t_ref,
        "ours_pairs_per_s": n / t_ours,
        "overhead": t_ours / t_ref,
        "resume_all_done_s": t_skip,
    }


def bench_load(work: Path) -> dict:
    folder = work / "ref" / "clean"

    def ours():
        names = list_folder(folder)
        return load_folder_images(folder, names)

    def reference():
        out = []
        for p in sorted(folder.glob("*.png")):
            with Image.open(p) as img:
                out.append(torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0))
        return out

    t_ref, a = _timed(reference)
    t_ours, b = _timed(ours)
    assert len(a) == len(b)
    assert max(float((x.permute(2, 0, 1)[None] - y[0]).abs().max()) for x, y in zip(a, b, strict=True)) == 0.0
    return {"images": len(a), "reference_images_per_s": len(a) / t_ref, "ours_images_per_s": len(b) / t_ours}


def bench_sha(work: Path, mib: int) -> dict:
    f = work / "blob.bin"
    block = os.urandom(1 << 20)
    with open(f, "wb") as fh:
        for _ in range(mib):
            fh.write(block)
    t_ref, ref = _timed(lambda: hashlib.sha256(f.read_bytes()).hexdigest())
    t_first, d1 = _timed(lambda: sha256_file(f))
    t_cached, d2 = _timed(lambda: sha256_file(f))
    assert ref == d1 == d2
    return {
        "mib": mib,
        "hashlib_mib_per_s": mib / t_ref,
        "first_mib_per_s": mib / t_first,
        "cached_lookup_ms": 1000 * t_cached,
    }


def bench_convert(work: Path, mib: int) -> dict:
    n = mib * (1 << 20) // 4 // 64
    sd = {f"layer{i}.weight": torch.randn(n // 64, 64) for i in range(64)}
    sd["tied"] = sd["layer0.weight"]  # shared storage, as tied weights are
    src = work / "net.pth"
    torch.save({"state_dict": sd}, src)

    def reference():
        from safetensors.torch import save_file

        loaded = torch.load(src, map_location="cpu", weights_only=True)["state_dict"]
        loaded = {k: v.clone().contiguous() for k, v in loaded.items()}  # safetensors refuses shared tensors
        save_file(loaded, str(work / "ref.safetensors"))

    # each twice, best time kept (the first read of a file pays the page cache)
    t_ref = min(_timed(reference)[0] for _ in range(2))
    runs = [_timed(lambda: convert_to_safetensors(src, overwrite=True)) for _ in range(2)]
    t_ours, (dst, _digest) = min(runs, key=lambda r: r[0])
    back = load_state_dict(dst)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    return {"mib": mib, "reference_s": t_ref, "ours_s": t_ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="small sizes for CI (< 60 s on 2 CPU cores)")
    ap.add_argument("--workdir", help="where to write (default: a temp folder, removed afterwards)")
    args = ap.parse_args()
    n, size, mib = (24, 128, 32) if args.smoke else (400, 512, 1024)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gendeg-bench-"))
    os.environ.setdefault("GENDEG_CACHE_DIR", str(work / "cache"))
    try:
        results = {
            "pairs": bench_pairs(work, n, size),
            "load": bench_load(work),
            "sha256": bench_sha(work, mib),
            "convert": bench_convert(work, mib),
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
