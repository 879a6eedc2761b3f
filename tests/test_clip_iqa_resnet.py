"""CLIP-IQA's published configuration: OpenAI's ResNet CLIP without positional embedding at full resolution.

A tiny random ResNet CLIP is built by open_clip (the library that converted OpenAI's RN50 to the
safetensors on the Hub) and saved in its key layout; our plain-PyTorch model loads it and must give
the same image and text embeddings as open_clip itself, and the score must be the softmax formula.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.clip_iqa import VIT_NOTE, clip_iqa, is_official
from comfyui_gendeg.core.quality.clip_resnet import config_from_state_dict, load_resnet_clip_iqa

open_clip = pytest.importorskip("open_clip")

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def _tokenizer(folder):
    """A byte-level CLIP tokenizer whose end-of-text token has the highest id (as OpenAI's 49407)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    tok.save_pretrained(folder)
    return len(vocab)


def _open_clip_model(vocab: int, seed: int = 0):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(layers=(1, 2, 1, 1), width=8, image_size=64),
                 text_cfg=CLIPTextCfg(context_length=24, vocab_size=vocab, width=64, heads=1, layers=2), quick_gelu=True)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # every tensor random (CLIP's own init zeroes bn3 and leaves BN statistics at 0/1)
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(0.5 + r.abs())
            elif name.endswith("logit_scale"):
                t.fill_(float(np.log(100.0)))
            else:
                t.copy_(0.3 * r)
    return model.eval()


