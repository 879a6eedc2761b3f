"""Frozen networks that training losses use as priors.

* :mod:`.guided_diffusion`: OpenAI guided-diffusion's UNet (official key layout), returning
  its output and the middle block's output (h-space); the DiffLoss prior.
* :mod:`.schedule`: the official linear noise schedule and ``q_sample``.
* :mod:`.load`: find the checkpoint, check it, convert it once to safetensors, load it frozen.
"""

from .guided_diffusion import (
    GUIDED_DIFFUSION_256_UNCOND,
    TINY,
    GuidedDiffusionUNet,
    UNetConfig,
    parameter_count,
)
from .load import PRIOR_ID, load_prior, read_prior, resolve_prior, save_prior
from .schedule import NUM_TIMESTEPS, alphas_cumprod, linear_betas, q_coefficients, q_sample

__all__ = [
    "GUIDED_DIFFUSION_256_UNCOND",
    "NUM_TIMESTEPS",
    "PRIOR_ID",
    "TINY",
    "GuidedDiffusionUNet",
    "UNetConfig",
    "alphas_cumprod",
    "linear_betas",
    "load_prior",
    "parameter_count",
    "q_coefficients",
    "q_sample",
    "read_prior",
    "resolve_prior",
    "save_prior",
]
