"""NIQE against the authors' MATLAB algorithm (computequality.m, computefeature.m, estimateaggdparam.m,
estimatemodelparam.m; Mittal et al. 2013).

No published MATLAB NIQE value exists for an image this environment has together with a pristine
model we may ship (the authors' modelparameters.mat and BasicSR's copy of it are not ours to commit),
so the checks are:

* ``_imresize_ref``: MATLAB ``imresize`` written again from imresize.m, checked against MATLAB/Octave
  outputs published on the web and, for the antialiased ×0.5 used by NIQE, against PyTorch's own
  antialiased bicubic away from the borders (the same kernel; only the border rule differs).
* ``_niqe_ref``: a literal float64 NumPy/SciPy transcription of the MATLAB scripts (whole-image
  filtering, per-block loops in blkproc's column-major order, argmin over the whole shape grid),
  compared feature by feature and score by score with the streaming implementation, with a
  pristine model fitted in the test.
* The AGGD estimator against closed forms: samples drawn from a known AGGD give back its shape,
  scales and mean.
* A blurred photo scores worse than its sharp original; memory stays bounded on a tall image.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.quality import niqe as N
from comfyui_gendeg.core.quality.matlab import grey_rows, resize_contributions
from scipy import ndimage, special
from skimage import data

# --- an independent MATLAB transcription ----------------------------------------------------------


def _kernel(name):
    if name == "bicubic":
        def f(x):
            a = np.abs(x)
            return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))
        return f, 4.0
    return (lambda x: np.maximum(0.0, 1 - np.abs(x))), 2.0  # bilinear (triangle)


def _resize_matrix(n_in, n_out, scale, method="bicubic", antialias=True):
    """Dense [n_out, n_in] matrix of imresize.m's contributions(): one output sample at a time."""
    h, width = _kernel(method)
    if scale < 1 and antialias:
        kernel, width = (lambda x: scale * h(scale * x)), width / scale
    else:
        kernel = h
    m = np.zeros((n_out, n_in))
    taps = int(np.ceil(width)) + 2
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = int(np.floor(u - width / 2))
        idx = np.arange(left, left + taps)
        w = kernel(u - idx)
        w = w / w.sum()
        for j, wj in zip(idx, w, strict=True):
            k = (j - 1) % (2 * n_in)  # symmetric padding: 1..n, n..1, 1..n, ...
            m[i - 1, k if k < n_in else 2 * n_in - 1 - k] += wj
    return m


def _imresize_ref(a, out_shape, method="bicubic", antialias=True):
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    rows = _resize_matrix(a.shape[0], out_shape[0], out_shape[0] / a.shape[0], method, antialias)
    cols = _resize_matrix(a.shape[1], out_shape[1], out_shape[1] / a.shape[1], method, antialias)
    return (rows @ a) @ cols.T


_GAM = np.arange(0.2, 10.0005, 0.001)
_R_GAM = special.gamma(2 / _GAM) ** 2 / (special.gamma(1 / _GAM) * special.gamma(3 / _GAM))


def _aggd_ref(vec):
    """estimateaggdparam.m"""
    vec = vec.ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.mean(vec[vec < 0] ** 2)) if np.any(vec < 0) else np.nan
        right = np.sqrt(np.mean(vec[vec > 0] ** 2)) if np.any(vec > 0) else np.nan
        g = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
        rn = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    d = (_R_GAM - rn) ** 2
    alpha = _GAM[0] if np.all(np.isnan(d)) else _GAM[np.nanargmin(d)]
    c = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return alpha, left * c, right * c


def _feature_ref(block):
    """computefeature.m"""
    a, bl, br = _aggd_ref(block)
    feat = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, bl, br = _aggd_ref(block * np.roll(block, shift, axis=(0, 1)))
        feat += [a, (br - bl) * special.gamma(2 / a) / special.gamma(1 / a), bl, br]
    return feat


def _window():
    x = np.arange(-3, 4)
    h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))  # fspecial('gaussian', 7, 7/6)
    return h / h.sum()


