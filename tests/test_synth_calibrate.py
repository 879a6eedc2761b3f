"""GenDeg intensity measure (exactly the official recipe) and the synthesizer's calibration to a requested μ."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.intensity import measure_intensity, pil_lanczos_resize
from comfyui_gendeg.core.synth import TYPES, get
from comfyui_gendeg.core.synth.calibrate import degrade_at_strength, degrade_to_mu, reachable_range
from helpers import scene
from PIL import Image


def official_mu_sigma(clean: np.ndarray, degraded: np.ndarray) -> tuple[float, float]:
    """GenDeg's edit_dataset.py recipe: 8-bit RGB, PIL Lanczos to 256x256, mean/std of |a/255 - b/255|."""
    a = Image.fromarray(clean).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
    b = Image.fromarray(degraded).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
    d = np.abs(np.array(a) / 255 - np.array(b) / 255).flatten()
    return float(d.mean()), float(d.std())


# Shapes where Pillow runs the horizontal pass first (every Pillow version; newer ones may
# swap the order for tall reductions, see core/intensity.py).
@pytest.mark.parametrize("size", [(300, 517), (100, 60), (256, 256), (37, 999), (301, 300)])
def test_lanczos_resize_is_bit_exact_with_pillow(size):
    rng = np.random.default_rng(sum(size))
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(arr).resize((256, 256), Image.Resampling.LANCZOS))
    got = pil_lanczos_resize(torch.from_numpy(arr).permute(2, 0, 1)[None].double(), (256, 256))
    assert np.array_equal(got[0].permute(1, 2, 0).numpy().astype(np.uint8), ref)


@pytest.mark.parametrize("size", [(300, 517), (100, 60), (256, 256), (37, 999), (301, 300)])
def test_measure_reduction_is_pillows_8bit_lanczos_block_by_block(size, monkeypatch):
    from comfyui_gendeg.core import intensity

    monkeypatch.setattr(intensity, "CACHE_PIXELS", 3000)  # many row blocks of the fast 8-bit path
    rng = np.random.default_rng(sum(size))
    arr = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    x[0] += torch.from_numpy(rng.uniform(-0.4, 0.4, x[0].shape)).float() / 255  # off-grid values round back
    got = intensity.reduce_for_measure(x.clamp(0, 1))
    for i in range(2):
        ref = np.asarray(Image.fromarray(arr[i]).resize((256, 256), Image.Resampling.LANCZOS))
        assert np.array_equal(got[i].permute(1, 2, 0).numpy().astype(np.uint8), ref)
    # mean and std from exact integer sums: the float32 of the official float64 computation
    degraded = np.clip(arr.astype(int) + rng.integers(-60, 61, arr.shape), 0, 255).astype(np.uint8)
    mu, sigma = measure_intensity(x.clamp(0, 1), torch.from_numpy(degraded).permute(0, 3, 1, 2).float() / 255)
    for i in range(2):
        ref_mu, ref_sigma = official_mu_sigma(arr[i], degraded[i])
        assert float(mu[i]) == float(np.float32(ref_mu)) and float(sigma[i]) == float(np.float32(ref_sigma))


def test_measure_intensity_equals_the_official_computation():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (2, 90, 130, 3), dtype=np.uint8)
    degraded = np.clip(clean.astype(int) + rng.integers(-40, 41, clean.shape), 0, 255).astype(np.uint8)
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    mu, sigma = measure_intensity(t(clean), t(degraded))
    for i in range(2):
        ref_mu, ref_sigma = official_mu_sigma(clean[i], degraded[i])
        assert float(mu[i]) == pytest.approx(ref_mu, abs=1e-6)
        assert float(sigma[i]) == pytest.approx(ref_sigma, abs=1e-6)
    # grey (converted to RGB like PIL) and pairs of different sizes (each is squashed to 256x256)
    g_mu, _ = measure_intensity(t(clean)[:, :1], t(degraded)[:, :1])
    ref = official_mu_sigma(clean[0, ..., 0], degraded[0, ..., 0])[0]
    assert float(g_mu[0]) == pytest.approx(ref, abs=1e-6)
    small = torch.nn.functional.interpolate(t(degraded), size=(64, 64), mode="area")
    assert measure_intensity(t(clean), small)[0].shape == (2,)
    with pytest.raises(InputError, match="batches differ"):
        measure_intensity(t(clean), t(degraded)[:1])


@pytest.mark.parametrize("kind", ["haze", "rain", "snow", "motion_blur", "low_light", "raindrop", "noise"])
def test_calibration_reaches_each_images_target_within_tolerance(kind):
    x = torch.cat([scene(1, 48, 64, seed=1), scene(1, 48, 64, seed=2)])
    lo, hi = reachable_range(x, kind, seed=3)
    targets = lo + (hi - lo) * torch.tensor([0.3, 0.7])  # inside each image's reachable range
    r = degrade_to_mu(x, kind, targets, seed=3)
    assert r.warnings == []
    assert bool(((r.mu - targets).abs() <= 0.005).all()), (r.mu.tolist(), targets.tolist())
    # the reported numbers are the ones anybody measuring the output gets
    mu, sigma = measure_intensity(x, r.image)
    assert torch.allclose(mu, r.mu, atol=1e-6) and torch.allclose(sigma, r.sigma, atol=1e-6)
    # and re-synthesizing at the found strength with the same seed reproduces the image
    again = degrade_at_strength(x, kind, r.strength, seed=3)
    assert torch.allclose(again.image, r.image, atol=1e-6)


