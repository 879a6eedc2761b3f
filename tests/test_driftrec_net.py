"""NCSN++: official key layout and size, FIR resampling, SDPA attention, odd sizes; the DriftRec loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import UnsafeCheckpointError, WeightsError
from comfyui_gendeg.core.restore.driftrec_loader import (
    converted_path_for,
    infer_config,
    load_driftrec,
    read_metadata,
    save_driftrec,
)
from comfyui_gendeg.core.restore.nets.ncsnpp import (
    NCSNpp,
    fir_downsample,
    fir_upsample,
    pad_to_fit,
)
from driftrec_helpers import HPARAMS, TINY, lightning_checkpoint, save_official, tiny_net
from safetensors.torch import save_file
from scipy.signal import upfirdn

K = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0  # the separable FIR kernel, normalised per axis


def test_default_config_is_the_official_layout_and_size():
    with torch.device("meta"):
        net = NCSNpp()
    keys = list(net.state_dict())
    assert keys[:3] == ["output_layer.weight", "output_layer.bias", "all_modules.0.W"]
    assert len(net.all_modules) == 77 and keys[-1] == "all_modules.76.bias"
    assert sum(p.numel() for p in net.parameters()) == 65_623_359  # 65.6 M
    assert net.attn_levels == {4}  # 256 / 2**4 = 16
    assert not net.all_modules[0].W.requires_grad
    # a few official names inside the blocks
    for k in ("all_modules.4.GroupNorm_0.weight", "all_modules.4.Dense_0.weight", "all_modules.4.Conv_1.weight",
              "all_modules.6.Conv_2.weight", "all_modules.7.Conv_0.weight", "all_modules.33.NIN_3.W", "all_modules.33.NIN_3.b"):
        assert k in keys, k


def _upfirdn2d_reference(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Separable [1,3,3,1] filtering with scipy's upfirdn, cropped as StyleGAN2's upfirdn2d pads."""
    h = K * up  # gain up per axis (total up**2)
    out = []
    for img in x.reshape(-1, *x.shape[-2:]):
        rows = np.stack([upfirdn(h, r, up=up) for r in img])  # along W
        full = np.stack([upfirdn(h, c, up=up) for c in rows.T]).T  # along H
        # scipy returns the full convolution; StyleGAN2 pads (p0, p1) and keeps the valid part
        p0 = 2 if up == 2 else 1
        n_h, n_w = img.shape[0] * up, img.shape[1] * up
        valid = full[3 - p0: 3 - p0 + n_h, 3 - p0: 3 - p0 + n_w] if up == 2 else full[3 - p0:, 3 - p0:]
        if down == 2:
            valid = valid[: img.shape[0] - (img.shape[0] % 2): 2, : img.shape[1] - (img.shape[1] % 2): 2]
        out.append(valid)
    return np.stack(out).reshape(*x.shape[:-2], *out[0].shape)


