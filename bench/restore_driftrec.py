"""Benchmark: DriftRec restoration, fast path vs plain fp32 eager, in the same run.

One image per size is restored twice with the same seed (same prior draw and step noise):

* ``plain``: fp32, contiguous memory, attention through the MATH (naive softmax) backend of
  ``scaled_dot_product_attention``: the official code's numerics;
* ``fast`` : autocast (``--fast-precision``; auto = bf16 on CUDA GPUs that support it, else
  fp16, fp32 on the CPU: what the node picks), channels_last, the default SDPA kernels
  (flash / memory-efficient), optionally ``torch.compile`` (``--compile``).

Reported: seconds per image, peak memory (CUDA ``max_memory_allocated``; CPU: sampled RSS
growth), speed-up, the max / mean absolute difference of the two restorations in 1/255
units, and the relative L2 difference of one network evaluation at t = 0.5
(``score_rel_diff``: the fast path's numerics without the sampler's amplification).

Weights: random NCSN++ in the official size (65.6 M parameters, nf 128, 7 levels) unless
``--ckpt`` names a DriftRec checkpoint; random weights give representative timings but
only an indicative output difference.

Usage::

    python bench/restore_driftrec.py --smoke            # CPU, < 60 s: tiny NCSN++ (nf 16, 4 levels), 64², 8 steps
    python bench/restore_driftrec.py --device cuda      # official NCSN++, 512², N = 100
    python bench/restore_driftrec.py --device cuda --ckpt models/gendeg/restore/driftrec/driftrec_jpeg.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from memory import PeakMemory

try:
    from comfyui_gendeg.core.restore.driftrec import _autocast, restore_driftrec
    from comfyui_gendeg.core.restore.driftrec_loader import DriftRecRestorer, load_driftrec
    from comfyui_gendeg.core.restore.driftrec_sde import make_sde
    from comfyui_gendeg.core.restore.nets.ncsnpp import NCSNpp
except ImportError as exc:  # pragma: no cover
    raise SystemExit(f"install the pack first (pip install -e .): {exc}") from exc

SMOKE_NET = {"nf": 16, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "image_size": 32, "attn_resolutions": [8]}


def random_model(smoke: bool) -> DriftRecRestorer:
    torch.manual_seed(0)
    net = NCSNpp(**(SMOKE_NET if smoke else {})).eval().requires_grad_(False)
    for m in net.modules():  # the official init zeroes the last convolutions: give them weight so every path counts
        if isinstance(m, torch.nn.Conv2d) and float(m.weight.abs().max()) < 1e-6:
            torch.nn.init.normal_(m.weight, std=0.02)
    return DriftRecRestorer(net, make_sde("ouve"), {})


def fast_precision(choice: str, device: torch.device) -> str:
    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@torch.inference_mode()
def score_difference(model: DriftRecRestorer, img: torch.Tensor, device: torch.device, precision: str) -> float:
    """Relative L2 difference of one score evaluation (t = 0.5): plain fp32/MATH vs the fast path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    y = img.to(device)
    sigma = float(model.sde.std(0.5)[0])
    x = model.sde.mean(y, y, 0.5) + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(device)
    pair = torch.cat([x, y], 1)
    outs = []
    net = model.net.to(device)
    for fast in (False, True):
        mf = torch.channels_last if fast else torch.contiguous_format
        net = net.to(memory_format=mf)
        with (nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])), _autocast(device, precision if fast else "fp32"):
            outs.append(net(pair.contiguous(memory_format=mf), torch.full((1,), sigma, device=device)).float())
    net.to(memory_format=torch.contiguous_format)
    return float((outs[0] - outs[1]).norm() / outs[0].norm().clamp_min(1e-12))


def run_once(model: DriftRecRestorer, img: torch.Tensor, device: torch.device, *, fast: bool, steps: int,
             compile_net: bool, precision: str) -> tuple[torch.Tensor, float, float]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if fast and compile_net:
        model = DriftRecRestorer(torch.compile(model.net), model.sde, model.info)
    kernel = nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])
    with kernel, PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = restore_driftrec(model, img, steps=steps, generator=torch.Generator().manual_seed(0), device=device,
                               precision=precision if fast else "fp32", channels_last=fast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    getattr(model.net, "_orig_mod", model.net).to(memory_format=torch.contiguous_format)
    return out.cpu(), seconds, mem.peak_mib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU smoke run (< 60 s) with a tiny NCSN++")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default=None, help="comma list of square sizes (default 512; smoke 64)")
    ap.add_argument("--steps", type=int, default=None, help="Euler-Maruyama steps N (default 100; smoke 8)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network on the fast path")
    ap.add_argument("--fast-precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="autocast of the fast path (auto: bf16/fp16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--ckpt", help="a DriftRec checkpoint instead of random weights")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    smoke = args.smoke
    if args.threads or smoke:
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device)
    precision = fast_precision(args.fast_precision, device)
    sizes = [int(s) for s in (args.sizes or ("64" if smoke else "512")).split(",")]
    steps = args.steps or (8 if smoke else 100)
    model = load_driftrec(args.ckpt) if args.ckpt else random_model(smoke)
    params = sum(p.numel() for p in model.net.parameters())
    print(f"device {device} ({torch.get_num_threads()} CPU threads), NCSN++ {params / 1e6:.1f} M parameters, steps {steps}, "
          f"fast precision {precision}, compile {args.compile}, weights {'real' if args.ckpt else 'random'}")
    model.net.to(device)  # weights resident before measuring, so peaks are activations only
    results = []
    g = torch.Generator().manual_seed(1)
    for size in sizes:
        img = torch.rand(1, 3, size, size, generator=g)
        for path in ("plain", "fast"):  # warm-up (kernel selection, allocator, compile) outside the measurement
            run_once(model, img, device, fast=path == "fast", steps=1, compile_net=args.compile, precision=precision)
        row: dict = {"size": size, "steps": steps, "params_m": round(params / 1e6, 2)}
        outs = {}
        for path in ("plain", "fast"):
            try:
                out, sec, mib = run_once(model, img, device, fast=path == "fast", steps=steps, compile_net=args.compile,
                                         precision=precision)
            except torch.cuda.OutOfMemoryError:
                row[f"{path}_s"] = row[f"{path}_peak_mib"] = None
                print(f"{size}² {path}: out of memory")
                continue
            outs[path] = out
            row[f"{path}_s"] = round(sec, 3)
            row[f"{path}_peak_mib"] = round(mib, 1)
        if len(outs) == 2:
            d = (outs["plain"] - outs["fast"]).abs() * 255
            row.update(max_diff_255=round(float(d.max()), 3), mean_diff_255=round(float(d.mean()), 4),
                       speedup=round(row["plain_s"] / row["fast_s"], 2))
        row["score_rel_diff"] = float(f"{score_difference(model, img, device, precision):.3g}")
        results.append(row)
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
