"""DA-CLIP: control order, SDPA attention vs torch's MultiheadAttention, official .pt layout, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import WeightsError
from comfyui_gendeg.core.restore.irsde_loader import (
    build_daclip,
    convert_to_safetensors,
    load_sde_restorer,
    read_checkpoint,
)
from comfyui_gendeg.core.restore.nets.daclip import (
    CLIP_MEAN,
    CLIP_STD,
    DaCLIP,
    MultiheadSelfAttention,
    TextConfig,
    VisionConfig,
    clip_preprocess,
)
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet

VISION = VisionConfig(image_size=32, patch_size=8, width=128, layers=3, heads=2, embed_dim=16)  # heads = width/64
TEXT = TextConfig(context_length=8, vocab_size=50, width=64, heads=1, layers=2, embed_dim=16)

OFFICIAL_DACLIP_KEYS = [
    "clip.visual.conv1.weight", "clip.visual.class_embedding", "clip.visual.positional_embedding",
    "clip.visual.ln_pre.weight", "clip.visual.transformer.resblocks.0.attn.in_proj_weight",
    "clip.visual.transformer.resblocks.2.mlp.c_fc.weight", "clip.visual.ln_post.bias", "clip.visual.proj",
    "clip.token_embedding.weight", "clip.positional_embedding", "clip.transformer.resblocks.1.attn.out_proj.weight",
    "clip.ln_final.weight", "clip.text_projection", "clip.logit_scale",
    "visual.conv1.weight", "visual.transformer.resblocks.0.ln_1.weight",
    "visual_control.conv1.weight", "visual_control.transformer.transformer.resblocks.0.attn.in_proj_bias",
    "visual_control.transformer.zero_modules.0.weight", "visual_control.transformer.zero_modules.2.bias",
    "visual_control.proj", "logit_scale",
]


def tiny_daclip(seed: int = 0, with_text: bool = True, live_control: bool = True) -> DaCLIP:
    torch.manual_seed(seed)
    model = DaCLIP(VISION, TEXT if with_text else None).eval()
    if live_control:  # trained controllers have non-zero projections
        for z in model.visual_control.transformer.zero_modules:
            torch.nn.init.normal_(z.weight, std=0.2)
            torch.nn.init.normal_(z.bias, std=0.2)
    return model


def test_official_key_layout():
    keys = set(tiny_daclip().state_dict())
    assert set(OFFICIAL_DACLIP_KEYS) <= keys
    assert "clip.attn_mask" not in keys  # a non-persistent buffer, as in OpenCLIP


def test_control_hiddens_are_added_in_reverse_order():
    model = tiny_daclip()
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        content, degra = model.encode_image(img)
        # independent re-computation with the blocks themselves
        ctrl, main = model.visual_control, model.clip.visual
        h = ctrl._embed(img)
        hiddens = []
        for z, blk in zip(ctrl.transformer.zero_modules, ctrl.transformer.transformer.resblocks, strict=True):
            h = blk(h)
            hiddens.append(z(h))
        expected_degra = ctrl.ln_post(h[:, 0]) @ ctrl.proj

        def tower(order):
            x = main._embed(img)
            for blk, add in zip(main.transformer.resblocks, order, strict=True):
                x = blk(x) + add
            return main.ln_post(x[:, 0]) @ main.proj

        reverse, forward = tower(hiddens[::-1]), tower(hiddens)
    torch.testing.assert_close(degra, expected_degra, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(content, reverse, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(content, forward, atol=1e-3)  # the order matters, and it is the reverse one


def test_zero_initialised_controller_leaves_clip_unchanged():
    model = tiny_daclip(live_control=False)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        content, _ = model.encode_image(img)
        torch.testing.assert_close(content, model.clip.visual(img))


def test_sdpa_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadSelfAttention(32, 4)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj_weight)
        ref.in_proj_bias.copy_(torch.randn(96))
        ours.in_proj_bias.copy_(ref.in_proj_bias)
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 7, 32)
    causal = torch.full((7, 7), float("-inf")).triu_(1)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, causal), ref(x, x, x, attn_mask=causal, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_loads_the_official_pt_with_numpy_scalars_and_converts(tmp_path):
    ref = tiny_daclip(1)
    # the official file: a training checkpoint dict, DataParallel prefix, numpy scalar extras
    path = tmp_path / "daclip_ViT-B-32.pt"
    torch.save(
        {"epoch": np.int64(30), "name": "daclip", "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}},
        path,
    )
    model = build_daclip(read_checkpoint(path), with_text=True)
    assert model.clip.visual.cfg == VISION and model.clip.has_text
    img = torch.randn(1, 3, 32, 32)
    tokens = torch.tensor([[1, 5, 7, 49, 0, 0, 0, 0]])
    with torch.no_grad():
        for a, b in zip(model.encode_image(img), ref.encode_image(img), strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(model.clip.encode_text(tokens), ref.clip.encode_text(tokens))
        light = build_daclip(read_checkpoint(path))  # restoration only needs the image towers
        assert not light.clip.has_text
        torch.testing.assert_close(light.encode_image(img)[1], ref.encode_image(img)[1])
        st = convert_to_safetensors(path, tmp_path / "daclip.safetensors")
        again = build_daclip(read_checkpoint(st))  # 'visual.*' alias re-created from 'clip.visual.*'
        torch.testing.assert_close(again.encode_image(img)[0], ref.encode_image(img)[0])


def test_wrong_files_are_refused(tmp_path):
    plain_clip = {k[len("clip."):]: v for k, v in tiny_daclip().state_dict().items() if k.startswith("clip.")}
    with pytest.raises(WeightsError, match="plain CLIP"):
        build_daclip(plain_clip)
    with pytest.raises(WeightsError, match="restoration network"):
        build_daclip(ConditionalUNet(3, 3, 8, (2,)).state_dict())
    sd = tiny_daclip().state_dict()
    del sd["visual_control.transformer.zero_modules.1.weight"]
    with pytest.raises(WeightsError, match="missing"):
        build_daclip(sd)


def test_universal_restorer_pairs_unet_and_daclip(tmp_path):
    torch.manual_seed(0)
    unet = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=16, use_degra_context=True, use_image_context=True)
    torch.save(unet.state_dict(), tmp_path / "universal-ir.pth")
    torch.save({"state_dict": tiny_daclip().state_dict()}, tmp_path / "daclip_ViT-B-32.pt")
    r = load_sde_restorer(tmp_path / "universal-ir.pth", daclip_path=tmp_path / "daclip_ViT-B-32.pt")
    assert r.arch == "daclip-unet" and r.preset == "universal (DA-CLIP)" and r.max_sigma == pytest.approx(50)
    assert r.daclip is not None and r.info["config"]["cross_attn_levels"] == [3]
    big = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=32, use_degra_context=True, use_image_context=True)
    torch.save(big.state_dict(), tmp_path / "wild-ir.pth")
    with pytest.raises(WeightsError, match="512|768|-d"):
        load_sde_restorer(tmp_path / "wild-ir.pth", daclip_path=tmp_path / "daclip_ViT-B-32.pt")


def test_clip_preprocess_matches_the_openclip_transform():
    img = torch.full((1, 3, 40, 90), 0.5)
    out = clip_preprocess(img, 32)
    assert out.shape == (1, 3, 32, 32)
    expected = (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, 5, 5], expected, rtol=1e-4, atol=1e-4)
    # centre crop: a bright vertical band in the middle stays in the middle
    band = torch.zeros(1, 3, 40, 90)
    band[..., 40:50] = 1.0
    # short side 40 -> 32, long side int(32 * 90 / 40) = 72, crop from column 20: band at 12..20
    prof = clip_preprocess(band, 32)[0, 0].mean(0)
    bright = (prof > prof.min() + 0.5 * (prof.max() - prof.min())).nonzero().flatten().tolist()
    assert set(range(13, 19)) <= set(bright) <= set(range(11, 21))


class FakeTokenizer:
    """Stands in for a Hugging Face CLIP tokenizer (start 48, end 49 in this 50-token toy vocabulary)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[48, *[1 + (ord(c) % 40) for c in t], 49] for t in texts]}


