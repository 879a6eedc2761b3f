"""IR-SDE / Refusion / universal-IR networks: official key layouts, loaders, refusals, attention."""

from __future__ import annotations

import math

import pytest
import torch
from comfyui_gendeg.core.errors import InputError, UnsafeCheckpointError, WeightsError
from comfyui_gendeg.core.restore.irsde_loader import (
    build_noise_net,
    convert_to_safetensors,
    load_sde_restorer,
    unet_config,
)
from comfyui_gendeg.core.restore.nets.blocks import CrossAttention, LinearAttention
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
from comfyui_gendeg.core.restore.nets.refusion_nafnet import ConditionalNAFNet

# Parameter names as the official code creates them (written out from the official modules).
OFFICIAL_UNET_KEYS = [
    "init_conv.weight",
    "time_mlp.1.weight", "time_mlp.3.bias",
    "downs.0.0.mlp.1.weight", "downs.0.0.block1.proj.weight", "downs.0.0.block2.proj.weight",
    "downs.0.2.fn.fn.to_qkv.weight", "downs.0.2.fn.norm.g", "downs.0.2.fn.fn.to_out.0.bias", "downs.0.2.fn.fn.to_out.1.g",
    "downs.0.3.weight", "downs.0.3.bias", "downs.1.3.weight",
    "ups.0.0.res_conv.weight", "ups.0.3.1.weight", "ups.0.3.1.bias", "ups.1.3.weight",
    "mid_block1.block1.proj.weight", "mid_attn.fn.fn.to_qkv.weight", "mid_block2.mlp.1.bias",
    "final_res_block.res_conv.weight", "final_conv.weight", "final_conv.bias",
]
OFFICIAL_NAFNET_KEYS = [
    "time_mlp.1.weight", "time_mlp.3.weight", "intro.weight", "ending.bias",
    "encoders.0.0.mlp.1.weight", "encoders.0.0.conv1.weight", "encoders.0.0.conv2.weight", "encoders.0.0.sca.1.weight",
    "encoders.0.0.norm1.g", "encoders.0.0.beta", "encoders.1.1.gamma", "downs.0.weight",
    "middle_blks.0.conv4.weight", "ups.0.0.weight", "decoders.1.0.conv5.bias",
]
OFFICIAL_UNIVERSAL_KEYS = [
    "prompt", "text_mlp.0.weight", "text_mlp.2.weight", "prompt_mlp.weight",
    "downs.2.2.fn.fn.to_qkv.weight",
    "downs.3.2.fn.fn.norm.weight", "downs.3.2.fn.fn.proj_in.weight", "downs.3.2.fn.fn.proj_out.weight",
    "downs.3.2.fn.fn.transformer_blocks.0.attn1.to_q.weight", "downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight",
    "downs.3.2.fn.fn.transformer_blocks.0.attn2.to_out.0.weight", "downs.3.2.fn.fn.transformer_blocks.0.ff.net.0.proj.weight",
    "downs.3.2.fn.fn.transformer_blocks.0.ff.net.2.weight", "downs.3.2.fn.fn.transformer_blocks.0.norm3.weight",
    "ups.0.2.fn.fn.transformer_blocks.0.attn2.to_v.weight",
    "mid_attn.fn.fn.transformer_blocks.0.attn1.to_k.weight",
]


def tiny_unet(seed: int = 0) -> ConditionalUNet:
    torch.manual_seed(seed)
    return ConditionalUNet(3, 3, nf=8, ch_mult=irsde_ch_mult(2)).eval()


def tiny_universal(seed: int = 0, context_dim: int = 16) -> ConditionalUNet:
    torch.manual_seed(seed)
    net = ConditionalUNet(3, 3, nf=8, ch_mult=(1, 2, 4, 8), context_dim=context_dim, use_degra_context=True, use_image_context=True)
    for m in net.modules():  # the zero-initialised proj_out would hide the cross-attention path
        if hasattr(m, "proj_out"):
            torch.nn.init.normal_(m.proj_out.weight, std=0.05)
    return net.eval()


