"""GenDeg's training objective, as the official code (``ddpm_edit.py`` of sudraj2002/GenDeg, after
InstructPix2Pix) computes it.

Per sample, with ``x`` = degraded image and ``c`` = clean image, both in [-1, 1]:

* target latent ``z = 0.18215 · (m + s·n₀)``: a *sample* of the VAE posterior N(m, s²) of the
  degraded image, scaled (LDM ``get_first_stage_encoding``);
* image condition ``c_lat = mode`` of the posterior of the clean image, *not* scaled;
* ``t ~ U{0..999}``, ``n ~ N(0, I)``, ``z_t = √ᾱ_t·z + √(1−ᾱ_t)·n`` on the SD 1.5 schedule
  (betas ``linspace(√0.00085, √0.012, 1000)²``, float64, then float32 as LDM registers them);
* classifier-free-guidance dropout from ONE uniform ``u`` per sample and ``p = 0.05``:
  text + intensity nulled when ``u < 2p``, the image latent zeroed when ``p ≤ u < 3p`` —
  exclusive cases: ``u < p`` text+intensity only, ``p ≤ u < 2p`` everything, ``2p ≤ u < 3p``
  the image only (5 % each). "Null" text is the CLIP embedding of the empty prompt, null
  intensity the one-hots at index 128 (both still go through the trained projections);
* loss = mean over every element of ``(ε̂(z_t, t, c_lat, context) − n)²`` (eps prediction,
  ``l_simple`` with learned log-variance 0 and no VLB term).

Random draws, in this order, from one generator: ``u`` [B], ``n₀`` (posterior), ``t`` [B], ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...gendeg.conditioning import null_one_hots
from ...gendeg.sampler import BETA_END, BETA_START, TRAIN_STEPS

#: Official CFG dropout unit (InstructPix2Pix's ``uncond``).
UNCOND = 0.05


def sd_alphas_cumprod(steps: int = TRAIN_STEPS, beta_start: float = BETA_START, beta_end: float = BETA_END) -> torch.Tensor:
    """``ᾱ_t`` ``[steps]`` float32 of LDM's ``linear`` schedule (SD 1.x: ``linspace(√β₀, √β₁, T)²``, products in float64)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def dropout_masks(u: torch.Tensor, p: float = UNCOND) -> tuple[torch.Tensor, torch.Tensor]:
    """(text_null, image_zero) bool ``[B]`` from uniforms ``u`` ``[B]``: ``u < 2p`` and ``p ≤ u < 3p``."""
    return u < 2 * p, (u >= p) & (u < 3 * p)


@dataclass
class ObjectiveInputs:
    """What one micro-batch feeds the UNet (everything but the trained projections' output)."""

    noisy: torch.Tensor  # z_t [B,4,h,w]
    image_latent: torch.Tensor  # c_lat (zeroed where dropped) [B,4,h,w]
    t: torch.Tensor  # [B] long
    text: torch.Tensor  # CLIP last hidden state (null where dropped) [B,77,D]
    one_hots: torch.Tensor  # [B,2,129] (null where dropped)
    noise: torch.Tensor  # the target n [B,4,h,w]
    text_null: torch.Tensor  # [B] bool
    image_zero: torch.Tensor  # [B] bool


@torch.no_grad()
def prepare_inputs(
    vae: torch.nn.Module,
    encode_text,  # noqa: ANN001 - prompts -> [B,77,D]
    clean: torch.Tensor,
    degraded: torch.Tensor,
    prompts: list[str],
    one_hots: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    g: torch.Generator,
    p: float = UNCOND,
) -> ObjectiveInputs:
    """Latents, timesteps, noise and dropped conditions of one micro-batch (``clean``/``degraded`` ``[B,3,H,W]`` 0..1)."""
    b, dev = clean.shape[0], clean.device
    u = torch.rand(b, generator=g, device=g.device).to(dev)
    text_null, image_zero = dropout_masks(u, p)
    scale = float(vae.config.scaling_factor)
    post = vae.encode(torch.cat([degraded, clean]) * 2 - 1).latent_dist
    mean, std = post.mean.float(), post.std.float()
    n0 = torch.randn(mean[:b].shape, generator=g, device=g.device).to(dev)
    z = scale * (mean[:b] + std[:b] * n0)
    image_latent = mean[b:] * (~image_zero).float()[:, None, None, None]  # posterior mode = mean, unscaled
    t = torch.randint(0, alphas_cumprod.numel(), (b,), generator=g, device=g.device).to(dev)
    noise = torch.randn(z.shape, generator=g, device=g.device).to(dev)
    ac = alphas_cumprod.to(dev)[t][:, None, None, None]
    noisy = ac.sqrt() * z + (1 - ac).sqrt() * noise
    text = encode_text(list(prompts)).float()
    null_text = encode_text([""]).float()
    text = torch.where(text_null[:, None, None], null_text, text)
    oh = torch.where(text_null[:, None, None], null_one_hots(b).to(dev), one_hots.to(dev).float())
    return ObjectiveInputs(noisy, image_latent, t, text, oh, noise, text_null, image_zero)


def eps_mse(eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``mean((ε̂ − n)²)`` in float32 (the official ``loss_simple``, averaged over the batch)."""
    return torch.nn.functional.mse_loss(eps.float(), noise.float())