def test_openclip_tokens_pad_with_zeros_and_keep_the_end_token():
    from comfyui_gendeg.core.restore.irsde import openclip_tokens

    toks = openclip_tokens(FakeTokenizer(), ["ab", "abcdefghijk"], context_length=8)
    assert toks.shape == (2, 8) and toks.dtype == torch.long
    assert toks[0].tolist() == [48, 1 + ord("a") % 40, 1 + ord("b") % 40, 49, 0, 0, 0, 0]
    assert toks[1, -1] == 49 and toks[1, 0] == 48  # cut to the context, end token kept (pooled by argmax)


def test_degradation_readout_and_node(monkeypatch):
    from comfyui_gendeg.core.restore.irsde import degradation_probabilities, openclip_tokens
    from comfyui_gendeg.core.restore.irsde_loader import SDERestorer
    from comfyui_gendeg.core.restore.sde import IRSDE
    from comfyui_gendeg.nodes import restore_sde as node_mod

    clip = tiny_daclip(5)
    r = SDERestorer(torch.nn.Identity(), "daclip-unet", IRSDE.create(50, 10), "universal (DA-CLIP)", clip)
    img = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    names, probs = degradation_probabilities(r, img, FakeTokenizer(), ("hazy", "rainy", "snowy"))
    assert names == ["hazy", "rainy", "snowy"] and probs.shape == (2, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    with torch.no_grad():  # independent: normalised embeddings, 100 x cosine, softmax
        _, degra = clip.encode_image(clip_preprocess(img, 32))
        text = clip.clip.encode_text(openclip_tokens(FakeTokenizer(), names, 8))
        ref = (100 * torch.nn.functional.normalize(degra, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T).softmax(-1)
    torch.testing.assert_close(probs, ref, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(node_mod, "_load_tokenizer", lambda folder: FakeTokenizer())
    res = node_mod.GenDegDaCLIPDegradation().detect(img.permute(0, 2, 3, 1), r, "clip-vit-base-patch32", "hazy, rainy, snowy")
    top, table = res["result"]
    assert top == [names[int(i)] for i in ref.argmax(-1)] and len(table) == 2 and '"hazy"' in table[0]
    no_text = SDERestorer(torch.nn.Identity(), "daclip-unet", IRSDE.create(50, 10), "u", tiny_daclip(with_text=False))
    with pytest.raises(Exception, match="text tower"):
        degradation_probabilities(no_text, img, FakeTokenizer())


def test_text_tower_is_read_from_the_daclip_file_on_first_use(tmp_path):
    from comfyui_gendeg.core.restore.irsde import degradation_probabilities

    torch.manual_seed(0)
    unet = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=16, use_degra_context=True, use_image_context=True)
    torch.save(unet.state_dict(), tmp_path / "universal-ir.pth")
    torch.save({"state_dict": tiny_daclip(2).state_dict()}, tmp_path / "daclip_ViT-B-32.pt")
    r = load_sde_restorer(tmp_path / "universal-ir.pth", daclip_path=tmp_path / "daclip_ViT-B-32.pt")
    assert not r.daclip.clip.has_text  # restoration needs only the image towers
    names, probs = degradation_probabilities(r, torch.rand(1, 3, 32, 32), FakeTokenizer())
    assert r.daclip.clip.has_text and len(names) == 10 and probs.shape == (1, 10)


def test_wild_ir_layout_loads_with_its_preset(tmp_path):
    torch.manual_seed(0)
    wild = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=16, use_degra_context=False, use_image_context=True,
                           cross_attn_levels=[3], scale=0.5).eval()
    sd = wild.state_dict()
    assert {"downsample.weight", "upsample.1.weight"} <= set(sd) and "prompt" not in sd
    torch.save(sd, tmp_path / "wild-ir.pth")
    torch.save({"state_dict": tiny_daclip().state_dict()}, tmp_path / "wild-daclip_ViT-L-14.pt")
    r = load_sde_restorer(tmp_path / "wild-ir.pth", daclip_path=tmp_path / "wild-daclip_ViT-L-14.pt")
    assert r.preset == "wild-ir (DA-CLIP ViT-L/14)" and r.info["config"]["scale"] == 0.5
    x = torch.rand(1, 3, 24, 40)
    ctx = torch.randn(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(r.net(x, x, 9, image_context=ctx), wild(x, x, 9, image_context=ctx))
