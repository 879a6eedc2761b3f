"""Benchmark: IR-SDE and DA-CLIP restoration, optimised path vs plain fp32 eager, in the same run.

For each model (IR-SDE ConditionalUNet; DA-CLIP = ViT controller + universal UNet) and each
image size, one image is restored twice with the same seed (same ``x_T`` and step noise):

* ``plain``: fp32, contiguous memory, attention through the MATH (naive softmax) backend of
  ``scaled_dot_product_attention``, no compile: the official code's numerics;
* ``fast`` : autocast (``--fast-precision``; auto = fp16 on CUDA, fp32 on the CPU, which is what
  the node picks), channels_last, the default SDPA kernels (flash / memory-efficient), tiles
  batched 4 at a time, optionally ``torch.compile`` (``--compile``).

Reported: seconds per image, peak memory (CUDA ``max_memory_allocated``; CPU: sampled RSS
growth), speed-up, the max / mean absolute difference between the two outputs in 1/255
units, and the relative L2 difference of one network evaluation (``eps_rel_diff``, at t = T/2),
which measures the numerics of the fast path without the sampler's amplification. Sizes above ``--tile`` run tiled (overlap ``--overlap``), as the node does.

Weights: random (sizes of the official configs) unless ``--irsde-ckpt`` /
``--universal-ckpt`` + ``--daclip-ckpt`` name real files. With random weights the timings are
representative but the output difference is only indicative (a trained network's noise
prediction is smoother).

Usage::

    python bench/restore_sde.py --smoke                    # CPU, < 60 s: reduced nets, 64² whole, 96² tiled (4 tiles of 64), 8 steps
    python bench/restore_sde.py --device cuda              # IR-SDE nf64 depth4 / DA-CLIP, 100 steps, 512² and 2048² (tiled)
    python bench/restore_sde.py --device cuda --sizes 4096 --tile 1024 --models irsde   # the 4K-in-24-GB check
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
    from comfyui_gendeg.core.restore.irsde import restore_sde
    from comfyui_gendeg.core.restore.irsde_loader import TASK_PRESETS, SDERestorer, load_sde_restorer
    from comfyui_gendeg.core.restore.nets.daclip import DaCLIP, VisionConfig
    from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
    from comfyui_gendeg.core.restore.sde import IRSDE
except ImportError as exc:  # pragma: no cover
    raise SystemExit(f"install the pack first (pip install -e .): {exc}") from exc


def random_irsde(nf: int, depth: int) -> SDERestorer:
    torch.manual_seed(0)
    net = ConditionalUNet(3, 3, nf, irsde_ch_mult(depth)).eval().requires_grad_(False)
    p = TASK_PRESETS["deraining (IR-SDE)"]
    return SDERestorer(net, "irsde-unet", IRSDE.create(p["max_sigma"], p["T"]), "deraining (IR-SDE)")


def random_daclip(nf: int, vision: VisionConfig) -> SDERestorer:
    torch.manual_seed(0)
    net = ConditionalUNet(
        3, 3, nf, (1, 2, 4, 8), context_dim=vision.embed_dim, use_degra_context=True, use_image_context=True
    ).eval().requires_grad_(False)
    for m in net.modules():  # zero-initialised projections would skip the attention entirely
        if hasattr(m, "proj_out"):
            torch.nn.init.normal_(m.proj_out.weight, std=0.02)
    clip = DaCLIP(vision, None).eval().requires_grad_(False)
    for z in clip.visual_control.transformer.zero_modules:
        torch.nn.init.normal_(z.weight, std=0.02)
    p = TASK_PRESETS["universal (DA-CLIP)"]
    return SDERestorer(net, "daclip-unet", IRSDE.create(p["max_sigma"], p["T"]), "universal (DA-CLIP)", clip)


def fast_precision(choice: str, device: torch.device) -> str:
    if choice != "auto":
        return choice
    return "fp16" if device.type == "cuda" else "fp32"


@torch.inference_mode()
def eps_difference(r: SDERestorer, img: torch.Tensor, device: torch.device, precision: str) -> float:
    """Relative L2 difference of one noise prediction (t = T/2): plain fp32/MATH vs the fast path."""
    from comfyui_gendeg.core.restore.irsde import _autocast, daclip_embeddings
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mu = img.to(device)
    t = r.sde.T // 2
    x = mu + r.sde.sigma_bar(t) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(2)).to(device)
    net = r.net.to(device)
    outs = []
    for fast in (False, True):
        prec = precision if fast else "fp32"
        content, degra = daclip_embeddings(r, mu, device, prec)
        kw = {} if degra is None else {"text_context": degra, "image_context": content}
        mf = torch.channels_last if fast else torch.contiguous_format
        net = net.to(memory_format=mf)
        with (nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])), _autocast(device, prec):
            outs.append(net(x.contiguous(memory_format=mf), mu.contiguous(memory_format=mf), t, **kw).float())
    net.to(memory_format=torch.contiguous_format)
    return float((outs[0] - outs[1]).norm() / outs[0].norm().clamp_min(1e-12))


def run_once(r: SDERestorer, img: torch.Tensor, device: torch.device, *, fast: bool, steps: int, tile: int,
             overlap: int, compile_net: bool, precision: str) -> tuple[torch.Tensor, float, float]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if fast and compile_net:
        r = SDERestorer(torch.compile(r.net), r.arch, r.sde, r.preset, r.daclip)
    precision = precision if fast else "fp32"
    kernel = nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])
    t_tile = tile if max(img.shape[-2:]) > tile else 0
    with kernel, PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = restore_sde(
            r, img, steps=steps, generator=torch.Generator().manual_seed(0), device=device, precision=precision,
            channels_last=fast, tile=t_tile, overlap=overlap, tile_batch=4 if fast else 1,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    r.net.to(memory_format=torch.contiguous_format)
    return out.cpu(), seconds, mem.peak_mib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU smoke run (< 60 s) with reduced networks")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="irsde,daclip", help="comma list: irsde, daclip")
    ap.add_argument("--sizes", default=None, help="comma list of square sizes (default 512,2048; smoke 64,96)")
    ap.add_argument("--steps", type=int, default=None, help="reverse steps (default 100; smoke 8)")
    ap.add_argument("--tile", type=int, default=None, help="tile side for larger images (default 512; smoke 64)")
    ap.add_argument("--overlap", type=int, default=None, help="tile overlap (default 64; smoke 16)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network on the fast path")
    ap.add_argument("--fast-precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="autocast of the fast path (auto: fp16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--irsde-ckpt", help="real IR-SDE weights (.pth/.safetensors) instead of random ones")
    ap.add_argument("--universal-ckpt", help="real universal-ir weights (with --daclip-ckpt)")
    ap.add_argument("--daclip-ckpt", help="real DA-CLIP controller weights")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    smoke = args.smoke
    if args.threads or smoke:
        torch.set_num_threads(args.threads or 1)  # the smoke nets are tiny: one thread is fastest on a shared box
    device = torch.device(args.device)
    precision = fast_precision(args.fast_precision, device)
    sizes = [int(s) for s in (args.sizes or ("64,96" if smoke else "512,2048")).split(",")]
    steps = args.steps or (8 if smoke else 100)
    tile = args.tile or (64 if smoke else 512)
    overlap = args.overlap or (16 if smoke else 64)
    models = {}
    for name in args.models.split(","):
        if name == "irsde":
            if args.irsde_ckpt:
                models[name] = load_sde_restorer(args.irsde_ckpt, "deraining (IR-SDE)")
            else:
                models[name] = random_irsde(16, 3) if smoke else random_irsde(64, 4)
        elif name == "daclip":
            if args.universal_ckpt:
                models[name] = load_sde_restorer(args.universal_ckpt, "universal (DA-CLIP)", args.daclip_ckpt)
            else:
                vision = VisionConfig(224, 32, 128, 2, 2, 64) if smoke else VisionConfig()
                models[name] = random_daclip(8 if smoke else 64, vision)
        else:
            raise SystemExit(f"unknown model {name!r}")
    print(f"device {device} ({torch.get_num_threads()} CPU threads), steps {steps}, tile {tile}/{overlap}, "
          f"fast precision {precision}, compile {args.compile}, weights {'real' if args.irsde_ckpt or args.universal_ckpt else 'random'}")
    results = []
    g = torch.Generator().manual_seed(1)
    for name, r in models.items():
        r.net.to(device)  # weights resident before measuring, so peaks are activations only
        if r.daclip is not None:
            r.daclip.to(device)
        for size in sizes:
            img = torch.rand(1, 3, size, size, generator=g)
            row = {"model": name, "size": size, "steps": steps, "tiled": size > tile}
            outs = {}
            for path in ("plain", "fast"):
                try:
                    out, sec, mib = run_once(r, img, device, fast=path == "fast", steps=steps, tile=tile,
                                             overlap=overlap, compile_net=args.compile, precision=precision)
                except torch.cuda.OutOfMemoryError:
                    row[f"{path}_s"] = row[f"{path}_peak_mib"] = None
                    print(f"{name} {size}² {path}: out of memory")
                    continue
                outs[path] = out
                row[f"{path}_s"] = round(sec, 3)
                row[f"{path}_peak_mib"] = round(mib, 1)
            if len(outs) == 2:
                d = (outs["plain"] - outs["fast"]).abs() * 255
                row.update(max_diff_255=round(float(d.max()), 3), mean_diff_255=round(float(d.mean()), 4),
                           speedup=round(row["plain_s"] / row["fast_s"], 2))
            if size <= tile:
                row["eps_rel_diff"] = float(f"{eps_difference(r, img, device, precision):.3g}")
            results.append(row)
            print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
