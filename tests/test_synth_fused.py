"""The compiled CPU loops of rain and snow (core/synth/fused.py, numba) against the eager path.

Both paths draw the same random numbers; the compiled one builds the streak/flake kernels,
merges the seed layers, stamps and blends in compiled loops. Seeds must be identical, kernels
and images equal up to float32 rounding, 8-bit results the rounding of the float ones, in the
input's memory layout; without numba (or with ``GENDEG_NO_JIT=1``) the eager path runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.synth import fused, synthesize
from comfyui_gendeg.core.synth import kernels as kernels_mod
from comfyui_gendeg.core.synth.base import round_8bit_into
from helpers import scene

pytest.importorskip("numba")

KINDS = ["rain", "snow", "rain+haze", "snow+haze"]


def both_paths(monkeypatch: pytest.MonkeyPatch, fn):  # noqa: ANN001, ANN201
    """``fn()`` on the eager path, then on the compiled one."""
    monkeypatch.setenv("GENDEG_NO_JIT", "1")
    assert not fused.available()
    eager = fn()
    monkeypatch.setenv("GENDEG_NO_JIT", "0")
    assert fused.available()
    return eager, fn()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """ComfyUI's layout: an interleaved ``[B,H,W,C]`` image seen as ``[B,C,H,W]``."""
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["standard", "channels_last"])
def test_compiled_equals_eager_up_to_rounding(monkeypatch, kind, layout):
    x = scene(2, 128, 192, seed=4)
    x = channels_last(x) if layout == "channels_last" else x
    eager, compiled = both_paths(monkeypatch, lambda: synthesize(x, kind, 0.8, seed=11))
    assert float((eager - x).abs().mean()) > 0.01  # the weather is there
    assert float((compiled - eager).abs().max()) < 2e-5


@pytest.mark.parametrize("kind", ["rain", "snow"])
def test_compiled_results_keep_the_input_layout_and_values(kind):
    x = scene(2, 96, 128, seed=2)
    cl = channels_last(x)
    y, y_cl = synthesize(x, kind, 0.7, seed=3), synthesize(cl, kind, 0.7, seed=3)
    assert y.is_contiguous() and y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_cl)  # the same arithmetic whichever layout is read and written


@pytest.mark.parametrize("kind", ["rain", "snow"])
@pytest.mark.parametrize("layout", ["standard", "channels_last"])
def test_8bit_is_the_rounding_of_the_float_result(kind, layout):
    x8 = (scene(3, 64, 80, seed=6) * 255 + 0.5).to(torch.uint8)  # 3 images of 64 x 80: one CPU chunk
    x8 = channels_last(x8) if layout == "channels_last" else x8
    y8 = synthesize(x8, kind, 0.6, seed=9)
    ref = round_8bit_into(synthesize(x8.float() / 255, kind, 0.6, seed=9), torch.empty(x8.shape, dtype=torch.uint8))
    assert y8.dtype == torch.uint8 and torch.equal(y8, ref)
    assert y8.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize("b,hw,p,top", [(1, 512 * 512, 0.005, 1.0), (3, 4000, 0.03, 1.5), (2, 90, 0.4, 1.0)])
@pytest.mark.parametrize("with_values", [False, True])
def test_compiled_seed_layers_are_the_eager_seeds(monkeypatch, b, hw, p, top, with_values):
    values = (lambda n, g: torch.rand((n,), generator=g).mul_(0.5).add_(0.5)) if with_values else None
    for seed in range(6):
        strength = torch.rand(b, generator=torch.Generator().manual_seed(seed)) * top

        def draw(seed: int = seed, strength: torch.Tensor = strength):  # noqa: ANN202
            g = torch.Generator().manual_seed(seed)
            sites, vals = kernels_mod.nested_sites(b, hw, strength, p, g, torch.device("cpu"), top, values)
            return sites, vals, torch.rand(4, generator=g)  # and the generator's state after

        (s0, v0, r0), (s1, v1, r1) = both_paths(monkeypatch, draw)
        assert s0.numel() > 0 and torch.equal(s0, s1) and torch.equal(r0, r1)
        assert (v0 is None and v1 is None) if not with_values else torch.equal(v0, v1)


def test_compiled_streak_kernels_match_eager(monkeypatch):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        b = 3
        angle, opacity = torch.rand(b, generator=g) * 3.1, torch.rand(b, generator=g) + 0.05
        length, width = float(torch.rand(1, generator=g)) * 50, float(torch.rand(1, generator=g)) * 3
        size = 2 * int(length / 2 + 3 * width + 2) + 1
        args = (b, length, width, angle, opacity, size)
        k0, k1 = both_paths(monkeypatch, lambda args=args: kernels_mod.streak_kernels(*args))
        assert torch.equal(k0 == 0, k1 == 0)  # the same taps survive the tail cut
        assert torch.allclose(k1.amax(dim=(1, 2)), opacity, rtol=1e-6)  # an isolated streak peaks at its opacity
        assert float((k0 - k1).abs().max()) < 1e-5 * float(opacity.max())


