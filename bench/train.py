"""Benchmark: a restorer's training step with L1 only vs. L1 + DiffLoss, three ways, in the same run.

Each variant trains the same NAFNet (spandrel's architecture, same seed, AdamW lr 1e-4,
restorer in float32) on one fixed batch for ``--steps`` timed steps after ``--warmup``:

* ``l1``        : L1 only (the floor).
* ``official``  : L1 + DiffLoss as the release computes it, with its gradient bug fixed: its
  ``training_losses`` without the ``no_grad`` — prior in fp32 with ``requires_grad`` as
  loaded (the release never freezes it), both prior passes recorded by autograd, no
  checkpointing, every image every step. γ = 1e-3, γλ = 1e-6.
* ``pack``      : L1 + the pack's :class:`DiffLoss` (frozen prior, ground-truth pass under
  ``no_grad``, prior in bf16 on a GPU that supports it (else fp16; fp32 on CPU),
  activation checkpointing).
* ``pack_fp32_nockpt``: the pack's loss with the prior in fp32 and no checkpointing (what
  freezing and the no-grad ground-truth pass alone give).
* ``pack_every4`` / ``pack_frac25``: the pack's loss with ``every: 4`` / ``fraction: 0.25``.

Reported per variant: ms per step (wall; CPU time of the process too), steps/s, peak memory
(CUDA: ``max_memory_allocated`` growth from an empty state, models and optimizer
included; CPU: peak resident-set growth sampled every 2 ms — comparable between variants only
with ``--isolate``, one process each), the step-time ratio to ``l1`` (wall time on a GPU,
process CPU time on a CPU, which a shared machine cannot inflate)
and, for DiffLoss variants, the time and memory ratios to ``official`` (GPU targets: ``pack``
≤ 0.5 of ``official`` in both). A random-weight prior has the real network's cost.

Usage::

    python bench/train.py --smoke               # CPU, ~10 s: tiny NAFNet + tiny prior, 32², batch 2, 4 steps
    python bench/train.py --smoke --isolate     # the same, one process per variant (comparable CPU RSS peaks)
    python bench/train.py --device cuda         # full: NAFNet width 32, 256², batch 8, the 552.8M prior
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from comfyui_gendeg.core.train.losses import LossBatch
from comfyui_gendeg.core.train.losses.diffloss import DiffLoss, DiffLossOptions
from comfyui_gendeg.core.train.priors import (
    GUIDED_DIFFUSION_256_UNCOND,
    TINY,
    GuidedDiffusionUNet,
    q_coefficients,
    q_sample,
)
from memory import PeakMemory
from spandrel.architectures.NAFNet import NAFNet

GAMMA, GAMMA_LAMBDA = 1e-3, 1e-6


def build_restorer(cfg: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = NAFNet(img_channel=3, **cfg)
    with torch.no_grad():  # open the zero-initialised block scales, as after some training
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.2)
    return net.to(device).train()


def build_prior(config, device: torch.device, dtype: torch.dtype) -> GuidedDiffusionUNet:
    torch.manual_seed(1)
    with torch.device(device):
        net = GuidedDiffusionUNet(config)
    return net.to(dtype).eval()


def pack_dtype(device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def official_terms(prior: GuidedDiffusionUNet, out: torch.Tensor, gt: torch.Tensor, gen: torch.Generator, coeffs) -> torch.Tensor:
    """The release's DiffLoss terms without its no_grad: same t and noise, both passes recorded."""
    x_out, x_gt = out * 2 - 1, gt * 2 - 1
    t = torch.randint(0, 1000, (out.shape[0],), generator=gen, device=out.device)
    noise = torch.randn(x_out.shape, generator=gen, device=out.device)
    e_o, h_o = prior(q_sample(x_out, t, noise, coeffs), t)
    e_g, h_g = prior(q_sample(x_gt, t, noise, coeffs), t)
    return GAMMA * F.mse_loss(e_o[:, :3], e_g[:, :3]) + GAMMA_LAMBDA * F.mse_loss(h_o, h_g)


