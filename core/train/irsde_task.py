"""``gendeg train irsde``: the IR-SDE family on the shared training loop.

Networks (official key layouts, so the exports load in GenDeg IR-SDE Loader): IR-SDE's
``ConditionalUNet`` (``irsde-unet``), Refusion's ``ConditionalNAFNet`` (``refusion-nafnet``)
and DA-CLIP's universal-restoration UNet (``daclip-unet``), conditioned on the embeddings a
frozen DA-CLIP controller gives each degraded crop (content and degradation, as the
official training computes them from the low-quality image).

The official maximum-likelihood matching objective, per micro-batch of clean ``x0`` and
degraded ``mu`` (``[B,3,h,w]`` in 0..1)::

    t ~ U{1..T}, eps ~ N(0, I)                         per image
    x_t = mu + (x0 - mu) e^{-Theta_t dt} + sigma_bar_t eps
    score = -net(x_t, mu, t) / sigma_bar_t
    predicted  x_{t-1} = x_t - [theta_t (mu - x_t) - sigma_t^2 score] dt        (reverse_sde_step_mean)
    optimal    x*_{t-1} = mu + c_t (x_t - mu) + c_0 (x0 - mu)                  (reverse_optimum_step)
               c_t = A (1 - C^2) / (1 - B^2),  c_0 = C (1 - A^2) / (1 - B^2),
               A = e^{-theta_t dt}, B = e^{-Theta_t dt}, C = e^{-Theta_{t-1} dt}
    loss = weight * mean_over_batch( mean_over_pixels |predicted - optimal| )     (l1; l2: squared)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..restore.irsde import restore_sde
from ..restore.irsde_loader import SDERestorer, build_daclip, read_checkpoint
from ..restore.nets.daclip import clip_preprocess
from ..restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
from ..restore.nets.refusion_nafnet import ConditionalNAFNet
from ..restore.sde import IRSDE
from .checkpoint import export_model
from .data import TrainData, build_data
from .data.seeding import STREAM_INIT, derive_seed
from .engine import StepContext, TrainResult, TrainTask, load_pretrained, run_training
from .schema import ConfigError
from .sde_config import IRSDEConfig

#: Constructor options per architecture and their official defaults.
ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "irsde-unet": {"nf": 64, "depth": 4},
    "refusion-nafnet": {"width": 64, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]},
    "daclip-unet": {"nf": 64, "ch_mult": [1, 2, 4, 8], "context_dim": 512},
}
ARCH_DOCS = {
    "irsde-unet": "IR-SDE ConditionalUNet (official: nf 64, depth 4; deshadowing nf 32, depth 5)",
    "refusion-nafnet": "Refusion ConditionalNAFNet (official: width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1])",
    "daclip-unet": "DA-CLIP universal-restoration UNet with degradation prompt and cross-attention (official: nf 64, "
                   "ch_mult [1,2,4,8], context 512 for ViT-B/32); needs model.daclip",
}
META_KEY = "gendeg.irsde"


def arch_options(arch: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture's defaults updated with ``options``; unknown names are errors."""
    if arch not in ARCH_OPTIONS:
        raise ConfigError(f"config: model.arch {arch!r} is not an IR-SDE architecture; choose one of {', '.join(ARCH_OPTIONS)}")
    defaults = ARCH_OPTIONS[arch]
    unknown = [k for k in options if k not in defaults]
    if unknown:
        raise ConfigError(f"config: model.options.{unknown[0]} is not an option of {arch}; valid: {', '.join(defaults)}")
    return {**defaults, **dict(options)}


def build_irsde_net(arch: str, options: Mapping[str, Any]) -> torch.nn.Module:
    """A freshly initialised noise network of ``arch`` with ``options`` (see :data:`ARCH_OPTIONS`)."""
    o = arch_options(arch, options)
    try:
        if arch == "irsde-unet":
            return ConditionalUNet(3, 3, int(o["nf"]), irsde_ch_mult(int(o["depth"])))
        if arch == "refusion-nafnet":
            return ConditionalNAFNet(3, int(o["width"]), int(o["middle_blk_num"]), list(o["enc_blk_nums"]), list(o["dec_blk_nums"]))
        return ConditionalUNet(3, 3, int(o["nf"]), list(o["ch_mult"]), context_dim=int(o["context_dim"]),
                               use_degra_context=True, use_image_context=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"config: model.options do not build a {arch}: {exc}") from exc


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Schedule ``values[t]`` per image as ``[B,1,1,1]`` on ``like``'s device/dtype."""
    return values[t.cpu()].to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)


