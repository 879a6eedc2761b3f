"""CLIP-IQA and the quality perceiver on a tiny random CLIP (saved and reloaded like a real folder)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.clip import load_clip
from comfyui_gendeg.core.quality.clip_iqa import clip_iqa
from comfyui_gendeg.core.quality.perceiver import QualityPerceiver, load_perceiver, train_prompts

N = 12  # images per tier


def _make_clip(folder, hidden=32, seed=0):
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
        logit_scale_init_value=4.6052,  # exp = 100, as OpenAI's CLIPs
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _make_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_clip(clip_dir)


def _tiers(seed=0, n=N):
    """Synthetic (gt, restored, degraded): textures, then mild and heavy haze (veil towards a bright airlight)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 48), indexing="ij")
    ph = torch.rand(n, 3, 1, 1, generator=g)
    fr = 2 + 4 * torch.rand(n, 1, 1, 1, generator=g)
    gt = (0.5 + 0.45 * torch.sin(6.28 * fr * (xx + ph)) * torch.cos(6.28 * fr * (yy - ph))).clamp(0, 1)
    return gt, 0.7 * gt + 0.3 * 0.9, 0.3 * gt + 0.7 * 0.9


def test_text_features_equal_transformers_own_path(clip):
    tok = clip.tokenizer(["Good photo.", "a bad, blurry photo"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.model.get_text_features(**tok)
    want = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    assert torch.allclose(clip.text_features(["Good photo.", "a bad, blurry photo"]), want, atol=1e-5)


def test_learned_context_in_place_of_words_gives_the_words_embedding(clip):
    """CoOp insertion: contexts equal to the token embeddings of 'a photo of' reproduce that plain prompt."""
    p = QualityPerceiver(clip, n_ctx=len(clip.tokenize(["a photo of"])[0]) - 2)
    words = clip.tokenize(["a photo of"])[0][1:-1]
    emb = clip.model.text_model.embeddings.token_embedding.weight[words].detach()
    p.ctx.data.copy_(emb.expand(3, -1, -1))
    want = clip.text_features([f"a photo of {t}." for t in p.tiers])
    assert torch.allclose(p.text_features(), want, atol=1e-5)


def test_clip_iqa_is_the_softmax_of_the_antonym_similarities(clip):
    x = torch.rand(3, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    s = clip_iqa(clip, x)
    img = clip.image_features(x)
    txt = clip.text_features(["Good photo.", "Bad photo."])
    want = (100.0 * img @ txt.T).softmax(-1)[:, 0]
    assert torch.allclose(s, want, atol=1e-5) and s.shape == (3,)
    assert torch.all((s >= 0) & (s <= 1))
    grey = x[:, :1]
    assert torch.allclose(clip_iqa(clip, grey), clip_iqa(clip, grey.expand(-1, 3, -1, -1)))


def test_prompt_training_lowers_the_loss_and_separates_three_tiers(clip, tmp_path):
    gt, restored, degraded = _tiers()
    feats = torch.cat([clip.image_features(t) for t in (gt, restored, degraded)])
    labels = torch.arange(3).repeat_interleave(N)
    p = QualityPerceiver(clip, n_ctx=4, generator=torch.Generator().manual_seed(0))
    res = train_prompts(p, feats, labels, epochs=60, lr=0.005, generator=torch.Generator().manual_seed(0))
    assert res.losses[-1] < 0.5 * res.losses[0], res.losses[::10]
    assert res.accuracy > 0.8
    q = res.mean_quality
    assert q["excellent"] > q["mediocre"] > q["terrible"], q
    # held-out images of the same tiers are ranked the same way
    test = [p.score(t)[0].mean() for t in _tiers(seed=5, n=6)]
    assert test[0] > test[1] > test[2], test
    # quality = 1*p_exc + 0.5*p_med, probabilities sum to one
    qs, probs = p.score(gt[:3])
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(qs, probs[:, 0] + 0.5 * probs[:, 1], atol=1e-6)
    # file round trip
    path = p.save(tmp_path / "prompts.safetensors", extra={"training": {"epochs": 40}})
    p2 = load_perceiver(path, clip)
    assert torch.allclose(p2.score(gt[:3])[0], qs, atol=1e-6)


def test_prompts_for_another_clip_architecture_are_refused(clip, tmp_path, tmp_path_factory):
    p = QualityPerceiver(clip, n_ctx=2)
    path = p.save(tmp_path / "p.safetensors")
    other = load_clip(_make_clip(tmp_path_factory.mktemp("clip2") / "other", hidden=48))
    with pytest.raises(WeightsError, match="trained for CLIP"):
        load_perceiver(path, other)
    from safetensors.torch import save_file

    save_file({"ctx": torch.zeros(3, 2, 32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="gendeg train perceiver"):
        load_perceiver(tmp_path / "plain.safetensors", clip)
    with pytest.raises(WeightsError, match="config.json"):
        load_clip(tmp_path)


def test_train_perceiver_command_and_nodes(clip_dir, tmp_path, capsys):
    from comfyui_gendeg.nodes.quality import GenDegIQALoader, GenDegQualityPerceiver, GenDegScoreNoReference

    root = tmp_path / "triplets"
    for tier, imgs in zip(("gt", "restored", "degraded"), _tiers(n=6), strict=True):
        for i in range(6):
            save_image(root / tier / f"img{i}.png", imgs[i : i + 1])
    save_image(root / "gt" / "orphan.png", torch.rand(1, 3, 8, 8))  # not in all folders: skipped
    out = tmp_path / "models" / "quality" / "perceiver" / "perceiver_prompts.safetensors"
    rc = cli(["train", "perceiver", "--triplets", str(root), "--clip", str(clip_dir), "--out", str(out),
              "--n-ctx", "4", "--epochs", "40", "--lr", "0.005"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["triplets"] == 6 and summary["final_loss"] < summary["first_loss"]

    (model,) = GenDegIQALoader().load("perceiver", clip=str(clip_dir))  # the manifest's default file
    gt, _, degraded = _tiers(seed=3, n=2)
    to_img = lambda t: t.permute(0, 2, 3, 1).contiguous()  # noqa: E731
    res = GenDegQualityPerceiver().perceive(to_img(torch.cat([gt, degraded])), model, filenames="a\nb\nc\nd")
    quality, p_exc, p_med, p_ter, table, scores = res["result"]
    assert 0 <= quality <= 1 and abs(p_exc + p_med + p_ter - 1) < 1e-5
    recs = json.loads(scores)
    assert [r["file"] for r in recs] == ["a", "b", "c", "d"]
    assert recs[0]["perceiver"] > recs[3]["perceiver"]
    assert "perceiver↑" in table and "mean" in table
    assert res["ui"]["gendeg_stats"][0]["perceiver"] == pytest.approx(recs[0]["perceiver"], abs=1e-4)

    (iqa,) = GenDegIQALoader().load("clip-iqa", clip=str(clip_dir))
    r = GenDegScoreNoReference().score(to_img(gt), "clip_iqa,piqe", iqa_model=iqa)["result"]
    assert 0 <= r[2] <= 1 and 0 <= r[0] <= 100 and r[1] != r[1]  # niqe not asked: NaN
    with pytest.raises(InputError, match="kind = perceiver"):
        GenDegQualityPerceiver().perceive(to_img(gt), iqa)


def test_triplet_folder_errors(tmp_path):
    from comfyui_gendeg.core.quality.perceiver import find_triplets

    (tmp_path / "gt").mkdir()
    with pytest.raises(InputError, match="restored/"):
        find_triplets(tmp_path)
    assert api.HIGHER_IS_BETTER["perceiver"] is True
