"""NIQE (Mittal, Soundararajan, Bovik 2013): distance of an image's natural-scene statistics
to a multivariate Gaussian (MVG) fitted on pristine images.

Features (as the authors' MATLAB code): grey in 0..255, cropped to a multiple of 96;
at two scales (the second is a ×0.5 bicubic antialiased resize), MSCN coefficients (7×7
Gaussian σ 7/6, replicate border, C = 1) are cut into non-overlapping blocks (96 px at
scale 1, 48 at scale 2). Per block, 18 features: a GGD fit of the MSCN values (shape,
variance) and, for the four neighbour products (horizontal, vertical, two diagonals,
circularly shifted within the block), an AGGD fit (shape, mean, left and right variance).
Shapes are found by moment matching on the grid 0.2:0.001:10.

* Pristine model: mean ``mu`` [36] and covariance ``cov`` [36,36] of the block features of
  clean images, keeping only blocks whose sharpness (mean local σ) exceeds 0.75× the
  image's sharpest block. :func:`fit_pristine` computes it (``gendeg quality fit-niqe``);
  the authors' parameters can be stored in the same format (see the manifest).
* Score: √((μp − μd)ᵀ ((Σp + Σd)/2)⁺ (μp − μd)) with the test image's block mean/covariance;
  lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError, WeightsError
from ..image import check_image
from .piqe import mscn, to_grey255

BLOCK = 96
SHARPNESS_T = 0.75
_GRID = torch.arange(200, 10001, dtype=torch.float64) / 1000.0  # 0.2 .. 10.0 step 0.001


def _lgamma(x: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(x)


_R_GGD = torch.exp(_lgamma(1 / _GRID) + _lgamma(3 / _GRID) - 2 * _lgamma(2 / _GRID))
_R_AGGD = torch.exp(2 * _lgamma(2 / _GRID) - _lgamma(1 / _GRID) - _lgamma(3 / _GRID))


def fit_ggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean generalised Gaussian fit of each row of ``x`` [N,M]: (shape α [N], variance [N])."""
    x = x.double()
    var = x.pow(2).mean(dim=1)
    e = x.abs().mean(dim=1)
    rho = var / e.pow(2)
    idx = (rho[:, None] - _R_GGD.to(x.device)[None]).abs().argmin(dim=1)
    return _GRID.to(x.device)[idx], var