def tiny_nafnet(seed: int = 0) -> ConditionalNAFNet:
    torch.manual_seed(seed)
    net = ConditionalNAFNet(3, width=8, middle_blk_num=1, enc_blk_nums=[1, 2], dec_blk_nums=[1, 1]).eval()
    for name, p in net.named_parameters():  # beta/gamma start at zero: make the blocks matter
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.5)
    return net


def test_official_key_names():
    assert set(OFFICIAL_UNET_KEYS) <= set(tiny_unet().state_dict())
    assert "init_conv.bias" not in tiny_unet().state_dict()  # the official default_conv has no bias
    assert set(OFFICIAL_NAFNET_KEYS) <= set(tiny_nafnet().state_dict())
    assert set(OFFICIAL_UNIVERSAL_KEYS) <= set(tiny_universal().state_dict())
    # the official DA-CLIP UNet puts cross-attention only at level >= 3 and in the middle
    assert not any(k.startswith(("downs.0.2.fn.fn.transformer", "downs.2.2.fn.fn.transformer")) for k in tiny_universal().state_dict())


@pytest.mark.parametrize("make", [tiny_unet, tiny_nafnet, tiny_universal])
def test_any_size_in_same_size_out(make):
    net = make()
    x = torch.rand(2, 3, 13, 19)
    kwargs = {"text_context": torch.randn(2, 16), "image_context": torch.randn(2, 16)} if make is tiny_universal else {}
    with torch.no_grad():
        y = net(x, x.flip(-1), torch.tensor([3.0, 50.0]), **kwargs)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_universal_unet_uses_both_embeddings():
    net = tiny_universal()
    x = torch.rand(1, 3, 16, 16)
    a, b = torch.randn(1, 16), torch.randn(1, 16)
    with torch.no_grad():
        base = net(x, x, 10, text_context=a, image_context=b)
        assert not torch.allclose(base, net(x, x, 10, text_context=-a, image_context=b))
        assert not torch.allclose(base, net(x, x, 10, text_context=a, image_context=-b))


def test_sdpa_cross_attention_equals_naive_softmax():
    torch.manual_seed(0)
    attn = CrossAttention(32, context_dim=16, heads=2, dim_head=8)
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 3, 16)
    q = attn.to_q(x).reshape(2, 10, 2, 8).transpose(1, 2)
    k = attn.to_k(ctx).reshape(2, 3, 2, 8).transpose(1, 2)
    v = attn.to_v(ctx).reshape(2, 3, 2, 8).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    ref = attn.to_out((w @ v).transpose(1, 2).reshape(2, 10, 16))
    torch.testing.assert_close(attn(x, ctx), ref, rtol=1e-5, atol=1e-6)


def test_linear_attention_matches_the_official_einsum_formula():
    torch.manual_seed(1)
    la = LinearAttention(16, heads=2, dim_head=4)
    x = torch.randn(1, 16, 5, 6)
    q, k, v = (t.reshape(1, 2, 4, 30) for t in la.to_qkv(x).chunk(3, dim=1))
    q = q.softmax(dim=-2) * 4**-0.5
    k = k.softmax(dim=-1)
    v = v / 30
    ctx = torch.einsum("bhdn,bhen->bhde", k, v)
    out = torch.einsum("bhde,bhdn->bhen", ctx, q).reshape(1, 8, 5, 6)
    torch.testing.assert_close(la(x), la.to_out(out), rtol=1e-5, atol=1e-6)


def _save(tmp_path, name, sd, prefix=""):
    path = tmp_path / name
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    return path


@pytest.mark.parametrize("prefix", ["", "module."])
def test_irsde_loader_reads_official_pth_and_infers_the_size(tmp_path, prefix):
    ref = tiny_unet(3)
    path = _save(tmp_path, "rain100h_sde.pth", ref.state_dict(), prefix)
    r = load_sde_restorer(path)  # 'auto' finds deraining from the file name
    assert r.arch == "irsde-unet" and r.preset == "deraining (IR-SDE)"
    assert r.max_sigma == pytest.approx(10) and r.sde.T == 100 and r.sde.dt == pytest.approx(0.10409, abs=5e-6)
    assert r.info["config"]["nf"] == 8 and r.info["config"]["ch_mult"] == [2, 4]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(r.net(x, x, 7), ref(x, x, 7))


