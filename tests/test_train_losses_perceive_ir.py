"""Perceive-IR's quality-aware losses equal their formulas (tiny random CLIP and VGG)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import InputError, MissingWeightError
from comfyui_gendeg.core.quality.backbones import vgg16_features
from comfyui_gendeg.core.quality.clip import OPENAI_MEAN, OPENAI_STD, load_clip
from comfyui_gendeg.core.quality.perceiver import QualityPerceiver
from comfyui_gendeg.core.train.losses import LossBatch, LossContext, build_loss
from comfyui_gendeg.core.train.losses.perceive_ir import DPLoss


def make_clip(folder, seed=0):
    """A tiny random transformers CLIP saved like a real folder (32 px images)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
        logit_scale_init_value=4.6052,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def images(b=3, side=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, side, side, generator=g)
    lq = (0.4 * gt + 0.5).clamp(0, 1)
    out = (gt + 0.15 * torch.randn(b, 3, side, side, generator=g)).requires_grad_(True)  # a little outside 0..1
    return out, gt, lq


# --- L_clip -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_models(tmp_path_factory):
    models = tmp_path_factory.mktemp("clip_loss") / "models"
    make_clip(models / "clip" / "tiny-clip")
    clip = load_clip(models / "clip" / "tiny-clip")
    p = QualityPerceiver(clip, n_ctx=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p.ctx.normal_(0, 0.5)  # distinct tiers
    (models / "quality" / "perceiver").mkdir(parents=True)
    p.save(models / "quality" / "perceiver" / "perceiver_prompts.safetensors")
    return models, p


def test_clip_quality_is_one_minus_p_excellent_from_raw_cosines(clip_models):
    models, perceiver = clip_models
    loss = build_loss("clip_quality", {"clip": "tiny-clip"}, LossContext(torch.device("cpu"), models))
    out, gt, lq = images()
    v = loss(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator()))["clip_quality"]
    with torch.no_grad():
        x = F.interpolate(out.detach().clamp(0, 1), size=(32, 32), mode="bicubic", align_corners=False)  # as the release: no antialiasing
        px = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        img = perceiver.clip.model.get_image_features(pixel_values=px)
        img = F.normalize(img if isinstance(img, torch.Tensor) else img.pooler_output, dim=-1)
        txt = perceiver.text_features()
        cos = img @ txt.T
        k = perceiver.tiers.index("excellent")
        want = (1 - cos.softmax(-1)[:, k]).mean().item()
        scaled = (1 - (100 * cos).softmax(-1)[:, k]).mean().item()
    assert v.item() == pytest.approx(want, rel=1e-5)
    assert abs(want - scaled) > 1e-3  # the raw cosine, not the perceiver's logit-scaled score
    v.backward()
    assert out.grad.abs().sum() > 0
    assert list(loss.parameters()) == [] and all(p.grad is None for p in loss.clip.model.parameters())


def test_clip_quality_missing_files_say_how_to_get_them(tmp_path, clip_models):
    models, _ = clip_models
    with pytest.raises(MissingWeightError, match="gendeg train perceiver"):
        build_loss("clip_quality", {}, LossContext(torch.device("cpu"), tmp_path / "empty"))
    only_prompts = tmp_path / "only_prompts" / "quality" / "perceiver"
    only_prompts.mkdir(parents=True)
    shutil.copy(models / "quality" / "perceiver" / "perceiver_prompts.safetensors", only_prompts)
    with pytest.raises(MissingWeightError, match="gendeg weights fetch clip-vit-base-patch32"):
        build_loss("clip_quality", {}, LossContext(torch.device("cpu"), tmp_path / "only_prompts"))


# --- DPL ----------------------------------------------------------------------------------


def tiny_vgg(seed=0):
    torch.manual_seed(seed)
    return vgg16_features(widths=(4, 8, 8, 8, 8))