def noisy_state(sde: IRSDE, x0: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x_t = mu + (x0 - mu) e^{-Theta_t dt} + sigma_bar_t noise`` for per-image steps ``t`` (``[B]`` long)."""
    decay = torch.exp(-sde.thetas_cumsum * sde.dt)
    return mu + (x0 - mu) * _at(decay, t, x0) + _at(sde.sigma_bars, t, x0) * noise


def reverse_step_mean(sde: IRSDE, xt: torch.Tensor, score: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The mean of one reverse-SDE step from ``t`` to ``t - 1``: ``x_t - [theta_t (mu - x_t) - sigma_t^2 score] dt``."""
    theta, sigma = _at(sde.thetas, t, xt), _at(sde.sigmas, t, xt)
    return xt - (theta * (mu - xt) - sigma**2 * score) * sde.dt


def optimal_reverse_step(sde: IRSDE, xt: torch.Tensor, x0: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The optimal ``x*_{t-1}`` given the clean image (the posterior mean of ``x_{t-1} | x_t, x0``)."""
    a = torch.exp(-sde.thetas * sde.dt)
    b = torch.exp(-sde.thetas_cumsum * sde.dt)
    A, B, C = _at(a, t, xt), _at(b, t, xt), _at(b, t - 1, xt)
    ct = A * (1 - C**2) / (1 - B**2)
    c0 = C * (1 - A**2) / (1 - B**2)
    return ct * (xt - mu) + c0 * (x0 - mu) + mu


class IRSDETask(TrainTask):
    """A noise network of the IR-SDE family under the maximum-likelihood matching loss."""

    name = "irsde"

    def __init__(self, config: IRSDEConfig) -> None:
        self.config = config
        s = config.sde
        self.sde = IRSDE.create(s.max_sigma, s.T, s.schedule, s.eps)
        self.options = arch_options(config.model.arch, config.model.options)
        self.daclip: torch.nn.Module | None = None

    def build_network(self) -> torch.nn.Module:
        torch.manual_seed(derive_seed(self.config.seed, STREAM_INIT))
        net = build_irsde_net(self.config.model.arch, self.options)
        if self.config.model.pretrained:
            load_pretrained(net, self.config.model.pretrained)
        return net

    def setup(self, device: torch.device) -> None:
        if self.config.model.arch == "daclip-unet":
            path = self.config.model.daclip
            if not path or not Path(path).is_file():
                raise InputError(f"model.daclip: {path!r} is not a file; point it at the DA-CLIP controller "
                                 "(gendeg weights fetch daclip-vit-b-32)")
            daclip = build_daclip(read_checkpoint(path))
            emb = daclip.clip.visual.cfg.embed_dim
            if emb != int(self.options["context_dim"]):
                raise InputError(f"model.daclip gives {emb}-d embeddings but model.options.context_dim is "
                                 f"{self.options['context_dim']}; make them equal (ViT-B/32: 512, ViT-L/14: 768)")
            self.daclip = daclip.to(device).eval().requires_grad_(False)

    def contexts(self, lq: torch.Tensor) -> dict[str, torch.Tensor]:
        """DA-CLIP's frozen ``text_context`` (degradation) and ``image_context`` (content) of each degraded crop."""
        if self.daclip is None:
            return {}
        with torch.no_grad():
            content, degra = self.daclip.encode_image(clip_preprocess(lq, self.daclip.image_size))
        return {"text_context": degra.float(), "image_context": content.float()}

    def targets(self, model: torch.nn.Module, x0: torch.Tensor, mu: torch.Tensor, generator: torch.Generator,
                autocast: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(predicted x_{t-1}, optimal x*_{t-1}, t)`` for one batch (``t`` drawn from ``generator``)."""
        b = x0.shape[0]
        t = torch.randint(1, self.sde.T + 1, (b,), generator=generator, device=generator.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        xt = noisy_state(self.sde, x0, mu, t, noise)
        with autocast() if autocast is not None else torch.autocast(x0.device.type, enabled=False):
            eps = model(xt, mu, t.to(x0.device), **self.contexts(mu))
        score = -eps.float() / _at(self.sde.sigma_bars, t, x0)
        return reverse_step_mean(self.sde, xt, score, mu, t), optimal_reverse_step(self.sde, xt, x0, mu, t), t

    def loss_terms(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        pred, target, _ = self.targets(model, batch["gt"], batch["lq"], ctx.generator, ctx.autocast)
        diff = (pred - target).abs() if self.config.loss.type == "l1" else (pred - target).square()
        loss = diff.reshape(diff.shape[0], -1).mean(dim=1).mean()
        return {"matching": self.config.loss.weight * loss}

    @torch.no_grad()
    def restore(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        s = self.config.sample
        restorer = SDERestorer(net, self.config.model.arch, self.sde, "training", self.daclip)
        g = torch.Generator().manual_seed(s.seed)
        return restore_sde(restorer, lq, sampler=s.sampler, steps=s.steps or None, generator=g, device=lq.device)

    def export(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        s = self.config.sde
        meta = {"arch": self.config.model.arch, "options": self.options, "max_sigma": s.max_sigma, "T": s.T,
                "schedule": s.schedule, "eps": s.eps}
        return export_model(path, weights, {**metadata, META_KEY: meta})

    def metadata(self) -> dict[str, Any]:
        return {"gendeg.arch": self.config.model.arch,
                "gendeg.training": {"arch": self.config.model.arch, "options": self.options}}


def train_irsde(config: IRSDEConfig, *, device: str | None = None, resume: bool = False, progress: bool = True,
                models_dir: str | Path | None = None, data: TrainData | None = None) -> TrainResult:
    """Train an IR-SDE-family network as ``config`` says."""
    task = IRSDETask(config)
    md = Path(models_dir or os.environ.get("GENDEG_MODELS_DIR", "models"))
    return run_training(config, task, data or build_data(config.data, config.seed), device=device, resume=resume,
                        progress=progress, models_dir=md)
