"""GenDeg sampling: clean image + condition -> degraded image.

The loop is written out step by step on diffusers schedulers:

* Schedules: scaled-linear betas 0.00085 → 0.012 over 1000 training steps, eps prediction.
  ``euler_a`` (default, as the official ``k_diffusion.sample_euler_ancestral`` on
  ``CompVisDenoiser``: the sigmas are interpolated in log space at ``linspace(999, 0, n)``
  exactly like k-diffusion's ``get_sigmas``), ``ddim`` (η = 0), ``dpmpp_2m``
  (DPM-Solver++(2M)), ``unipc``.
* Three guidance branches in ONE UNet batch: full (prompt + intensity + clean latent),
  image only (empty prompt + null intensity + clean latent), none (empty prompt + null
  intensity + zero latent): ``eps = e_none + s_text·(e_full − e_img) + s_img·(e_img − e_none)``.
* The clean latent is the VAE posterior mode WITHOUT the 0.18215 scaling; the result is
  decoded from ``z / scaling_factor``.
* Size: the image is resized (aspect ratio kept) to about ``resolution²`` pixels with
  sides that are multiples of the VAE factor (8), and the result is resized back to the
  input size. ``resolution=0`` works at the input size (rounded to a multiple of 8).
* Noise comes from one CPU ``torch.Generator`` per output image (seed + index), so a
  result does not depend on the batch size or the device's RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..image import check_image, resize
from ..intensity import measure_intensity
from .conditioning import GenDegCondition, null_one_hots, stack_one_hots
from .model import GenDegModel

SCHEDULERS = ("euler_a", "ddim", "dpmpp_2m", "unipc")
BETA_START, BETA_END, TRAIN_STEPS = 0.00085, 0.012, 1000
DEFAULT_STEPS = 100
DEFAULT_TEXT_GUIDANCE = 7.5
DEFAULT_IMAGE_GUIDANCE = 1.5
DEFAULT_RESOLUTION = 512


def make_scheduler(name: str = "euler_a"):  # noqa: ANN201 - diffusers scheduler
    """A diffusers scheduler with GenDeg's (SD 1.x) training schedule."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    common = {"num_train_timesteps": TRAIN_STEPS, "beta_start": BETA_START, "beta_end": BETA_END,
              "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler(**common, timestep_spacing="linspace")
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    if name == "unipc":
        return UniPCMultistepScheduler(**common)
    raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def kdiffusion_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """k-diffusion ``CompVisDenoiser.get_sigmas(steps)``: log-linear interpolation at ``linspace(T-1, 0, n)``, then 0."""
    sig = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt()
    log_sig = sig.log()
    t = torch.linspace(len(sig) - 1, 0, steps, dtype=torch.float64)
    lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
    out = ((1 - w) * log_sig[lo] + w * log_sig[hi]).exp()
    return torch.cat([out, out.new_zeros(1)]).float()


def set_timesteps(scheduler, steps: int, device: torch.device) -> None:  # noqa: ANN001
    scheduler.set_timesteps(steps, device=device)
    if type(scheduler).__name__ == "EulerAncestralDiscreteScheduler":
        scheduler.sigmas = kdiffusion_sigmas(scheduler.alphas_cumprod, steps).to(scheduler.sigmas.device)