def dpl_formula(features, out, gt, lq, proxies, m):
    """Σ_l w_l · mean_b D(R,GT) / max(2·D(R,LQ) + Σ_k m_k·w_kb·D(R,P_k), 1e-6), computed directly."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(x):
        h, res = (x.clamp(0, 1) - mean) / std, []  # the release clamps every VGG input
        for i, layer in enumerate(features):
            h = F.relu(h) if isinstance(layer, torch.nn.ReLU) else layer(h)
            if i in (3, 7, 11, 15):
                res.append(h)
        return res

    def psnr(x):
        return 10 * torch.log10(1 / (x.clamp(0, 1) - gt).pow(2).mean(dim=(1, 2, 3)))

    mean_psnr = psnr(out).mean()
    wk = [torch.where(psnr(p) <= mean_psnr, 1.25, 0.75) for p in proxies]  # the release: 1.25 when PSNR <= the reference
    fr, fg, fl = feats(out), feats(gt), feats(lq)
    fp = [feats(p) for p in proxies]
    total = 0.0
    for lvl, lw in enumerate((1 / 12, 1 / 6, 1 / 3, 1.0)):
        def d(a, lvl=lvl):
            return (fr[lvl] - a[lvl]).abs().mean(dim=(1, 2, 3))

        den = 2 * d(fl) + sum(mk * w * d(f) for mk, w, f in zip(m, wk, fp, strict=True))
        total = total + lw * (d(fg) / torch.clamp(den, min=1e-6)).mean()
    return total, wk


@pytest.mark.parametrize("proxy_weights", [None, [0.5, 2.0]])
def test_dpl_equals_its_formula_with_hard_and_easy_proxies(proxy_weights):
    features = tiny_vgg()
    loss = DPLoss(features, proxy_weights)
    out, gt, lq = images(b=3, side=40, seed=1)
    g = torch.Generator().manual_seed(2)
    better = (gt + 0.02 * torch.randn(gt.shape, generator=g)).clamp(0, 1)  # a proxy better than the output: weight 0.75
    worse = (gt + 0.5 * torch.randn(gt.shape, generator=g)).clamp(0, 1)  # worse than the output: weight 1.25
    v = loss(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator(), proxies=[better, worse]))["dpl"]
    with torch.no_grad():
        want, wk = dpl_formula(features, out.detach(), gt, lq, [better, worse], proxy_weights or [1.0, 1.0])
    assert torch.equal(wk[0], torch.full((3,), 0.75)) and torch.equal(wk[1], torch.full((3,), 1.25))
    assert v.item() == pytest.approx(want.item(), rel=1e-5)
    v.backward()
    assert out.grad.abs().sum() > 0 and all(p.grad is None for p in features.parameters())


def test_dpl_without_proxies_keeps_the_pre_relu_layer_7():
    features = tiny_vgg(1)
    loss = DPLoss(features)
    out, gt, lq = images(b=2, side=32, seed=3)
    v = loss(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator()))["dpl"]
    with torch.no_grad():
        want, _ = dpl_formula(features, out.detach(), gt, lq, [], [])
        assert loss.feats(gt)[1].min() < 0  # conv2_2's output, not overwritten by the in-place ReLU after it
    assert v.item() == pytest.approx(want.item(), rel=1e-5)


def test_dpl_bad_proxy_weights_and_missing_vgg(tmp_path):
    out, gt, lq = images(b=1, side=32)
    with pytest.raises(InputError, match="proxy_weights has 1 values but the batch has 2 proxies"):
        DPLoss(tiny_vgg(), [1.0])(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator(), proxies=[gt, lq]))
    with pytest.raises(InputError, match=r"dpl: proxy 0 has shape \(1, 3, 16, 16\)"):
        DPLoss(tiny_vgg())(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator(), proxies=[gt[..., :16, :16]]))
    with pytest.raises(InputError, match="proxy_weights must be >= 0"):
        DPLoss(tiny_vgg(), [-1.0])
    with pytest.raises(InputError, match="proxy_weights must be list of float or null"):
        build_loss("dpl", {"proxy_weights": "1,2"}, LossContext(torch.device("cpu"), tmp_path / "models"))
    with pytest.raises(MissingWeightError, match="gendeg weights fetch tv-vgg16"):
        build_loss("dpl", {}, LossContext(torch.device("cpu"), tmp_path / "models"))
