"""Training Perceive-IR: the InfoNCE term, the second crops, and a tiny run of `gendeg train restorer`."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.train.config import load_config
from comfyui_gendeg.core.train.data import build_data
from comfyui_gendeg.core.train.data.datasets import read_rgb8, to_float
from comfyui_gendeg.core.train.losses import LossBatch, LossContext, build_loss
from comfyui_gendeg.core.train.losses.perceive_ir import degradation_infonce
from comfyui_gendeg.core.train.perceive_ir import type_labels
from perceive_ir_helpers import TINY, make_clip, make_dino, official_prompts_file
from train_helpers import tiny_config, write_config

# --- InfoNCE --------------------------------------------------------------------------------


def infonce_by_hand(a, p, labels, tau):
    """Per anchor: cross-entropy of [a·p, a·n_j for every other type] / τ with target 0; mean over anchors with negatives."""
    losses = []
    for i in range(a.shape[0]):
        negs = [a[j].detach() for j in range(a.shape[0]) if labels[j] != labels[i]]
        if not negs:
            continue
        logits = torch.stack([a[i] @ p[i]] + [a[i] @ n for n in negs]) / tau
        losses.append(F.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)))
    return torch.stack(losses).mean()


def unit(b, d=128, seed=0):
    return F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_infonce_equals_its_formula_and_its_gradient():
    labels = torch.tensor([0, 0, 1, 2, 1, 2])
    a1, p1 = unit(6, seed=1).requires_grad_(True), unit(6, seed=2).requires_grad_(True)
    a2, p2 = a1.detach().clone().requires_grad_(True), p1.detach().clone().requires_grad_(True)
    got = degradation_infonce(a1, p1, labels, 0.1)
    want = infonce_by_hand(a2, p2, labels, 0.1)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    assert torch.allclose(a1.grad, a2.grad, atol=1e-5) and torch.allclose(p1.grad, p2.grad, atol=1e-5)
    # a two-sample case in closed form: −log(e^{s/τ} / (e^{s/τ} + e^{n/τ}))
    a, p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    v = degradation_infonce(a, p, torch.tensor([0, 1]), 0.1)
    assert v.item() == pytest.approx(math.log1p(math.exp(-6.0)), rel=1e-4)  # a·p = 0.6, a·n = 0: log(1 + e^{-6}); float32


def test_infonce_without_negatives_is_zero_but_connected_and_the_loss_needs_features():
    a = unit(3).requires_grad_(True)
    v = degradation_infonce(a, unit(3, seed=1), torch.tensor([4, 4, 4]), 0.1)
    assert v.item() == 0.0 and v.requires_grad
    loss = build_loss("infonce", {"temperature": 0.2}, LossContext(torch.device("cpu"), None))
    x = torch.rand(3, 3, 8, 8)
    feats = {"cfe": unit(3), "cfe_positive": unit(3, seed=5), "labels": torch.tensor([0, 1, 1])}
    got = loss(LossBatch(out=x, gt=x, lq=x, step=0, generator=torch.Generator(), features=feats))["infonce"]
    assert got.item() == pytest.approx(infonce_by_hand(feats["cfe"], feats["cfe_positive"], [0, 1, 1], 0.2).item(), rel=1e-5)
    with pytest.raises(InputError, match="model.arch perceive_ir"):
        loss(LossBatch(out=x, gt=x, lq=x, step=0, generator=torch.Generator()))
    with pytest.raises(InputError, match="temperature must be > 0"):
        build_loss("infonce", {"temperature": 0.0}, LossContext(torch.device("cpu"), None))


def test_type_labels_are_equal_exactly_for_equal_names():
    lab = type_labels(["haze", "rain", "haze", "rain>jpeg"])
    assert lab[0] == lab[2] and len({int(x) for x in lab}) == 3


# --- second crops -------------------------------------------------------------------------


def test_positive_crops_are_another_window_of_the_same_degraded_image(tmp_path):
    from PIL import Image

    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    gt_dir.mkdir()
    lq_dir.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        img = (torch.rand(3, 40, 48, generator=g) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(img).save(gt_dir / f"{i}.png")
        Image.fromarray(255 - img).save(lq_dir / f"{i}.png")
    cfg = load_config(write_config(tmp_path / "c.yaml", {"model": {"arch": "perceive_ir"},
                                                          "data": {"source": "folders", "folders": {"gt": str(gt_dir), "lq": str(lq_dir)},
                                                                   "crop": 16, "val_count": 0, "workers": 0, "flip": False, "rot90": False}}))
    plain, with_pos = build_data(cfg.data, 0).train, build_data(cfg.data, 0, positive=True).train
    for k in range(4):
        a, b = plain[k], with_pos[k]
        assert "positive_lq" not in a and torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
        pos = b["positive_lq"]
        assert pos.shape == b["lq"].shape and torch.equal(pos, with_pos[k]["positive_lq"])  # deterministic
        lqs = [to_float(read_rgb8(p)) for p in sorted(lq_dir.glob("*.png"))]
        src = next(x for x in lqs if any(torch.equal(b["lq"], x[:, t:t + 16, s:s + 16]) for t in range(25) for s in range(33)))
        assert any(torch.equal(pos, src[:, t:t + 16, s:s + 16]) for t in range(25) for s in range(33))  # same image


def test_on_the_fly_positive_crop_has_the_same_degradation(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, model={"arch": "perceive_ir", "options": TINY})))
    plain, with_pos = build_data(cfg.data, 0).train, build_data(cfg.data, 0, positive=True).train
    a, b = plain[3], with_pos[3]
    assert torch.equal(a["lq"], b["lq"]) and a["type"] == b["type"] and "positive_lq" in b
    assert not torch.equal(b["positive_lq"], b["lq"]) and b["positive_lq"].shape == b["lq"].shape


# --- a tiny run --------------------------------------------------------------------------


def tiny_models(root):
    """A models folder with every frozen helper of the full objective, tiny and random."""
    from comfyui_gendeg.core.quality.backbones import vgg16_features
    from comfyui_gendeg.core.quality.clip import load_clip
    from comfyui_gendeg.core.weights import get_entry
    from safetensors.torch import save_file

    models = root / "models"
    make_dino(models / "restore" / "dinov2-tiny")
    clip = load_clip(make_clip(models / "clip" / "tiny-clip"))
    (models / "quality" / "perceive_ir").mkdir(parents=True)
    official_prompts_file(models / "quality" / "perceive_ir" / "quality_prompts_100000.pth", clip)
    vgg_path = models / "quality" / get_entry("tv-vgg16").files[0].path
    vgg_path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}  # torchvision's key layout
    if vgg_path.suffix == ".safetensors":
        save_file(sd, str(vgg_path))
    else:  # torchvision's own .pth name: a plain tensor pickle, read with weights_only
        torch.save(sd, vgg_path)
    return models


@pytest.mark.slow
def test_tiny_perceive_ir_trains_with_the_full_objective_and_loads_back(tmp_path, monkeypatch):
    models = tiny_models(tmp_path)
    cfg = tiny_config(
        tmp_path,
        model={"arch": "perceive_ir", "options": {**TINY, "blocks": list(TINY["blocks"]), "heads": list(TINY["heads"]),
                                                   "dinov2": "dinov2-tiny"}},
        loss={"l1": {"weight": 1.0}, "infonce": {"weight": 0.1}, "dpl": {"weight": 0.1},
              "clip_quality": {"weight": 0.05, "clip": "tiny-clip", "prompts": "perceive-ir-quality-prompts"}},
        train={"max_steps": 4, "batch_size": 4, "log_every": 2, "val_every": 0, "save_every": 4},
    )
    cfg["data"]["otf"]["types"] = ["haze", "low_light"]
    cfg["data"]["val_crop"] = 36  # not a multiple of 8: validation pads and crops
    monkeypatch.setenv("GENDEG_NO_PROGRESS", "1")
    rc = cli(["train", "restorer", str(write_config(tmp_path / "c.yaml", cfg)), "--models-dir", str(models), "--device", "cpu"])
    assert rc == 0
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert {"l1", "infonce", "clip_quality", "dpl", "loss"} <= set(rows[0])
    assert all(float(r["infonce"]) > 0 for r in rows)  # both types in every batch of 4 here: negatives exist
    assert (run / "val.csv").is_file()
    from comfyui_gendeg.core.restore.feedforward import restore
    from comfyui_gendeg.core.restore.perceive_ir import load_perceive_ir, read_weights
    from comfyui_gendeg.core.train.checkpoint import read_metadata

    sd, net_cfg, _ = read_weights(run / "tiny.safetensors")  # strict: only the restorer, DINOv2 is not exported
    assert not any(k.startswith(("guidance.", "encoder.")) for k in sd) and net_cfg.semantic_dim == 16
    meta = read_metadata(run / "tiny.safetensors")
    assert meta["gendeg.training"]["arch"] == "perceive_ir" and meta["gendeg.steps"] == 4
    r = load_perceive_ir(run / "tiny.safetensors", models / "restore" / "dinov2-tiny")
    out = restore(r, torch.rand(1, 3, 20, 28), tile=0)
    assert out.shape == (1, 3, 20, 28) and torch.isfinite(out).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4
