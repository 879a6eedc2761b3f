"""The loss registry and the plain losses: pixel, SSIM/MS-SSIM (the pack's metrics), LPIPS/DISTS (frozen)."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError, MissingWeightError
from comfyui_gendeg.core.quality import fullref
from comfyui_gendeg.core.quality.dists import DISTS
from comfyui_gendeg.core.quality.lpips import LPIPS
from comfyui_gendeg.core.train.losses import LOSSES, LossBatch, LossContext, build_loss, option_docs
from comfyui_gendeg.core.train.losses.perceptual import DistanceLoss

NAMES = ["l1", "mse", "charbonnier", "ssim", "ms_ssim", "lpips", "dists", "diffloss", "infonce", "clip_quality", "dpl"]


def ctx_for(tmp_path) -> LossContext:
    return LossContext(device=torch.device("cpu"), models_dir=tmp_path / "models")


def pair(b=2, side=24, seed=0, spill=0.0):
    """(out requiring grad, gt, lq); ``spill`` pushes out a little outside 0..1 as an unclamped restorer does."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, side, side, generator=g)
    lq = (0.5 * gt + 0.3).clamp(0, 1)
    out = gt + 0.1 * torch.randn(b, 3, side, side, generator=g)
    out = (out if spill else out.clamp(0, 1)).requires_grad_(True)
    return out, gt, lq


def batch_of(out, gt, lq, step=0):
    return LossBatch(out=out, gt=gt, lq=lq, step=step, generator=torch.Generator().manual_seed(0))


# --- registry -----------------------------------------------------------------------------


def test_registry_names_and_documented_simple_options():
    assert list(LOSSES) == NAMES
    simple = (float, int, bool, str, type(None))
    for name, spec in LOSSES.items():
        fields = dataclasses.fields(spec.options)
        assert fields[0].name == "weight", name
        assert spec.doc and "\n" not in spec.doc
        docs = option_docs(spec.options)
        hints = typing.get_type_hints(spec.options)
        for f in fields:
            assert f.default is not dataclasses.MISSING, f"{name}.{f.name} has no default"
            assert docs.get(f.name), f"{name}.{f.name} is undocumented"
            for arg in typing.get_args(hints[f.name]) or (hints[f.name],):
                assert arg in simple or typing.get_origin(arg) in (list, tuple) or isinstance(arg, str), (name, f.name)
    assert LOSSES["clip_quality"].options().weight == 0.05 and LOSSES["dpl"].options().weight == 0.1
    assert LOSSES["infonce"].options().weight == 0.1 and LOSSES["infonce"].options().temperature == 0.1


def test_unknown_names_options_and_types_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="unknown loss 'l3'; choose from l1, mse, charbonnier"):
        build_loss("l3", {}, ctx_for(tmp_path))
    with pytest.raises(InputError, match="unknown key 'loss.charbonnier.epsilon' in loss.charbonnier; valid keys: weight, eps"):
        build_loss("charbonnier", {"epsilon": 1e-3}, ctx_for(tmp_path))
    with pytest.raises(InputError, match="loss.charbonnier.eps must be float"):
        build_loss("charbonnier", {"eps": "small"}, ctx_for(tmp_path))
    with pytest.raises(InputError, match="eps must be > 0"):
        build_loss("charbonnier", {"eps": 0}, ctx_for(tmp_path))
    assert build_loss("charbonnier", {"eps": 1}, ctx_for(tmp_path)).eps == 1.0  # an int is a float


# --- pixel --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["l1", "mse", "charbonnier"])
def test_pixel_losses_equal_their_formulas(name, tmp_path):
    out, gt, lq = pair(spill=1.0)
    loss = build_loss(name, {"eps": 0.01} if name == "charbonnier" else {}, ctx_for(tmp_path))
    v = loss(batch_of(out, gt, lq))[name]
    d = out.detach().double().numpy() - gt.double().numpy()
    want = {"l1": np.abs(d).mean(), "mse": (d**2).mean(), "charbonnier": np.sqrt(d**2 + 0.01**2).mean()}[name]
    assert v.item() == pytest.approx(want, rel=1e-5)
    v.backward()
    assert out.grad.abs().sum() > 0


def test_charbonnier_default_eps_is_1e_3(tmp_path):
    out, gt, lq = pair()
    with torch.no_grad():
        out.copy_(gt)
    v = build_loss("charbonnier", {}, ctx_for(tmp_path))(batch_of(out, gt, lq))["charbonnier"]
    assert v.item() == pytest.approx(1e-3, rel=1e-4)  # √(0 + ε²) = ε


# --- SSIM / MS-SSIM -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "side"), [("ssim", 24), ("ms_ssim", 161)])
def test_structural_losses_are_one_minus_the_packs_metric(name, side, tmp_path):
    out, gt, lq = pair(b=2, side=side, seed=3)
    v = build_loss(name, {}, ctx_for(tmp_path))(batch_of(out, gt, lq))[name]
    metric = getattr(fullref, name)(gt, out.detach())
    assert v.item() == pytest.approx(1 - metric.mean().item(), abs=1e-6)
    v.backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_structural_losses_accept_unclamped_outputs_and_refuse_small_crops(tmp_path):
    out, gt, lq = pair(side=24, spill=1.0)
    assert out.detach().min() < 0 or out.detach().max() > 1
    assert torch.isfinite(build_loss("ssim", {}, ctx_for(tmp_path))(batch_of(out, gt, lq))["ssim"])
    with pytest.raises(InputError, match="ms_ssim loss needs crops of at least 161x161, got 24x24"):
        build_loss("ms_ssim", {}, ctx_for(tmp_path))(batch_of(out, gt, lq))


# --- LPIPS / DISTS ------------------------------------------------------------------------


def test_lpips_loss_uses_the_packs_network_frozen(tmp_path):
    from torchvision.models import alexnet

    q = tmp_path / "models" / "quality" / "lpips"
    q.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), q / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}, q / "alex.pth")
    loss = build_loss("lpips", {"net": "alex"}, ctx_for(tmp_path))
    out, gt, lq = pair(side=64, seed=4)
    v = loss(batch_of(out, gt, lq))["lpips"]
    ref = LPIPS("alex")
    ref.load(torch.load(q / "alexnet-owt-7be5be79.pth"), torch.load(q / "alex.pth"))
    assert v.item() == pytest.approx(ref(gt, out.detach()).mean().item(), rel=1e-5)
    v.backward()
    assert out.grad.abs().sum() > 0
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert all(p.grad is None and not p.requires_grad for p in loss.net.parameters())
    with pytest.raises(MissingWeightError, match="gendeg weights fetch tv-vgg16"):
        build_loss("lpips", {}, ctx_for(tmp_path))


def test_dists_loss_equals_the_packs_metric():
    torch.manual_seed(1)
    net = DISTS(widths=(4, 8, 8, 8, 8))
    with torch.no_grad():
        net.alpha.uniform_(0.01, 1)
        net.beta.uniform_(0.01, 1)
    loss = DistanceLoss("dists", net)
    out, gt, lq = pair(side=32, seed=5)
    v = loss(batch_of(out, gt, lq))["dists"]
    assert v.item() == pytest.approx(net(gt, out.detach()).mean().item(), rel=1e-5)
    v.backward()
    assert out.grad.abs().sum() > 0 and all(p.grad is None for p in net.parameters())


def test_dists_missing_weights_name_the_fetch_command(tmp_path):
    with pytest.raises(MissingWeightError, match="gendeg weights fetch tv-vgg16"):
        build_loss("dists", {}, ctx_for(tmp_path))