@pytest.mark.parametrize("with_values", [False, True])
@pytest.mark.parametrize("h,w", [(40, 48), (33, 30)])
def test_band_stamping_is_the_circular_convolution(with_values, h, w):
    """The band canvases, put together, are the circular convolution of the seeds with the kernels
    (seeds near every border wrap around, bands of any height, several images)."""
    fused.available()
    g = torch.Generator().manual_seed(5)
    b = 2
    sites = torch.unique(torch.randint(0, b * h * w, (150,), generator=g))  # sorted, both images
    values = torch.rand(sites.numel(), generator=g) if with_values else None
    kernels = kernels_mod.streak_kernels(b, 12.0, 1.1, torch.tensor([1.2, 2.3]), torch.tensor([0.3, 0.8]), 17)
    s, rows, vals, cols, wts, starts, k = fused.prepare(sites, values, kernels, h, w)
    p = k // 2
    masks = torch.zeros(b, h, w)
    for i in range(b):
        for y0 in range(0, h, 7):  # bands of 7 rows (the last one shorter)
            y1 = min(h, y0 + 7)
            cv = np.full((7, w + 2 * p), np.nan, dtype=np.float32)  # zeroed there
            fused._stamp_band(cv, s, rows, vals, cols[i], wts[i], starts[i], k, i, y0, y1, h, w)
            masks[i, y0:y1] = torch.from_numpy(cv[: y1 - y0, p : p + w])
    ref = kernels_mod.stamp_circular(sites, torch.ones(sites.numel()) if values is None else values, kernels, h, w)
    assert float((masks - ref).abs().max()) < 1e-6
    # every seed's whole kernel is somewhere in the frame: the totals are the seeds' times the kernels'
    total = torch.zeros(b).index_add_(0, sites // (h * w), torch.ones(sites.numel()) if values is None else values)
    assert torch.allclose(masks.sum(dim=(1, 2)), total * kernels.sum(dim=(1, 2)), rtol=1e-4)


def test_numba_is_imported_on_first_use_only():
    """Loading the pack (ComfyUI's start) does not import numba; the first rain or snow does."""
    import os
    import subprocess
    import sys

    code = ("import sys, torch; from comfyui_gendeg.core.synth import synthesize; a = 'numba' in sys.modules; "
            "synthesize(torch.rand(1, 3, 32, 32), 'rain', 0.5); print(a, 'numba' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "GENDEG_NO_JIT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env=env).stdout
    assert out.split() == ["False", "True"]


def test_without_numba_the_eager_path_runs(monkeypatch):
    x = scene(1, 64, 64, seed=1)
    monkeypatch.setenv("GENDEG_NO_JIT", "1")
    eager = synthesize(x, "snow", 0.5, seed=2)
    monkeypatch.setenv("GENDEG_NO_JIT", "0")
    monkeypatch.setattr(fused, "numba", None)  # as where numba is not installed (the import was tried)
    monkeypatch.setattr(fused, "_tried", True)
    assert not fused.available()
    assert torch.equal(synthesize(x, "snow", 0.5, seed=2), eager)


@pytest.mark.parametrize("layout", ["standard", "channels_last"])
@pytest.mark.parametrize("edges", [False, True])
def test_jpeg_float_conversions_are_the_numpy_ones(monkeypatch, layout, edges):
    """JPEG's float → 8-bit → float conversions in compiled passes: the very same pixels."""
    x = scene(2, 72, 88, seed=8)
    if edges:  # values on rounding boundaries and the tolerated ±1e-3 outside 0..1
        x[:, :, :4] = torch.tensor([-0.9e-3, 0.0, 0.5 / 255, 1.0 + 0.9e-3]).view(1, 1, 4, 1)
        x[:, :, 4:8] = (torch.arange(4 * 88).view(1, 1, 4, 88) % 255 + 0.5) / 255
    x = channels_last(x) if layout == "channels_last" else x
    eager, compiled = both_paths(monkeypatch, lambda: synthesize(x, "jpeg", 0.5))
    assert torch.equal(eager, compiled)
    u8_eager, u8_compiled = both_paths(monkeypatch, lambda: synthesize(x, "jpeg", 0.0))  # rounded only, not coded
    assert torch.equal(u8_eager, u8_compiled)
    assert torch.equal(u8_compiled, (x * 255 + 0.5).to(torch.uint8).float() / 255)


@pytest.mark.parametrize("kind", ["rain", "snow"])
def test_a_frame_does_not_depend_on_the_frame_before(kind):
    x = scene(1, 96, 96, seed=3)
    first = synthesize(x, kind, 0.9, seed=1)
    synthesize(scene(2, 96, 96, seed=4), kind, 0.5, seed=2)  # other frames in between
    assert torch.equal(synthesize(x, kind, 0.9, seed=1), first)
