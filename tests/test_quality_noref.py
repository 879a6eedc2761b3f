"""PIQE against MATLAB's piqe.m transcribed block by block; NIQE fitting, model files and the CLI
(the NIQE algorithm itself: tests/test_niqe_matlab.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfyui_gendeg.cli import main as cli
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.niqe import fit_pristine, load_model, niqe, save_model
from comfyui_gendeg.core.quality.piqe import piqe
from scipy import ndimage
from skimage import data


def _natural(name: str, size: int = 96) -> torch.Tensor:
    a = getattr(data, name)()[:size, :size]
    t = torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    return t[None, None] if t.ndim == 2 else t[..., :3].permute(2, 0, 1)[None].contiguous()


def _piqe_reference(img: np.ndarray, dropped: tuple[int, int] = (8, 9)) -> float:
    """MATLAB's piqe.m transcribed block by block (R2018b+; independent of core).

    ``img``: uint8 [H,W] or [H,W,3]. ``dropped``: the 1-based columns piqe.m deletes one after the
    other from a block to get its surround (column 8, then column 9 of the shortened block).
    """
    h, w = img.shape[:2]
    pad = ((0, (-h) % 16), (0, (-w) % 16)) + (((0, 0),) if img.ndim == 3 else ())
    img = np.pad(img, pad, mode="edge")  # padarray(..., 'replicate', 'post')
    if img.ndim == 3:  # rgb2gray on uint8: weighted sum rounded to uint8
        img = np.floor(img.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]) + 0.5)
    im = np.round(255 * (img.astype(np.float64) / 255))  # round(255*im2double(I))
    x = np.arange(7) - 3
    k = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    k /= k.sum()  # imgaussfilt(..., 7/6, 'FilterSize', 7, 'Padding', 'replicate'): separable
    filt = lambda a: ndimage.correlate1d(ndimage.correlate1d(a, k, axis=0, mode="nearest"), k, axis=1, mode="nearest")  # noqa: E731
    mu = filt(im)
    sigma = np.sqrt(np.abs(filt(im * im) - mu * mu))
    norm = (im - mu) / (sigma + 1)
    total, nhsa = 0.0, 0
    for i in range(0, norm.shape[0], 16):
        for j in range(0, norm.shape[1], 16):
            block = norm[i : i + 16, j : j + 16]
            var = block.ravel().var(ddof=1)
            if not var > 0.1:
                continue
            nhsa += 1
            impaired = 0
            edges = (block[0, :], block[:, 15], block[15, :], block[:, 0])
            for seg in range(11):  # segmentEdge: blockEdge(i:windowSize), windowSize 6, 7, ..., 16
                if any(e[seg : seg + 6].std(ddof=1) < 0.1 for e in edges):
                    impaired = 1
                    break
            sig = np.sqrt(var)
            centre = np.concatenate([block[:, 7], block[:, 8]])
            surround = np.delete(np.delete(block, dropped[0] - 1, axis=1), dropped[1] - 1, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = centre.std(ddof=1) / surround.ravel().std(ddof=1)
                ratio = 0.0 if np.isnan(ratio) else ratio
                beta = abs(sig - ratio) / max(sig, ratio)
            noisy = 1 if sig > 2 * beta else 0
            total += impaired * (1 - var) + noisy * var
    return (total + 1) / (1 + nhsa) * 100


def _u8(x: torch.Tensor) -> np.ndarray:
    a = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return a[..., 0] if a.shape[-1] == 1 else a


def _piqe_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    noisy = (_natural("coffee", 72) + 0.1 * torch.randn(1, 3, 72, 72, generator=g)).clamp(0, 1)
    # centre columns varying on a flat surround: ratio = inf, beta = NaN, never "noisy" (piqe.m)
    stripes = torch.full((1, 1, 48, 48), 0.5)
    stripes[..., 7::16] = torch.rand(1, 1, 48, 3, generator=g)
    stripes[..., 8::16] = torch.rand(1, 1, 48, 3, generator=g)
    # noise with a louder 0-based column 8 in every block: the surround piqe.m uses (with column 8) and the
    # old one (with column 9 instead) classify its blocks differently
    rng = np.random.default_rng(1)
    col8 = rng.normal(128, 20, (64, 64))
    col8[:, 8::16] += rng.normal(0, 60, (64, 4))
    col8 = torch.from_numpy(np.clip(col8, 0, 255).round() / 255).float()[None, None]
    imgs = [_natural("astronaut", 80), noisy, torch.rand(1, 3, 50, 61, generator=g), _natural("camera", 112), stripes, col8]
    return [torch.from_numpy(_u8(x).astype(np.float32) / 255).reshape(x.shape[2], x.shape[3], -1).permute(2, 0, 1)[None]
            for x in imgs]


def test_piqe_matches_matlab_piqe_m_block_by_block():
    for x in _piqe_images():
        want = _piqe_reference(_u8(x))
        assert float(piqe(x)[0]) == pytest.approx(want, abs=1e-3)


def test_piqe_surround_is_piqe_m_s_and_the_old_columns_would_fail():
    """The old code left out 0-based columns 7 and 8; piqe.m leaves out 7 and 9 (the reference above)."""
    moved = [abs(_piqe_reference(_u8(x), (8, 8)) - _piqe_reference(_u8(x))) for x in _piqe_images()]
    assert max(moved) > 1.0, moved  # the tests above would catch the old choice


def test_piqe_flat_image_is_100_and_noise_makes_it_worse():
    assert float(piqe(torch.full((1, 3, 64, 64), 0.4))[0]) == pytest.approx(100.0)
    x = _natural("astronaut", 128)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    scores = api.score(torch.cat([(x + s * noise).clamp(0, 1) for s in (0.0, 0.1, 0.25)]), ["piqe"])["piqe"]
    assert torch.all(scores[1:] > scores[:-1]), scores


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


def test_fit_niqe_reads_8_bit_files_as_bytes_and_others_as_floats_with_the_same_features(tmp_path, capsys):
    """8-bit files go in as uint8 arrays (a quarter of the memory), 16-bit ones through load_image; a broken file
    is one clear line (exit 2)."""
    from comfyui_gendeg.commands.quality import _niqe_source
    from comfyui_gendeg.core.quality.niqe import image_features
    from PIL import Image

    a = data.camera()[:192, :288]
    Image.fromarray(a).save(tmp_path / "grey8.png")
    Image.fromarray(a.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    src8, src16 = _niqe_source(tmp_path / "grey8.png"), _niqe_source(tmp_path / "grey16.png")
    assert isinstance(src8, np.ndarray) and src8.dtype == np.uint8 and isinstance(src16, torch.Tensor)
    assert np.array_equal(image_features(src8)[0], image_features(src16[0])[0])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert cli(["quality", "fit-niqe", str(tmp_path / "bad"), str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0] and "Traceback" not in err[0]
