"""DiffLoss (Tan et al. 2024): a frozen diffusion model as a training constraint, with gradients.

Terms (the pixel term is the separate ``l1``/``mse`` loss of the config)::

    diffloss_nat = γ · MSE(ε̂(out_t, t), ε̂(gt_t, t))          (first 3 output channels)
    diffloss_sem = γ · λ · MSE(h(out_t, t), h(gt_t, t))        (middle-block output, h-space)

with out and gt mapped from 0..1 to [-1, 1] and noised with the **same** t and the **same**
noise: x_t = √ᾱ_t·x + √(1−ᾱ_t)·ε (guided-diffusion's linear schedule, T = 1000),
t ~ U{t_min..t_max} per image. Published weights γ = 1e-3 and γλ = 1e-6 (``gamma`` 1e-3,
``lambda_sem`` 1e-3); with them the DiffLoss gradients are orders of magnitude below the
pixel term's and shrink further with t, so these are the knobs to turn.

Unlike the official release (which runs both prior passes under ``no_grad``, so its extra
terms train nothing), the restorer branch goes through the frozen prior with autograd on:
the prior's parameters get no gradient, the restorer's do. The ground-truth branch runs
under ``no_grad`` (it carries no gradient to the restorer).

Randomness, all from ``batch.generator`` in this order: the subset (when ``fraction`` < 1),
t, then the noise. Crop fitting: the 256 prior is convolutional, so crops whose sides are
multiples of 32 run as they are (``fit: pad``, the default; 256² crops are the native
size, other sizes give h-space of H/32 × W/32); other sides are reflect-padded to the next
multiple of 32, identically for out and gt, and the MSEs cover the padded maps. ``fit:
resize`` resizes both to the prior's 256×256 instead (bilinear, antialiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...errors import InputError
from ..priors.guided_diffusion import GuidedDiffusionUNet
from ..priors.load import PRIOR_ID, load_prior, resolve_prior
from ..priors.schedule import NUM_TIMESTEPS, q_coefficients, q_sample
from .base import LossBatch, LossContext, TrainLoss, autocast_dtype, check_same_shape, zero_term


@dataclass
class DiffLossOptions:
    #: Multiplier of the sum of the two DiffLoss terms (set 0 to switch DiffLoss off).
    weight: float = 1.0
    #: γ: weight of L_nat, the MSE between the prior's noise predictions (published 1e-3).
    gamma: float = 1e-3
    #: λ: weight of L_sem (MSE between middle-block features) relative to L_nat; γλ = 1e-6 published.
    lambda_sem: float = 1e-3
    #: The prior: manifest id or a file under <models>/restore (its converted .safetensors is preferred).
    prior: str = PRIOR_ID
    #: Prior weights' dtype: "auto" = the engine's mixed precision on a GPU (bf16/fp16), fp32 on CPU.
    prior_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: Recompute the prior's activations in the backward pass (less memory, one more prior forward).
    checkpointing: bool = True
    #: Apply DiffLoss every k-th optimizer step only (k ≥ 1; the other steps add 0, not rescaled).
    every: int = 1
    #: Apply it to this fraction of the batch (0 < f ≤ 1; ceil(f·B) images drawn at random).
    fraction: float = 1.0
    #: Smallest diffusion timestep drawn (0..999).
    t_min: int = 0
    #: Largest diffusion timestep drawn (t_min..999).
    t_max: int = NUM_TIMESTEPS - 1
    #: Fit crops to the prior: "pad" (reflect-pad sides to multiples of 32) or "resize" (to 256×256).
    fit: Literal["pad", "resize"] = "pad"


def resolve_dtype(option: str, ctx: LossContext) -> torch.dtype:
    """The prior's dtype for a ``prior_dtype`` option (see :class:`DiffLossOptions`)."""
    if option == "auto":
        return autocast_dtype(ctx.mixed_precision) if torch.device(ctx.device).type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[option]


class DiffLoss(TrainLoss):
    """γ·(L_nat + λ·L_sem) through a frozen guided-diffusion prior (see the module doc)."""

    def __init__(self, prior: GuidedDiffusionUNet, options: DiffLossOptions | None = None) -> None:
        super().__init__()
        self.options = o = options or DiffLossOptions()
        check_options(o)
        prior.checkpointing = o.checkpointing
        self.keep("prior", prior)
        p = next(prior.parameters())
        object.__setattr__(self, "_coefficients", q_coefficients(p.device))

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.prior.config
        if self.options.fit == "resize":
            if tuple(x.shape[-2:]) == (cfg.image_size, cfg.image_size):
                return x
            return F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", antialias=True, align_corners=False)
        f = cfg.downsample_factor
        h, w = x.shape[-2:]
        ph, pw = (-h) % f, (-w) % f
        if not (ph or pw):
            return x
        if ph >= h or pw >= w:  # reflect padding needs the pad to be smaller than the side
            return F.pad(x, (0, pw, 0, ph), mode="replicate")
        return F.pad(x, (0, pw, 0, ph), mode="reflect")

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        o = self.options
        check_same_shape(batch, "diffloss")
        if batch.step % o.every:
            z = zero_term(batch)
            return {"diffloss_nat": z, "diffloss_sem": z}
        out, gt = batch.out, batch.gt
        b = out.shape[0]
        g = batch.generator
        dev = out.device
        if o.fraction < 1.0:
            k = max(1, math.ceil(o.fraction * b))
            idx = torch.randperm(b, generator=g, device=dev)[:k]
            out, gt = out[idx], gt[idx]
        t = torch.randint(o.t_min, o.t_max + 1, (out.shape[0],), generator=g, device=dev)
        x_out = self._fit(out.float() * 2 - 1)
        x_gt = self._fit(gt.float() * 2 - 1)
        noise = torch.randn(x_out.shape, generator=g, device=dev, dtype=torch.float32)
        c = self._coefficients
        c = (c[0].to(dev), c[1].to(dev))
        dtype = self.prior.dtype
        with torch.no_grad():
            eps_gt, h_gt = self.prior(q_sample(x_gt, t, noise, c).to(dtype), t)
        eps_out, h_out = self.prior(q_sample(x_out, t, noise, c).to(dtype), t)
        nat = F.mse_loss(eps_out[:, :3].float(), eps_gt[:, :3].float())
        sem = F.mse_loss(h_out.float(), h_gt.float())
        return {"diffloss_nat": o.gamma * nat, "diffloss_sem": o.gamma * o.lambda_sem * sem}


def check_options(o: DiffLossOptions) -> None:
    """Clear :class:`InputError` for out-of-range DiffLoss options."""
    if o.every < 1:
        raise InputError(f"diffloss: every must be >= 1 (apply every k-th step), got {o.every}")
    if not 0.0 < o.fraction <= 1.0:
        raise InputError(f"diffloss: fraction must be in (0, 1], got {o.fraction}")
    if not 0 <= o.t_min <= o.t_max <= NUM_TIMESTEPS - 1:
        raise InputError(f"diffloss: need 0 <= t_min <= t_max <= {NUM_TIMESTEPS - 1}, got t_min={o.t_min}, t_max={o.t_max}")
    if o.gamma < 0 or o.lambda_sem < 0:
        raise InputError(f"diffloss: gamma and lambda_sem must be >= 0, got {o.gamma} and {o.lambda_sem}")


def build_diffloss(options: DiffLossOptions, ctx: LossContext) -> DiffLoss:
    check_options(options)
    path = resolve_prior(options.prior, ctx.models_dir)
    prior = load_prior(path, device=ctx.device, dtype=resolve_dtype(options.prior_dtype, ctx))
    return DiffLoss(prior, options)
