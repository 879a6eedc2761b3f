"""Feed-forward restorers through spandrel: loading (official key layouts), refusals, channels, tiling, nodes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import InputError, UnsafeCheckpointError, WeightsError
from comfyui_gendeg.core.restore.feedforward import (
    load_restorer,
    resolve_dtype,
    restore,
    restorer_from_state_dict,
)
from comfyui_gendeg.core.tiling import TilingOutOfMemoryError
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.DnCNN import DnCNN
from spandrel.architectures.NAFNet import NAFNet
from spandrel.architectures.SCUNet import SCUNet
from spandrel.architectures.SwinIR import SwinIR


def _nafnet(channels: int = 3) -> NAFNet:
    torch.manual_seed(0)
    net = NAFNet(img_channel=channels, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]).eval()
    with torch.no_grad():  # block scales start at 0 (identity blocks); open them like a trained net
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.2)
    return net


def _dncnn(channels: int = 3) -> DnCNN:
    """Pure 3x3 convolutions: receptive-field radius 8 (nb=8), so tiles with overlap >= 32 are exact."""
    torch.manual_seed(1)
    net = DnCNN(in_nc=channels, out_nc=channels, nc=4, nb=8, act_mode="R").eval()
    with torch.no_grad():  # make the residual visible: DnCNN outputs x - noise estimate
        for p in net.parameters():
            p.mul_(2.0)
    return net


def _save(sd: dict, path, fmt: str) -> None:
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "pth-params":  # BasicSR-style wrapper with DataParallel prefix
        torch.save({"params": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-params"])
def test_nafnet_file_loads_detects_and_matches_direct_net(tmp_path, fmt):
    net = _nafnet()
    path = tmp_path / f"naf.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    _save(net.state_dict(), path, fmt)
    r = load_restorer(path)
    assert r.architecture == "NAFNet" and r.info["tags"] == ["8w"] and r.dtype == torch.float32
    assert r.info["tile_grid"] == 4  # 2 encoder levels: tiles start on multiples of 4
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x).clamp(0, 1)
    y = restore(r, x, tile=0)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)
    assert (ref - x).abs().mean() > 0.01  # the net really changes the image


@pytest.mark.parametrize(
    ("make", "arch", "grid"),
    [
        (lambda: SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64), "SCUNet", 64),
        (
            lambda: SwinIR(
                img_size=16, patch_size=1, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4,
                mlp_ratio=2, upscale=1, img_range=1.0, upsampler="", resi_connection="1conv",
            ),
            "SwinIR",
            4,
        ),
    ],
)
def test_other_architectures_detected_and_size_requirements_honoured(tmp_path, make, arch, grid):
    torch.manual_seed(0)
    net = make().eval()
    path = tmp_path / "m.safetensors"
    _save(net.state_dict(), path, "safetensors")
    r = load_restorer(path)
    assert r.architecture == arch and r.info["tile_grid"] == grid
    req = r.descriptor.size_requirements
    x = torch.rand(1, 3, 30, 37)  # below SCUNet's minimum 40; not a multiple of SwinIR's window
    y = restore(r, x, tile=0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    padded = F.pad(x, (0, max(req.minimum, 37) - 37, 0, max(req.minimum, 30) - 30), mode="reflect")
    with torch.no_grad():
        ref = net(padded)[..., :30, :37].clamp(0, 1)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-4)


def test_upscaler_refused(tmp_path):
    path = tmp_path / "up.pth"
    _save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2).state_dict(), path, "pth")
    with pytest.raises(WeightsError, match="2x upscaler"):
        load_restorer(path)


def test_unknown_and_broken_state_dicts_refused_clearly(tmp_path):
    with pytest.raises(WeightsError, match="not a model architecture spandrel recognises"):
        restorer_from_state_dict({"foo.weight": torch.zeros(3, 3), "bar.bias": torch.zeros(3)}, "rand.pth")
    with pytest.raises(WeightsError, match="IR-SDE"):
        restorer_from_state_dict({"init_conv.weight": torch.zeros(3, 3), "time_mlp.1.weight": torch.zeros(3)}, "sde.pth")
    sd = _nafnet().state_dict()
    sd["intro.weight"] = sd["intro.weight"][:, :, :2]  # detected as NAFNet, wrong shape
    with pytest.raises(WeightsError, match="could not be built"):
        restorer_from_state_dict(sd, "broken.pth")
    with pytest.raises(WeightsError, match="no tensors"):
        restorer_from_state_dict({}, "empty.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError):
        load_restorer(bad)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused_not_run_by_spandrel(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    sd = dict(_nafnet().state_dict())
    sd["x"] = _Evil()
    torch.save(sd, path)
    with pytest.raises(UnsafeCheckpointError):
        load_restorer(path)
    assert "pwned" not in capsys.readouterr().out


def test_dtype_rules():
    assert resolve_dtype("auto", "cpu", True, True) == torch.float32
    assert resolve_dtype("bf16", "cpu", False, True) == torch.bfloat16
    with pytest.raises(InputError, match="does not support fp16"):
        resolve_dtype("fp16", "cpu", False, True, "NAFNet")
    with pytest.raises(InputError, match="dtype must be one of"):
        resolve_dtype("int8", "cpu", True, True)
    # spandrel says NAFNet is not fp16-safe: the loader refuses it; bf16 runs and stays close
    sd = _nafnet().state_dict()
    with pytest.raises(InputError, match="fp16"):
        restorer_from_state_dict(sd, "naf.pth", dtype="fp16")
    r32 = restorer_from_state_dict(sd, "naf.pth")
    rbf = restorer_from_state_dict(sd, "naf.pth", dtype="bf16")
    assert next(rbf.descriptor.model.parameters()).dtype == torch.bfloat16
    x = torch.rand(1, 3, 32, 32)
    y32, ybf = restore(r32, x, tile=0), restore(rbf, x, tile=0)
    assert ybf.dtype == torch.float32 and (y32 - ybf).abs().mean() < 0.02


def test_tiled_equals_untiled_for_conv_net_and_batches():
    r = restorer_from_state_dict(_dncnn(3).state_dict(), "dncnn.pth")
    assert r.info["tile_grid"] == 1  # no downsampling: no grid, no padding
    x = torch.rand(3, 3, 70, 97, generator=torch.Generator().manual_seed(2))
    whole = restore(r, x, tile=0)
    tiled = restore(r, x, tile=64, overlap=40, tile_batch=4)  # radius 8 <= 40 // 4
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert (whole - x).abs().mean() > 0.01
    one = restore(r, x[1:2], tile=64, overlap=40)  # batch members are independent
    torch.testing.assert_close(one, tiled[1:2], rtol=0, atol=1e-5)


def test_nafnet_tiled_close_to_untiled_where_global_pooling_allows():
    # NAFNet's channel attention pools globally, so tiles differ a little from the whole image
    r = restorer_from_state_dict(_nafnet().state_dict(), "naf.pth")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    d = (restore(r, x, tile=40, overlap=16) - restore(r, x, tile=0)).abs()
    assert d.mean() < 0.05


def test_channels_grey_rgba_grey_alpha_and_grey_model():
    r = restorer_from_state_dict(_dncnn(3).state_dict(), "dncnn.pth")
    g = torch.Generator().manual_seed(4)
    rgb = torch.rand(2, 3, 33, 41, generator=g)
    alpha = torch.rand(2, 1, 33, 41, generator=g)
    ref = restore(r, rgb, tile=0)
    rgba = restore(r, torch.cat([rgb, alpha], 1), tile=0)
    assert rgba.shape == (2, 4, 33, 41)
    torch.testing.assert_close(rgba[:, :3], ref)
    torch.testing.assert_close(rgba[:, 3:], alpha)  # alpha carried through untouched
    grey = rgb[:, :1]
    out = restore(r, grey, tile=0)
    assert out.shape == (2, 1, 33, 41)
    torch.testing.assert_close(out, restore(r, grey.expand(-1, 3, -1, -1), tile=0).mean(1, keepdim=True))
    ga = restore(r, torch.cat([grey, alpha], 1), tile=0)
    assert ga.shape == (2, 2, 33, 41)
    torch.testing.assert_close(ga[:, 1:], alpha)

    # a grey model restores each colour channel on its own
    net1 = _dncnn(1)
    r1 = restorer_from_state_dict(net1.state_dict(), "dncnn_grey.pth")
    assert r1.in_channels == 1
    y = restore(r1, rgb, tile=0)
    with torch.no_grad():
        ref1 = net1(rgb.reshape(-1, 1, 33, 41)).reshape(2, 3, 33, 41).clamp(0, 1)
    torch.testing.assert_close(y, ref1, rtol=0, atol=1e-5)


def test_bad_images_refused():
    r = restorer_from_state_dict(_dncnn(3).state_dict(), "dncnn.pth")
    with pytest.raises(InputError, match="NaN"):
        restore(r, torch.full((1, 3, 8, 8), float("nan")), tile=0)
    with pytest.raises(InputError, match="channels"):
        restore(r, torch.rand(1, 5, 8, 8), tile=0)
    with pytest.raises(InputError, match="4-D"):
        restore(r, torch.rand(3, 8, 8), tile=0)


def test_oom_fallback_halves_tiles_and_gives_same_result(monkeypatch):
    r = restorer_from_state_dict(_dncnn(3).state_dict(), "dncnn.pth")
    x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(5))
    ref = restore(r, x, tile=0)
    real_call = type(r.descriptor).__call__
    sizes = []

    def fake_call(self, image):
        sizes.append(image.shape[-1])
        if image.shape[-1] * image.shape[-2] > 80 * 80:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return real_call(self, image)

    monkeypatch.setattr(type(r.descriptor), "__call__", fake_call)
    is_oom = lambda e: "out of memory" in str(e)  # noqa: E731
    freed = []
    y = restore(r, x, tile=0, overlap=40, is_oom=is_oom, on_oom=lambda: freed.append(1))
    assert sizes[0] == 150 and max(sizes[-2:]) <= 80 and freed
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)  # overlap kept (<= tile/2): still exact
    with pytest.raises(TilingOutOfMemoryError, match="out of memory even with"):
        restore(r, x, tile=0, overlap=8, is_oom=lambda e: True, min_tile=100)


# --- nodes -------------------------------------------------------------------------------


def test_nodes_load_and_restore(tmp_path):
    from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS, host
    from comfyui_gendeg.nodes.restore import GenDegRestore, GenDegRestorerLoader

    assert NODE_CLASS_MAPPINGS["GenDegRestore"] is GenDegRestore
    folder = host.models_dir() / "restore" / "sub"
    folder.mkdir(parents=True)
    net = _dncnn(3)
    _save(net.state_dict(), folder / "dncnn.safetensors", "safetensors")
    combo = GenDegRestorerLoader.INPUT_TYPES()["required"]["model_name"][0]
    # the file on disk, plus the feed-forward checkpoints the manifest knows (listed before they are downloaded)
    assert "sub/dncnn.safetensors" in combo and "NAFNet-SIDD-width64.pth" in combo
    assert combo == sorted(combo) and "diffloss/256x256_diffusion_uncond.pt" not in combo
    for node in (GenDegRestorerLoader, GenDegRestore):
        for name, spec in node.INPUT_TYPES()["required"].items():
            assert spec[1].get("tooltip"), f"{node.__name__}.{name} has no tooltip"
        assert node.DESCRIPTION and node.CATEGORY == "GenDeg/Restore"
    (restorer,) = GenDegRestorerLoader().load("sub/dncnn.safetensors", "auto")
    image = torch.rand(2, 29, 45, 4)  # BHWC, RGBA, batch of 2
    out = GenDegRestore().restore(image, restorer, tile_size=32, overlap=16, tile_batch=2)
    (res,) = out["result"]
    assert res.shape == image.shape and res.dtype == torch.float32 and res.device.type == "cpu"
    torch.testing.assert_close(res[..., 3], image[..., 3])
    with torch.no_grad():
        ref = net(image[..., :3].permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    assert (res[..., :3] - ref).abs().max() < 0.05  # tiled: close to the direct net
    assert len(out["ui"]["gendeg_compare"]) == 2 and "seconds_per_image" in out["ui"]["gendeg_stats"][0]
    with pytest.raises(WeightsError, match="not found"):
        GenDegRestorerLoader().load("missing.pth", "auto")


def test_restormer_through_optional_spandrel_extra_arches():
    extra = pytest.importorskip("spandrel_extra_arches.architectures.Restormer")
    torch.manual_seed(0)
    net = extra.Restormer(
        inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1],
        ffn_expansion_factor=2.0, bias=False, LayerNorm_type="WithBias",
    ).eval()
    r = restorer_from_state_dict(net.state_dict(), "restormer_diffloss.pth")  # DiffLoss nets: plain Restormer files
    assert r.architecture == "Restormer"
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        ref = net(x).clamp(0, 1)
    torch.testing.assert_close(restore(r, x, tile=0), ref, rtol=0, atol=1e-5)
