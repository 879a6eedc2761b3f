"""gendeg train irsde: the matching loss's target is the closed-form optimum; training learns; exports load."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.restore.sde import IRSDE
from comfyui_gendeg.core.train.config import load_config
from comfyui_gendeg.core.train.irsde_task import (
    IRSDETask,
    build_irsde_net,
    noisy_state,
    optimal_reverse_step,
    reverse_step_mean,
)
from comfyui_gendeg.core.train.schema import ConfigError
from comfyui_gendeg.core.train.sde_config import IRSDEConfig
from comfyui_gendeg.nodes import host
from comfyui_gendeg.nodes.restore_sde import GenDegIRSDELoader, GenDegIRSDERestore
from train_helpers import clean_photos, gendeg, write_config


def _config(tmp_path, **sections) -> dict:
    cfg = {
        "name": "tiny_irsde", "seed": 0, "out": str(tmp_path / "run"),
        "model": {"arch": "irsde-unet", "options": {"nf": 8, "depth": 2}},
        "sde": {"max_sigma": 10, "T": 20},
        "data": {"source": "otf", "otf": {"clean": str(clean_photos(tmp_path / "clean")), "types": ["haze"],
                                          "calibrate": False, "strength": [0.4, 0.8]},
                 "crop": 32, "val_count": 1, "val_crop": 32, "workers": 0, "cache_images": 8},
        "sample": {"steps": 4},
        "optim": {"lr": 2e-3},
        "schedule": {"kind": "constant"},
        "train": {"max_steps": 40, "batch_size": 4, "log_every": 10, "val_every": 0, "save_every": 40, "ema_decay": 0.9},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def test_optimal_step_is_the_gaussian_posterior_mean():
    """x*_{t-1}: the mean of x_{t-1} given x_t and x0, by conditioning the joint Gaussian (independent derivation)."""
    sde = IRSDE.create(30, T=100)
    x0, mu = torch.rand(3, 3, 4, 4, dtype=torch.float64), torch.rand(3, 3, 4, 4, dtype=torch.float64)
    xt = torch.rand(3, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 37, 100])
    got = optimal_reverse_step(sde, xt, x0, mu, t)
    lam = sde.lam
    for i, ti in enumerate(t.tolist()):
        theta_sum = float(sde.thetas_cumsum[ti - 1])  # x_{t-1} | x0 ~ N(m1, v1)
        m1 = mu[i] + (x0[i] - mu[i]) * math.exp(-theta_sum * sde.dt)
        v1 = lam**2 * (1 - math.exp(-2 * theta_sum * sde.dt))
        a = math.exp(-float(sde.thetas[ti]) * sde.dt)  # one forward step: x_t = mu + (x_{t-1} - mu) a + N(0, lam^2 (1 - a^2))
        mean_t = mu[i] + (m1 - mu[i]) * a
        var_t = a * a * v1 + lam**2 * (1 - a * a)
        expected = m1 + (a * v1 / var_t) * (xt[i] - mean_t)
        torch.testing.assert_close(got[i], expected, rtol=1e-9, atol=1e-12)
        # and the pack's sampler uses the same posterior
        torch.testing.assert_close(got[i:i + 1], sde.posterior_mean(xt[i:i + 1], x0[i:i + 1], mu[i:i + 1], ti), rtol=1e-9, atol=1e-12)


def test_training_step_target_equals_the_closed_form_optimum(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", _config(tmp_path)), schema=IRSDEConfig)
    task = IRSDETask(cfg)
    net = task.build_network()
    x0, mu = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    pred, target, t = task.targets(net, x0, mu, torch.Generator().manual_seed(7))
    # replay the draws: t ~ U{1..T}, then the noise
    g = torch.Generator().manual_seed(7)
    t2 = torch.randint(1, 21, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert torch.equal(t, t2)
    xt = noisy_state(task.sde, x0, mu, t, noise)
    for i, ti in enumerate(t.tolist()):
        # x_t from the pack's forward marginal, target from its posterior mean (float64 schedule)
        torch.testing.assert_close(xt[i:i + 1], task.sde.mu_bar(x0[i:i + 1], mu[i:i + 1], ti) + task.sde.sigma_bar(ti) * noise[i:i + 1])
        torch.testing.assert_close(target[i:i + 1], task.sde.posterior_mean(xt[i:i + 1], x0[i:i + 1], mu[i:i + 1], ti))
    # the prediction is the mean of the official reverse-SDE step with the network's score
    with torch.no_grad():
        eps = net(xt, mu, t)
    score = -eps / task.sde.sigma_bars[t].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(pred, reverse_step_mean(task.sde, xt, score, mu, t))
    # with the true noise as the network's answer the step mean moves towards the optimum
    ideal = reverse_step_mean(task.sde, xt, -noise / task.sde.sigma_bars[t].float().reshape(-1, 1, 1, 1), mu, t)
    assert float((ideal - target).abs().mean()) < float((xt - target).abs().mean())


def test_training_learns_and_the_export_loads_in_the_irsde_loader(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", _config(tmp_path))
    proc = gendeg("train", "irsde", str(cfg_path), "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv", encoding="utf-8")))
    losses = [float(r["matching"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0]
    model = tmp_path / "run" / "tiny_irsde.safetensors"
    target = host.SETTINGS.models_dir / "restore" / "mine" / "tiny_irsde.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(model.read_bytes())
    (restorer,) = GenDegIRSDELoader().load("mine/tiny_irsde.safetensors", "auto")
    assert restorer.arch == "irsde-unet" and restorer.sde.T == 20 and restorer.max_sigma == pytest.approx(10)
    assert restorer.preset.startswith("from the file")
    out = GenDegIRSDERestore().restore(torch.rand(1, 20, 24, 3), restorer, steps=3)["result"][0]
    assert out.shape == (1, 20, 24, 3)


def test_daclip_unet_trains_on_given_embeddings(tmp_path):
    from comfyui_gendeg.core.restore.nets.daclip import DaCLIP, TextConfig, VisionConfig

    torch.manual_seed(0)
    clip = DaCLIP(VisionConfig(32, 8, 128, 2, 2, 16), TextConfig(8, 50, 64, 1, 2, 16))
    torch.save({"epoch": np.int64(3), "state_dict": clip.state_dict()}, tmp_path / "daclip.pt")
    cfg = _config(tmp_path, model={"arch": "daclip-unet", "options": {"nf": 16, "ch_mult": [1, 2], "context_dim": 16},
                                   "daclip": str(tmp_path / "daclip.pt")},
                  train={"max_steps": 4, "log_every": 2, "save_every": 4})
    config = load_config(write_config(tmp_path / "c.yaml", cfg), schema=IRSDEConfig)
    task = IRSDETask(config)
    task.setup(torch.device("cpu"))
    ctx = task.contexts(torch.rand(2, 3, 32, 32))
    assert ctx["text_context"].shape == (2, 16) and ctx["image_context"].shape == (2, 16)
    from comfyui_gendeg.core.train.irsde_task import train_irsde

    result = train_irsde(config, device="cpu", progress=False)
    from comfyui_gendeg.core.restore.irsde_loader import load_sde_restorer

    restorer = load_sde_restorer(result.model_path, "auto", tmp_path / "daclip.pt")
    assert restorer.arch == "daclip-unet" and restorer.daclip is not None


def test_config_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="model.daclip must name the DA-CLIP file"):
        load_config(write_config(tmp_path / "a.yaml", {"model": {"arch": "daclip-unet"}}), schema=IRSDEConfig)
    with pytest.raises(ConfigError, match="model.arch must be one of"):
        load_config(write_config(tmp_path / "b.yaml", {"model": {"arch": "unet"}}), schema=IRSDEConfig)
    with pytest.raises(ConfigError, match="model.options.width is not an option of irsde-unet"):
        build_irsde_net("irsde-unet", {"width": 3})
    cfg = load_config(write_config(tmp_path / "c.yaml", _config(tmp_path, model={"arch": "daclip-unet", "options": {
        "nf": 8, "ch_mult": [1, 2], "context_dim": 16}, "daclip": str(tmp_path / "missing.pt")})), schema=IRSDEConfig)
    with pytest.raises(InputError, match="is not a file"):
        IRSDETask(cfg).setup(torch.device("cpu"))


def test_example_config_is_valid_and_official():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "train" / "irsde_deraining.yaml", schema=IRSDEConfig)
    assert cfg.model.arch == "irsde-unet" and cfg.model.options == {"nf": 64, "depth": 4}
    assert (cfg.sde.max_sigma, cfg.sde.T, cfg.sde.schedule, cfg.sde.eps) == (10, 100, "cosine", 0.005)
    assert cfg.loss.type == "l1" and cfg.optim.betas == (0.9, 0.99) and cfg.schedule.milestones == [200000, 400000, 600000]
    assert cfg.train.batch_size == 4 and cfg.data.crop == 128
    # defaults are the official ones even without the file
    assert IRSDEConfig().optim.lr == 1e-4 and IRSDEConfig().train.max_steps == 700_000


def test_refusion_nafnet_gets_gradients_from_the_matching_loss(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", _config(tmp_path, model={"arch": "refusion-nafnet", "options": {
        "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}})), schema=IRSDEConfig)
    task = IRSDETask(cfg)
    net = task.build_network()
    from comfyui_gendeg.core.train.engine import StepContext

    batch = {"gt": torch.rand(2, 3, 16, 16), "lq": torch.rand(2, 3, 16, 16)}
    terms = task.loss_terms(net, batch, StepContext(0, 0, torch.Generator().manual_seed(0), lambda: torch.autocast("cpu", enabled=False)))
    terms["matching"].backward()
    assert torch.isfinite(terms["matching"]) and net.intro.weight.grad is not None and float(net.intro.weight.grad.abs().sum()) > 0
