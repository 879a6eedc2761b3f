"""LPIPS and DISTS: official key layouts on tiny random weights, loaded through the manifest; formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import WeightsError
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.backbones import alexnet_features, vgg16_features
from comfyui_gendeg.core.quality.dists import L2Pool
from comfyui_gendeg.core.weights import resolve

TINY_ALEX = (4, 6, 8, 8, 8)
TINY_VGG = (4, 4, 6, 6, 8)


def _torchvision_ckpt(features: torch.nn.Sequential, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-style checkpoint: features.N.* (random, tiny) plus classifier.* keys that must be ignored."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.3 for k, v in features.state_dict().items()}
    sd["classifier.1.weight"] = torch.randn(10, 4, generator=g)
    sd["classifier.1.bias"] = torch.zeros(10)
    return sd


def test_tiny_backbones_have_torchvision_key_names():
    from torchvision.models import alexnet, vgg16

    for tiny, full in ((alexnet_features(TINY_ALEX), alexnet(weights=None).features), (vgg16_features(TINY_VGG), vgg16(weights=None).features)):
        assert list(tiny.state_dict()) == list(full.state_dict())
        assert [type(m) for m in tiny] == [type(m) for m in full]


@pytest.fixture()
def lpips_files(tmp_path):
    """Tiny AlexNet backbone + heads written where the manifest says they go (models/quality/lpips/...)."""
    root = tmp_path / "models" / "quality"
    bb = resolve_path(root, "tv-alexnet")
    heads = resolve_path(root, "lpips-alex")
    torch.save(_torchvision_ckpt(alexnet_features(TINY_ALEX), 0), bb)
    g = torch.Generator().manual_seed(1)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(TINY_ALEX)}, heads)
    return root, bb, heads


def resolve_path(root, entry_id):
    from comfyui_gendeg.core.weights import get_entry

    p = root / get_entry(entry_id).files[0].path
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _lpips_reference(x, y, backbone_sd, heads, taps):
    """Independent LPIPS: run the Sequential by index, tap the ReLU outputs, numpy for the rest."""
    feats = alexnet_features(TINY_ALEX)
    feats.load_state_dict({k[len("features."):]: v for k, v in backbone_sd.items() if k.startswith("features.")})
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = 0.0
    hx, hy = (x * 2 - 1 - shift) / scale, (y * 2 - 1 - shift) / scale
    k = 0
    with torch.no_grad():
        for i, layer in enumerate(feats):
            hx, hy = layer(hx), layer(hy)
            if i in taps:
                a, b = hx[0].numpy().astype(np.float64), hy[0].numpy().astype(np.float64)
                a = a / (np.sqrt((a**2).sum(0, keepdims=True)) + 1e-10)
                b = b / (np.sqrt((b**2).sum(0, keepdims=True)) + 1e-10)
                w = heads[f"lin{k}.model.1.weight"].numpy().reshape(-1, 1, 1)
                total += float(((a - b) ** 2 * w).sum(0).mean())
                k += 1
            if k == 5:
                break
    return total


def test_lpips_loads_through_the_manifest_and_matches_the_formula(lpips_files):
    root, bb, heads = lpips_files
    model = api.load_lpips("alex", resolve("tv-alexnet", [root]), resolve("lpips-alex", [root]), widths=TINY_ALEX)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 64, 72, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    d = model(y, x)["lpips"]
    assert d.shape == (2,)
    want = _lpips_reference(x[:1], y[:1], torch.load(bb), torch.load(heads), taps={1, 4, 7, 9, 11})
    assert float(d[0]) == pytest.approx(want, rel=1e-4)
    assert torch.all(model(x, x)["lpips"].abs() < 1e-6)
    grey = x[:, :1]
    assert float(model(grey, grey)["lpips"][0]) == pytest.approx(0.0, abs=1e-6)


def test_lpips_refuses_wrong_heads_and_backbones(lpips_files):
    root, bb, heads = lpips_files
    bad = root / "bad_heads.pth"
    torch.save({"lin0.model.1.weight": torch.rand(1, 4, 1, 1)}, bad)
    with pytest.raises(WeightsError, match="lin1.model.1.weight"):
        api.load_lpips("alex", bb, bad, widths=TINY_ALEX)
    with pytest.raises(WeightsError, match="backbone"):
        api.load_lpips("vgg", bb, heads, widths=TINY_VGG)  # an AlexNet checkpoint for a VGG
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c + 1, 1, 1) for k, c in enumerate(TINY_ALEX)}, bad)
    with pytest.raises(WeightsError, match="shape"):
        api.load_lpips("alex", bb, bad, widths=TINY_ALEX)


def test_lpips_vgg_layout_loads(tmp_path):
    sd = _torchvision_ckpt(vgg16_features(TINY_VGG), 4)
    torch.save(sd, tmp_path / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(TINY_VGG)}, tmp_path / "vgg.pth")
    m = api.load_lpips("vgg", tmp_path / "vgg16.pth", tmp_path / "vgg.pth", widths=TINY_VGG)
    x = torch.rand(1, 3, 48, 48)
    assert float(m(torch.rand(1, 3, 48, 48), x)["lpips"][0]) > 0


def test_l2pool_is_a_hann_weighted_root_mean_square():
    x = torch.rand(1, 2, 9, 9)
    out = L2Pool(2)(x)
    a = np.hanning(5)[1:-1]
    w = np.outer(a, a) / np.outer(a, a).sum()
    xp = np.pad(x[0].numpy().astype(np.float64) ** 2, ((0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 5, 5))
    for c in range(2):
        for i in range(5):
            for j in range(5):
                want[c, i, j] = np.sqrt((xp[c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * w).sum() + 1e-12)
    assert np.allclose(out[0].numpy(), want, atol=1e-6)


def test_dists_loads_official_layout_and_matches_the_formula(tmp_path):
    sd = _torchvision_ckpt(vgg16_features(TINY_VGG), 5)
    torch.save(sd, tmp_path / "vgg16.pth")
    chns = (3, *TINY_VGG)
    g = torch.Generator().manual_seed(6)
    alpha, beta = torch.rand(1, sum(chns), 1, 1, generator=g), torch.rand(1, sum(chns), 1, 1, generator=g)
    torch.save({"alpha": alpha, "beta": beta}, tmp_path / "weights.pt")
    m = api.load_dists(tmp_path / "vgg16.pth", tmp_path / "weights.pt", widths=TINY_VGG)
    x = torch.rand(1, 3, 40, 40, generator=g)
    y = (x * 0.7 + 0.1).clamp(0, 1)
    got = float(m(x, y)["dists"][0])
    # independent: the stage features (stage 0 = raw input), then the DISTS sums in float64 numpy
    with torch.no_grad():
        sx, sy = m.net.stages(x), m.net.stages(y)
    a = (alpha / (alpha.sum() + beta.sum())).flatten().numpy()
    b = (beta / (alpha.sum() + beta.sum())).flatten().numpy()
    s1 = s2 = 0.0
    off = 0
    for u, v in zip(sx, sy, strict=True):
        u, v = u[0].double().numpy(), v[0].double().numpy()
        c = u.shape[0]
        mu_u, mu_v = u.mean((1, 2)), v.mean((1, 2))
        var_u, var_v = u.var((1, 2)), v.var((1, 2))
        cov = (u * v).mean((1, 2)) - mu_u * mu_v
        s1 += (a[off : off + c] * (2 * mu_u * mu_v + 1e-6) / (mu_u**2 + mu_v**2 + 1e-6)).sum()
        s2 += (b[off : off + c] * (2 * cov + 1e-6) / (var_u + var_v + 1e-6)).sum()
        off += c
    assert got == pytest.approx(1 - s1 - s2, abs=1e-5)
    assert abs(float(m(x, x)["dists"][0])) < 1e-5
    torch.save({"alpha": alpha}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="beta"):
        api.load_dists(tmp_path / "vgg16.pth", tmp_path / "bad.pt", widths=TINY_VGG)


def test_missing_weights_name_the_fetch_command(tmp_path):
    from comfyui_gendeg.core.errors import MissingWeightError

    with pytest.raises(MissingWeightError, match="gendeg weights fetch lpips-alex"):
        resolve("lpips-alex", [tmp_path / "models" / "quality"])


def test_iqa_loader_node_names_the_missing_file_and_the_fetch_command():
    from comfyui_gendeg.core.errors import MissingWeightError
    from comfyui_gendeg.nodes.quality import GenDegIQALoader

    with pytest.raises(MissingWeightError, match="gendeg weights fetch tv-vgg16"):
        GenDegIQALoader().load("dists")
    with pytest.raises(MissingWeightError, match="gendeg quality fit-niqe"):
        GenDegIQALoader().load("niqe")
