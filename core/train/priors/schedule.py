"""The forward (noising) process of guided-diffusion's 256×256 models.

Official settings (``--diffusion_steps 1000 --noise_schedule linear``): β linear from
1e-4 to 0.02 over T = 1000 steps (``get_named_beta_schedule("linear", 1000)``, in float64),
ᾱ_t = Π_{s≤t} (1 − β_s), and

    x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε,   t ∈ {0, …, T−1},  x_0 in [-1, 1].

The network receives the integer t itself: ``rescale_timesteps`` is False in the official
defaults and in the DiffLoss release (with T = 1000 it would be the identity anyway).
"""

from __future__ import annotations

import torch

NUM_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def linear_betas(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """β_t ``[T]`` float64: linear from 1e-4 to 0.02, both scaled by 1000/T as the official code does."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * BETA_START, scale * BETA_END, num_timesteps, dtype=torch.float64)


def alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """ᾱ_t ``[T]`` float64 of the linear schedule."""
    return torch.cumprod(1.0 - linear_betas(num_timesteps), dim=0)


def q_coefficients(device: torch.device | str = "cpu", num_timesteps: int = NUM_TIMESTEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ_t, √(1−ᾱ_t)) ``[T]`` each: computed in float64, stored as float32 on ``device``."""
    abar = alphas_cumprod(num_timesteps)
    return abar.sqrt().float().to(device), (1.0 - abar).sqrt().float().to(device)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             coefficients: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise for per-sample integer ``t`` ``[B]`` (result in x0's dtype).

    ``coefficients`` are :func:`q_coefficients` on ``t``'s device (computed here when omitted).
    """
    c0, c1 = coefficients if coefficients is not None else q_coefficients(t.device)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    t = t.long()
    return c0[t].to(x0.dtype).view(shape) * x0 + c1[t].to(x0.dtype).view(shape) * noise.to(x0.dtype)
