"""PSNR / SSIM / MS-SSIM against scikit-image and piq, ideal values, monotonicity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.quality import api, fullref
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _natural(name: str, size: int = 96) -> torch.Tensor:
    a = getattr(data, name)()
    a = a[:size, :size] if a.ndim == 2 else a[:size, :size, :3]
    t = torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    return (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]).contiguous()


def _sk_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy()
    return structural_similarity(x, y, channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _pairs():
    g = torch.Generator().manual_seed(0)
    out = [("random", torch.rand(1, 3, 70, 83, generator=g), torch.rand(1, 3, 70, 83, generator=g))]
    for name in ("astronaut", "chelsea", "camera"):
        x = _natural(name)
        y = (x + 0.08 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        out.append((name, x, y))
    return out


@pytest.mark.parametrize("name,x,y", _pairs(), ids=[p[0] for p in _pairs()])
def test_psnr_ssim_match_scikit_image(name, x, y):
    assert abs(float(fullref.ssim(x, y)) - _sk_ssim(x, y)) < 1e-4
    assert abs(float(fullref.psnr(x, y)) - peak_signal_noise_ratio(x.double().numpy(), y.double().numpy(), data_range=1)) < 1e-4


def test_y_channel_and_crop_match_an_independent_computation():
    x = _natural("coffee")
    y = (x * 0.9 + 0.05).clamp(0, 1)
    xn, yn = x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy()
    to_y = lambda a: (16.0 + a @ np.array([65.481, 128.553, 24.966])) / 255.0  # noqa: E731
    yx, yy = to_y(xn)[4:-4, 4:-4], to_y(yn)[4:-4, 4:-4]
    want_psnr = 10 * np.log10(1.0 / np.mean((yx - yy) ** 2))
    assert abs(float(fullref.psnr(x, y, y_channel=True, crop=4)) - want_psnr) < 1e-4
    want_ssim = structural_similarity(yx, yy, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(float(fullref.ssim(x, y, y_channel=True, crop=4)) - want_ssim) < 1e-4


def test_ms_ssim_matches_piq_on_odd_sizes():
    import piq

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 171, 165, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    want = piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none")
    assert torch.allclose(fullref.ms_ssim(x, y), want.float(), atol=1e-5)


def test_batched_values_equal_per_image_values_and_one_reference_serves_a_batch():
    x = _natural("astronaut")
    ys = torch.cat([(x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1) for s in (0.02, 0.1)])
    batched = fullref.ssim(x, ys)
    assert batched.shape == (2,)
    for i in range(2):
        assert abs(float(batched[i]) - _sk_ssim(x, ys[i : i + 1])) < 1e-4


def test_identical_images_give_the_ideal_values():
    x = _natural("chelsea", 170)
    s = api.score(x, ["psnr", "ssim", "ms_ssim"], x)
    assert s["psnr"].item() == float("inf")
    assert s["ssim"].item() == pytest.approx(1.0, abs=1e-6)
    assert s["ms_ssim"].item() == pytest.approx(1.0, abs=1e-6)


def test_scores_get_worse_as_degradation_grows():
    x = _natural("astronaut", 170)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    ys = torch.cat([(x + s * noise).clamp(0, 1) for s in (0.01, 0.03, 0.1, 0.3)])
    s = api.score(ys, ["psnr", "ssim", "ms_ssim"], x)
    for m in ("psnr", "ssim", "ms_ssim"):
        assert torch.all(s[m][1:] < s[m][:-1]), (m, s[m])


def test_grey_and_alpha_inputs():
    x = _natural("camera")
    y = (x * 0.8).clamp(0, 1)
    rgba_x = torch.cat([x.expand(-1, 3, -1, -1), torch.ones_like(x)], 1)
    rgba_y = torch.cat([y.expand(-1, 3, -1, -1), torch.zeros_like(y)], 1)  # alpha is ignored
    assert float(fullref.psnr(rgba_x, rgba_y)) == pytest.approx(float(fullref.psnr(x, y)), abs=1e-4)


def test_bad_inputs_give_clear_errors():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="same size"):
        fullref.psnr(x, torch.rand(1, 3, 32, 30))
    with pytest.raises(InputError, match="channels"):
        fullref.ssim(x, torch.rand(1, 1, 32, 32))
    with pytest.raises(InputError, match="empty"):
        fullref.psnr(torch.rand(0, 3, 32, 32), torch.rand(0, 3, 32, 32))
    with pytest.raises(InputError, match="at least 161x161"):
        fullref.ms_ssim(x, x)
    with pytest.raises(InputError, match="batch"):
        fullref.psnr(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32))
    with pytest.raises(InputError, match="NaN"):
        fullref.psnr(x, torch.full_like(x, float("nan")))
    with pytest.raises(InputError, match="unknown metric"):
        api.parse_metrics("psnr,sharpness")
    with pytest.raises(InputError, match="reference"):
        api.score(x, ["psnr"])
    with pytest.raises(InputError, match="GenDegIQALoader"):
        api.score(x, ["lpips"], x)
