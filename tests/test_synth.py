"""Procedural degradations: physical direction, closed forms, strength monotonicity, seeding, shapes, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.core.synth import TYPES, get, make_generator, synthesize
from comfyui_gendeg.core.synth.base import fft_conv, gaussian_blur, segment_kernels
from comfyui_gendeg.core.synth.haze import depth_proxy
from comfyui_gendeg.core.synth.motion_blur import motion_kernels
from helpers import scene
from PIL import Image


def test_registry_has_every_contract_type():
    assert TYPES == ("haze", "rain", "snow", "motion_blur", "low_light", "raindrop", "jpeg", "noise", "rain+haze", "snow+haze")
    assert get("rain_haze").name == "rain+haze" and get("Snow and haze").name == "snow+haze"
    assert get("Motion Blur").name == "motion_blur" and get("low-light").name == "low_light"
    with pytest.raises(InputError, match="choose one of"):
        get("fog")


@pytest.mark.parametrize("kind", TYPES)
def test_shapes_range_seeds_and_monotone_strength(kind):
    x = scene(2, 37, 53)  # odd sizes, non-square, a batch
    ys = [synthesize(x, kind, s, seed=5) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for y in ys:
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    mus = torch.stack([measure_intensity(x, y)[0] for y in ys])  # [5, B]
    assert float(mus[0].max()) < 0.004, "strength 0 must leave the image (almost) untouched"
    slack = 2e-3 if kind == "jpeg" else 1e-4  # JPEG quality moves in steps
    assert bool((mus[1:] >= mus[:-1] - slack).all()), f"mu not monotone in strength: {mus.T.tolist()}"
    assert float(mus[-1].min()) > float(mus[1].max()) * 0.5 and float(mus[-1].min()) > 0.004
    # same seed -> same output; another seed -> another output (stochastic types)
    assert torch.equal(synthesize(x, kind, 0.6, seed=5), synthesize(x, kind, 0.6, seed=5))
    other = synthesize(x, kind, 0.6, seed=6)
    if get(kind).stochastic:
        assert not torch.allclose(other, synthesize(x, kind, 0.6, seed=5))
    else:
        assert torch.equal(other, synthesize(x, kind, 0.6, seed=5))


@pytest.mark.parametrize("kind", TYPES)
def test_tiny_and_extreme_aspect_images(kind):
    for h, w in ((1, 1), (3, 97), (97, 5)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        y = synthesize(x, kind, 0.7, seed=1)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_bad_parameters_give_clear_errors():
    x = scene()
    with pytest.raises(InputError, match="unknown parameter.*valid parameters are"):
        synthesize(x, "haze", 0.5, params={"beta": 1.0})
    with pytest.raises(InputError, match="outside its range"):
        synthesize(x, "haze", 0.5, params={"beta_max": -1})
    with pytest.raises(InputError, match="must be a number"):
        synthesize(x, "rain", 0.5, params={"density": "lots"})
    with pytest.raises(InputError, match="not one of"):
        synthesize(x, "noise", 0.5, params={"model": "speckle"})
    with pytest.raises(InputError, match="strength must be in 0..1"):
        synthesize(x, "rain+haze", 1.5)
    with pytest.raises(InputError, match="strength must be in 0..4"):  # snow extends until its veil is 1
        synthesize(x, "snow", 4.5)
    with pytest.raises(InputError, match="strength"):
        synthesize(x, "snow", torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(InputError, match="RGB"):
        synthesize(x[:, :1], "snow", 0.5)
    with pytest.raises(InputError, match="NaN"):
        synthesize(x * float("nan"), "noise", 0.5)
    with pytest.raises(InputError, match="only applies to haze"):
        synthesize(x, "rain", 0.5, depth=torch.rand(1, 1, 48, 64))
    with pytest.raises(InputError, match="airlight_min"):
        synthesize(x, "haze", 0.5, params={"airlight_min": 0.9, "airlight_max": 0.8})


# --- haze -------------------------------------------------------------------------


def test_haze_matches_the_scattering_model_with_a_given_depth():
    x = scene(1, 32, 40)
    depth = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(1, 1, 32, 40).clone()  # far = bright
    y = synthesize(x, "haze", 0.5, params={"airlight": 0.8, "beta_max": 2.0, "depth_near_is_bright": False}, depth=depth)
    # independent NumPy computation of I = J t + A (1 - t), t = exp(-beta d), beta = 0.5 * 2.0
    j, d = x[0].numpy(), depth[0, 0].numpy()
    t = np.exp(-1.0 * d)
    expected = j * t + 0.8 * (1 - t)
    np.testing.assert_allclose(y[0].numpy(), expected, atol=1e-5)
    # inverse-depth convention (near = bright) is the flipped map
    y2 = synthesize(x, "haze", 0.5, params={"airlight": 0.8}, depth=1 - depth)
    assert torch.allclose(y, y2, atol=1e-5)


def test_haze_raises_dark_channel_and_lowers_contrast_with_depth():
    x = scene(1, 48, 64, seed=3)
    depth = torch.zeros(1, 1, 48, 64)
    depth[..., 32:] = 1.0  # right half far (far = bright convention)
    y = synthesize(x, "haze", 0.6, seed=2, depth=depth, params={"depth_near_is_bright": False})
    dark = lambda im: im.amin(dim=1)  # noqa: E731 - dark channel (per-pixel min over colour)
    assert float(dark(y).mean()) > float(dark(x).mean()) + 0.05
    near_ratio = float(y[..., :32].std() / x[..., :32].std())
    far_ratio = float(y[..., 32:].std() / x[..., 32:].std())
    assert far_ratio < near_ratio <= 1.0 + 1e-6
    assert far_ratio < 0.5


def test_haze_depth_proxy_is_far_at_top_and_normalised():
    x = torch.full((1, 3, 40, 30), 0.5)
    d = depth_proxy(x)
    assert d.shape == (1, 1, 40, 30)
    assert float(d.min()) == pytest.approx(0.0, abs=1e-6) and float(d.max()) == pytest.approx(1.0, abs=1e-6)
    assert float(d[..., 0, :].mean()) > float(d[..., -1, :].mean())


# --- low light --------------------------------------------------------------------


def test_low_light_closed_form_without_noise():
    x = scene(1, 24, 24)
    y = synthesize(x, "low_light", 0.5, params={"noise": False, "stops_max": 4.0, "gamma": 2.2, "falloff": 0.0})
    expected = ((x.double() ** 2.2) * 2.0 ** (-2.0)) ** (1 / 2.2)
    assert torch.allclose(y.double(), expected, atol=1e-5)


def test_low_light_darkens_and_adds_noise_in_flat_regions():
    flat = torch.full((1, 3, 64, 64), 0.6)
    lum = lambda im: (0.2126 * im[:, 0] + 0.7152 * im[:, 1] + 0.0722 * im[:, 2]).mean()  # noqa: E731
    prev_mean, prev_var = float(lum(flat)), 0.0
    for s in (0.3, 0.6, 0.9):
        y = synthesize(flat, "low_light", s, seed=4)
        lin = y.double() ** 2.2  # back to linear light, where the noise model lives
        rel_var = float((lin / lin.mean()).var())  # noise relative to the signal grows as light drops
        assert float(lum(y)) < prev_mean
        assert rel_var > prev_var
        prev_mean, prev_var = float(lum(y)), rel_var


# --- motion blur ------------------------------------------------------------------


def test_motion_kernels_sum_to_one_and_grow_with_strength():
    g = make_generator(3, "cpu")
    k = motion_kernels(4, 256, torch.tensor([0.1, 0.4, 0.7, 1.0]), g, torch.device("cpu"))
    assert torch.allclose(k.sum(dim=(-2, -1)), torch.ones(4), atol=1e-5)
    assert bool((k >= 0).all())
    support = (k > 1e-4).flatten(1).sum(dim=1)
    assert bool((support[1:] >= support[:-1]).all()) and int(support[-1]) > 3 * int(support[0])


def test_motion_blur_preserves_mean_and_fft_conv_is_a_true_convolution():
    x = scene(2, 40, 56)
    y = synthesize(x, "motion_blur", 1.0, seed=8)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=5e-3)
    # fft_conv == spatial convolution (conv2d correlates, so flip the kernel), same reflect borders
    k = torch.rand(2, 7, 7)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    ref = torch.cat([
        F.conv2d(F.pad(x[i : i + 1], (3, 3, 3, 3), mode="reflect"), k[i].flip(-1, -2).expand(3, 1, 7, 7), groups=3)
        for i in range(2)
    ])
    assert torch.allclose(fft_conv(x, k), ref, atol=1e-5)


# --- JPEG, noise ------------------------------------------------------------------


def test_jpeg_equals_the_codec_at_that_quality():
    x = scene(2, 40, 48)
    for q in (10, 50, 90):
        y = synthesize(x, "jpeg", 0.5, params={"quality": q})
        for i in range(2):
            arr = (x[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=q)
            ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            got = (y[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            assert np.array_equal(got, ref)
    from comfyui_gendeg.core.synth.jpeg import quality_for

    assert quality_for(0.0) == 100 and quality_for(1.0) == 5 and quality_for(0.5) == 52


def test_gaussian_and_poisson_gaussian_noise_levels():
    x = torch.full((1, 3, 96, 96), 0.5)
    y = synthesize(x, "noise", 0.5, seed=1, params={"sigma_max": 0.2})
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.05)
    # Poisson-Gaussian: variance a*J + b^2 grows with the signal
    ramp = torch.cat([torch.full((1, 3, 48, 96), 0.2), torch.full((1, 3, 48, 96), 0.8)], dim=2)
    y = synthesize(ramp, "noise", 1.0, seed=1, params={"model": "poisson_gaussian", "poisson_max": 0.02, "sigma_max": 0.04})
    d = y - ramp
    var_dark, var_bright = float(d[..., :48, :].var()), float(d[..., 48:, :].var())
    b2 = (0.04 * 0.25) ** 2
    # the result is clipped to 0..1 (at 0.8 + 1.6 std on the bright side): the variance of the clipped law
    assert var_dark == pytest.approx(clipped_normal_var(0.2, (0.02 * 0.2 + b2) ** 0.5), rel=0.1)
    assert var_bright == pytest.approx(clipped_normal_var(0.8, (0.02 * 0.8 + b2) ** 0.5), rel=0.1)
    assert clipped_normal_var(0.8, 0.127) < 0.92 * 0.127**2  # clipping matters there


def clipped_normal_var(mu: float, sd: float) -> float:
    """Variance of ``clamp(mu + sd·Z, 0, 1)``, ``Z`` standard normal (quadrature on a fine grid)."""
    z = torch.linspace(-10, 10, 200001, dtype=torch.float64)
    w = torch.exp(-0.5 * z**2)
    w /= w.sum()
    v = (mu + sd * z).clamp(0, 1)
    m = (w * v).sum()
    return float((w * (v - m) ** 2).sum())


# --- rain, snow, raindrops --------------------------------------------------------


def test_rain_brightens_with_streaks_along_the_fall_direction():
    x = scene(1, 96, 96) * 0.5
    y = synthesize(x, "rain", 1.0, seed=2, params={"angle": 0.0, "veil": 0.0})
    d = (y - x)[0].mean(dim=0)
    assert float(d.min()) >= -1e-6 and float(d.mean()) > 0.01  # screen blend only brightens
    dc = d - d.mean()
    vertical = float((dc[1:, :] * dc[:-1, :]).mean())
    horizontal = float((dc[:, 1:] * dc[:, :-1]).mean())
    assert vertical > 2 * horizontal  # streaks are long vertically


def test_segment_kernels_are_normalised_lines():
    k = segment_kernels(torch.tensor([10.0]), torch.tensor([np.pi / 2]), torch.tensor([0.5]), 15)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
    centre = k[0, :, 6:9].sum() / k.sum()
    assert float(centre) > 0.99  # a thin vertical segment keeps its mass in the centre columns
    rows = int((k[0].sum(dim=1) > 1e-3).sum())
    assert 10 <= rows <= 13  # and spreads it over its length (10 px)


def test_snow_adds_bright_flakes_and_veil():
    x = scene(1, 64, 64) * 0.4
    y = synthesize(x, "snow", 1.0, seed=3)
    assert float(y.mean()) > float(x.mean()) + 0.05
    assert float((y - x).amax()) > 0.4  # individual flakes are bright


def test_raindrops_refract_an_inverted_view():
    # horizontal ramp: through a drop the scene is mirrored, so the ramp runs backwards
    ramp = torch.linspace(0.05, 0.95, 128).view(1, 1, 1, 128).expand(1, 3, 128, 128).contiguous()
    params = {"coverage": 0.1, "size": 0.08, "blur": 0.0, "rim": 0.0, "refraction": 1.0}
    dxs = []
    for seed in range(6):  # pooled over drop patterns (overlapping or clipped drops blur single ones)
        y = synthesize(ramp, "raindrop", 1.0, seed=seed, params=params)
        changed = (y - ramp).abs().amax(dim=1)[0] > 0.02
        inside = changed[:, 1:] & changed[:, :-1]
        dxs.append((y[0, 0, :, 1:] - y[0, 0, :, :-1])[inside])
    dx = torch.cat(dxs)
    slope = 0.9 / 127
    assert dx.numel() > 2000
    # magnification 1 + refraction = 2 mirrored through each drop's centre: slope ≈ −1× the scene's
    assert float(dx.median()) < -0.5 * slope
    assert float((dx < 0).float().mean()) > 0.55  # an upright view has rising slopes almost everywhere


def test_gaussian_blur_matches_reference_weights():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    y = gaussian_blur(x, 2.0)
    t = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / 2.0) ** 2)
    k = k / k.sum()
    assert torch.allclose(y[0, 0, 4:17, 4:17], k[:, None] * k[None, :], atol=1e-6)


# --- mixed types ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "front"), [("rain+haze", "rain"), ("snow+haze", "snow")])
def test_mixed_types_are_haze_then_rain_or_snow_in_front(kind, front):
    from comfyui_gendeg.core.synth import haze as haze_mod
    from comfyui_gendeg.core.synth import rain as rain_mod
    from comfyui_gendeg.core.synth import snow as snow_mod

    x = scene(1, 48, 64, seed=4)
    depth = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 48, 64).clone()  # far = bright
    params = {"airlight": 0.85, "depth_near_is_bright": False, "angle": 10.0}
    y = synthesize(x, kind, 0.7, seed=9, depth=depth, params=params)
    # the same composition by hand, one generator, haze first (it draws the airlight), then the front layer
    g = make_generator(9, "cpu")
    s = torch.tensor([0.7])
    fn = rain_mod.rain if front == "rain" else snow_mod.snow
    hazy = haze_mod.haze(x, s, g, depth=depth, airlight=0.85, depth_near_is_bright=False)
    expected = fn(hazy, s, g, angle=10.0)
    assert torch.allclose(y, expected, atol=1e-6)
    # both parts are there: the far side is hazy (dark channel up), and there are particles on top of the haze
    dark = lambda im: im.amin(dim=1)  # noqa: E731
    assert float(dark(y)[..., 48:].mean()) > float(dark(x)[..., 48:].mean()) + 0.2
    assert float((y - hazy).max()) > 0.1
    # same single strength is monotone in mu, and a depth map is accepted
    mus = [float(measure_intensity(x, synthesize(x, kind, v, seed=9, depth=depth))[0][0]) for v in (0.2, 0.5, 0.9)]
    assert mus[0] < mus[1] < mus[2]


def test_mixed_types_calibrate_to_their_gendeg_presets():
    from pathlib import Path

    from comfyui_gendeg.core.io import load_image
    from comfyui_gendeg.core.synth.calibrate import degrade_to_mu
    from comfyui_gendeg.core.synth.plan import PRESETS

    root = Path(__file__).resolve().parents[1] / "samples"
    x = torch.cat([F.interpolate(load_image(root / n, keep_alpha=False), size=(64, 80), mode="area")
                   for n in ("coffee.png", "chelsea.png")])
    for kind in ("rain+haze", "snow+haze"):
        target = PRESETS[kind]["medium"]
        r = degrade_to_mu(x, kind, target, seed=3)
        assert (r.mu - target).abs().max() <= 0.005, (kind, r.mu)
        assert (r.strength > 0).all() and (r.strength < 1).all()


@pytest.mark.parametrize("kind", ["noise", "low_light", "rain"])
def test_cpu_chunks_and_parallel_random_fields_do_not_depend_on_the_thread_count(kind):
    """The CPU path splits batches into cache-sized chunks and draws big noise fields in fixed
    parts (in parallel when torch has threads): same seed -> same output on 1 or 2 threads."""
    x = scene(1, 512, 300, seed=1).expand(2, -1, -1, -1)  # same image twice: 2 chunks, fields above the split size
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = synthesize(x, kind, 0.5, seed=11)
        torch.set_num_threads(2)
        two = synthesize(x, kind, 0.5, seed=11)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)
    assert not torch.equal(one[0], one[1])  # each chunk draws its own fields


@pytest.mark.parametrize("kind", TYPES)
def test_large_images_in_strips_equal_the_whole_image_result(kind, monkeypatch):
    from comfyui_gendeg.core.synth import strips

    # 256x320 is a fast FFT size (rain/snow render a circular particle field), 2x 151x203 is not;
    # strips of ~16 rows: the halos cross several strips, the top/bottom borders are extended
    for x in (scene(1, 256, 320, seed=2), scene(2, 151, 203, seed=3)):
        whole = synthesize(x, kind, 0.8, seed=4)
        monkeypatch.setattr(strips, "STRIP_PIXELS", x.shape[-1] * 16)
        seen: list[tuple[int, int]] = []
        split = synthesize(x, kind, 0.8, seed=4, progress=lambda i, n, seen=seen: seen.append((i, n)))
        monkeypatch.setattr(strips, "STRIP_PIXELS", 1 << 21)
        assert float((split - whole).abs().max()) <= 2e-6  # FFT rounding only
        assert len(seen) > 2 and seen[-1][0] == seen[-1][1]
        assert all(a[0] <= b[0] and a[1] == b[1] for a, b in zip(seen, seen[1:], strict=False))


@pytest.mark.parametrize("kind", TYPES)
def test_8bit_images_give_the_rounded_result_of_the_float_path_in_their_layout(kind, monkeypatch):
    """uint8 in, uint8 out: exactly the 8-bit file that saving the float result of ``x / 255``
    writes (core.io's rounding), in the input's memory layout (ComfyUI's channels-last kept):
    one CPU chunk, several chunks (2 + 1 images), and a large image in strips."""
    from comfyui_gendeg.core.io import tensor_to_pil
    from comfyui_gendeg.core.synth import strips

    def check(x8: torch.Tensor) -> None:
        for layout in (x8, x8.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)):
            y8 = synthesize(layout, kind, 0.7, seed=3)
            assert y8.dtype == torch.uint8 and y8.shape == x8.shape
            assert y8.is_contiguous(memory_format=torch.channels_last) == (layout.stride(1) == 1)
            yf = synthesize(layout.float() / 255, kind, 0.7, seed=3)
            for i in range(x8.shape[0]):
                saved = torch.from_numpy(np.array(tensor_to_pil(yf[i]))).permute(2, 0, 1)
                assert torch.equal(y8[i], saved)
        assert not torch.equal(y8, x8)

    check((scene(2, 48, 64, seed=7) * 255 + 0.5).to(torch.uint8))  # one chunk (CPU_CHUNK_PIXELS)
    check((scene(3, 256, 512, seed=8) * 255 + 0.5).to(torch.uint8))  # chunks of 2 and 1 images
    monkeypatch.setattr(strips, "STRIP_PIXELS", 128 * 16)
    check((scene(1, 96, 128, seed=9) * 255 + 0.5).to(torch.uint8))  # strips of ~16 rows


def test_8bit_jpeg_is_the_codec_on_the_8bit_image():
    """JPEG of 8-bit images: Pillow's JPEG file of those very pixels, decoded (no float detour)."""
    x8 = (scene(2, 64, 80, seed=8) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    y8 = synthesize(x8, "jpeg", torch.tensor([0.0, 0.6]), seed=0)
    assert torch.equal(y8[0], x8[0])  # strength 0: not coded
    buf = io.BytesIO()
    Image.fromarray(x8[1].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=43)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(y8[1].permute(1, 2, 0).numpy(), ref)


def test_other_integer_images_are_refused_in_one_line():
    with pytest.raises(InputError, match="uint8 0..255"):
        synthesize(torch.zeros(1, 3, 8, 8, dtype=torch.int32), "haze", 0.5)


def test_8bit_jpeg_one_image_equals_its_batch_result():
    x8 = (scene(3, 40, 56, seed=9) * 255 + 0.5).to(torch.uint8)
    batch = synthesize(x8, "jpeg", 0.5)
    for i in range(3):
        one = synthesize(x8[i : i + 1], "jpeg", 0.5)
        assert one.shape == (1, 3, 40, 56) and one.dtype == torch.uint8 and torch.equal(one, batch[i : i + 1])
