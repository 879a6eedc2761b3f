"""Perceive-IR's restorer: key layout of the release, forward, padding, loading, errors (tiny random models, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import MissingWeightError, WeightsError
from comfyui_gendeg.core.restore.feedforward import load_restorer, restore
from comfyui_gendeg.core.restore.nets import perceive_ir as nets
from comfyui_gendeg.core.restore.nets.perceive_ir import (
    DinoGuidance,
    PerceiveIR,
    PerceiveIRConfig,
    PerceiveIRRestorer,
    channel_attention,
    load_dino_guidance,
)
from comfyui_gendeg.core.restore.perceive_ir import converted_path_for, load_perceive_ir, read_weights
from perceive_ir_helpers import TINY, make_dino, official_checkpoint

# --- the release's parameter names and shapes ------------------------------------------------


def official_layout(dim=48, blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), refinement=4, semantic=768):
    """Every parameter name and shape of the release's PerceiveIR, spelled out from its model definition."""
    c = [dim * 2**i for i in range(4)]
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, groups=1):
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin // groups, k, k), (cout,)

    def norm(name, ch):
        out[f"{name}.body.weight"], out[f"{name}.body.bias"] = (ch,), (ch,)

    def ffn(name, ch):
        h = int(ch * 2.66)
        conv(f"{name}.project_in", ch, 2 * h, 1)
        conv(f"{name}.depthwise", 2 * h, 2 * h, 3, groups=2 * h)
        conv(f"{name}.project_out", h, ch, 1)

    def mdta(name, ch, nh):
        out[f"{name}.temperature"] = (nh, 1, 1)
        conv(f"{name}.qkv", ch, 3 * ch, 1)
        conv(f"{name}.qkv_dw", 3 * ch, 3 * ch, 3, groups=3 * ch)
        conv(f"{name}.project", ch, ch, 1)

    def block(name, ch, nh):
        norm(f"{name}.norm1", ch)
        mdta(f"{name}.attention", ch, nh)
        norm(f"{name}.norm2", ch)
        ffn(f"{name}.ffn", ch)

    def guided(name, ch, nh):
        norm(f"{name}.norm1", ch)
        norm(f"{name}.guidance_norm", ch)
        out[f"{name}.attention.temperature"] = (nh, 1, 1)
        conv(f"{name}.attention.q.0", ch, ch, 1)
        conv(f"{name}.attention.q.1", ch, ch, 3, groups=ch)
        conv(f"{name}.attention.kv.0", ch, 2 * ch, 1)
        conv(f"{name}.attention.kv.1", 2 * ch, 2 * ch, 3, groups=2 * ch)
        conv(f"{name}.attention.project", ch, ch, 1)
        norm(f"{name}.mdta_norm", ch)
        mdta(f"{name}.mdta", ch, nh)
        norm(f"{name}.norm2", ch)
        ffn(f"{name}.ffn", ch)

    conv("embed", 3, c[0], 3)
    for lvl in range(3):
        for i in range(blocks[lvl]):
            block(f"encoder{lvl + 1}.{i}", c[lvl], heads[lvl])
        conv(f"down{lvl + 1}.body.0", c[lvl], c[lvl] // 2, 3)
    for i, (cin, cout) in enumerate(((3, 32), (32, 64), (64, 96), (96, 128))):
        conv(f"cfe.body.{2 * i}", cin, cout, 3)
    out["cfe.projection.weight"], out["cfe.projection.bias"] = (128, 128), (128,)
    for lvl in range(4):
        out[f"pgm.{lvl}.affine.0.weight"], out[f"pgm.{lvl}.affine.0.bias"] = (2 * c[lvl], semantic + 128), (2 * c[lvl],)
        out[f"pgm.{lvl}.affine.2.weight"], out[f"pgm.{lvl}.affine.2.bias"] = (2 * c[lvl], 2 * c[lvl]), (2 * c[lvl],)
    for i in range(blocks[3]):
        guided(f"latent.blocks.{i}", c[3], heads[3])
    for lvl in (2, 1, 0):
        conv(f"up{lvl + 1}.body.0", c[lvl + 1], 2 * c[lvl + 1], 3)
        conv(f"reduce{lvl + 1}", 2 * c[lvl], c[lvl], 1)
        for i in range(blocks[lvl]):
            guided(f"decoder{lvl + 1}.blocks.{i}", c[lvl], heads[lvl])
    for i in range(refinement):
        block(f"refinement.{i}", c[0], heads[0])
    conv("output", c[0], 3, 3)
    return out


def test_full_network_has_the_release_key_layout():
    with torch.device("meta"):
        net = PerceiveIR()  # dim 48, blocks (4,6,6,8), heads (1,2,4,8), refinement 4, DINOv2-base width 768
    have = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    want = official_layout()
    assert set(have) == set(want)
    assert {k for k in want if have[k] != want[k]} == set()
    assert sum(torch.Size(s).numel() for s in want.values()) == nets.parameter_count(PerceiveIRConfig()) == 33_901_111


def test_channel_attention_is_the_transposed_softmax_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, 5, 6, generator=g) for _ in range(3))
    t = torch.rand(2, 1, 1, generator=g) + 0.5
    got = channel_attention(q, k, v, 2, t)
    qh, kh, vh = (x.reshape(2, 2, 4, 30) for x in (q, k, v))
    qh, kh = qh / qh.norm(dim=-1, keepdim=True), kh / kh.norm(dim=-1, keepdim=True)
    want = ((qh @ kh.transpose(-1, -2)) * t).softmax(-1) @ vh
    assert torch.allclose(got, want.reshape(2, 8, 5, 6), atol=1e-5)