@pytest.fixture(scope="module")
def rn_clip(tmp_path_factory):
    """(folder with open_clip_model.safetensors + tokenizer files, the open_clip model)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip") / "resnet50-clip-openai"
    folder.mkdir()
    vocab = _tokenizer(folder)
    model = _open_clip_model(vocab)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder, model


def _images(h, w, n=2, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_open_clip_layout_loads_with_the_sizes_read_from_the_tensors(rn_clip):
    folder, ref = rn_clip
    from safetensors.torch import load_file

    cfg = config_from_state_dict(load_file(str(folder / "open_clip_model.safetensors")))
    assert cfg.layers == (1, 2, 1, 1) and cfg.width == 8 and cfg.embed_dim == 24 and cfg.image_size == 64
    assert (cfg.text_width, cfg.text_layers, cfg.context_length, cfg.vision_heads, cfg.text_heads) == (64, 2, 24, 4, 1)
    clip = load_resnet_clip_iqa(folder / "open_clip_model.safetensors")
    assert is_official(clip) and clip.logit_scale.item() == pytest.approx(100.0, rel=1e-5)
    ours = clip.model.state_dict()
    theirs = {k: v for k, v in ref.state_dict().items() if not k.endswith("attn_mask")}
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("size", [(96, 160), (64, 64), (75, 131)])
def test_image_embeddings_equal_open_clip_without_positional_embedding(rn_clip, size):
    folder, ref = rn_clip
    clip = load_resnet_clip_iqa(folder)
    x = _images(*size)
    ours = clip.image_features(x)
    # open_clip always adds its positional embedding; CLIP-IQA's "pos_embedding=False" is adding zeros
    # of whatever length the full-resolution image gives
    h, w = size[0] // 32, size[1] // 32
    pool = ref.visual.attnpool
    saved = pool.positional_embedding
    pool.positional_embedding = torch.nn.Parameter(torch.zeros(h * w + 1, saved.shape[1]))
    try:
        with torch.no_grad():
            want = F.normalize(ref.encode_image((x - MEAN) / STD), dim=-1)
    finally:
        pool.positional_embedding = saved
    assert torch.allclose(ours, want, atol=1e-5), (ours - want).abs().max()


def test_with_positional_embedding_at_the_native_size_equals_open_clip(rn_clip):
    folder, ref = rn_clip
    clip = load_resnet_clip_iqa(folder)
    clip.positional_embedding = True
    x = _images(64, 64)
    with torch.no_grad():
        want = F.normalize(ref.encode_image((x - MEAN) / STD), dim=-1)
    assert torch.allclose(clip.image_features(x), want, atol=1e-5)
    assert not is_official(clip)
    # another size: CLIPIQAFixed(pos_embedding=True) resizes the [L, C] table bicubically along the tokens only
    x = _images(96, 128)
    pool = ref.visual.attnpool
    saved = pool.positional_embedding
    table = saved.detach()[None, None]
    pool.positional_embedding = torch.nn.Parameter(F.interpolate(table, size=(3 * 4 + 1, saved.shape[1]), mode="bicubic")[0, 0])
    try:
        with torch.no_grad():
            want = F.normalize(ref.encode_image((x - MEAN) / STD), dim=-1)
    finally:
        pool.positional_embedding = saved
    assert torch.allclose(clip.image_features(x), want, atol=1e-5)


def test_text_embeddings_equal_open_clip(rn_clip):
    folder, ref = rn_clip
    clip = load_resnet_clip_iqa(folder)
    prompts = ["Good photo.", "Bad photo.", "a sharp, bright picture"]
    ids = clip.tokenize(prompts)
    tokens = torch.zeros(len(ids), ref.context_length, dtype=torch.long)  # OpenAI pads with 0 up to the context
    for i, s in enumerate(ids):
        tokens[i, : len(s)] = torch.tensor(s)
    with torch.no_grad():
        want = F.normalize(ref.encode_text(tokens), dim=-1)  # pooled at argmax = the end-of-text token
    assert torch.allclose(clip.text_features(prompts), want, atol=1e-5)


def test_score_is_the_softmax_over_the_antonym_pair(rn_clip):
    folder, ref = rn_clip
    model = api.load_clip_iqa(folder)
    assert model.info["official"] and api.notes([model]) == {}
    x = _images(70, 90, n=3, seed=4)
    s = model(x)["clip_iqa"]
    img = model.net.image_features(x).double()
    txt = model.net.text_features(["Good photo.", "Bad photo."]).double()
    good, bad = 100.0 * img @ txt[0], 100.0 * img @ txt[1]
    want = torch.exp(good) / (torch.exp(good) + torch.exp(bad))
    assert torch.allclose(s.double(), want, atol=1e-6) and s.shape == (3,)
    assert torch.allclose(clip_iqa(model.net, x[:, :1]), clip_iqa(model.net, x[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(InputError, match="at least 32x32"):
        model(torch.rand(1, 3, 31, 64))


def test_pickles_and_torchscript_are_refused_with_the_fetch_command(tmp_path, rn_clip):
    (tmp_path / "RN50.pt").write_bytes(b"PK\x03\x04 not opened")
    with pytest.raises(WeightsError, match="never loads.*gendeg weights fetch clip-rn50-openai"):
        api.load_clip_iqa(tmp_path / "RN50.pt")
    only_bin = tmp_path / "bin"
    only_bin.mkdir()
    (only_bin / "open_clip_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match="never loads"):
        api.load_clip_iqa(only_bin)
    from safetensors.torch import save_file

    save_file({"visual.proj": torch.zeros(4, 4), "visual.conv1.weight": torch.zeros(4, 3, 2, 2)}, str(tmp_path / "vit.safetensors"))
    with pytest.raises(WeightsError, match="looks like a ViT"):
        api.load_clip_iqa(tmp_path / "vit.safetensors")
    with pytest.raises(WeightsError, match="gendeg weights fetch clip-rn50-openai"):
        api.load_clip_iqa(tmp_path / "absent.safetensors")


def _install(rn_clip, models):
    import shutil

    folder, _ = rn_clip
    shutil.copytree(folder, models / "clip" / "resnet50-clip-openai")


def test_loader_node_prefers_the_published_configuration_and_labels_the_vit_variant(rn_clip, tmp_path):
    from comfyui_gendeg.nodes.quality import GenDegIQALoader, GenDegScoreNoReference
    from test_perceiver import _make_clip

    vit = _make_clip(tmp_path / "models" / "clip" / "clip-vit-base-patch32")
    img = _images(64, 96, n=1).permute(0, 2, 3, 1)
    # only the ViT folder: the variant, marked in the table
    (iqa,) = GenDegIQALoader().load("clip-iqa")
    assert not iqa.info["official"]
    table = GenDegScoreNoReference().score(img, "clip_iqa", iqa_model=iqa)["result"][4]
    assert "clip_iqa*↑" in table and VIT_NOTE in table
    # the ResNet CLIP present: the default becomes the published configuration, without a note
    _install(rn_clip, tmp_path / "models")
    (iqa,) = GenDegIQALoader().load("clip-iqa")
    assert iqa.info["official"] and is_official(iqa.net)
    res = GenDegScoreNoReference().score(img, "clip_iqa", iqa_model=iqa)["result"]
    assert 0 <= res[2] <= 1 and "*" not in res[4]
    # naming the ViT folder in `file` still gives the variant
    (iqa,) = GenDegIQALoader().load("clip-iqa", file=str(vit))
    assert not iqa.info["official"]


def test_nothing_there_names_the_fetch_command(tmp_path):
    from comfyui_gendeg.nodes.quality import GenDegIQALoader

    with pytest.raises(InputError, match="gendeg weights fetch clip-rn50-openai"):
        GenDegIQALoader().load("clip-iqa")


def test_score_command_uses_the_resnet_clip_and_notes_the_vit_variant(rn_clip, tmp_path, capsys):
    from test_perceiver import _make_clip

    vit = _make_clip(tmp_path / "vit")
    path = tmp_path / "img.png"
    save_image(path, _images(64, 80, n=1))
    assert cli(["score", str(path), "-m", "clip_iqa", "--clip", str(vit)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["notes"] == {"clip_iqa": VIT_NOTE}
    _install(rn_clip, tmp_path / "models")
    assert cli(["score", str(path), "-m", "clip_iqa", "--models-dir", str(tmp_path / "models")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "notes" not in out and 0 <= out["images"][0]["clip_iqa"] <= 1
