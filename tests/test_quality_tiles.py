"""PSNR / SSIM / MS-SSIM in tiles: equal to the whole-image computation, bounded memory, the pixel
check in every tile, progress; LPIPS/DISTS refuse images beyond their memory budget (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.quality import api, fullref
from comfyui_gendeg.core.quality.common import Y_WEIGHTS
from comfyui_gendeg.core.quality.lpips import LPIPS


@pytest.fixture()
def tiny_tiles(monkeypatch):
    """Tiles of a few thousand elements, so small test images are cut in many rows and columns."""
    monkeypatch.setattr(fullref, "CPU_TILE_ELEMENTS", 3000)
    monkeypatch.setattr(fullref, "MIN_TILE", 8)


def _pair(shape, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # some structure, so SSIM is not near 0
    y = (x + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    return x, y


def _psnr_f64(x: torch.Tensor, y: torch.Tensor, y_channel: bool, crop: int) -> np.ndarray:
    """Independent PSNR: NumPy float64, BT.601 Y as MATLAB's rgb2ycbcr, border crop."""
    a, b = x.double().numpy(), y.double().numpy()
    if y_channel:
        w = np.array(Y_WEIGHTS).reshape(1, 3, 1, 1)
        a, b = (16 + (a * w).sum(1, keepdims=True)) / 255, (16 + (b * w).sum(1, keepdims=True)) / 255
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    return 10 * np.log10(1 / ((a - b) ** 2).mean(axis=(1, 2, 3)))


def _whole(x, y, y_channel, crop):
    """The whole-image inputs the differentiable cores get: cropped, Y where asked, float32."""
    x, y = x.float(), y.float()
    if y_channel:
        from comfyui_gendeg.core.quality.common import rgb_to_y

        x, y = rgb_to_y(x), rgb_to_y(y)
    if crop:
        x, y = x[..., crop:-crop, crop:-crop], y[..., crop:-crop, crop:-crop]
    return x, y


