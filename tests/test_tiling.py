"""core/tiling.py: layout, blending weights, equivalence with untiled runs, OOM fallback."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import GenDegError, InputError
from comfyui_gendeg.core.tiling import (
    TilingOutOfMemoryError,
    blend_weights_1d,
    pad_for_model,
    plan_axis,
    plan_tiles,
    tiled_apply,
    tiled_apply_oom_safe,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "multiple"),
    [(600, 512, 32, 1), (1000, 256, 32, 1), (257, 64, 16, 1), (65, 64, 8, 1), (2048, 512, 32, 8), (999, 128, 48, 16)],
)
def test_plan_axis_covers_exactly_with_enough_overlap(length, tile, overlap, multiple):
    starts, t = plan_axis(length, tile, overlap, multiple)
    padded = -(-length // multiple) * multiple if len(starts) > 1 else length
    assert starts[0] == 0 and starts[-1] + t == padded  # exact cover of the (grid-rounded) axis
    assert t <= tile and t % multiple == 0 and all(s % multiple == 0 for s in starts)
    assert all(t - (b - a) >= overlap for a, b in zip(starts, starts[1:], strict=False))  # overlap honoured
    if multiple == 1:  # smallest number of tiles (tiles of `tile` stepping by tile - overlap)
        assert len(starts) == math.ceil((length - overlap) / (tile - overlap))
    else:  # never more than one extra tile for the grid
        assert len(starts) <= math.ceil((padded - overlap) / (tile - overlap)) + 1
    covered = torch.zeros(padded, dtype=torch.bool)
    for s in starts:
        covered[s : s + t] = True
    assert covered.all()


def test_plan_axis_single_tile_cases():
    assert plan_axis(100, 0, 16) == ([0], 100)  # 0 = whole image
    assert plan_axis(100, 128, 16) == ([0], 100)  # fits in one tile
    assert plan_axis(64, 64, 8) == ([0], 64)
    with pytest.raises(InputError, match="overlap"):
        plan_axis(300, 64, 64)


def test_plan_is_less_work_than_comfy_style_layout():
    # ComfyUI steps by tile-overlap and truncates the last tile: 600 px, 512/32 -> 512 + 120.
    # Equal tiles of 316 cover 600 with 32 overlap: 632 px per axis, same work, equal sizes.
    plan = plan_tiles(600, 600, 512, 32)
    assert (plan.tile_h, plan.tile_w, plan.n_tiles) == (316, 316, 4)
    assert plan.work() == 632 * 632


@pytest.mark.parametrize("n_tiles_len", [([0, 40, 80], 60, 140), ([0, 284], 316, 600), ([0, 30, 60, 90], 50, 140)])
@pytest.mark.parametrize("scale", [1, 2])
def test_blend_weights_are_partition_of_unity(n_tiles_len, scale):
    starts, t, length = n_tiles_len
    w = blend_weights_1d(starts, t, length, scale)
    assert w.shape == (len(starts), length * scale)
    torch.testing.assert_close(w.sum(0), torch.ones(length * scale, dtype=torch.float64))
    assert (w >= 0).all()
    for i, s in enumerate(starts):  # zero outside the tile
        outside = torch.ones(length * scale, dtype=torch.bool)
        outside[s * scale : (s + t) * scale] = False
        assert (w[i][outside] == 0).all()
    # image borders keep full weight (no darkening of the border)
    assert w[0, 0] == 1 and w[-1, -1] == 1


def test_blend_ramp_is_raised_cosine_in_the_middle_half():
    # two tiles, overlap 16: margin 4 at each side, sin^2 ramp over the 8 central pixels
    starts, t, length = [0, 48], 64, 112
    w = blend_weights_1d(starts, t, length)
    right = w[1, 48:64]
    k = torch.arange(16, dtype=torch.float64)
    expected = torch.sin(0.5 * math.pi * ((k - 4 + 0.5) / 8).clamp(0, 1)) ** 2
    torch.testing.assert_close(right, expected)
    assert (right[:4] == 0).all() and (right[-4:] == 1).all()


@pytest.mark.parametrize("shape", [(2, 3, 97, 130), (1, 1, 33, 200), (3, 4, 64, 64)])
@pytest.mark.parametrize("tile_batch", [1, 5])
def test_pointwise_fn_equals_untiled(shape, tile_batch):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    fn = lambda a: torch.sigmoid(3 * a - 1) * 0.5 + a**2  # noqa: E731
    y = tiled_apply(fn, x, 32, 8, tile_batch=tile_batch)
    torch.testing.assert_close(y, fn(x), rtol=0, atol=1e-6)


def test_conv_within_quarter_overlap_is_exact_and_small_overlap_is_close():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    x = torch.rand(2, 3, 75, 101)
    with torch.no_grad():
        ref = conv(x)
        exact = tiled_apply(conv, x, 40, 12)  # receptive radius 2 <= overlap // 4 = 3
        rough = tiled_apply(conv, x, 40, 4)  # radius 2 > 1: only seams differ
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-5)
    diff = (rough - ref).abs()
    assert diff.max() < 0.25 * ref.abs().max()
    assert diff.mean() < 0.02 * ref.abs().mean()


def test_grid_alignment_makes_strided_nets_match_untiled():
    # a 2-level "UNet": downsample by 4 (average), process, upsample back. Tiles starting off the
    # 4-pixel grid see other pixel groups than the whole image, everywhere, not only at seams.
    def net(a):  # pads internally, like NAFNet, so it accepts any size
        h, w = a.shape[-2:]
        a = F.pad(a, (0, -w % 4, 0, -h % 4), mode="replicate")
        return F.interpolate(torch.tanh(F.avg_pool2d(a, 4) * 3), scale_factor=4, mode="nearest")[..., :h, :w]

    x = torch.rand(1, 3, 96, 200, generator=torch.Generator().manual_seed(7))
    whole = net(x)
    aligned = tiled_apply(net, x, 72, 16, align=4)
    torch.testing.assert_close(aligned, whole, rtol=0, atol=1e-6)
    unaligned = tiled_apply(net, x, 72, 18)  # starts 0, 61, ... off the grid
    assert (unaligned - whole).abs().mean() > 0.01
    # an image not a multiple of the grid is padded (reflect) and cropped back
    y = tiled_apply(net, x[..., :95, :199], 72, 16, pad_multiple=4)
    assert y.shape == (1, 3, 95, 199)
    torch.testing.assert_close(y[..., :92, :196], whole[..., :92, :196], rtol=0, atol=1e-6)


def test_scale_two_upscaler_tiled_equals_untiled():
    up = torch.nn.Upsample(scale_factor=2, mode="nearest")
    x = torch.rand(1, 3, 50, 77)
    y = tiled_apply(up, x, 24, 8, scale=2)
    assert y.shape == (1, 3, 100, 154)
    torch.testing.assert_close(y, up(x), rtol=0, atol=1e-6)


def test_wrong_scale_is_reported():
    with pytest.raises(GenDegError, match="expected scale 1"):
        tiled_apply(lambda a: a[..., ::2, ::2], torch.rand(1, 3, 40, 40), 16, 4)


def test_pad_multiple_and_minimum_reach_the_fn_and_are_cropped():
    seen = []

    def fn(a):
        seen.append(tuple(a.shape[-2:]))
        return a + 0.1

    x = torch.rand(2, 3, 45, 70)
    y = tiled_apply(fn, x, 32, 8, pad_multiple=16, min_size=16)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in seen)
    torch.testing.assert_close(y, x + 0.1, rtol=0, atol=1e-6)
    seen.clear()
    y = tiled_apply(fn, x[:, :, :7, :9], 0, 0, pad_multiple=8, min_size=32, square=True, tile_batch=2)
    assert seen == [(32, 32)] and y.shape == (2, 3, 7, 9)


def test_pad_for_model_reflects():
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 3, 5)
    p, size = pad_for_model(x, multiple=8)
    assert size == (3, 5) and p.shape[-2:] == (8, 8)
    assert p[0, 0, 0, :8].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]  # reflected, not zero


def test_progress_and_interrupt():
    calls = []
    x = torch.rand(2, 3, 64, 64)
    tiled_apply(lambda a: a, x, 32, 8, tile_batch=3, progress=lambda i, n: calls.append((i, n)))
    n = 2 * plan_tiles(64, 64, 32, 8).n_tiles
    assert calls[0] == (0, n) and calls[-1] == (n, n)

    class Stop(Exception):
        pass

    def stop(i, n):
        if i > 0:
            raise Stop

    with pytest.raises(Stop):
        tiled_apply(lambda a: a, x, 32, 8, progress=stop)


class FakeOOM(RuntimeError):
    pass


def test_oom_halves_tile_until_it_fits():
    sizes = []

    def fn(a):
        sizes.append((a.shape[0], a.shape[-1]))
        if a.shape[0] * a.shape[-1] * a.shape[-2] > 40 * 40:
            raise FakeOOM("CUDA out of memory (fake)")
        return a * 0.5

    freed = []
    x = torch.rand(2, 3, 150, 150)
    y = tiled_apply_oom_safe(
        fn, x, 0, 16, is_oom=lambda e: isinstance(e, FakeOOM), min_tile=16, on_oom=lambda: freed.append(1), tile_batch=4
    )
    torch.testing.assert_close(y, x * 0.5, rtol=0, atol=1e-6)
    assert sizes[0] == (2, 150)  # whole image (2 images at once) first
    assert max(n * s for n, s in sizes[-3:]) <= 40  # the successful tiles are small, one at a time
    assert freed  # cache emptied on each OOM


def test_oom_gives_up_below_min_tile_with_advice():
    def fn(a):
        raise FakeOOM("out of memory")

    with pytest.raises(TilingOutOfMemoryError, match="fp16/bf16"):
        tiled_apply_oom_safe(fn, torch.rand(1, 3, 64, 64), 64, 8, is_oom=lambda e: isinstance(e, FakeOOM), min_tile=16)


def test_other_errors_pass_through_oom_wrapper():
    def fn(a):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        tiled_apply_oom_safe(fn, torch.rand(1, 3, 32, 32), 16, 4, is_oom=lambda e: False)