def semantics(b, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, width, generator=g) for _ in range(4)]


def test_tiny_forward_residual_cfe_and_guidance():
    torch.manual_seed(0)
    net = PerceiveIR(**TINY).eval()
    x = torch.rand(2, 3, 16, 24)
    out, cfe, pos = net(x, semantics(2))
    assert out.shape == x.shape and cfe.shape == (2, 128) and pos is None
    assert torch.allclose(cfe.norm(dim=-1), torch.ones(2), atol=1e-5)
    _, _, pos = net(x, semantics(2), positive_image=x.flip(-1))
    assert torch.allclose(pos, net.cfe(x.flip(-1)))
    # the semantic features steer the output (PGM), and output = network + input
    other, _, _ = net(x, semantics(2, seed=1))
    assert (other - out).abs().max() > 1e-4
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.zero_()
    assert torch.equal(net(x, semantics(2))[0], x)


def test_pgca_block_queries_the_guidance_and_keeps_it_as_the_residual():
    """The release's decoder block: c = PGCA(q ← LN(g), k,v ← LN(x)); y = g + MDTA(LN(c)); out = y + FFN(LN(y))."""
    torch.manual_seed(2)
    blk = nets.EnhancedTransformerBlock(8, 2).eval()
    x, g = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 6, 5)

    def ln(m, t):
        return F.layer_norm(t.permute(0, 2, 3, 1), (8,), m.body.weight, m.body.bias, 1e-5).permute(0, 3, 1, 2)

    a = blk.attention
    xn, gn = ln(blk.norm1, x), ln(blk.guidance_norm, g)
    k, v = a.kv(xn).chunk(2, dim=1)
    c = a.project(channel_attention(a.q(gn), k, v, 2, a.temperature))
    y = g + blk.mdta(ln(blk.mdta_norm, c))
    want = y + blk.ffn(ln(blk.norm2, y))
    with torch.no_grad():
        assert torch.allclose(blk(x, g), want, atol=1e-5)
        # another guidance map gives another output (it is both the query and the residual)
        assert not torch.allclose(blk(x, g), blk(x, torch.randn(1, 8, 6, 5)), atol=1e-3)


def test_pgm_is_film_of_semantic_and_degradation_features():
    torch.manual_seed(1)
    pgm = nets.PromptGuidance(8, 16)
    x, s, d = torch.randn(2, 8, 4, 4), torch.randn(2, 16), torch.randn(2, 128)
    gb = pgm.affine[2](F.gelu(pgm.affine[0](torch.cat([s, d], -1))))
    gamma, beta = gb[:, :8, None, None], gb[:, 8:, None, None]
    assert torch.allclose(pgm(x, s, d), x * (1 + gamma) + beta, atol=1e-6)


