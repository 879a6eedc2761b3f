"""Benchmark: GenDeg sampling vs. diffusers' StableDiffusionInstructPix2PixPipeline, same run.

Both paths get the same random-weight UNet (8 input channels), VAE and text encoder, the same
steps, resolution, three-branch guidance (7.5 / 1.5) and the same conditioning tensors (the
pipeline receives GenDeg's fused cross-attention contexts as ``prompt_embeds`` /
``negative_prompt_embeds``; its ordering of the three branches is GenDeg's). With DDIM both
are deterministic given the initial noise, so the benchmark first checks that the outputs
agree, then times images/s (and peak CUDA memory on a GPU) with the scheduler asked for.

The reference runs with its own copy of the modules (fp32 on CPU; fp16 on CUDA, as the
pipeline is usually run) and the same batch of images per call. Ours uses its own policy
(bf16 on CUDA when available, channels-last UNet, optional ``--compile``).

Usage::

    python bench/gendeg.py --smoke                 # CPU, tiny config, < 60 s
    python bench/gendeg.py                         # GPU: SD 1.5 size, 512² and 1024², 100 steps
    python bench/gendeg.py --sizes 512 --batch 8 --compile

Targets on a GPU (issue 4): >= 1.5x the pipeline's images/s at equal settings, >= 1 image/s at
512²x100 steps on an H100 with batching, 1024² within 12 GB.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from comfyui_gendeg.core.gendeg import conditioning as C
from comfyui_gendeg.core.gendeg import sampler as S
from comfyui_gendeg.core.gendeg.model import GenDegModel, load_tokenizer

SD15_UNET = dict(sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
TINY_UNET = dict(sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 cross_attention_dim=32, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
                block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
TINY_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, bos_token_id=0,
                 eos_token_id=2, pad_token_id=1)


def _tokenizer(folder: Path):  # noqa: ANN202 - a small BPE vocabulary: the benchmark needs no downloads
    letters = list("abcdefghijklmnopqrstuvwxyz") + [",", "-", "."]
    vocab = letters + [t + "</w>" for t in letters] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return load_tokenizer(folder)


def build(tiny: bool, device: torch.device, dtype: torch.dtype, tmp: Path) -> GenDegModel:
    """A GenDeg model of random weights (SD 1.5 size, or the tiny test size)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
    vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
    text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD15_TEXT)))
    width = (TINY_TEXT if tiny else SD15_TEXT)["hidden_size"]
    stats_proj, cc = torch.nn.Linear(129, 77), torch.nn.Linear(width + 2, width)
    for m in (unet, vae, text, stats_proj, cc):
        m.eval().requires_grad_(False)
    return GenDegModel(unet, vae, text, _tokenizer(tmp / "tok"), stats_proj, cc, dtype=dtype, device=device,
                       offload_device=device, info={"name": "random"})