def fit_aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric GGD fit of each row of ``x`` [N,M]: (shape α, mean, left variance, right variance)."""
    x = x.double()
    neg, pos = (x < 0).double(), (x > 0).double()
    left = ((x * x * neg).sum(dim=1) / neg.sum(dim=1).clamp_min(1)).sqrt()
    right = ((x * x * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1)).sqrt()
    gammahat = left / right
    rhat = x.abs().mean(dim=1).pow(2) / x.pow(2).mean(dim=1)
    rnorm = rhat * (gammahat.pow(3) + 1) * (gammahat + 1) / (gammahat.pow(2) + 1).pow(2)
    idx = (_R_AGGD.to(x.device)[None] - rnorm[:, None]).pow(2).argmin(dim=1)
    alpha = _GRID.to(x.device)[idx]
    const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    mean = (right - left) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha)) * const
    return alpha, mean, left.pow(2), right.pow(2)


def _block_features(blocks: torch.Tensor) -> torch.Tensor:
    """[N,h,w] MSCN blocks -> [N,18] features."""
    n = blocks.shape[0]
    flat = blocks.reshape(n, -1)
    a, v = fit_ggd(flat)
    feats = [a, v]
    # MATLAB circshift(A, [dy dx]) moves content down/right: same as torch.roll.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        shifted = torch.roll(blocks, shifts=(dy, dx), dims=(1, 2)).reshape(n, -1)
        feats.extend(fit_aggd(flat * shifted))
    return torch.stack(feats, dim=1)


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """[1,1,H,W] (H, W multiples of ``size``) -> [N,size,size] row-major blocks."""
    return F.unfold(x, size, stride=size).transpose(1, 2).reshape(-1, size, size)


def image_features(grey255: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N,36] and sharpness [N] of the blocks of one ``[1,1,H,W]`` grey image (0..255)."""
    h, w = grey255.shape[-2:]
    hh, ww = (h // block) * block, (w // block) * block
    if hh == 0 or ww == 0:
        raise InputError(f"NIQE needs images of at least {block}x{block} pixels, got {w}x{h}")
    im = grey255[..., :hh, :ww].double()
    feats = []
    sharp = None
    for scale in (1, 2):
        norm, sigma = mscn(im)
        size = block // scale
        feats.append(_block_features(_blocks(norm, size)))
        if scale == 1:
            sharp = _blocks(sigma, size).flatten(1).mean(dim=1)
            im = F.interpolate(im, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    return torch.cat(feats, dim=1), sharp


def _mean_cov(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = f[torch.isfinite(f).all(dim=1)]
    if f.shape[0] < 2:
        raise InputError("NIQE: fewer than two usable blocks; use a larger or less uniform image")
    return f.mean(dim=0), torch.cov(f.T)


def niqe(image: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor, *, block: int = BLOCK) -> torch.Tensor:
    """``[B]`` NIQE scores (lower is better) of ``[B,C,H,W]`` images in 0..1 against a pristine MVG.

    ``block`` must be the block size the model was fitted with (96 for the authors' model).
    """
    check_image(image, "image")
    if mu.numel() != 36 or tuple(cov.shape) != (36, 36):
        raise WeightsError(f"NIQE model: expected mu [36] and cov [36,36], got {tuple(mu.shape)} and {tuple(cov.shape)}")
    mu_p, cov_p = mu.double().flatten().to(image.device), cov.double().to(image.device)
    grey = to_grey255(image)
    out = []
    for i in range(grey.shape[0]):
        f, _ = image_features(grey[i : i + 1], block)
        mu_d, cov_d = _mean_cov(f)
        d = (mu_p - mu_d)[None]
        inv = torch.linalg.pinv((cov_p + cov_d) / 2)
        out.append(torch.sqrt((d @ inv @ d.T).clamp_min(0)).squeeze())
    return torch.stack(out).float()


def fit_pristine(images: Iterable[torch.Tensor], *, block: int = BLOCK, sharpness: float = SHARPNESS_T,
                 progress: Callable[[int, int], None] | None = None, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the pristine MVG (mu [36], cov [36,36]) from clean ``[1,C,H,W]`` images in 0..1."""
    feats = []
    n = 0
    for n, img in enumerate(images, start=1):
        check_image(img, "image")
        for j in range(img.shape[0]):
            f, s = image_features(to_grey255(img[j : j + 1]), block)
            feats.append(f[s > sharpness * s.max()] if s.max() > 0 else f[:0])
        if progress is not None:
            progress(n, total or n)
    if n == 0:
        raise InputError("NIQE fit: no images given")
    allf = torch.cat(feats)
    if allf.shape[0] < 37:
        raise InputError(
            f"NIQE fit: only {allf.shape[0]} sharp {block}x{block} blocks found; a stable 36-D covariance needs "
            "many more: add more (and larger) clean images"
        )
    return _mean_cov(allf)


def save_model(path: str | Path, mu: torch.Tensor, cov: torch.Tensor, source: str = "", block: int = BLOCK) -> Path:
    """Write a NIQE model as safetensors (``mu`` [36], ``cov`` [36,36], float64; block size in the metadata) atomically."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes

    path = Path(path)
    data = st_save({"mu": mu.double().contiguous(), "cov": cov.double().contiguous()}, metadata={"format": "gendeg-niqe", "source": source, "block": str(block)})
    atomic_write_bytes(path, data)
    return path


def load_model(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Read a NIQE model -> (mu, cov, block size): our safetensors/npz (``mu``, ``cov``), or the
    authors' ``.mat`` (``mu_prisparam``, ``cov_prisparam``; needs scipy). Block size 96 unless stored."""
    path = Path(path)
    block = BLOCK
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from ..weights import load_safetensors

        sd = load_safetensors(path)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                block = int((fh.metadata() or {}).get("block", BLOCK))
        except (OSError, ValueError):
            pass
    elif suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            sd = {k: torch.from_numpy(z[k]) for k in z.files}
    elif suffix == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError as exc:  # pragma: no cover
            raise WeightsError(f"{path.name}: reading .mat files needs scipy (pip install scipy)") from exc
        m = loadmat(str(path))
        sd = {"mu": torch.from_numpy(m["mu_prisparam"]), "cov": torch.from_numpy(m["cov_prisparam"])}
    else:
        raise WeightsError(f"{path.name}: expected a .safetensors, .npz or .mat NIQE model")
    if "mu" not in sd or "cov" not in sd:
        raise WeightsError(f"{path.name}: a NIQE model needs tensors 'mu' and 'cov', found {sorted(sd)}")
    mu, cov = sd["mu"].double().flatten(), sd["cov"].double()
    if mu.numel() != 36 or tuple(cov.shape) != (36, 36) or not math.isfinite(float(cov.sum())):
        raise WeightsError(f"{path.name}: expected mu [36] and cov [36,36] (finite), got {tuple(mu.shape)}, {tuple(cov.shape)}")
    return mu, cov, block