# --- DINOv2 guidance, padding ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    return make_dino(tmp_path_factory.mktemp("dino") / "dinov2-tiny")


@pytest.fixture(scope="module")
def guidance(dino_dir):
    return load_dino_guidance(dino_dir)


def test_dino_guidance_is_cls_of_hidden_states_1_4_8_12_of_the_resized_normalised_image(guidance):
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    feats = guidance(x)
    assert len(feats) == 4 and all(f.shape == (2, 16) for f in feats)
    px = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
    px = (px - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = guidance.encoder(pixel_values=px, output_hidden_states=True)
    for f, i in zip(feats, (1, 4, 8, 12), strict=True):
        assert torch.allclose(f, out.hidden_states[i][:, 0], atol=1e-6)
    # hidden state 12 is the last layer's output before the final layer norm
    assert torch.allclose(guidance.encoder.layernorm(feats[3]), out.last_hidden_state[:, 0], atol=1e-5)
    assert not any(p.requires_grad for p in guidance.parameters())


def test_restorer_pads_with_replicate_to_8_guides_with_the_padded_image_and_crops(guidance):
    torch.manual_seed(3)
    net = PerceiveIR(**TINY).eval()
    wrapper = PerceiveIRRestorer(net, guidance)
    x = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(4))
    seen = []
    handle = guidance.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        got = wrapper(x)
    handle.remove()
    padded = F.pad(x, (0, 6, 0, 3), mode="replicate")
    assert seen == [padded.shape]
    with torch.no_grad():
        want = net(padded, guidance(padded))[0][..., :37, :50]
    assert got.shape == x.shape and torch.equal(got, want)
    assert torch.equal(padded[..., 36, :50], padded[..., 39, :50])  # replicate, not reflect


# --- files --------------------------------------------------------------------------------


def test_official_checkpoint_loads_strictly_converts_once_and_restores(tmp_path, dino_dir, guidance):
    ckpt = tmp_path / "perceiveIR_3task.pth"
    net = official_checkpoint(ckpt).eval()
    r = load_perceive_ir(ckpt, dino_dir)
    assert r.architecture == "PerceiveIR" and r.info["iteration"] == 420000 and r.info["tile_grid"] == 8
    cached = converted_path_for(ckpt)
    assert cached.name == "perceiveIR_3task.gendeg.safetensors" and cached.is_file()
    sd, cfg, info = read_weights(ckpt)
    assert info["source_format"] == "gendeg-safetensors" and info["iteration"] == 420000  # read from the conversion
    assert cfg == PerceiveIRConfig(8, [1, 1, 1, 1], [1, 1, 2, 2], 1, 16)
    x = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = PerceiveIRRestorer(net, guidance)(x).clamp(0, 1)
    assert torch.allclose(restore(r, x, tile=0), want, atol=1e-5)
    tiled = restore(r, torch.rand(1, 3, 40, 72, generator=torch.Generator().manual_seed(6)), tile=32, overlap=8)
    assert tiled.shape == (1, 3, 40, 72) and 0 <= float(tiled.min()) and float(tiled.max()) <= 1