def test_unreachable_targets_are_clamped_with_the_range_in_the_warning(caplog):
    x = scene(1, 40, 40)
    with caplog.at_level(logging.WARNING, logger="gendeg"):
        r = degrade_to_mu(x, "motion_blur", 0.8, seed=0)
    # motion blur extends past its default top until the path length is half the shorter side
    limit = get("motion_blur").strength_limit(get("motion_blur").resolve_params(None))
    assert limit == pytest.approx(0.5 / 0.15)
    assert float(r.strength[0]) == pytest.approx(limit)
    assert len(r.warnings) == 1 and "reachable range 0.0000.." in r.warnings[0]
    assert f"clamped to strength {limit:g}" in r.warnings[0]
    assert "reachable range" in caplog.text
    # the mixed types do not extend (one strength drives both parts)
    r1 = degrade_to_mu(x, "rain+haze", 0.9, seed=0)
    assert float(r1.strength[0]) == 1.0 and "clamped to strength 1 " in r1.warnings[0]
    r0 = degrade_to_mu(x, "noise", 0.0, seed=0)
    assert float(r0.strength[0]) == 0.0 and float(r0.mu[0]) == 0.0 and r0.warnings == []


@pytest.mark.parametrize("kind", ["haze", "motion_blur", "raindrop", "noise"])
def test_targets_past_the_default_top_are_reached_with_the_extended_model(kind):
    x = scene(1, 64, 80, seed=4)
    params = get(kind).resolve_params(None)
    limit = get(kind).strength_limit(params)
    assert limit > 1
    mu1 = float(degrade_at_strength(x, kind, 1.0, seed=2).mu[0])
    mu_top = float(degrade_at_strength(x, kind, limit, seed=2).mu[0])
    assert mu_top > mu1 + 0.01
    target = (mu1 + mu_top) / 2
    r = degrade_to_mu(x, kind, target, seed=2)
    assert r.warnings == [] and abs(float(r.mu[0]) - target) <= 0.005
    assert 1.0 < float(r.strength[0]) <= limit
    # a strength past 1 is the same model with the scaled parameter: e.g. haze at strength 2 is beta_max 4 at 1
    key = {"haze": "beta_max", "motion_blur": "length_max", "raindrop": "coverage", "noise": "sigma_max"}[kind]
    s = float(r.strength[0])
    same = degrade_at_strength(x, kind, 1.0, seed=2, params={key: params[key] * s})
    assert float(same.mu[0]) == pytest.approx(float(r.mu[0]), abs=2e-3)
    # beyond the limit is refused with the range in the message
    with pytest.raises(InputError, match="strength must be in 0"):
        degrade_at_strength(x, kind, limit * 1.01, seed=2)


def test_jpeg_calibration_keeps_the_closest_quality_step():
    from pathlib import Path

    from comfyui_gendeg.core.io import load_image

    photo = load_image(Path(__file__).resolve().parent.parent / "samples" / "chelsea.png")
    x = torch.nn.functional.interpolate(photo, size=(80, 120), mode="area")
    r = degrade_to_mu(x, "jpeg", 0.012, seed=0)
    lo, hi = reachable_range(x, "jpeg")
    assert float(lo[0]) < 0.012 < float(hi[0])
    assert abs(float(r.mu[0]) - 0.012) <= 0.005


def test_calibration_rejects_bad_targets():
    x = scene(2, 32, 32)
    with pytest.raises(InputError, match="mu must be in 0..1"):
        degrade_to_mu(x, "haze", 1.5)
    with pytest.raises(InputError, match="one value or 2"):
        degrade_to_mu(x, "haze", torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(InputError, match="unknown degradation"):
        degrade_to_mu(x, "smog", 0.1)


def test_progress_is_reported():
    seen = []
    degrade_to_mu(scene(1, 32, 32), "noise", 0.05, seed=1, progress=lambda i, n: seen.append((i, n)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert TYPES  # the registry is importable alongside


@pytest.mark.parametrize("kind", TYPES)
def test_large_images_calibrate_on_a_reduced_copy_and_report_the_full_size_mu(kind, monkeypatch):
    from comfyui_gendeg.core.synth import calibrate, strips

    # make a 150x230 image "large": reduced copy of ~60x90, strips of ~2000 pixels
    monkeypatch.setattr(calibrate, "LARGE_PIXELS", 10_000)
    monkeypatch.setattr(calibrate, "REDUCED_PIXELS", 5_000)
    monkeypatch.setattr(strips, "STRIP_PIXELS", 2_000)
    x = torch.nn.functional.interpolate(scene(1, 40, 60, seed=7), size=(150, 230), mode="bilinear", align_corners=False)
    x = (x + 0.05 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    lo, hi = reachable_range(x, kind, seed=1)
    target = float(lo[0] + 0.4 * (hi[0] - lo[0]))
    seen = []
    r = degrade_to_mu(x, kind, target, seed=1, progress=lambda i, n: seen.append((i, n)))
    step = 0.02 if kind == "jpeg" else 0.005  # JPEG quality moves in steps
    assert abs(float(r.mu[0]) - target) <= step, (float(r.mu[0]), target, r.warnings)
    # the reported numbers are those of the full-size output, which is the output at that strength
    mu, sigma = measure_intensity(x, r.image)
    assert float(mu[0]) == pytest.approx(float(r.mu[0]), abs=1e-6) and float(sigma[0]) == pytest.approx(float(r.sigma[0]), abs=1e-6)
    again = degrade_at_strength(x, kind, r.strength, seed=1)
    assert torch.allclose(again.image, r.image, atol=1e-5)
    # progress: monotone, ends complete
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
