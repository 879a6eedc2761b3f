"""The synthesizer's fast renderers against independent computations of the same model.

Low light computes its powers as exp/log (with floors off the slow paths), rain and snow draw
their sparse seeds as a Bernoulli process by geometric gaps and stamp the streak/flake kernels
instead of an FFT: outputs equal the closed form, or the FFT rendering of the same seeds, up to
rounding; the seed process has the per-pixel Bernoulli statistics of the old uniform field.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.core.synth import kernels as kernels_mod
from comfyui_gendeg.core.synth import make_generator, synthesize
from comfyui_gendeg.core.synth import rain as rain_mod
from comfyui_gendeg.core.synth import raindrop as raindrop_mod
from comfyui_gendeg.core.synth import snow as snow_mod
from comfyui_gendeg.core.synth.base import (
    box_downsample,
    normal_table,
    random_field,
    render_sparse,
    segment_kernels,
    stationary_conv,
)
from comfyui_gendeg.core.synth.kernels import bernoulli_sites, stamp_circular, stamp_reflect
from comfyui_gendeg.core.synth.raindrop import cap_kernels
from helpers import scene
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_low_light_uneven_closed_form_with_black_pixels():
    x = scene(2, 40, 56)
    x[:, :, :4] = 0.0  # black rows: log 0 is floored, the result stays 0 there (up to 1e-6)
    s, stops, gamma, fo = torch.tensor([0.3, 0.8]), 5.0, 2.2, 0.7
    y = synthesize(x, "low_light", s, seed=3, params={"noise": False, "stops_max": stops, "gamma": gamma, "falloff": fo})
    g = make_generator(3, "cpu")  # the draws of low_light, in its order: read-noise z, light position (no noise field)
    torch.randn((2,), generator=g)
    pos = torch.rand((2, 2), generator=g).double()
    # the point light one shorter side (40 px) above (pos·size): rho = log2(1 + r^2) stops at each pixel centre
    yy, xx = torch.meshgrid(torch.arange(40, dtype=torch.float64) + 0.5, torch.arange(56, dtype=torch.float64) + 0.5,
                            indexing="ij")
    r2 = ((yy - pos[:, 0, None, None] * 40) ** 2 + (xx - pos[:, 1, None, None] * 56) ** 2) / 40**2
    rho = torch.log2(1 + r2)
    drop = (rho / rho.mean(dim=(1, 2), keepdim=True)).unsqueeze(1)
    stops_map = (s.double() * stops).view(-1, 1, 1, 1) * ((1 - fo) + fo * drop)
    assert torch.allclose(stops_map.mean(dim=(1, 2, 3)), s.double() * stops)  # the mean drop whatever the fall-off
    expected = (x.double() ** gamma * 2.0 ** (-stops_map)) ** (1 / gamma)
    assert torch.allclose(y.double(), expected, atol=2e-6)
    assert float(y[:, :, :4].abs().max()) < 1e-6


def test_normal_table_is_the_midpoint_quantiles_of_the_standard_normal():
    from statistics import NormalDist

    t = normal_table(torch.float64)
    assert t.shape == (65536,) and torch.all(t[1:] > t[:-1])
    assert torch.allclose(t, -t.flip(0), atol=1e-12)  # symmetric: mean 0
    assert float(t.square().mean()) == pytest.approx(1.0, abs=1e-12)  # rescaled to unit variance
    scale = float(t[40000]) / NormalDist().inv_cdf((40000 + 0.5) / 65536)
    assert scale == pytest.approx(1.0, abs=2e-3)  # the rescaling is tiny (the midpoints lose 0.1 % of the variance)
    for k in (0, 1, 100, 32767, 50000, 65535):  # the quantiles, against the standard library's inverse CDF
        assert float(t[k]) == pytest.approx(scale * NormalDist().inv_cdf((k + 0.5) / 65536), abs=1e-9)


def test_cpu_normal_fields_are_standard_normal_and_independent():
    """The table-driven normal fields (16 random bits per value): the law of N(0, 1) within the
    sampling error of 786k values (Kolmogorov–Smirnov distance, moments), no correlation between
    neighbours, each seed its own field and the same seed the same field."""
    shape = (1, 3, 512, 512)
    z = random_field(shape, make_generator(5, "cpu"), torch.device("cpu"), normal=True).view(-1).double()
    assert torch.equal(z, random_field(shape, make_generator(5, "cpu"), torch.device("cpu"), normal=True).view(-1).double())
    other = random_field(shape, make_generator(6, "cpu"), torch.device("cpu"), normal=True).view(-1).double()
    assert float((z - other).abs().mean()) > 1.0
    n = z.numel()
    zs = z.sort().values
    cdf = 0.5 * (1 + torch.special.erf(zs / math.sqrt(2)))
    ks = float(torch.maximum((torch.arange(1, n + 1) / n - cdf).abs(), (cdf - torch.arange(n) / n).abs()).max())
    assert ks < 1.63 / math.sqrt(n) + 1 / 65536  # KS at the 1 % level, plus the levels' own step
    assert abs(float(z.mean())) < 4 / math.sqrt(n)
    assert float(z.var()) == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    assert float((z**4).mean()) == pytest.approx(3.0, abs=0.05)  # kurtosis of a normal law
    for lag in (1, 2, 4, 512, 3 * 512):  # neighbours in memory, in a row, in a column
        r = float(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1])
        assert abs(r) < 5 / math.sqrt(n)
    small = random_field((2, 3, 16, 16), make_generator(5, "cpu"), torch.device("cpu"), normal=True)
    assert small.abs().max() < 4.4 and small.std() > 0.8  # small fields: one draw from the table too


def test_bernoulli_sites_have_the_statistics_of_a_per_pixel_uniform_threshold():
    n, p = 400_000, 0.01
    counts, first_half = [], []
    for seed in range(20):
        sites = bernoulli_sites(n, p, make_generator(seed, "cpu"), torch.device("cpu"))
        assert bool((sites[1:] > sites[:-1]).all()) and int(sites[0]) >= 0 and int(sites[-1]) < n  # distinct, in range
        counts.append(sites.numel())
        first_half.append(int((sites < n // 2).sum()) / sites.numel())
        assert torch.equal(sites, bernoulli_sites(n, p, make_generator(seed, "cpu"), torch.device("cpu")))
    c = torch.tensor(counts, dtype=torch.float64)
    sd = math.sqrt(n * p * (1 - p))  # binomial: 4000 ± 63 per draw
    assert abs(float(c.mean()) - n * p) < 3 * sd / math.sqrt(20)
    assert 0.5 * sd < float(c.std()) < 1.6 * sd
    assert abs(sum(first_half) / 20 - 0.5) < 0.01  # uniform over the cells
    dev = torch.device("cpu")
    assert bernoulli_sites(1000, 0.0, make_generator(0, "cpu"), dev).numel() == 0
    assert torch.equal(bernoulli_sites(1000, 1.5, make_generator(0, "cpu"), dev), torch.arange(1000))
    # a long stream: several blocks of gaps
    assert abs(bernoulli_sites(10**7, 0.3, make_generator(1, "cpu"), dev).numel() - 3 * 10**6) < 5 * math.sqrt(2.1e6)


@pytest.mark.parametrize("h,w", [(64, 80), (128, 128)])
def test_stamping_equals_the_circular_fft_rendering(h, w):
    g = make_generator(5, "cpu")
    b = 2
    sites = bernoulli_sites(b * h * w, 0.01, g, torch.device("cpu"))
    values = torch.rand(sites.numel(), generator=g) * 0.5 + 0.5
    k = segment_kernels(torch.tensor([20.0, 9.0]), torch.tensor([1.2, 2.9]), torch.tensor([1.2, 0.7]), 27)
    dense = torch.zeros(b * h * w)
    dense[sites] = values
    fft = stationary_conv(dense.view(b, 1, h, w), k[:, None])[:, 0]
    stamped = stamp_circular(sites, values, k, h, w)
    assert stamped is not None
    assert float((stamped - fft).abs().max()) < 1e-6
    assert stamp_circular(sites, values, k, h, w, budget=10) is None  # over the budget: the caller's FFT


def _old_streak_sites(b, h, w, strength, density, generator, device, top=1.0):
    """The previous seed process: one uniform per pixel (and a brightness per candidate)."""
    u = torch.rand((b, 1, h, w), generator=generator, device=device).view(-1)
    cand = (u < top * density).nonzero().squeeze(1)
    bright = torch.rand((cand.numel(),), generator=generator, device=device).mul_(0.5).add_(0.5)
    keep = u[cand] < (strength * density)[torch.div(cand, h * w, rounding_mode="floor")]
    return cand[keep], bright[keep]


def _photos(size: int = 256) -> torch.Tensor:
    ims = [torch.from_numpy(np.asarray(Image.open(SAMPLES / f"{n}.png").convert("RGB"), dtype=np.float32) / 255)
           for n in ("chelsea", "coffee", "rocket")]
    return torch.cat([F.interpolate(im.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                    align_corners=False) for im in ims]).clamp(0, 1)


def _equivalent(kind: str, module, old_sites, monkeypatch, seeds: int = 6, fft: bool = True, rel: float = 0.06) -> None:
    """Intensity μ and σ of ``kind`` on three photos at two strengths, over several seeds: the fast
    renderer against the old one (per-pixel uniform seeds, FFT rendering) agree within 4 standard
    errors of the difference of their means (and ``rel`` of them: the standard errors are 1-2 % for
    rain and snow, up to 5 % for the few large raindrops), and one seed gives one output."""
    x = _photos()
    stats = {"new": [], "old": []}
    for s in (0.3, 0.8):
        for seed in range(seeds):
            y = synthesize(x, kind, s, seed=seed)
            if seed == 0:
                assert torch.equal(y, synthesize(x, kind, s, seed=seed))
            stats["new"].append(torch.stack(measure_intensity(x, y)))
        with monkeypatch.context() as m:
            m.setattr(module, old_sites[0], old_sites[1])
            if fft:
                m.setattr(kernels_mod, "circular_at", lambda h, w, k: False)
            for seed in range(seeds):
                stats["old"].append(torch.stack(measure_intensity(x, synthesize(x, kind, s, seed=seed))))
    new, old = (torch.stack(stats[k]).view(2, seeds, 2, -1).double() for k in ("new", "old"))  # [s, seed, mu|sd, photo]
    diff = (new.mean(1) - old.mean(1)).abs()
    se = ((new.var(1) + old.var(1)) / seeds).sqrt()
    assert bool((diff <= 4 * se + 1e-4).all()), (new.mean(1), old.mean(1), se)
    assert float((diff / old.mean(1)).max()) < rel


def test_rain_stamped_sparse_seeds_match_the_old_renderer(monkeypatch):
    _equivalent("rain", rain_mod, ("streak_sites", _old_streak_sites), monkeypatch)


def test_snow_stamped_sparse_seeds_match_the_old_renderer(monkeypatch):
    _equivalent("snow", snow_mod, ("nested_sites", _old_drop_sites), monkeypatch)


def _old_drop_sites(b, hw, strength, p, generator, device, top, values=None):
    """The previous seed process of snow and raindrops: one uniform per pixel (and layer or class),
    a flake or drop where it is below strength·p."""
    u = torch.rand((b, hw), generator=generator, device=device)
    return (u < strength.view(-1, 1) * p).view(-1).nonzero().squeeze(1), None


def test_raindrop_sparse_seeds_match_the_old_renderer(monkeypatch):
    _equivalent("raindrop", raindrop_mod, ("nested_sites", _old_drop_sites), monkeypatch, seeds=12, fft=False, rel=0.15)


@pytest.mark.parametrize("h,w,y0,y1", [(64, 80, 0, 64), (64, 80, 10, 37), (40, 33, 0, 40)])
def test_stamp_reflect_equals_the_reflect_padded_rendering(h, w, y0, y1):
    g = make_generator(2, "cpu")
    b, radii = 2, [3.0, 5.0, 8.5]
    caps = cap_kernels(radii, 19, torch.device("cpu"))
    sites = [bernoulli_sites(b * h * w, 0.004, g, torch.device("cpu")) for _ in radii]
    sites[0] = torch.cat([sites[0], torch.tensor([0, w - 1, h * w - 1, 3 * w + 1, h * w + 2])]).unique()  # corners, borders
    dense = torch.zeros(len(radii), b * h * w)
    for c, s in enumerate(sites):
        dense[c, s] = 1.0
    dense = dense.view(len(radii), b, h, w).transpose(0, 1)
    ref = render_sparse(dense, caps.expand(b, -1, -1, -1), pad_mode="reflect")[..., y0:y1, :]
    assert float((stamp_reflect(sites, caps, b, h, w, y0, y1) - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("f,h,w", [(2, 64, 48), (3, 63, 45), (2, 31, 40), (4, 40, 37)])
def test_box_downsample_is_avg_pool(f, h, w):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(f))
    ref = F.avg_pool2d(x, f, ceil_mode=True)
    assert torch.allclose(box_downsample(x, f), ref, atol=1e-6)


@pytest.mark.parametrize("kind", ["rain", "snow", "noise", "low_light"])
def test_channels_last_chunks_are_read_in_place_with_the_same_result(kind):
    x = scene(3, 256, 512, seed=7)  # two images per CPU chunk: two chunks
    cl = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # ComfyUI's layout
    y = synthesize(x, kind, 0.7, seed=5)
    assert torch.equal(synthesize(cl, kind, 0.7, seed=5), y)
    assert y.is_contiguous() and float((y - x).abs().mean()) > 0.01


@pytest.mark.parametrize("model", ["gaussian", "poisson_gaussian"])
def test_noise_shared_across_channels_is_luminance_noise(model):
    """per_channel false: one field for R, G and B (was a crash: the field has one channel)."""
    x = torch.full((2, 3, 40, 48), 0.5)  # mid-grey: no clipping, the three channels see the same noise
    y = synthesize(x, "noise", 0.2, seed=3, params={"per_channel": False, "model": model})
    d = y - x
    assert y.shape == x.shape and float(d.abs().mean()) > 0.01
    assert torch.allclose(d[:, 0], d[:, 1], atol=1e-6) and torch.allclose(d[:, 0], d[:, 2], atol=1e-6)
    own = synthesize(x, "noise", 0.2, seed=3, params={"model": model})
    assert not torch.allclose((own - x)[:, 0], (own - x)[:, 1])  # per channel: independent


def test_table_normals_do_not_depend_on_the_block_size(monkeypatch):
    from comfyui_gendeg.core.synth import base

    whole = base.table_normals(torch.empty(10_003), 42)
    monkeypatch.setattr(base, "NORMAL_BLOCK", 1 << 10)
    assert torch.equal(base.table_normals(torch.empty(10_003), 42), whole)
