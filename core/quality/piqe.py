"""PIQE (Venkatanath et al., NCC 2015; MATLAB ``piqe``): parameter-free no-reference score.

Steps, per image (batched over blocks):

1. The image as 8 bits (0..255), grey by MATLAB ``rgb2gray`` (weights 0.298936021293775,
   0.587043074451121, 0.114020904255103, rounded half away from zero); padded (replicate,
   bottom/right) to a multiple of 16.
2. MSCN: μ, σ from a 7×7 Gaussian (σ = 7/6, replicate border); (I − μ)/(σ + 1).
3. Non-overlapping 16×16 blocks; a block is spatially active when its (sample) variance
   v > 0.1. For active blocks:
   * noticeable distortion: some 6-pixel segment (11 sliding segments per edge) of one of
     the four block edges has a sample std < 0.1;
   * noise: σ_blk > 2β where β = |σ_blk − r| / max(σ_blk, r) and r is the ratio of the
     std of the two centre columns (0-based 7 and 8) to the std of the "surround". As in
     ``piqe.m``, the surround is what is left after deleting column 8 (1-based) and then
     column 9 of the already shortened block: original 0-based columns 7 and 9 are left
     out, column 8 stays in. r = 0 when both stds are 0 (NaN); when only the surround is
     flat r = ∞, β is NaN and the block does not count as noisy.
   A block contributes (1 − v) if distorted plus v if noisy.
4. PIQE = 100 · (Σ contributions + 1) / (N_active + 1), in 0..100, lower is better (a
   flat image with no active block scores 100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..image import check_image
from .common import drop_alpha

BLOCK = 16
ACTIVITY_T = 0.1
IMPAIRED_T = 0.1
SEGMENT = 6
GREY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
#: 0-based columns of a block: the centre pair, and the surround piqe.m compares it with
#: (it deletes column 8, then column 9 of the shortened block, 1-based: original 7 and 9).
CENTRE = (7, 8)
SURROUND = tuple(i for i in range(BLOCK) if i not in (7, 9))


def _gauss7(dtype, device) -> torch.Tensor:
    c = torch.arange(7, dtype=dtype, device=device) - 3
    g = torch.exp(-(c**2) / (2 * (7 / 6) ** 2))
    g = g / g.sum()
    return g


def mscn(grey255: torch.Tensor, c: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSCN map, local σ) of ``[B,1,H,W]`` grey in 0..255 (7×7 Gaussian σ 7/6, replicate border)."""
    g = _gauss7(grey255.dtype, grey255.device)
    k = (g[:, None] * g[None, :]).view(1, 1, 7, 7)
    pad = lambda t: F.pad(t, (3, 3, 3, 3), mode="replicate")  # noqa: E731
    mu = F.conv2d(pad(grey255), k)
    var = F.conv2d(pad(grey255 * grey255), k) - mu * mu
    sigma = var.abs().sqrt()
    return (grey255 - mu) / (sigma + c), sigma


def to_grey255(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` 0..1 -> ``[B,1,H,W]`` grey in 0..255 (float64), as MATLAB's ``rgb2gray``
    gives for the image saved with 8 bits: quantised to 0..255, weighted, rounded half away from zero."""
    x = torch.floor(drop_alpha(x).double().clamp(0, 1) * 255.0 + 0.5)
    if x.shape[1] == 3:
        w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = torch.floor((x * w).sum(dim=1, keepdim=True) + 0.5)
    return x


def _sample_std(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.std(dim=dim, unbiased=True)


def piqe(image: torch.Tensor) -> torch.Tensor:
    """``[B]`` PIQE scores (0..100, lower is better) of ``[B,C,H,W]`` images in 0..1."""
    check_image(image, "image")
    grey = to_grey255(image)
    h, w = grey.shape[-2:]
    ph, pw = (-h) % BLOCK, (-w) % BLOCK
    if ph or pw:
        grey = F.pad(grey, (0, pw, 0, ph), mode="replicate")
    norm, _ = mscn(grey)
    b = norm.shape[0]
    blocks = F.unfold(norm, BLOCK, stride=BLOCK).transpose(1, 2).reshape(b, -1, BLOCK, BLOCK)  # [B,N,16,16]
    var = blocks.flatten(2).var(dim=2, unbiased=True)  # [B,N]
    active = var > ACTIVITY_T

    edges = torch.stack([blocks[..., 0, :], blocks[..., :, BLOCK - 1], blocks[..., BLOCK - 1, :], blocks[..., :, 0]], dim=2)
    segs = edges.unfold(-1, SEGMENT, 1)  # [B,N,4,11,6]
    impaired = (_sample_std(segs, -1) < IMPAIRED_T).flatten(2).any(dim=2)

    centre = blocks[..., :, list(CENTRE)].flatten(2)
    surround = blocks[..., :, list(SURROUND)].flatten(2)
    ratio = _sample_std(centre, 2) / _sample_std(surround, 2)
    ratio = torch.nan_to_num(ratio, nan=0.0, posinf=float("inf"))  # 0/0 -> 0 as piqe.m; x/0 stays inf
    sig = var.sqrt()
    beta = (sig - ratio).abs() / torch.maximum(sig, ratio)  # NaN for an infinite ratio: never noisy
    noisy = sig > 2 * beta

    contrib = (impaired & active).double() * (1 - var) + (noisy & active).double() * var
    n_active = active.double().sum(dim=1)
    return (100.0 * (contrib.sum(dim=1) + 1.0) / (n_active + 1.0)).float()