def working_size(h: int, w: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(H, W) with the aspect ratio of ``h×w``, about ``resolution²`` pixels, sides multiples of ``multiple``.

    ``resolution <= 0`` keeps the input size (rounded to the nearest multiple, at least one).
    """
    if h <= 0 or w <= 0:
        raise InputError(f"image size must be positive, got {w}x{h}")
    scale = 1.0 if resolution <= 0 else math.sqrt(resolution * resolution / (h * w))
    hh = max(multiple, int(round(h * scale / multiple)) * multiple)
    ww = max(multiple, int(round(w * scale / multiple)) * multiple)
    return hh, ww


def guidance_combine(e_full: torch.Tensor, e_img: torch.Tensor, e_none: torch.Tensor, s_text: float, s_img: float) -> torch.Tensor:
    """``e_none + s_text·(e_full − e_img) + s_img·(e_img − e_none)`` (InstructPix2Pix / GenDeg)."""
    return e_none + s_text * (e_full - e_img) + s_img * (e_img - e_none)


@dataclass
class SampleResult:
    """``image``: ``[N,3,H,W]`` in 0..1 at the input size; ``mu``/``sigma``: ``[N]`` achieved intensity."""

    image: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    conditions: list[GenDegCondition]
    source_index: list[int]


def _generators(seed: int, n: int, offset: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed((int(seed) + offset + i) % (2**63)) for i in range(n)]


def _randn(shape: Sequence[int], gens: list[torch.Generator], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in gens]).to(device, dtype)


@torch.no_grad()
def encode_clean(model: GenDegModel, x01: torch.Tensor, tiled: bool) -> torch.Tensor:
    """VAE posterior mode of ``x01`` (``[B,3,H,W]`` 0..1), NOT scaled by 0.18215, float32."""
    vae = model.vae
    _set_tiling(vae, tiled)
    dev = model.parameter_device()
    x = (x01 * 2 - 1).to(dev, model.vae_dtype)
    return vae.encode(x).latent_dist.mode().float()


@torch.no_grad()
def decode_latent(model: GenDegModel, z: torch.Tensor, tiled: bool) -> torch.Tensor:
    """``vae.decode(z / scaling_factor)`` mapped from [-1, 1] to 0..1 (float32)."""
    vae = model.vae
    _set_tiling(vae, tiled)
    out = vae.decode((z / vae.config.scaling_factor).to(model.vae_dtype)).sample.float()
    return ((out.clamp(-1, 1) + 1) / 2).clamp(0, 1)


def _set_tiling(vae, on: bool) -> None:  # noqa: ANN001
    if on:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def vae_factor(model: GenDegModel) -> int:
    return 2 ** (len(model.vae.config.block_out_channels) - 1)


@torch.no_grad()
def sample(
    model: GenDegModel,
    clean: torch.Tensor,
    conditions: Sequence[GenDegCondition],
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    scheduler: str = "euler_a",
    text_guidance: float = DEFAULT_TEXT_GUIDANCE,
    image_guidance: float = DEFAULT_IMAGE_GUIDANCE,
    resolution: int = DEFAULT_RESOLUTION,
    batch_size: int = 4,
    vae_tiling: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Degrade every image of ``clean`` (``[B,3,H,W]`` in 0..1) under every condition.

    Output ``N = B × len(conditions)`` images, image-major (image 0 under each condition,
    then image 1, ...), each at its input size, plus the achieved (μ, σ) measured by
    :func:`core.intensity.measure_intensity`. ``batch_size`` images go through the UNet at
    once (times three guidance branches). ``progress(i, n)`` is called after every step
    (it may raise to interrupt). ``vae_tiling``: ``auto`` (tiles above 1024 px), ``on``, ``off``.
    """
    check_image(clean, "clean image")
    if clean.shape[1] != 3:
        raise InputError(f"clean image: expected 3 channels (use core.image.to_rgb first), got {clean.shape[1]}")
    if not conditions:
        raise InputError("no GenDeg condition given; connect a GenDeg Condition node")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if vae_tiling not in ("auto", "on", "off"):
        raise InputError(f"vae_tiling must be auto, on or off, got {vae_tiling!r}")
    conds = list(conditions)
    b, _, h, w = clean.shape
    jobs = [(i, c) for i in range(b) for c in conds]
    total_steps = steps * math.ceil(len(jobs) / batch_size)
    done = 0
    dev = model.parameter_device()
    fac = vae_factor(model)
    hh, ww = working_size(h, w, resolution, fac)
    tiled = vae_tiling == "on" or (vae_tiling == "auto" and max(hh, ww) > 1024)
    x = resize(clean.float(), (hh, ww)).to(dev)

    # null conditions (shared by the image-only and unconditional branches)
    null_ctx = model.context(model.encode_text([""]), null_one_hots(1))  # [1, 77, D]
    outputs: list[torch.Tensor] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        n = len(chunk)
        src = torch.stack([x[i] for i, _ in chunk])
        img_lat = encode_clean(model, src, tiled)  # [n, 4, h/8, w/8]
        prompts = [c.prompt for _, c in chunk]
        ctx_full = model.context(model.encode_text(prompts), stack_one_hots([c for _, c in chunk]))
        ctx = torch.cat([ctx_full, null_ctx.expand(n, -1, -1), null_ctx.expand(n, -1, -1)]).to(model.dtype)
        lat_cond = torch.cat([img_lat, img_lat, torch.zeros_like(img_lat)]).to(model.dtype)
        if dev.type == "cuda":
            lat_cond = lat_cond.contiguous(memory_format=torch.channels_last)

        sched = make_scheduler(scheduler)
        set_timesteps(sched, steps, dev)
        gens = _generators(seed, n, start)
        latents = _randn(img_lat.shape, gens, dev, torch.float32) * float(sched.init_noise_sigma)
        for t in sched.timesteps:
            lat_in = sched.scale_model_input(torch.cat([latents] * 3), t)
            unet_in = torch.cat([lat_in.to(model.dtype), lat_cond], dim=1)
            eps = model.unet(unet_in, t, encoder_hidden_states=ctx, return_dict=False)[0].float()
            e_full, e_img, e_none = eps.chunk(3)
            noise_pred = guidance_combine(e_full, e_img, e_none, text_guidance, image_guidance)
            latents = _step(sched, noise_pred, t, latents, gens, ancestral=scheduler == "euler_a")
            done += 1
            if progress is not None:
                progress(done, total_steps)
        out = decode_latent(model, latents, tiled)
        outputs.append(resize(out.cpu(), (h, w)))
    image = torch.cat(outputs)
    src_images = clean[[i for i, _ in jobs]].float().cpu()
    mu, sigma = measure_intensity(src_images, image)
    return SampleResult(image, mu, sigma, [c for _, c in jobs], [i for i, _ in jobs])


def _step(sched, noise_pred, t, latents, gens, ancestral: bool):  # noqa: ANN001, ANN202
    """One scheduler step; ancestral noise is drawn per image from its own CPU generator."""
    if ancestral:
        # diffusers' randn_tensor with a list of generators draws each item from its generator on the CPU
        return sched.step(noise_pred, t, latents, generator=gens, return_dict=False)[0]
    return sched.step(noise_pred, t, latents, return_dict=False)[0]


__all__ = [
    "SCHEDULERS",
    "SampleResult",
    "decode_latent",
    "encode_clean",
    "guidance_combine",
    "kdiffusion_sigmas",
    "make_scheduler",
    "sample",
    "working_size",
]