def reference_pipeline(model: GenDegModel, scheduler: str, dtype: torch.dtype):  # noqa: ANN201
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=copy.deepcopy(model.vae).to(dtype=dtype),  # the pipeline feeds the VAE in the UNet's dtype
        text_encoder=copy.deepcopy(model.text_encoder), tokenizer=model.tokenizer,
        unet=copy.deepcopy(model.unet).to(memory_format=torch.contiguous_format),
        scheduler=S.make_scheduler(scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.unet.to(model.device, dtype)
    pipe.text_encoder.to(model.device, dtype)
    pipe.vae.to(model.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_reference(pipe, model: GenDegModel, x01: torch.Tensor, cond, steps: int, seed: int):  # noqa: ANN001, ANN201
    """The pipeline on the same contexts and initial noise as ours (all of ``x01`` in one call)."""
    n = x01.shape[0]
    ctx = model.context(model.encode_text([cond.prompt] * n), C.stack_one_hots([cond] * n))
    null = model.context(model.encode_text([""]), C.null_one_hots(1)).expand(n, -1, -1)
    dt = pipe.unet.dtype
    h, w = x01.shape[-2:]
    f = 2 ** (len(model.vae.config.block_out_channels) - 1)
    noise = torch.stack([torch.randn((4, h // f, w // f), generator=torch.Generator().manual_seed(seed + i))
                         for i in range(n)]).to(model.device, dt)
    out = pipe(image=x01.to(model.device), prompt_embeds=ctx.to(dt), negative_prompt_embeds=null.to(dt),
               num_inference_steps=steps, guidance_scale=7.5, image_guidance_scale=1.5, latents=noise,
               output_type="pt").images
    return out.float().clamp(0, 1).cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"process RSS peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def bench_size(model, pipe, size: int, steps: int, batch: int, n_images: int, scheduler: str, device,
               repeats: int = 1) -> dict:  # noqa: ANN001
    x = torch.rand(n_images, 3, size, size, generator=torch.Generator().manual_seed(1))
    cond = C.make_condition("haze", "a photo of a street", preset="medium")
    # warm-up (allocations, kernels, compile)
    S.sample(model, x[:1], [cond], steps=1, scheduler=scheduler, resolution=0, batch_size=1, seed=0)
    run_reference(pipe, model, x[:1], cond, 1, 0)
    t_ours = t_ref = float("inf")
    for _ in range(repeats):  # best of `repeats`: the shared CPU is noisy
        _sync(device)
        _peak_reset(device)
        t0 = time.perf_counter()
        ours = S.sample(model, x, [cond], steps=steps, scheduler=scheduler, resolution=0, batch_size=batch, seed=0)
        _sync(device)
        t_ours = min(t_ours, time.perf_counter() - t0)
        peak_ours = _peak(device)
        _peak_reset(device)
        t0 = time.perf_counter()
        ref = torch.cat([run_reference(pipe, model, x[i : i + batch], cond, steps, i) for i in range(0, n_images, batch)])
        _sync(device)
        t_ref = min(t_ref, time.perf_counter() - t0)
        peak_ref = _peak(device)
    return {
        "size": size, "steps": steps, "images": n_images, "batch": batch, "scheduler": scheduler,
        "ours_img_s": n_images / t_ours, "ref_img_s": n_images / t_ref, "speedup": t_ref / t_ours,
        "peak_ours": peak_ours, "peak_ref": peak_ref,
        "max_abs_diff": float((ours.image - ref).abs().max()) if scheduler == "ddim" else None,
    }


def check_equal(model, pipe_ddim, size: int, steps: int) -> float:  # noqa: ANN001
    """Max |ours − pipeline| with DDIM (deterministic) on the same noise, contexts and weights."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    cond = C.make_condition("rain", "a photo of a street", preset="heavy")
    ours = S.sample(model, x, [cond], steps=steps, scheduler="ddim", resolution=0, batch_size=1, seed=5)
    ref = run_reference(pipe_ddim, model, x, cond, steps, 5)
    return float((ours.image - ref).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny random model on the CPU (< 60 s)")
    ap.add_argument("--sizes", default=None, help="comma-separated square sizes (default 512,1024; smoke 64)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 100; smoke 4)")
    ap.add_argument("--batch", type=int, default=None, help="our batch size (default 4; smoke 2)")
    ap.add_argument("--images", type=int, default=None, help="images per measurement (default 8; smoke 2)")
    ap.add_argument("--scheduler", default="euler_a", choices=S.SCHEDULERS)
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile our UNet (CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats, best kept (default 1; smoke 2)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    sizes = [int(s) for s in (args.sizes or ("64" if args.smoke else "512,1024")).split(",")]
    steps = args.steps or (4 if args.smoke else 100)
    batch = args.batch or (2 if args.smoke else 4)
    n_images = args.images or (2 if args.smoke else 8)
    if args.smoke:
        torch.set_num_threads(1)  # tiny kernels: OpenMP threads only spin on a shared 2-core machine
    ours_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else torch.float32
    ref_dtype = torch.float16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        t_build = time.perf_counter()
        model = build(args.smoke, device, ours_dtype, Path(tmp))
        model.compile = args.compile
        pipe_ddim = reference_pipeline(model, "ddim", torch.float32 if device.type == "cpu" else ours_dtype)
        model.to_compute(device)
        print(f"device {device}, ours {ours_dtype}, reference {ref_dtype}, built in {time.perf_counter() - t_build:.1f} s",
              flush=True)
        # correctness first: same dtype for both, DDIM, same noise
        diff = check_equal(model, pipe_ddim, sizes[0], min(steps, 4))
        print(f"equality check (DDIM, {min(steps, 4)} steps, {sizes[0]}²): max |ours - pipeline| = {diff:.2e}", flush=True)
        del pipe_ddim
        pipe = reference_pipeline(model, args.scheduler, ref_dtype)
        rows = []
        for size in sizes:
            row = bench_size(model, pipe, size, steps, batch, n_images, args.scheduler, device,
                             args.repeats or (2 if args.smoke else 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| size | steps | images (batch) | ours img/s | pipeline img/s | speed-up | peak ours | peak pipeline |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}² | {r['steps']} | {r['images']} ({r['batch']}) | {r['ours_img_s']:.3f} | {r['ref_img_s']:.3f} "
              f"| x{r['speedup']:.2f} | {r['peak_ours']} | {r['peak_ref']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