def release_memory(device: torch.device) -> None:
    """Hand freed memory back (CUDA cache; glibc heap on Linux) so the next variant starts from a clean state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def run_variant(name: str, a, device: torch.device, restorer_cfg: dict, prior_cfg, gt: torch.Tensor, lq: torch.Tensor) -> dict:
    release_memory(device)
    with PeakMemory(device) as mem:
        net = build_restorer(restorer_cfg, device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        prior = loss = coeffs = None
        if name == "official":
            prior = build_prior(prior_cfg, device, torch.float32).requires_grad_(True)
            coeffs = q_coefficients(device)
        elif name != "l1":
            opts = {"pack": DiffLossOptions(), "pack_every4": DiffLossOptions(every=4),
                    "pack_frac25": DiffLossOptions(fraction=0.25),
                    "pack_fp32_nockpt": DiffLossOptions(checkpointing=False)}[name]
            dtype = torch.float32 if name == "pack_fp32_nockpt" else pack_dtype(device)
            loss = DiffLoss(build_prior(prior_cfg, device, dtype).requires_grad_(False), opts)

        def step(i: int) -> None:
            gen = torch.Generator(device).manual_seed(i)
            out = net(lq)
            total = F.l1_loss(out, gt)
            if name == "official":
                total = total + official_terms(prior, out, gt, gen, coeffs)
            elif loss is not None:
                total = total + sum(loss(LossBatch(out=out, gt=gt, lq=lq, step=i, generator=gen)).values())
            opt.zero_grad(set_to_none=True)
            if prior is not None:
                prior.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        for i in range(a.warmup):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(a.warmup, a.warmup + a.steps):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"variant": name, "ms_per_step": round(1000 * wall / a.steps, 2), "cpu_ms_per_step": round(1000 * cpu / a.steps, 2),
            "steps_per_s": round(a.steps / wall, 3), "peak_mib": round(mem.peak_mib, 1)}


def isolated(variant: str, argv: list[str] | None) -> dict:
    """Run one variant in a fresh interpreter (CPU resident-set peaks are only comparable that way)."""
    args = list(sys.argv[1:] if argv is None else argv)
    drop = {"--variants", "--json", "--isolate"}
    kept, skip = [], False
    for x in args:
        if skip:
            skip = False
            continue
        if x in drop:
            skip = x != "--isolate"
            continue
        if x.split("=", 1)[0] in drop:
            continue
        kept.append(x)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *kept, "--variants", variant],
                          capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"variant"')]
    row = rows[0]
    return {k: v for k, v in row.items() if not k.startswith("time_vs")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny NAFNet and tiny prior")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available and not --smoke)")
    p.add_argument("--size", type=int, default=None, help="crop side (default 256; smoke 32)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8; smoke 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20; smoke 4)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; smoke 1)")
    p.add_argument("--variants", default="l1,official,pack,pack_fp32_nockpt,pack_every4,pack_frac25")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--isolate", action="store_true",
                   help="run each variant in a fresh process (on CPU the only way to get comparable RSS peaks; slower)")
    a = p.parse_args(argv)

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not a.smoke else "cpu"))
    if a.smoke:
        torch.set_num_threads(1)
        restorer_cfg = dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
        prior_cfg, size, batch = TINY, a.size or 32, a.batch or 2
        a.steps, a.warmup = a.steps or 4, a.warmup if a.warmup is not None else 1  # steps 1..4: every4 applies once
    else:
        # NAFNet-width32 (the SIDD model's shape), the 552.8M guided-diffusion prior
        restorer_cfg = dict(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])
        prior_cfg, size, batch = GUIDED_DIFFUSION_256_UNCOND, a.size or 256, a.batch or 8
        a.steps, a.warmup = a.steps or 20, a.warmup if a.warmup is not None else 3
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, size, size, generator=g)
    lq = (0.6 * gt + 0.3 + 0.05 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)
    gt, lq = gt.to(device), lq.to(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"device={device} gpu={gpu} torch={torch.__version__} threads={torch.get_num_threads()} load1={load:.1f} "
          f"size={size} batch={batch} steps={a.steps} warmup={a.warmup} restorer={restorer_cfg} "
          f"prior_channels={prior_cfg.model_channels} pack_prior_dtype={str(pack_dtype(device)).replace('torch.', '')}")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if a.isolate and len(variants) > 1:
        rows = [isolated(v, argv) for v in variants]  # CPU memory: a fresh process per variant
    else:
        rows = [run_variant(v, a, device, restorer_cfg, prior_cfg, gt, lq) for v in variants]
    by = {r["variant"]: r for r in rows}
    key = "ms_per_step" if device.type == "cuda" else "cpu_ms_per_step"  # CPU time: robust on a shared CPU
    print(f"ratios from {key}")
    for r in rows:
        if "l1" in by:
            r["time_vs_l1"] = round(r[key] / by["l1"][key], 2)
        if "official" in by and r["variant"].startswith("pack"):
            r["time_vs_official"] = round(r[key] / by["official"][key], 3)
            if by["official"]["peak_mib"] > 0:
                r["peak_vs_official"] = round(r["peak_mib"] / by["official"]["peak_mib"], 3)
        print(json.dumps(r))
    if device.type == "cuda" and "pack" in by and "official" in by:
        ok = by["pack"]["time_vs_official"] <= 0.5 and by["pack"].get("peak_vs_official", 1) <= 0.5
        print(f"target (pack <= 0.5x official step time and peak memory): {'met' if ok else 'NOT met'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": str(device), "gpu": gpu, "size": size, "batch": batch, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
