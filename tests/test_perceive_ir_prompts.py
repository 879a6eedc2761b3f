"""Perceive-IR's official quality prompts (``quality_prompts_*.pth``) on a tiny random CLIP.

The file is written in the release's layout (``prompt_learner`` with context, token_prefix,
token_suffix, tokenized_prompts; optimizer/scheduler state beside it) and its scores are
compared with the official formula computed here independently: OpenAI's text transformer
written out by hand on the CLIP's weights, a plain bicubic resize of the image, logits =
logit_scale · cosine.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.errors import UnsafeCheckpointError, WeightsError
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.clip import OPENAI_MEAN, OPENAI_STD, load_clip
from comfyui_gendeg.core.quality.perceiver import QualityPerceiver, load_perceiver
from perceive_ir_helpers import N_CTX, make_clip, official_prompts_file


def official_text_features(clip, prefix, context, suffix, eos):
    """OpenAI's ``encode_text`` on prompt embeddings, written out on the CLIP's weights (no transformers forward)."""
    tm = clip.model.text_model
    x = torch.cat([prefix, context, suffix], dim=1)
    n, length, width = x.shape
    x = x + tm.embeddings.position_embedding.weight[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for layer in tm.encoder.layers:
        a = layer.self_attn
        h = F.layer_norm(x, (width,), layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps)
        heads = a.num_heads
        q, k, v = (F.linear(h, p.weight, p.bias).view(n, length, heads, -1).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))
        att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + causal).softmax(-1) @ v
        x = x + F.linear(att.transpose(1, 2).reshape(n, length, width), a.out_proj.weight, a.out_proj.bias)
        h = F.layer_norm(x, (width,), layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps)
        h = F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias)
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu, OpenAI's activation
        x = x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)
    x = F.layer_norm(x, (width,), tm.final_layer_norm.weight, tm.final_layer_norm.bias, tm.final_layer_norm.eps)
    return F.normalize(x[torch.arange(n), eos] @ clip.model.text_projection.weight.T, dim=-1)


def official_image_features(clip, image):
    x = F.interpolate(image, size=(32, 32), mode="bicubic", align_corners=False)  # plain resize: no crop, no antialiasing
    px = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    f = clip.model.get_image_features(pixel_values=px)
    return F.normalize(f if isinstance(f, torch.Tensor) else f.pooler_output, dim=-1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_clip(clip_dir)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, clip):
    path = tmp_path_factory.mktemp("prompts") / "quality_prompts_100000.pth"
    context = official_prompts_file(path, clip)
    return path, context


def test_official_prompts_load_and_equal_the_official_formula(clip, prompts):
    path, context = prompts
    p = load_perceiver(path, clip)
    assert isinstance(p, QualityPerceiver) and p.tiers == ("excellent", "mediocre", "terrible") and p.n_ctx == N_CTX
    raw = torch.load(path, weights_only=True)["prompt_learner"]
    eos = raw["tokenized_prompts"].argmax(-1)
    assert eos.tolist() == [1 + N_CTX] * 3
    with torch.no_grad():
        want_txt = official_text_features(clip, raw["token_prefix"], raw["context"], raw["token_suffix"], eos)  # terrible..excellent
        got_txt = p.text_features()
    assert torch.allclose(got_txt, want_txt[[2, 1, 0]], atol=1e-5)
    image = torch.rand(3, 3, 37, 50, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        img = official_image_features(clip, image)
        probs = (100.0 * img @ want_txt.T).softmax(-1)  # columns terrible, mediocre, excellent
    got = p.probabilities(image)
    assert torch.allclose(got, probs[:, [2, 1, 0]], atol=1e-5)
    q, _ = p.score(image)
    assert torch.allclose(q, probs[:, 2] + 0.5 * probs[:, 1], atol=1e-5)
    assert float(probs.std()) > 1e-3  # not a degenerate (uniform) case


def test_official_prompts_through_the_score_api_and_saved_as_a_pack_file(clip_dir, clip, prompts, tmp_path):
    path, _ = prompts
    model = api.load_perceiver_model(clip_dir, path)
    image = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    scores = api.score(image, ["perceiver"], models=[model])
    assert set(scores) == {"perceiver", "p_excellent", "p_mediocre", "p_terrible"}
    p = model.net
    assert torch.allclose(scores["p_excellent"], p.probabilities(image)[:, 0])
    # saved in the pack's format, it loads back to the same model
    saved = p.save(tmp_path / "official.safetensors")
    again = load_perceiver(saved, clip)
    assert again.layout == "frame" and again.image_mode == "resize"
    assert torch.allclose(again.probabilities(image), p.probabilities(image), atol=1e-6)


def test_pack_and_official_perceivers_give_the_same_kind_of_model(clip_dir, clip, prompts, tmp_path):
    own = QualityPerceiver(clip, n_ctx=4, generator=torch.Generator().manual_seed(0))
    own_file = own.save(tmp_path / "own.safetensors")
    a = api.load_perceiver_model(clip_dir, own_file)
    b = api.load_perceiver_model(clip_dir, prompts[0])
    assert a.kind == b.kind == "perceiver" and type(a.net) is type(b.net) and a.net.tiers == b.net.tiers
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert set(a(image)) == set(b(image))


def test_cli_score_reads_the_official_prompts(clip_dir, clip, prompts, tmp_path, capsys):
    img = tmp_path / "a.png"
    x = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(6))
    save_image(img, x)
    rc = cli(["score", str(img), "--metrics", "perceiver", "--clip", str(clip_dir), "--perceiver", str(prompts[0])])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)["images"][0]
    from comfyui_gendeg.core.io import load_image

    p = load_perceiver(prompts[0], clip).probabilities(load_image(img))[0]
    assert rec["p_excellent"] == pytest.approx(float(p[0]), abs=1e-6)
    assert rec["perceiver"] == pytest.approx(float(p[0] + 0.5 * p[1]), abs=1e-6)


def test_iqa_loader_node_reads_the_official_prompts(clip_dir, prompts, tmp_path, monkeypatch):
    from comfyui_gendeg.nodes import host
    from comfyui_gendeg.nodes.quality import GenDegIQALoader, GenDegQualityPerceiver

    models = tmp_path / "models"
    (models / "quality" / "perceive_ir").mkdir(parents=True)
    (models / "quality" / "perceive_ir" / "quality_prompts_100000.pth").write_bytes(prompts[0].read_bytes())
    monkeypatch.setattr(host.SETTINGS, "models_dir", models)
    (model,) = GenDegIQALoader().load("perceiver", clip=str(clip_dir), file="perceive_ir/quality_prompts_100000.pth")
    res = GenDegQualityPerceiver().perceive(torch.rand(1, 32, 32, 3), model)["result"]
    assert 0.0 <= res[0] <= 1.0 and abs(res[1] + res[2] + res[3] - 1.0) < 1e-5


def test_tier_order_follows_quality_names(clip, tmp_path):
    path = tmp_path / "q.pth"
    official_prompts_file(path, clip, names=("excellent", "mediocre", "terrible"))
    raw = torch.load(path, weights_only=True)["prompt_learner"]
    p = load_perceiver(path, clip)
    assert torch.equal(p.ctx.detach(), raw["context"])  # already in the pack's order


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s.pop("prompt_learner"), "not a Perceive-IR quality-prompts file"),
        (lambda s: s["prompt_learner"].pop("token_suffix"), "prompt_learner lacks token_suffix"),
        (lambda s: s["prompt_learner"].update(context=torch.zeros(2, N_CTX, 32)), "expected [3, n_ctx, width]"),
        (lambda s: s["prompt_learner"].update(context=torch.zeros(3, N_CTX, 48)), "token_prefix"),
        (lambda s: s.update(model={"embed.weight": torch.zeros(1)}) or s.pop("prompt_learner"), "GenDegPerceiveIRLoader"),
    ],
)
def test_wrong_layouts_and_missing_keys_are_one_clear_line(clip, tmp_path, mutate, needle):
    path = tmp_path / "q.pth"
    official_prompts_file(path, clip)
    state = torch.load(path, weights_only=True)
    mutate(state)
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        load_perceiver(path, clip)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_prompts_of_another_clip_and_code_pickles_are_refused(clip, tmp_path):
    other = load_clip(make_clip(tmp_path / "other-clip", seed=7))
    path = tmp_path / "q.pth"
    official_prompts_file(path, other)
    with pytest.raises(WeightsError, match="made with another CLIP"):
        load_perceiver(path, clip)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"prompt_learner": {}, "x": Evil()}, bad)
    with pytest.raises(UnsafeCheckpointError):
        load_perceiver(bad, clip)


def test_openai_torchscript_clip_is_refused_with_the_hf_folder_hint(tmp_path, prompts, monkeypatch):
    from comfyui_gendeg.nodes import host
    from comfyui_gendeg.nodes.quality import GenDegIQALoader

    pt = tmp_path / "models" / "clip" / "ViT-B-32.pt"
    pt.parent.mkdir(parents=True)
    pt.write_bytes(b"PK\x03\x04 never unpickled")
    with pytest.raises(WeightsError, match="gendeg weights fetch clip-vit-base-patch32"):
        load_clip(pt)
    monkeypatch.setattr(host.SETTINGS, "models_dir", tmp_path / "models")
    with pytest.raises(WeightsError, match="never loads .*gendeg weights fetch clip-vit-base-patch32"):
        GenDegIQALoader().load("perceiver", clip="ViT-B-32.pt", file=str(prompts[0]))