@pytest.mark.parametrize("size", [(8, 8), (7, 10), (5, 5)])
def test_fir_resampling_equals_scipy_upfirdn(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    up = fir_upsample(x).numpy()
    down = fir_downsample(x).numpy()
    assert up.shape[-2:] == (2 * size[0], 2 * size[1]) and down.shape[-2:] == (size[0] // 2, size[1] // 2)
    np.testing.assert_allclose(up, _upfirdn2d_reference(x.numpy(), 2, 1), atol=1e-12)
    np.testing.assert_allclose(down, _upfirdn2d_reference(x.numpy(), 1, 2), atol=1e-12)
    # constant images stay constant away from the zero-padded border
    c = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    assert bool((fir_upsample(c)[..., 2:-2, 2:-2] - 1).abs().max() < 1e-12) and bool((fir_downsample(c)[..., 1:-1, 1:-1] - 1).abs().max() < 1e-12)


def test_attention_equals_the_official_einsum_softmax():
    net = tiny_net()
    attn = next(m for m in net.all_modules if type(m).__name__ == "AttnBlock")
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 32, 3, 5)
    with torch.no_grad():
        got = attn(x)
        h = attn.GroupNorm_0(x)

        def nin(m, t):
            return torch.einsum("bchw,cd->bdhw", t, m.W) + m.b[None, :, None, None]

        q, k, v = nin(attn.NIN_0, h), nin(attn.NIN_1, h), nin(attn.NIN_2, h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * 32**-0.5
        w = torch.softmax(w.reshape(2, 3, 5, 15), dim=-1).reshape(2, 3, 5, 3, 5)
        ref = (x + nin(attn.NIN_3, torch.einsum("bhwij,bcij->bchw", w, v))) / np.sqrt(2.0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_pad_to_fit_replicates_bottom_right_as_officially():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    y = pad_to_fit(x, torch.zeros(1, 1, 3, 3))
    assert torch.equal(y[0, 0], torch.tensor([[0.0, 1, 1], [2, 3, 3], [2, 3, 3]]))


def test_any_size_and_nominal_attention_placement():
    net = tiny_net()
    assert net.attn_levels == {2}  # image_size 32: level 2 is nominally 8 px
    with torch.no_grad():
        for h, w in [(32, 32), (37, 29), (9, 70), (3, 5)]:
            out = net(torch.rand(1, 6, h, w), 0.5)
            assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()
        # output / sigma (scale_by_sigma): doubling sigma halves the output when the embedding is the same
        x = torch.rand(2, 6, 16, 16)
        a = net(x, torch.tensor([0.2, 0.2]))
        b = net(x, torch.tensor([0.2, 0.4]))
        assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


# --- loader -------------------------------------------------------------------------------


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 6, 20, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return torch.equal(a(x, 0.3), b(x, 0.3))


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_official_checkpoint_loads_ema_or_raw_and_converts_once(tmp_path, weights):
    raw, ema = tiny_net(0), tiny_net(1)
    ckpt = save_official(tmp_path / "driftrec_d2kf2k.ckpt", raw, ema)
    model = load_driftrec(ckpt, weights)
    assert _same_output(model.net, ema if weights == "ema" else raw)
    assert model.sde.name == "ouve" and model.sde.sigma_max == 1.0 and model.info["t_eps"] == 0.01
    assert model.net.config["ch_mult"] == TINY["ch_mult"] and model.net.attn_levels == {2}
    converted = converted_path_for(ckpt, weights)
    assert converted.is_file() and converted.name.endswith(".driftrec.safetensors")
    assert ("raw" in converted.name) == (weights == "raw")
    meta = read_metadata(converted)
    assert meta["weights"] == weights and meta["sde"]["name"] == "ouve" and meta["net"]["nf"] == 16
    # the next load reads the converted file, never the pickle again
    ckpt.write_bytes(b"\x80\x02 broken pickle")
    import os

    os.utime(ckpt, (converted.stat().st_mtime - 10,) * 2)
    again = load_driftrec(ckpt, weights)
    assert _same_output(again.net, model.net)
    # and the converted file loads by itself
    assert _same_output(load_driftrec(converted, weights).net, model.net)


def test_cosve_run_and_ema_over_trainable_parameters_only(tmp_path):
    raw, ema = tiny_net(0), tiny_net(1)
    obj = lightning_checkpoint(raw, ema, {**HPARAMS, "sde_name": "cosve"})
    obj["ema"]["shadow_params"] = [p.detach().clone() for p in ema.parameters() if p.requires_grad]  # no Fourier W
    torch.save(obj, tmp_path / "celeba.ckpt")
    model = load_driftrec(tmp_path / "celeba.ckpt", "ema", cache=False)
    assert model.sde.name == "cosve"
    expected = tiny_net(1)
    expected.all_modules[0].W.data.copy_(raw.all_modules[0].W)  # W comes from the raw weights (it never trains)
    assert _same_output(model.net, expected)
    assert load_driftrec(tmp_path / "celeba.ckpt", "ema", sde="ouve", cache=False).sde.name == "ouve"


def test_state_dict_without_hyper_parameters_and_plain_safetensors(tmp_path):
    net = tiny_net(2, attn_resolutions=[16, 4])
    obj = lightning_checkpoint(net, net, hparams={})
    del obj["hyper_parameters"]
    torch.save(obj, tmp_path / "a.ckpt")
    model = load_driftrec(tmp_path / "a.ckpt", "raw", cache=False)
    assert model.net.attn_levels == net.attn_levels and _same_output(model.net, net)
    # a safetensors without the pack's metadata (e.g. `gendeg weights convert` of the ckpt, keys still prefixed)
    save_file({f"backbone.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "b.safetensors"))
    assert _same_output(load_driftrec(tmp_path / "b.safetensors", "raw").net, net)
    assert infer_config(net.state_dict())["num_res_blocks"] == 1


def test_pack_safetensors_round_trip(tmp_path):
    net = tiny_net(3)
    path = save_driftrec(tmp_path / "mine.safetensors", net.state_dict(), net.config, {"name": "cosve", "gamma": 1.5,
                         "sigma_min": 0.01, "sigma_max": 1.0}, extra={"gendeg.steps": 5})
    model = load_driftrec(path)
    assert _same_output(model.net, net) and model.sde.name == "cosve" and model.sde.gamma == 1.5


def test_wrong_files_are_refused_clearly(tmp_path):
    from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet

    torch.save(ConditionalUNet(3, 3, 8, (2, 4)).state_dict(), tmp_path / "irsde.pth")
    with pytest.raises(WeightsError, match="IR-SDE / Refusion / DA-CLIP noise network: load it with GenDeg IR-SDE Loader"):
        load_driftrec(tmp_path / "irsde.pth")
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}}, tmp_path / "g.ckpt")
    with pytest.raises(WeightsError, match="GenDeg Model Loader"):
        load_driftrec(tmp_path / "g.ckpt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a DriftRec checkpoint .*output_layer.weight"):
        load_driftrec(tmp_path / "other.pth")
    # the regression baseline of the paper (no noise conditioning)
    obj = lightning_checkpoint(tiny_net(), tiny_net(), {**HPARAMS, "discriminative_mode": "direct"})
    torch.save(obj, tmp_path / "baseline.ckpt")
    with pytest.raises(WeightsError, match="regression baseline"):
        load_driftrec(tmp_path / "baseline.ckpt")
    # EMA asked for, none stored
    obj = lightning_checkpoint(tiny_net(), tiny_net())
    del obj["ema"]
    torch.save(obj, tmp_path / "noema.ckpt")
    with pytest.raises(WeightsError, match="no EMA weights .*weights=raw"):
        load_driftrec(tmp_path / "noema.ckpt", "ema")
    assert load_driftrec(tmp_path / "noema.ckpt", "raw").net is not None
    # a truncated file
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "noema.ckpt").read_bytes()[:200])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_driftrec(tmp_path / "cut.ckpt", "raw")
    # an unsupported SDE
    torch.save(lightning_checkpoint(tiny_net(), tiny_net(), {**HPARAMS, "sde_name": "t2ve"}), tmp_path / "t2.ckpt")
    with pytest.raises(WeightsError, match="'t2ve' SDE"):
        load_driftrec(tmp_path / "t2.ckpt")


class NotAllowed:
    """Any class outside the allow-list (a pickle could make it run code)."""


def test_pickles_with_code_are_refused(tmp_path):
    obj = lightning_checkpoint(tiny_net(), tiny_net())
    obj["hyper_parameters"]["evil"] = NotAllowed()
    torch.save(obj, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_driftrec(tmp_path / "evil.ckpt")