def test_restore_nodes_run_it_with_tiling(tmp_path, dino_dir, monkeypatch):
    from comfyui_gendeg.nodes import host
    from comfyui_gendeg.nodes.restore import GenDegRestore
    from comfyui_gendeg.nodes.restore_perceive_ir import GenDegPerceiveIRLoader

    models = tmp_path / "models"
    (models / "restore" / "perceive_ir").mkdir(parents=True)
    official_checkpoint(models / "restore" / "perceive_ir" / "perceiveIR_5task.pth")
    (models / "restore" / "dinov2-tiny").symlink_to(dino_dir, target_is_directory=True)
    monkeypatch.setattr(host.SETTINGS, "models_dir", models)
    assert "perceive_ir/perceiveIR_5task.pth" in GenDegPerceiveIRLoader.INPUT_TYPES()["required"]["model_name"][0]
    (r,) = GenDegPerceiveIRLoader().load("perceive_ir/perceiveIR_5task.pth", "dinov2-tiny", "fp32")
    image = torch.rand(2, 36, 44, 4)  # a batch with alpha
    out = GenDegRestore().restore(image, r, tile_size=24, overlap=8)["result"][0]
    assert out.shape == image.shape and torch.equal(out[..., 3], image[..., 3])


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s["model"].pop("pgm.2.affine.0.weight"), "1 missing (e.g. pgm.2.affine.0.weight)"),
        (lambda s: s["model"].update({"extra.weight": torch.zeros(1)}), "1 unexpected (e.g. extra.weight)"),
        (lambda s: s["model"].update({"output.bias": torch.zeros(4)}), "output.bias (4,) (expected (3,))"),
        (lambda s: s["config"]["model"].update(dim=16), "its config says"),
        (lambda s: s.update(params=s.pop("model")), "not a Perceive-IR restorer checkpoint"),
        (lambda s: s.update(prompt_learner={}) or s.pop("model"), "GenDegIQALoader"),
    ],
)
def test_wrong_layouts_and_missing_keys_are_one_clear_line(tmp_path, mutate, needle):
    ckpt = tmp_path / "p.pth"
    official_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    mutate(state)
    torch.save(state, ckpt)
    with pytest.raises(WeightsError) as err:
        read_weights(ckpt, cache=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_dinov2_problems_name_the_fix(tmp_path, dino_dir):
    ckpt = tmp_path / "p.pth"
    official_checkpoint(ckpt, semantic_dim=24)
    with pytest.raises(WeightsError, match="hidden size 16.*24-wide.*gendeg weights fetch dinov2-base"):
        load_perceive_ir(ckpt, dino_dir)
    with pytest.raises(WeightsError, match="not a DINOv2 folder"):
        load_perceive_ir(ckpt, tmp_path)
    with pytest.raises(WeightsError, match="reads hidden states"):
        load_dino_guidance(make_dino(tmp_path / "short", layers=4))
    from comfyui_gendeg.core.restore.perceive_ir import find_dinov2

    with pytest.raises(MissingWeightError, match="gendeg weights fetch dinov2-base"):
        find_dinov2("dinov2-base", [tmp_path / "models" / "restore"])


def test_the_feed_forward_loader_points_to_the_perceive_ir_loader(tmp_path):
    ckpt = tmp_path / "p.pth"
    official_checkpoint(ckpt)
    read_weights(ckpt)  # writes the converted safetensors
    with pytest.raises(WeightsError, match="GenDegPerceiveIRLoader"):
        load_restorer(converted_path_for(ckpt))


def test_guidance_stays_frozen_in_train_mode(guidance):
    assert isinstance(guidance.train(), DinoGuidance) and not guidance.training and not guidance.encoder.training


def test_shipped_workflow_runs_end_to_end_on_tiny_stand_ins(tmp_path, dino_dir):
    """degrade -> Perceive-IR restore -> perceiver (official prompts) and reference scores, under the manifest's names."""
    import csv
    from pathlib import Path

    from comfyui_gendeg import cli
    from comfyui_gendeg.core.quality.clip import load_clip
    from perceive_ir_helpers import make_clip, official_prompts_file

    models = tmp_path / "models"
    (models / "restore" / "perceive_ir").mkdir(parents=True)
    official_checkpoint(models / "restore" / "perceive_ir" / "perceiveIR_5task.pth")
    (models / "restore" / "dinov2-base").symlink_to(dino_dir, target_is_directory=True)
    clip = load_clip(make_clip(models / "clip" / "clip-vit-base-patch32"))
    (models / "quality" / "perceive_ir").mkdir(parents=True)
    official_prompts_file(models / "quality" / "perceive_ir" / "quality_prompts_100000.pth", clip)
    out = tmp_path / "out"
    wf = Path(__file__).resolve().parents[1] / "workflows" / "gendeg_restore_perceive_ir.json"
    assert cli.main(["run", str(wf), "--models-dir", str(models), "--output-dir", str(out)]) == 0
    assert len(list(out.glob("gendeg_restore_perceive_ir_*.png"))) == 1
    rows = list(csv.DictReader((out / "gendeg_restore_perceive_ir_perceiver.csv").open()))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["perceiver"]) <= 1.0 and rows[0]["image"] == "restored"
    ref = list(csv.DictReader((out / "gendeg_restore_perceive_ir_reference.csv").open()))
    assert len(ref) == 1 and float(ref[0]["psnr"]) > 0