def _features_ref(grey, block=96):
    """computequality.m up to the features: (features [N,36] in blkproc order, sharpness [N])."""
    im = grey[: grey.shape[0] // block * block, : grey.shape[1] // block * block].astype(np.float64)
    nr, nc = im.shape[0] // block, im.shape[1] // block
    win = _window()
    feats, sharp = [], None
    for scale in (1, 2):
        mu = ndimage.correlate(im, win, mode="nearest")
        sigma = np.sqrt(np.abs(ndimage.correlate(im * im, win, mode="nearest") - mu * mu))
        struct = (im - mu) / (sigma + 1)
        b = block // scale
        feats.append([_feature_ref(struct[i * b : (i + 1) * b, j * b : (j + 1) * b]) for j in range(nc) for i in range(nr)])
        if scale == 1:
            sharp = np.array([sigma[i * b : (i + 1) * b, j * b : (j + 1) * b].mean() for j in range(nc) for i in range(nr)])
            im = _imresize_ref(im, (im.shape[0] // 2, im.shape[1] // 2))
    return np.concatenate([np.array(f) for f in feats], axis=1), sharp


def _to_row_major(f, nr, nc):
    """blkproc order (down the columns first) -> our order (along the rows first)."""
    return f.reshape(nc, nr, -1).transpose(1, 0, 2).reshape(nr * nc, -1)


def _nanmean_nancov(f):
    return np.nanmean(f, axis=0), np.cov(f[~np.isnan(f).any(axis=1)], rowvar=False)


def _niqe_ref(grey, mu_p, cov_p):
    f, _ = _features_ref(grey)
    mu_d, cov_d = _nanmean_nancov(f)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def _grey(name):
    a = getattr(data, name)()
    return grey_rows(a, np.arange(a.shape[0]), a.shape[1]), a


# --- imresize ---------------------------------------------------------------------------------------


def test_reference_imresize_reproduces_published_matlab_outputs():
    # MATLAB, bilinear upsampling to 5 samples (stackoverflow.com/questions/42020435, "imresize bilinear matlab")
    assert np.allclose(_imresize_ref([0, 1, 2], (1, 5), "bilinear"), [[0, 0.4, 1, 1.6, 2.0]])
    # bicubic x0.5 without antialiasing of reshape(0:15,4,4)' (Octave image package, the imresize.m algorithm;
    # the output is printed in the script's comments: 2.1875 4.3125 / 10.6875 12.8125)
    a = np.arange(16.0).reshape(4, 4)
    assert np.allclose(_imresize_ref(a, (2, 2), antialias=False), [[2.1875, 4.3125], [10.6875, 12.8125]])


@pytest.mark.parametrize("n", [96, 192, 250])
def test_core_resize_weights_equal_the_reference_and_pytorch_inside(n):
    w, idx = resize_contributions(n, 0.5)
    dense = np.zeros((n // 2 + n % 2, n))
    np.add.at(dense, (np.repeat(np.arange(dense.shape[0]), w.shape[1]), idx.ravel()), w.ravel())
    assert np.allclose(dense, _resize_matrix(n, dense.shape[0], 0.5), atol=1e-15)
    x = np.random.default_rng(n).random(n)
    t = torch.nn.functional.interpolate(torch.from_numpy(x).view(1, 1, 1, n), size=(1, n // 2), mode="bicubic",
                                        antialias=True, align_corners=False).view(-1).numpy()
    inner = slice(3, n // 2 - 3)  # the kernel reaches 4 input samples = 2 output samples into the border
    assert np.allclose((dense @ x)[inner], t[inner], atol=1e-12)
    assert not np.allclose((dense @ x)[:2], t[:2], atol=1e-6)  # MATLAB mirrors the borders, PyTorch renormalises


# --- AGGD against closed forms -----------------------------------------------------------------------


def _aggd_samples(alpha, bl, br, n, seed):
    """Draws from the AGGD: P(x < 0) = βl/(βl+βr); |x|/β = G^(1/α), G ~ Gamma(1/α, 1)."""
    rng = np.random.default_rng(seed)
    left = rng.random(n) < bl / (bl + br)
    mag = rng.gamma(1 / alpha, 1.0, n) ** (1 / alpha)
    return np.where(left, -bl * mag, br * mag)


@pytest.mark.parametrize(("alpha", "bl", "br"), [(0.8, 0.3, 0.5), (1.5, 0.5, 2.0), (2.0, 1.0, 1.0), (3.0, 0.7, 0.4)])
def test_aggd_fit_recovers_shape_scales_and_mean(alpha, bl, br):
    x = _aggd_samples(alpha, bl, br, 400_000, seed=int(alpha * 10))
    a, lft, rgt, mean = (float(v[0]) for v in N.fit_aggd(x[None]))
    assert a == pytest.approx(alpha, rel=0.03)
    assert lft == pytest.approx(bl, rel=0.02) and rgt == pytest.approx(br, rel=0.02)
    true_mean = (br - bl) * special.gamma(2 / alpha) / special.gamma(1 / alpha)  # AGGD mean, closed form
    assert mean == pytest.approx(true_mean, abs=0.02 * (bl + br))
    assert mean == pytest.approx(x.mean(), abs=0.02 * (bl + br))
    # the same numbers as estimateaggdparam.m transcribed literally
    ra, rl, rr = _aggd_ref(x)
    assert (a, lft, rgt) == pytest.approx((ra, rl, rr), rel=1e-12)


def test_aggd_fit_without_one_side_gives_nan_scales_like_matlab():
    a, lft, rgt, mean = N.fit_aggd(np.array([[0.0, 1.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))
    assert np.isnan(lft[0]) and rgt[0] > 0 and np.isnan(mean[0]) and a[0] == 0.2
    assert np.isnan(lft[1]) and np.isnan(rgt[1]) and a[1] == 0.2


def test_shape_lookup_equals_argmin_over_the_grid():
    rn = np.concatenate([np.random.default_rng(0).uniform(0.0, 0.8, 5000), N._R_GAM[::97], [np.nan, -1.0, 2.0]])
    want = [0 if np.isnan(v) else int(np.argmin((N._R_GAM - v) ** 2)) for v in rn]
    assert N._nearest_shape(rn).tolist() == want


# --- features and scores against the transcription ----------------------------------------------------

_CROPS = {"chelsea": (slice(0, 288), slice(0, 384)), "coffee": (slice(0, 192), slice(96, 480)),
          "astronaut": (slice(64, 352), slice(100, 388))}


@pytest.mark.parametrize("name", list(_CROPS))
def test_features_equal_the_matlab_transcription(name):
    grey, rgb = _grey(name)
    rs, cs = _CROPS[name]
    ref, ref_sharp = _features_ref(grey[rs, cs])
    nr, nc = grey[rs, cs].shape[0] // 96, grey[rs, cs].shape[1] // 96
    ours, sharp = N.image_features(np.ascontiguousarray(rgb[rs, cs]))
    assert ours.shape == (nr * nc, 36) and not np.isnan(ours).any()
    assert np.allclose(ours, _to_row_major(ref, nr, nc), rtol=1e-9, atol=1e-12)
    assert np.allclose(sharp, _to_row_major(ref_sharp[:, None], nr, nc)[:, 0], rtol=1e-12)
    # the tensor path (0..1 floats, as nodes pass images) gives the same features
    t = torch.from_numpy(np.ascontiguousarray(rgb[rs, cs])).permute(2, 0, 1).float() / 255
    assert np.array_equal(N.image_features(t)[0], ours)


def _photo(name):
    return np.ascontiguousarray(getattr(data, name)()[..., :3] if getattr(data, name)().ndim == 3 else getattr(data, name)())


_TRAIN = ("astronaut", "coffee", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="module")
def pristine():
    mu, cov = N.fit_pristine([_photo(n) for n in _TRAIN])
    return mu.numpy(), cov.numpy()


def test_pristine_fit_and_scores_equal_the_matlab_transcription(pristine):
    # estimatemodelparam.m on the reference features
    allf = []
    for n in _TRAIN:
        f, s = _features_ref(_grey(n)[0])
        allf.append(f[s > 0.75 * s.max()])
    mu_r, cov_r = _nanmean_nancov(np.concatenate(allf))
    mu, cov = pristine
    assert np.allclose(mu, mu_r, rtol=1e-9, atol=1e-12) and np.allclose(cov, cov_r, rtol=1e-7, atol=1e-12)
    # chelsea has no flat area: equal to rounding. camera has flat sky, where MSCN values that are 0 in
    # exact arithmetic get a sign from rounding, which depends on the order of the filter sums (MATLAB's
    # own imfilter has its own order): such blocks move the score by a few thousandths.
    for name, tol in (("chelsea", 1e-6), ("camera", 0.01)):
        grey, img = _grey(name)
        ours = N.niqe_distance(mu, cov, N.image_features(img)[0])
        assert ours == pytest.approx(_niqe_ref(grey, mu_r, cov_r), abs=tol)
        x = torch.from_numpy(img).float() / 255
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        assert float(N.niqe(x, torch.from_numpy(mu), torch.from_numpy(cov))[0]) == pytest.approx(ours, rel=1e-6)


def test_a_blurred_photo_scores_worse_than_the_sharp_original(pristine):
    mu, cov = pristine
    sharp = data.chelsea()
    x = torch.from_numpy(sharp).permute(2, 0, 1)[None].float() / 255
    blurred = [torch.from_numpy(ndimage.gaussian_filter(sharp.astype(float), (s, s, 0))).permute(2, 0, 1)[None].float() / 255
               for s in (1.0, 2.0)]
    scores = N.niqe(torch.cat([x, *blurred]), mu, cov)
    assert scores[0] < scores[1] < scores[2], scores


# --- memory, errors, model files ---------------------------------------------------------------------


def _peak_bytes(img):
    tracemalloc.start()
    try:
        N.image_features(img)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_feature_memory_is_bounded_by_a_block_row_not_the_image():
    rng = np.random.default_rng(0)
    width = 192
    short, tall = (rng.integers(0, 256, (96 * rows, width), dtype=np.uint8) for rows in (8, 64))
    band = 96 * width * 8  # one row of blocks in float64
    p_short, p_tall = _peak_bytes(short), _peak_bytes(tall)
    # 8x the rows: the features list grows (36 floats per block), the working set does not
    assert p_tall < 40 * band, (p_tall, band)
    assert p_tall < 1.25 * p_short + 64 * 36 * 8 * 4, (p_short, p_tall)
    assert p_tall < tall.nbytes * 8 / 4  # far below a float64 copy of the image (the old code made several)


def test_niqe_errors_and_model_files(tmp_path):
    mu, cov = torch.zeros(36), torch.eye(36)
    with pytest.raises(InputError, match="two 96x96 blocks"):
        N.niqe(torch.rand(1, 3, 96, 150), mu, cov)
    with pytest.raises(WeightsError, match="mu"):
        N.niqe(torch.rand(1, 3, 96, 200), torch.zeros(10), cov)
    with pytest.raises(InputError, match="even"):
        N.image_features(np.zeros((100, 100), np.uint8), block=15)
    with pytest.raises(InputError, match="usable blocks"):
        N.niqe(torch.full((1, 1, 96, 192), 0.5), mu, cov)
    # a model written by the earlier (variance-based) feature code is refused with the command to refit
    from safetensors.torch import save_file

    save_file({"mu": torch.zeros(36, dtype=torch.float64), "cov": torch.eye(36, dtype=torch.float64)},
              str(tmp_path / "old.safetensors"), metadata={"format": "gendeg-niqe", "block": "96"})
    with pytest.raises(WeightsError, match="fit-niqe"):
        N.load_model(tmp_path / "old.safetensors")
    # BasicSR's .npz copy of the authors' parameters uses other key names
    rng = np.random.default_rng(1)
    a = rng.normal(size=(36, 36))
    np.savez(tmp_path / "niqe_pris_params.npz", mu_pris_param=rng.normal(size=(1, 36)), cov_pris_param=a @ a.T,
             gaussian_window=np.ones((7, 7)))
    mu2, cov2, block = N.load_model(tmp_path / "niqe_pris_params.npz")
    assert mu2.shape == (36,) and np.allclose(cov2.numpy(), a @ a.T) and block == 96
