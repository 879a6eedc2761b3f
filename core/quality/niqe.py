"""NIQE (Mittal, Soundararajan, Bovik 2013) as the authors' MATLAB release computes it.

Per image (``computequality.m``): MATLAB ``rgb2gray`` of the 8-bit image (0..255), cropped to
a multiple of the block size (96). At two scales — the image, then ``imresize(im, 0.5)``
(bicubic, antialiased, mirrored borders) — MSCN coefficients (I − μ)/(σ + 1), μ and σ from
a 7×7 Gaussian window (σ = 7/6) with replicated borders, are cut into non-overlapping
blocks (96 px at scale 1, 48 at scale 2). Per block, 18 features (``computefeature.m``):

* MSCN: AGGD shape α and the mean of the left and right *scale* parameters (βl + βr)/2;
* each of the four neighbour products (circular shifts [0 1], [1 0], [1 1], [1 −1] within
  the block): AGGD shape α, mean (βr − βl)·Γ(2/α)/Γ(1/α), βl and βr.

AGGD fit (``estimateaggdparam.m``): σl, σr = root mean square of the negative / positive
values, γ̂ = σl/σr, r̂ = mean|x|²/mean(x²), R̂ = r̂(γ̂³+1)(γ̂+1)/(γ̂²+1)²; α is the point of the
grid 0.2:0.001:10 where Γ(2/α)²/(Γ(1/α)Γ(3/α)) is nearest to R̂; β = σ·√(Γ(1/α)/Γ(3/α)).
A block side without values gives NaN features (as MATLAB), which ``nanmean`` / ``nancov``
(rows with a NaN dropped) leave out.

Score: √((μp − μd)ᵀ ((Σp + Σd)/2)⁺ (μp − μd)) with the image's block mean and covariance
(lower is better). The pristine model (μp [36], Σp [36,36]) is the authors' (``--from-mat``)
or fitted by :func:`fit_pristine` on clean images, keeping only blocks whose sharpness (mean
local σ) exceeds 0.75 × the image's sharpest block (``estimatemodelparam.m``).

Memory: features are computed one row of blocks at a time, reading only the rows of the
image that row needs (plus 3..13 rows of context), so the working memory is a few block
rows whatever the image height, and the time is linear in the number of pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, WeightsError
from ..image import check_image
from .matlab import filter_rows, gaussian_window, grey_rows, image_size, resize_contributions

BLOCK = 96
SHARPNESS_T = 0.75
FEATURES = 36
#: Written into fitted models; models of earlier versions used other block features.
FEATURE_VERSION = "computefeature"

_GAM = np.arange(200, 10001, dtype=np.float64) / 1000.0  # MATLAB 0.2:0.001:10
_G = np.vectorize(math.gamma, otypes=[np.float64])
_R_GAM = _G(2 / _GAM) ** 2 / (_G(1 / _GAM) * _G(3 / _GAM))  # increasing in α
_BETA_C = np.sqrt(_G(1 / _GAM) / _G(3 / _GAM))
_MEAN_C = _G(2 / _GAM) / _G(1 / _GAM)
_WINDOW = gaussian_window(7, 7 / 6)

Image = torch.Tensor | np.ndarray


def _nearest_shape(rhatnorm: np.ndarray) -> np.ndarray:
    """Index of the grid point minimising (r_gam − R̂)² (first on ties; index 0 for NaN, as MATLAB's ``min``)."""
    i = np.clip(np.searchsorted(_R_GAM, np.nan_to_num(rhatnorm, nan=0.0)), 1, len(_R_GAM) - 1)
    lo = (_R_GAM[i - 1] - rhatnorm) ** 2
    hi = (_R_GAM[i] - rhatnorm) ** 2
    idx = np.where(lo <= hi, i - 1, i)
    idx[np.isnan(rhatnorm)] = 0
    return idx


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AGGD fit of each row of ``x`` [N, M]: (shape α, left scale βl, right scale βr, mean).

    The mean is (βr − βl)·Γ(2/α)/Γ(1/α). Rows without negative (positive) values get
    NaN for βl (βr) and α = 0.2, as ``estimateaggdparam.m`` does in MATLAB.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    sq = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.where(neg, sq, 0.0).sum(axis=1) / neg.sum(axis=1))
        right = np.sqrt(np.where(pos, sq, 0.0).sum(axis=1) / pos.sum(axis=1))
        gammahat = left / right
        rhat = np.abs(x).mean(axis=1) ** 2 / sq.mean(axis=1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    idx = _nearest_shape(rhatnorm)
    betal, betar = left * _BETA_C[idx], right * _BETA_C[idx]
    return _GAM[idx], betal, betar, (betar - betal) * _MEAN_C[idx]


def block_features(mscn: np.ndarray, size: int) -> np.ndarray:
    """18 features per ``size``×``size`` block of one row of blocks ``[size, n*size]`` -> ``[n, 18]``."""
    n = mscn.shape[1] // size
    blocks = np.ascontiguousarray(mscn[:, : n * size].reshape(size, n, size).transpose(1, 0, 2))
    flat = blocks.reshape(n, -1)
    a, bl, br, _ = fit_aggd(flat)
    feats = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # MATLAB circshift(block, shift)
        pair = flat * np.roll(blocks, shift, axis=(1, 2)).reshape(n, -1)
        a, bl, br, mean = fit_aggd(pair)
        feats += [a, mean, bl, br]
    return np.stack(feats, axis=1)


class _HalfScale:
    """Rows of ``imresize(grey, 0.5)`` (MATLAB bicubic with antialiasing) computed on demand."""

    def __init__(self, image: Image, height: int, width: int):
        self.image, self.height, self.width = image, height, width
        self.wc, self.ic = resize_contributions(width, 0.5)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        wr, ir = resize_contributions(self.height, 0.5, out_index=rows)
        need, inverse = np.unique(ir, return_inverse=True)
        src = grey_rows(self.image, need, self.width)
        inverse = inverse.reshape(ir.shape)
        vert = wr[:, 0, None] * src[inverse[:, 0]]
        for p in range(1, ir.shape[1]):
            vert = vert + wr[:, p, None] * src[inverse[:, p]]
        out = self.wc[None, :, 0] * vert[:, self.ic[:, 0]]
        for p in range(1, self.ic.shape[1]):
            out = out + self.wc[None, :, p] * vert[:, self.ic[:, p]]
        return out


def _mscn_band(rows: Callable[[np.ndarray], np.ndarray], r0: int, r1: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(MSCN, σ) of rows r0..r1 of an image of ``height`` rows whose rows ``rows(idx)`` returns."""
    pad = len(_WINDOW) // 2
    x = rows(np.clip(np.arange(r0 - pad, r1 + pad), 0, height - 1))
    mu = filter_rows(x, _WINDOW)
    sigma = np.sqrt(np.abs(filter_rows(x * x, _WINDOW) - mu * mu))
    return (x[pad:-pad] - mu) / (sigma + 1.0), sigma


def _check_block(block: int) -> None:
    if block < 8 or block % 2:
        raise InputError(f"NIQE block size must be an even number of at least 8 pixels (the authors use 96), got {block}")


def image_features(image: Image, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Block features ``[N, 36]`` and scale-1 sharpness ``[N]`` (mean local σ) of one image.

    ``image``: a ``[C,H,W]`` tensor in 0..1 or an 8-bit ``[H,W(,C)]`` array. Streams over
    rows of blocks (bounded memory).
    """
    _check_block(block)
    h, w = image_size(image)
    nr, nc = h // block, w // block
    if nr * nc < 2:
        raise InputError(
            f"NIQE needs at least two {block}x{block} blocks (e.g. {2 * block}x{block} pixels), got a {w}x{h} image"
        )
    h1, w1 = nr * block, nc * block
    half = _HalfScale(image, h1, w1)
    h2, b2 = h1 // 2, block // 2
    feats, sharp = [], []
    for k in range(nr):
        m1, s1 = _mscn_band(lambda idx: grey_rows(image, idx, w1), k * block, (k + 1) * block, h1)
        f1 = block_features(m1, block)
        sharp.append(s1.reshape(block, nc, block).mean(axis=(0, 2)))
        m2, _ = _mscn_band(half.rows, k * b2, (k + 1) * b2, h2)
        feats.append(np.concatenate([f1, block_features(m2, b2)], axis=1))
    return np.concatenate(feats), np.concatenate(sharp)


def _mean_cov(f: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``nanmean`` (per column) and ``nancov`` (rows with a NaN dropped, N − 1) of block features."""
    complete = f[~np.isnan(f).any(axis=1)]
    if complete.shape[0] < 2:
        raise InputError(f"{what}: fewer than two usable blocks (flat image?); use a larger or more textured image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(f, axis=0)
    return mu, np.cov(complete, rowvar=False)


def _pinv(a: np.ndarray) -> np.ndarray:
    """MATLAB ``pinv``: singular values above max(size)·eps(‖A‖) are inverted."""
    u, s, vt = np.linalg.svd(a)
    keep = s > max(a.shape) * np.spacing(s[0])
    return (vt[keep].T / s[keep]) @ u[:, keep].T


def niqe_distance(mu_p: np.ndarray, cov_p: np.ndarray, features: np.ndarray) -> float:
    """NIQE of an image's block features ``[N, 36]`` against the pristine MVG."""
    mu_d, cov_d = _mean_cov(features, "NIQE")
    d = np.asarray(mu_p, dtype=np.float64).ravel() - mu_d
    q = float(d @ _pinv((np.asarray(cov_p, dtype=np.float64) + cov_d) / 2) @ d)
    return math.sqrt(max(q, 0.0))


def _check_model(mu: torch.Tensor | np.ndarray, cov: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu_n = np.asarray(mu.detach().cpu() if isinstance(mu, torch.Tensor) else mu, dtype=np.float64).ravel()
    cov_n = np.asarray(cov.detach().cpu() if isinstance(cov, torch.Tensor) else cov, dtype=np.float64)
    if mu_n.size != FEATURES or cov_n.shape != (FEATURES, FEATURES):
        raise WeightsError(f"NIQE model: expected mu [36] and cov [36,36], got {tuple(mu_n.shape)} and {tuple(cov_n.shape)}")
    return mu_n, cov_n


def niqe(image: torch.Tensor, mu: torch.Tensor | np.ndarray, cov: torch.Tensor | np.ndarray, *, block: int = BLOCK) -> torch.Tensor:
    """``[B]`` NIQE scores (lower is better) of ``[B,C,H,W]`` images in 0..1 against a pristine MVG.

    ``block`` must be the block size the model was fitted with (96 for the authors' model).
    """
    check_image(image, "image")
    mu_n, cov_n = _check_model(mu, cov)
    out = [niqe_distance(mu_n, cov_n, image_features(image[i], block)[0]) for i in range(image.shape[0])]
    return torch.tensor(out, dtype=torch.float32)


def _as_images(item: Image) -> list[Image]:
    if isinstance(item, torch.Tensor):
        check_image(item, "image")
        return [item[j] for j in range(item.shape[0])]
    arr = np.asarray(item)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise InputError(f"NIQE fit: expected an 8-bit [H,W] or [H,W,C] array or a float image tensor, got {arr.dtype} {arr.shape}")
    return [arr]


def fit_pristine(images: Iterable[Image], *, block: int = BLOCK, sharpness: float = SHARPNESS_T,
                 progress: Callable[[int, int], None] | None = None, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the pristine MVG (mu [36], cov [36,36], float64) on clean images (``estimatemodelparam.m``).

    ``images``: ``[B,C,H,W]`` tensors in 0..1 or 8-bit ``[H,W(,C)]`` arrays. Per image, only
    blocks whose sharpness exceeds ``sharpness`` × the image's sharpest block are kept.
    """
    _check_block(block)
    kept = []
    n = 0
    for n, item in enumerate(images, start=1):
        for img in _as_images(item):
            f, s = image_features(img, block)
            kept.append(f[s > sharpness * s.max()])
        if progress is not None:
            progress(n, total or n)
    if n == 0:
        raise InputError("NIQE fit: no images given")
    allf = np.concatenate(kept)
    if allf.shape[0] < FEATURES + 1:
        raise InputError(
            f"NIQE fit: only {allf.shape[0]} sharp {block}x{block} blocks found; a stable 36-D covariance needs "
            "many more: add more (and larger) clean images"
        )
    mu, cov = _mean_cov(allf, "NIQE fit")
    return torch.from_numpy(mu), torch.from_numpy(cov)


def save_model(path: str | Path, mu: torch.Tensor, cov: torch.Tensor, source: str = "", block: int = BLOCK) -> Path:
    """Write a NIQE model as safetensors (``mu`` [36], ``cov`` [36,36], float64; block size in the metadata) atomically."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes

    path = Path(path)
    meta = {"format": "gendeg-niqe", "features": FEATURE_VERSION, "source": source, "block": str(block)}
    data = st_save({"mu": torch.as_tensor(mu).double().contiguous(), "cov": torch.as_tensor(cov).double().contiguous()}, metadata=meta)
    atomic_write_bytes(path, data)
    return path


#: Key names of the same two arrays in other releases: the authors' .mat, BasicSR's .npz.
_ALIASES = {"mu": ("mu", "mu_prisparam", "mu_pris_param"), "cov": ("cov", "cov_prisparam", "cov_pris_param")}


def _pick(sd: dict, name: str, path: Path):
    for key in _ALIASES[name]:
        if key in sd:
            return sd[key]
    raise WeightsError(f"{path.name}: a NIQE model needs tensors 'mu' and 'cov' (or mu_prisparam/cov_prisparam), found {sorted(sd)}")


def load_model(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Read a NIQE model -> (mu, cov, block size): our safetensors, an ``.npz`` (``mu``/``cov`` or
    BasicSR's ``mu_pris_param``/``cov_pris_param``), or the authors' ``.mat`` (``mu_prisparam``,
    ``cov_prisparam``; needs scipy). Block size 96 unless stored."""
    path = Path(path)
    block = BLOCK
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        from ..weights import load_safetensors

        sd = load_safetensors(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
        except (OSError, ValueError):
            meta = {}
        block = int(meta.get("block", BLOCK))
        if meta.get("format") == "gendeg-niqe" and meta.get("features") != FEATURE_VERSION:
            raise WeightsError(
                f"{path.name} was fitted by an earlier version of this pack with other block features; fit it again "
                "with `gendeg quality fit-niqe FOLDER OUT.safetensors` (or convert the authors' .mat with --from-mat)"
            )
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            sd = {k: torch.from_numpy(z[k]) for k in z.files}
    elif suffix == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError as exc:  # pragma: no cover
            raise WeightsError(f"{path.name}: reading .mat files needs scipy (pip install scipy)") from exc
        m = loadmat(str(path))
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in m.items() if not k.startswith("__")}
    else:
        raise WeightsError(f"{path.name}: expected a .safetensors, .npz or .mat NIQE model")
    mu, cov = _pick(sd, "mu", path).double().flatten(), _pick(sd, "cov", path).double()
    if mu.numel() != FEATURES or tuple(cov.shape) != (FEATURES, FEATURES) or not math.isfinite(float(cov.sum())):
        raise WeightsError(f"{path.name}: expected mu [36] and cov [36,36] (finite), got {tuple(mu.shape)}, {tuple(cov.shape)}")
    return mu, cov, block
