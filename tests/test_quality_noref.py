"""PIQE against a literal block-by-block re-implementation; NIQE estimators and fitting; CLI fit-niqe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.niqe import fit_aggd, fit_ggd, fit_pristine, load_model, niqe, save_model
from comfyui_gendeg.core.quality.piqe import piqe
from scipy import ndimage, stats
from skimage import data


def _natural(name: str, size: int = 96) -> torch.Tensor:
    a = getattr(data, name)()[:size, :size]
    t = torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    return t[None, None] if t.ndim == 2 else t[..., :3].permute(2, 0, 1)[None].contiguous()


def _piqe_literal(img: np.ndarray) -> float:
    """Block-by-block PIQE following the published algorithm (MATLAB piqe), independent of core."""
    grey = np.round(255 * (img @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])))
    h, w = grey.shape
    grey = np.pad(grey, ((0, (-h) % 16), (0, (-w) % 16)), mode="edge")
    c = np.arange(7) - 3
    g = np.exp(-(c**2) / (2 * (7 / 6) ** 2))
    k = np.outer(g, g) / np.outer(g, g).sum()
    mu = ndimage.correlate(grey, k, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(grey * grey, k, mode="nearest") - mu * mu))
    norm = (grey - mu) / (sigma + 1)
    total, active = 0.0, 0
    for i in range(0, norm.shape[0], 16):
        for j in range(0, norm.shape[1], 16):
            b = norm[i : i + 16, j : j + 16]
            v = b.var(ddof=1)
            if v <= 0.1:
                continue
            active += 1
            impaired = False
            for edge in (b[0, :], b[:, 15], b[15, :], b[:, 0]):
                for s in range(11):
                    if edge[s : s + 6].std(ddof=1) < 0.1:
                        impaired = True
            centre = np.concatenate([b[:, 7], b[:, 8]])
            surround = np.delete(b, [7, 8], axis=1)
            r = centre.std(ddof=1) / surround.std(ddof=1)
            r = 0.0 if np.isnan(r) else r
            sd = np.sqrt(v)
            beta = abs(sd - r) / max(sd, r)
            total += (1 - v) * impaired + v * (sd > 2 * beta)
    return 100 * (total + 1) / (active + 1)


def test_piqe_matches_a_literal_implementation():
    g = torch.Generator().manual_seed(0)
    imgs = [_natural("astronaut", 80), (_natural("coffee", 72) + 0.1 * torch.randn(1, 3, 72, 72, generator=g)).clamp(0, 1),
            torch.rand(1, 3, 50, 61, generator=g)]
    for x in imgs:
        want = _piqe_literal(x[0].permute(1, 2, 0).double().numpy())
        assert float(piqe(x)[0]) == pytest.approx(want, abs=1e-3)


def test_piqe_flat_image_is_100_and_noise_makes_it_worse():
    assert float(piqe(torch.full((1, 3, 64, 64), 0.4))[0]) == pytest.approx(100.0)
    x = _natural("astronaut", 128)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    scores = api.score(torch.cat([(x + s * noise).clamp(0, 1) for s in (0.0, 0.1, 0.25)]), ["piqe"])["piqe"]
    assert torch.all(scores[1:] > scores[:-1]), scores


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.5])
def test_ggd_fit_recovers_the_shape_of_generalised_gaussian_samples(shape):
    x = stats.gennorm.rvs(shape, scale=1.7, size=200_000, random_state=np.random.default_rng(0))
    a, var = fit_ggd(torch.from_numpy(x)[None])
    assert float(a) == pytest.approx(shape, rel=0.05)
    assert float(var) == pytest.approx(np.mean(x**2), rel=1e-6)


def test_aggd_fit_recovers_shape_and_asymmetry():
    rng = np.random.default_rng(1)
    base = np.abs(stats.gennorm.rvs(1.5, size=200_000, random_state=rng))
    sign = rng.random(200_000) < 0.5 / (0.5 + 2.0)  # AGGD: each side's mass is proportional to its scale
    x = np.where(sign, -0.5 * base, 2.0 * base)  # left scale 0.5, right scale 2
    alpha, mean, lvar, rvar = fit_aggd(torch.from_numpy(x)[None])
    assert float(alpha) == pytest.approx(1.5, rel=0.05)
    assert float(lvar) == pytest.approx(np.mean(x[x < 0] ** 2), rel=1e-6)
    assert float(rvar) == pytest.approx(np.mean(x[x > 0] ** 2), rel=1e-6)
    assert float(mean) > 0  # heavier right side


def _clean_set():
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        a = getattr(data, name)()[:128, :128, :3]
        out.append(torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1)[None] / 255.0)
    return out


def test_niqe_fitted_model_prefers_clean_images_and_round_trips(tmp_path):
    clean = _clean_set()
    mu, cov = fit_pristine(clean, block=16, sharpness=0.0)
    assert mu.shape == (36,) and cov.shape == (36, 36)
    assert torch.allclose(cov, cov.T)
    x = clean[0]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    scores = niqe(torch.cat([x, (x + 0.1 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)]), mu, cov, block=16)
    assert torch.all(scores[1:] > scores[:-1]), scores
    path = save_model(tmp_path / "m.safetensors", mu, cov, block=16)
    mu2, cov2, block = load_model(path)
    assert block == 16 and torch.equal(mu2, mu.double()) and torch.equal(cov2, cov.double())
    model = api.load_niqe(path)
    assert torch.allclose(model(x)["niqe"], scores[:1], atol=1e-5)


def test_niqe_errors(tmp_path):
    mu, cov = torch.zeros(36), torch.eye(36)
    with pytest.raises(InputError, match="at least 96x96"):
        niqe(torch.rand(1, 3, 64, 64), mu, cov)
    with pytest.raises(WeightsError, match="mu"):
        niqe(torch.rand(1, 3, 96, 96), torch.zeros(10), cov)
    from safetensors.torch import save_file

    save_file({"mean": torch.zeros(36)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="'mu' and 'cov'"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="sharp"):
        fit_pristine([torch.rand(1, 3, 32, 32)], block=16)


def test_fit_niqe_command_and_score_command(tmp_path, capsys):
    folder = tmp_path / "clean"
    for i, x in enumerate(_clean_set()):
        save_image(folder / f"{i}.png", x)
    out = tmp_path / "niqe.safetensors"
    assert cli(["quality", "fit-niqe", str(folder), str(out), "--block", "16", "--sharpness", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    assert cli(["score", str(folder / "0.png"), str(folder / "1.png"), "-m", "niqe,piqe", "--niqe-model", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in res["images"]] == [str(folder / "0.png"), str(folder / "1.png")]
    assert all(r["niqe"] > 0 and 0 <= r["piqe"] <= 100 for r in res["images"])


def test_authors_mat_model_converts_to_our_format(tmp_path, capsys):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    a = rng.normal(size=(36, 36))
    mu, cov = rng.normal(size=(1, 36)), a @ a.T
    savemat(tmp_path / "modelparameters.mat", {"mu_prisparam": mu, "cov_prisparam": cov})
    out = tmp_path / "niqe.safetensors"
    assert cli(["quality", "fit-niqe", "--from-mat", str(tmp_path / "modelparameters.mat"), str(out)]) == 0
    mu2, cov2, block = load_model(out)
    assert block == 96 and np.allclose(mu2.numpy(), mu.ravel()) and np.allclose(cov2.numpy(), cov)
