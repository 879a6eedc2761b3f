"""``gendeg train driftrec``: DriftRec's denoising score matching on the shared training loop.

One micro-batch (clean ``x0`` and JPEG ``y``, ``[B,3,h,w]`` in 0..1), as the official
``ScoreModel._step``::

    t ~ U(t_eps, 1)                      per image (t_eps 0.01)
    x_t = mean(x0, y, t) + std(t) z      z ~ N(0, I)
    s = net(cat(x_t, y), std(t))         the score (the network divides by std)
    loss = mean_over_batch( 0.5 * sum_over_pixels (s std(t) + z)^2 )

Validation restores each held-out JPEG with the Euler-Maruyama sampler (``sample.steps``,
``sample.t_end``, a fixed seed). The export is the pack's DriftRec safetensors (EMA weights,
network and SDE settings in the metadata), which GenDeg DriftRec Loader reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..restore.driftrec import restore_driftrec
from ..restore.driftrec_loader import ARCH, META_KEY, DriftRecRestorer, read_weights
from ..restore.driftrec_sde import make_sde
from ..restore.nets.ncsnpp import NCSNpp
from .checkpoint import export_model
from .data import TrainData, build_data
from .data.datasets import split_validation
from .data.jpeg import JpegDataset, jpeg_validation_pairs
from .data.seeding import STREAM_INIT, derive_seed
from .data.sources import list_clean
from .engine import StepContext, TrainResult, TrainTask, run_training
from .sde_config import DriftRecConfig


def score_matching_loss(net: torch.nn.Module, sde: Any, x0: torch.Tensor, y: torch.Tensor, t_eps: float,
                        generator: torch.Generator, autocast: Any = None) -> torch.Tensor:
    """The official objective for one batch (see the module doc); ``generator`` draws ``t`` and ``z``."""
    b = x0.shape[0]
    t = torch.rand(b, generator=generator, device=generator.device) * (1.0 - t_eps) + t_eps
    std = sde.std(t).to(device=x0.device, dtype=torch.float32)
    z = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
    xt = sde.mean(x0, y, t) + std.reshape(b, 1, 1, 1) * z
    with autocast() if autocast is not None else torch.autocast(x0.device.type, enabled=False):
        score = net(torch.cat([xt, y], dim=1), std)
    err = score.float() * std.reshape(b, 1, 1, 1) + z
    return (0.5 * err.square().reshape(b, -1).sum(dim=1)).mean()


def build_driftrec_data(config: DriftRecConfig) -> TrainData:
    """Training samples and validation pairs for a DriftRec run."""
    data = config.data
    if data.source == "jpeg":
        try:
            files = list_clean(data.jpeg.clean)
        except InputError as exc:
            raise InputError(f"data.jpeg.clean: {exc}; put clean photos there or set data.jpeg.clean") from exc
        train_files, val_files = split_validation(files, data.val_count, config.seed)
        ds = JpegDataset(train_files, config.seed, data.crop, data.crop_scale, tuple(data.jpeg.quality), data.flip,
                         data.rot90, data.cache_images)
        summary = {"source": "jpeg", "clean": str(data.jpeg.clean), "images": len(train_files), "val_images": len(val_files),
                   "quality": list(data.jpeg.quality), "val_quality": data.jpeg.val_quality}
        return TrainData(ds, jpeg_validation_pairs(val_files, data.jpeg.val_quality, data.val_crop), summary)
    from .config import DataConfig

    generic = DataConfig(source=data.source, pairs=data.pairs, folders=data.folders, crop=data.crop, flip=data.flip,
                         rot90=data.rot90, val_count=data.val_count, val_crop=data.val_crop, workers=data.workers,
                         cache_images=data.cache_images)
    return build_data(generic, config.seed)


class DriftRecTask(TrainTask):
    """NCSN++ score network on ``cat(x_t, y)`` under DriftRec's score-matching objective.

    The Fourier embedding's ``W`` is a frozen parameter (as officially): the loop neither trains nor
    checkpoints it; it is the same for a seed (initialisation) and goes into every export.
    """

    name = "driftrec"

    def __init__(self, config: DriftRecConfig) -> None:
        self.config = config
        self.sde = make_sde(config.sde.name, config.sde.gamma, config.sde.sigma_min, config.sde.sigma_max)
        self.net: NCSNpp | None = None

    def build_network(self) -> torch.nn.Module:
        cfg = self.config
        torch.manual_seed(derive_seed(cfg.seed, STREAM_INIT))
        net = NCSNpp(**cfg.net_config())
        if cfg.model.pretrained:
            sd, file_cfg, _, _ = read_weights(cfg.model.pretrained, "raw", cache=False)
            own = net.state_dict()
            bad = [k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
            if bad or set(sd) - set(own):
                raise InputError(f"{cfg.model.pretrained}: does not fit the configured NCSN++ (file: {file_cfg.get('nf')} "
                                 f"nf, ch_mult {file_cfg.get('ch_mult')}); set model.* to the file's settings")
            net.load_state_dict(sd)
        self.net = net
        return net

    def loss_terms(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        loss = score_matching_loss(model, self.sde, batch["gt"], batch["lq"], self.config.sde.t_eps, ctx.generator,
                                   ctx.autocast)
        return {"score_matching": loss}

    @torch.no_grad()
    def restore(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        s = self.config.sample
        restorer = DriftRecRestorer(net, self.sde, {})
        g = torch.Generator().manual_seed(s.seed)
        return restore_driftrec(restorer, lq, steps=s.steps, t_end=s.t_end, generator=g, device=lq.device)

    def export(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        assert self.net is not None, "build_network() first"
        weights = {**self.net.state_dict(), **weights}  # the frozen Fourier W with the (EMA) trained entries
        meta = {"format": "1", "arch": ARCH, "net": self.config.net_config(), "sde": self.sde.config(), "weights": "ema",
                "t_eps": self.config.sde.t_eps, "source_format": "gendeg-train"}
        return export_model(path, weights, {**metadata, META_KEY: meta})

    def metadata(self) -> dict[str, Any]:
        return {"gendeg.arch": ARCH, "gendeg.training": {"arch": ARCH, "options": self.config.net_config(),
                                                          "sde": self.sde.config()}}


def train_driftrec(config: DriftRecConfig, *, device: str | None = None, resume: bool = False, progress: bool = True,
                   models_dir: str | Path | None = None, data: TrainData | None = None) -> TrainResult:
    """Train DriftRec as ``config`` says; returns where the model went and the last figures."""
    task = DriftRecTask(config)
    md = Path(models_dir or os.environ.get("GENDEG_MODELS_DIR", "models"))
    return run_training(config, task, data or build_driftrec_data(config), device=device, resume=resume, progress=progress,
                        models_dir=md)