def test_deshadow_size_config_loads_nf32_depth5():
    with torch.device("meta"):  # shapes only
        cfg = unet_config(ConditionalUNet(3, 3, nf=32, ch_mult=irsde_ch_mult(5)).state_dict())
    assert cfg["nf"] == 32 and cfg["ch_mult"] == [2, 4, 8, 16, 32]


def test_refusion_and_universal_loaders(tmp_path):
    naf = tiny_nafnet(1)
    r = load_sde_restorer(_save(tmp_path, "weights.pth", naf.state_dict()), "refusion (NAFNet)")
    assert r.arch == "refusion-nafnet" and r.max_sigma == pytest.approx(50)
    assert r.info["config"]["enc_blk_nums"] == [1, 2]
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(r.net(x, x, 5), naf(x, x, 5))
    uni = _save(tmp_path, "universal-ir.pth", tiny_universal().state_dict())
    with pytest.raises(InputError, match="DA-CLIP controller"):
        load_sde_restorer(uni)  # needs the daclip file


def test_safetensors_conversion_round_trip(tmp_path):
    ref = tiny_nafnet(2)
    src = _save(tmp_path, "refusion.pth", ref.state_dict(), "module.")
    dst = convert_to_safetensors(src)
    assert dst.suffix == ".safetensors" and dst.is_file()
    r = load_sde_restorer(dst)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(r.net(x, x, 2), ref(x, x, 2))


def test_wrong_families_are_refused_clearly(tmp_path):
    torch.manual_seed(0)
    plain_nafnet = {  # a feed-forward NAFNet: no time embedding, 3 input channels
        "intro.weight": torch.randn(8, 3, 3, 3), "intro.bias": torch.zeros(8),
        "ending.weight": torch.randn(3, 8, 3, 3), "ending.bias": torch.zeros(3),
        "encoders.0.0.conv1.weight": torch.randn(16, 8, 1, 1),
    }
    with pytest.raises(WeightsError, match="GenDegRestorerLoader"):
        build_noise_net(plain_nafnet)
    with pytest.raises(WeightsError, match="DA-CLIP controller"):
        build_noise_net({"visual_control.transformer.zero_modules.0.weight": torch.zeros(4, 4), "clip.visual.proj": torch.zeros(4, 2)})
    with pytest.raises(WeightsError, match="GenDeg"):
        build_noise_net({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 8, 3, 3)})
    with pytest.raises(WeightsError, match="not an IR-SDE"):
        build_noise_net({"foo.weight": torch.zeros(2)})
    sd = tiny_unet().state_dict()
    del sd["mid_attn.fn.fn.to_qkv.weight"]
    with pytest.raises(WeightsError, match="missing .*mid_attn"):
        build_noise_net(sd)
    sd = tiny_unet().state_dict()
    sd["final_conv.weight"] = torch.zeros(3, 5, 3, 3)
    with pytest.raises(WeightsError, match="does not fit"):
        build_noise_net(sd)
    # a preset for another architecture, and 'auto' without any hint for IR-SDE (max_sigma differs per task)
    path = _save(tmp_path, "model_final.pth", tiny_unet().state_dict())
    with pytest.raises(WeightsError, match="preset"):
        load_sde_restorer(path, "refusion (NAFNet)")
    with pytest.raises(InputError, match="choose the task preset"):
        load_sde_restorer(path)
    assert load_sde_restorer(path, "deshadowing (IR-SDE)").max_sigma == pytest.approx(30)


class NotAllowed:
    """Any class outside the allow-list (a pickle could make it run code)."""


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"init_conv.weight": torch.zeros(1), "x": NotAllowed()}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_sde_restorer(path, "deraining (IR-SDE)")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_autocast_stays_close_to_fp32(dtype):
    """Channel LayerNorms run in fp32 under autocast (the official eps switch to 1e-3 alone moves the output ~10 %)."""
    net = tiny_unet(4)
    mu = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = mu + 0.1 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x, mu, 50)
        with torch.autocast("cpu", dtype=dtype):
            low = net(x, mu, 50).float()
    assert float((low - ref).norm() / ref.norm()) < 0.03