CASES = {
    "rgb-odd": dict(shape=(2, 3, 181, 203)),
    "grey": dict(shape=(1, 1, 170, 190)),
    "y-crop": dict(shape=(2, 3, 180, 177), y_channel=True, crop=3),
    "channels-last": dict(shape=(2, 3, 175, 199), channels_last=True),
    "float64": dict(shape=(1, 3, 172, 168), dtype=torch.float64),
    "one-reference": dict(shape=(3, 3, 165, 171), shared_reference=True),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_tiles_equal_the_whole_image_computation(case, tiny_tiles):
    o = CASES[case]
    y_channel, crop = o.get("y_channel", False), o.get("crop", 0)
    x, y = _pair(o["shape"], seed=len(case))
    if o.get("shared_reference"):
        x = x[:1]
    if o.get("channels_last"):  # a ComfyUI IMAGE permuted to [B,C,H,W]
        x, y = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    x, y = x.to(o.get("dtype", torch.float32)), y.to(o.get("dtype", torch.float32))
    # the tiling really splits this image in rows and columns
    c = 1 if y_channel or x.shape[1] == 1 else 3
    rows, cols = fullref._ssim_plan(c, x.shape[-2] - 2 * crop, x.shape[-1] - 2 * crop, fullref.CPU_TILE_ELEMENTS)
    assert rows < x.shape[-2] - 2 * crop - 10 and cols < x.shape[-1] - 2 * crop - 10
    xe = x.expand(y.shape[0], -1, -1, -1)
    kw = dict(y_channel=y_channel, crop=crop)
    assert np.abs(fullref.psnr(x, y, **kw).double().numpy() - _psnr_f64(xe, y, y_channel, crop)).max() < 1e-4
    wx, wy = _whole(xe, y, y_channel, crop)
    assert torch.allclose(fullref.ssim(x, y, **kw), fullref.ssim_values(wx, wy), rtol=0, atol=2e-7)
    assert torch.allclose(fullref.ms_ssim(x, y, **kw), fullref.ms_ssim_values(wx, wy), rtol=0, atol=2e-7)


def test_tile_size_does_not_change_the_results(monkeypatch):
    x, y = _pair((2, 3, 200, 230), seed=7)
    ref = {m: getattr(fullref, m)(x, y) for m in ("psnr", "ssim", "ms_ssim")}
    for elements, min_tile in ((2000, 4), (9000, 16), (1 << 20, 32)):
        monkeypatch.setattr(fullref, "CPU_TILE_ELEMENTS", elements)
        monkeypatch.setattr(fullref, "MIN_TILE", min_tile)
        for m, want in ref.items():
            assert torch.allclose(getattr(fullref, m)(x, y), want, rtol=0, atol=2e-6), (m, elements)


def test_ms_ssim_pyramid_in_tiles_matches_piq_on_odd_sides(tiny_tiles):
    import piq

    for shape in ((1, 3, 171, 164), (1, 3, 164, 171), (1, 3, 333, 177)):
        x, y = _pair(shape, seed=shape[2])
        want = piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none")
        assert torch.allclose(fullref.ms_ssim(x, y), want.float(), atol=1e-5), shape


@pytest.mark.parametrize("metric", ["psnr", "ssim", "ms_ssim"])
def test_every_tile_is_checked(metric, tiny_tiles):
    x, y = _pair((2, 3, 170, 180))
    bad = y.clone()
    bad[1, 2, 165, 177] = float("nan")  # the last tile of the second image
    with pytest.raises(InputError, match="image: contains NaN"):
        getattr(fullref, metric)(x, bad)
    bad = x.clone()
    bad[0, 0, 90, 3] = 1.5
    with pytest.raises(InputError, match=r"reference: values must be in 0\.\.1, got 0.*1\.5"):
        getattr(fullref, metric)(bad, y)
    bad = y.clone()
    bad[0, 1, 1, 100] = -0.5  # inside the cropped border: never tiled, still checked
    with pytest.raises(InputError, match=r"image: values must be in 0\.\.1"):
        getattr(fullref, metric)(x, bad, crop=4)
    bad[0, 1, 1, 100] = 0.5
    bad[1, 2, 60, -2] = float("nan")
    with pytest.raises(InputError, match="image: contains NaN"):
        getattr(fullref, metric)(x, bad, crop=4)
    bad = x[:1].clone()
    bad[0, 0, -1, -1] = float("inf")  # one reference for the whole batch
    with pytest.raises(InputError, match="reference: contains NaN or infinite"):
        getattr(fullref, metric)(bad, y)


def test_progress_counts_every_tile(tiny_tiles):
    x, y = _pair((2, 3, 170, 180))
    for metric in ("psnr", "ssim", "ms_ssim"):
        calls = []
        getattr(fullref, metric)(x, y, progress=lambda i, n, calls=calls: calls.append((i, n)))
        n = calls[-1][1]
        assert n > 10 and calls == [(i, n) for i in range(1, n + 1)], metric
    calls = []
    api.score(y, ["psnr", "ms_ssim", "piqe"], x, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1][0] == calls[-1][1] and [i for i, _ in calls] == sorted(i for i, _ in calls)


def test_score_checks_values_once_for_pixel_metrics_and_still_refuses_bad_pixels():
    x, y = _pair((1, 3, 64, 64))
    y[0, 0, 0, 0] = float("nan")
    for metrics in (["psnr"], ["ssim", "psnr"], ["psnr", "piqe"]):
        with pytest.raises(InputError, match="image: contains NaN"):
            api.score(y, metrics, x)


def test_gendeg_score_shows_progress_for_big_images(tmp_path, monkeypatch, capsys):
    from comfyui_gendeg import cli
    from comfyui_gendeg.commands import quality as quality_cmd
    from comfyui_gendeg.nodes import host
    from PIL import Image

    x, y = _pair((1, 3, 170, 180))
    paths = []
    for name, t in (("ref.png", x), ("img.png", y)):
        Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    heard = []
    monkeypatch.setattr(host, "PROGRESS_LISTENERS", [lambda i, n: heard.append((i, n))])
    assert cli.main(["score", *paths, "-m", "psnr,ssim", "--device", "cpu"]) == 0
    quiet = json.loads(capsys.readouterr().out)
    assert heard == []  # small images: no bar
    monkeypatch.setattr(quality_cmd, "PROGRESS_PIXELS", 170 * 180)
    assert cli.main(["score", *paths, "-m", "psnr,ssim", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == quiet
    assert len(heard) > 2 and heard[-1][0] == heard[-1][1]


def _tiny_net(kind: str) -> api.IQAModel:
    from comfyui_gendeg.core.quality.dists import DISTS

    net = DISTS(widths=(4, 4, 6, 6, 8)) if kind == "dists" else LPIPS(kind.split("-")[1], widths=(4, 6, 8, 8, 8) if kind == "lpips-alex" else (4, 4, 6, 6, 8))
    return api.IQAModel(kind, net)


@pytest.mark.parametrize("kind", ["lpips-alex", "lpips-vgg", "dists"])
def test_networks_refuse_images_beyond_their_memory_budget(kind, monkeypatch):
    model = _tiny_net(kind)
    x, y = _pair((1, 3, 48, 64))
    limit = 48 * 64 * api.NET_BYTES_PER_PIXEL[kind]
    monkeypatch.setattr(api, "NET_MEMORY_BUDGET", limit)  # 48x64 is just inside
    assert api.score(y, [model.metric], x, models=[model])[model.metric].shape == (1,)
    monkeypatch.setattr(api, "NET_MEMORY_BUDGET", limit - 1)
    with pytest.raises(InputError, match=rf"{model.metric} \({kind}\) on 64x48 .* the limit is .* MP per image .*downscale or crop"):
        api.score(y, ["psnr", model.metric], x, models=[model])


def test_network_batches_are_split_to_fit_the_budget(monkeypatch):
    model = _tiny_net("lpips-alex")
    x, y = _pair((3, 3, 40, 40), seed=3)
    whole = api.score(y, ["lpips"], x, models=[model])["lpips"]
    monkeypatch.setattr(api, "NET_MEMORY_BUDGET", 40 * 40 * api.NET_BYTES_PER_PIXEL["lpips-alex"])  # one image per call
    calls = []
    forward = model.net.forward
    monkeypatch.setattr(model.net, "forward", lambda r, i: (calls.append(i.shape[0]), forward(r, i))[1])
    split = api.score(y, ["lpips"], x, models=[model])["lpips"]
    assert calls == [1, 1, 1]
    assert torch.allclose(split, whole, atol=1e-6)


_MEMORY_PROBE = r"""
import json, sys, torch
from comfyui_gendeg.core.quality import fullref
torch.set_num_threads(1)

def rss():
    out = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out

def growth(fn):
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = rss()["VmRSS"]
    fn()
    return rss()["VmHWM"] - base

h, w = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = torch.rand(1, 3, h, w, generator=g)
y = torch.rand(1, 3, h, w, generator=g)
for m in ("psnr", "ssim", "ms_ssim"):  # warm up (kernels, thread pools) on a small pair
    getattr(fullref, m)(x[..., :200, :], y[..., :200, :])
    fullref.ssim_values(x[..., :200, :], y[..., :200, :])
out = {m: growth(lambda m=m: getattr(fullref, m)(x, y)) for m in ("psnr", "ssim", "ms_ssim")}
out["whole_ssim"] = growth(lambda: fullref.ssim_values(x, y))
out["input_mib"] = x.numel() * 4 / 2**20
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (peak RSS)")
def test_peak_memory_stays_a_few_tiles_on_a_tall_image(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(_MEMORY_PROBE)
    proc = subprocess.run([sys.executable, str(probe), "6144", "256"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    one = r["input_mib"]  # 18 MiB: one RGB float32 input
    assert r["whole_ssim"] > 4 * one, r  # the whole-image computation: several full-size maps (the probe sees them)
    assert r["psnr"] < 0.4 * one, r  # a few tile buffers
    assert r["ssim"] < 0.4 * one, r
    assert r["ms_ssim"] < one, r  # plus the pyramid: a third of each input
