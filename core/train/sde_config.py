"""Configs of ``gendeg train driftrec`` and ``gendeg train irsde`` (schemas as in :mod:`.config`).

Both share the restorer's ``name, seed, out, optim, schedule, train`` sections; their own
sections describe the network, the SDE, the data and how validation samples. Defaults are
the official training settings (DriftRec: sp-uhh/driftrec README, "Best D2KF2K run";
IR-SDE: Algolzw/image-restoration-sde ``options/train/ir-sde.yml`` of the deraining task).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import DataConfig, FoldersData, OptimConfig, PairsData, ScheduleConfig, TrainConfig
from .schema import ConfigError, to_dict

# ---------------------------------------------------------------------------------------
# shared


def _fingerprint(cfg: Any) -> str:
    """A hash of everything that changes the trained weights (not logging, saving or the step budget)."""
    d = to_dict(cfg)
    d.pop("out", None)
    for k in ("max_steps", "log_every", "val_every", "save_every", "keep_checkpoints"):
        d["train"].pop(k, None)
    d["data"].pop("workers", None)
    d["data"].pop("cache_images", None)
    d.pop("sample", None)  # how validation samples changes no weight
    if d["schedule"]["kind"] == "cosine":  # only cosine depends on the step budget
        d["train"]["max_steps"] = cfg.train.max_steps
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _check_train(cfg: Any) -> None:
    checks = [
        (cfg.train.max_steps >= 1, "train.max_steps must be at least 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (cfg.train.grad_accum >= 1, "train.grad_accum must be at least 1"),
        (0.0 <= cfg.train.ema_decay < 1.0, "train.ema_decay must be in 0..1 (exclusive of 1)"),
        (cfg.train.log_every >= 1 and cfg.train.save_every >= 1, "train.log_every and train.save_every must be at least 1"),
        (cfg.train.val_every >= 0, "train.val_every must be 0 or more"),
        (cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints must be at least 1"),
        (cfg.data.crop >= 8, "data.crop must be at least 8 pixels"),
        (cfg.data.val_count >= 0 and cfg.data.workers >= 0, "data.val_count and data.workers must be 0 or more"),
        (cfg.optim.lr > 0, "optim.lr must be positive"),
        (cfg.train.clip_grad is None or cfg.train.clip_grad > 0, "train.clip_grad must be positive or null"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"config: {msg}")


class _Run:
    """``out_dir``, ``to_dict`` and ``fingerprint`` of a training config (what the loop needs)."""

    name: str
    out: str | None

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def fingerprint(self) -> str:
        return _fingerprint(self)


# ---------------------------------------------------------------------------------------
# DriftRec


@dataclass
class DriftRecOptim(OptimConfig):
    lr: float = 1e-4  #: AdamW learning rate (official 1e-4).
    betas: tuple[float, float] = (0.9, 0.999)  #: AdamW betas (torch's defaults, as officially).
    weight_decay: float = 0.01  #: AdamW weight decay (torch's default 0.01, as officially).


@dataclass
class DriftRecSchedule(ScheduleConfig):
    kind: Literal["constant", "cosine", "multistep"] = "constant"  #: Learning-rate schedule (official: constant).


@dataclass
class DriftRecTrain(TrainConfig):
    max_steps: int = 1_000_000  #: Optimizer steps (official: 3000 epochs of D2KF2K at batch 8, about 1.1 M).
    batch_size: int = 8  #: Images per device per micro-batch (official 8).
    ema_decay: float = 0.999  #: EMA decay (official 0.999, torch_ema's warm-up).
    val_every: int = 5000  #: Validate every N steps (0: only at the end); each validation samples sample.steps steps.
    save_every: int = 5000  #: Write a checkpoint and the exported model every N steps.


@dataclass
class NCSNppModel:
    #: Base width (official 128).
    nf: int = 128
    #: Width multiplier per level (official [1, 1, 2, 2, 2, 2, 2]; crops must be at least 2**(levels-1) pixels).
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 2, 2, 2])
    #: Residual blocks per level (official 2).
    num_res_blocks: int = 2
    #: Nominal resolutions with self-attention (official [16]); level i has nominal resolution image_size / 2**i.
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    #: Nominal image size that places the attention (official 256; any input size runs).
    image_size: int = 256
    #: Scale of the Gaussian Fourier embedding of log sigma (official 16).
    fourier_scale: float = 16.0
    #: Dropout in the residual blocks (official 0).
    dropout: float = 0.0
    #: Initialise from this file (an official .ckpt or the pack's DriftRec safetensors; raw weights).
    pretrained: str | None = None


@dataclass
class DriftSDEConfig:
    #: ``ouve`` (the D2KF2K model) or ``cosve`` (the CelebA-HQ model).
    name: Literal["ouve", "cosve"] = "ouve"
    #: Stiffness of the drift towards the JPEG.
    gamma: float = 1.0
    #: Smallest noise level.
    sigma_min: float = 0.01
    #: Largest noise level (std at t = 1 for CosVE; about it for OUVE).
    sigma_max: float = 1.0
    #: Training times are drawn uniformly from t_eps..1.
    t_eps: float = 0.01


@dataclass
class JpegData:
    #: Folder of clean photos (searched recursively); each sample is a crop JPEG-compressed on the fly.
    clean: str = "input/clean"
    #: JPEG quality drawn uniformly from these integers, both included (official 0..100).
    quality: tuple[int, int] = (0, 100)
    #: Quality of the fixed validation JPEGs.
    val_quality: int = 10


@dataclass
class DriftRecData:
    #: ``jpeg`` (clean photos compressed on the fly), ``pairs`` (a pack dataset) or ``folders`` (gt/ + lq/).
    source: Literal["jpeg", "pairs", "folders"] = "jpeg"
    jpeg: JpegData = field(default_factory=JpegData)
    pairs: PairsData | None = None
    folders: FoldersData | None = None
    #: Square training crop in pixels (official 256).
    crop: int = 256
    #: Random resized crop before compression: area fraction range (official [0.2, 1.0]); null: plain random crops.
    crop_scale: tuple[float, float] | None = (0.2, 1.0)
    #: Random horizontal/vertical flips (official: none).
    flip: bool = False
    #: Random 90° rotations (official: none).
    rot90: bool = False
    #: Images held out for validation (a fixed, seeded choice; never trained on).
    val_count: int = 4
    #: Validation crop (centre, square; 0 = whole images).
    val_crop: int = 256
    #: Data-loader worker processes (0: in the training process).
    workers: int = 4
    #: Decoded images each worker keeps in memory.
    cache_images: int = 64


@dataclass
class DriftRecSample:
    #: Euler-Maruyama steps used to restore the validation images (official 100).
    steps: int = 100
    #: Last process time of the sampler (official 0.03).
    t_end: float = 0.03
    #: Seed of the validation sampler's noise.
    seed: int = 0


@dataclass
class DriftRecConfig(_Run):
    #: Name of the run: the exported model is ``<out>/<name>.safetensors`` (GenDeg DriftRec Loader reads it).
    name: str = "driftrec"
    #: Seed of everything (initialisation, data order, crops, JPEG qualities, times and noise of the loss).
    seed: int = 0
    #: Output folder (``--out`` overrides); default ``runs/<name>``.
    out: str | None = None
    model: NCSNppModel = field(default_factory=NCSNppModel)
    sde: DriftSDEConfig = field(default_factory=DriftSDEConfig)
    data: DriftRecData = field(default_factory=DriftRecData)
    sample: DriftRecSample = field(default_factory=DriftRecSample)
    optim: DriftRecOptim = field(default_factory=DriftRecOptim)
    schedule: DriftRecSchedule = field(default_factory=DriftRecSchedule)
    train: DriftRecTrain = field(default_factory=DriftRecTrain)

    def __post_init__(self) -> None:
        _check_train(self)
        levels = len(self.model.ch_mult)
        checks = [
            (levels >= 1 and min(self.model.ch_mult) >= 1, "model.ch_mult needs at least one level, each >= 1"),
            (self.model.nf >= 4 and self.model.num_res_blocks >= 1, "model.nf must be >= 4 and model.num_res_blocks >= 1"),
            (self.data.crop >= 2 ** (levels - 1), f"data.crop must be at least {2 ** (levels - 1)} pixels for "
             f"{levels} levels (2**(levels-1))"),
            (0 < self.sde.t_eps < 1, "sde.t_eps must be in (0, 1)"),
            (0 < self.sde.sigma_min < self.sde.sigma_max, "sde needs 0 < sigma_min < sigma_max"),
            (self.sde.gamma >= 0, "sde.gamma must be >= 0"),
            (self.sample.steps >= 1 and 0 < self.sample.t_end < 1, "sample.steps must be >= 1 and sample.t_end in (0, 1)"),
            (0 <= self.data.jpeg.val_quality <= 100, "data.jpeg.val_quality must be in 0..100"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config: {msg}")
        if self.data.source == "pairs" and self.data.pairs is None:
            raise ConfigError("config: data.source is 'pairs' but data.pairs.root is not set")
        if self.data.source == "folders" and self.data.folders is None:
            raise ConfigError("config: data.source is 'folders' but data.folders.gt / data.folders.lq are not set")

    def net_config(self) -> dict[str, Any]:
        m = self.model
        return {"in_channels": 6, "out_channels": 3, "image_size": m.image_size, "nf": m.nf, "ch_mult": list(m.ch_mult),
                "num_res_blocks": m.num_res_blocks, "attn_resolutions": list(m.attn_resolutions),
                "fourier_scale": m.fourier_scale, "dropout": m.dropout, "scale_by_sigma": True}


# ---------------------------------------------------------------------------------------
# IR-SDE family


@dataclass
class IRSDEModel:
    #: ``irsde-unet`` (IR-SDE ConditionalUNet), ``refusion-nafnet`` (Refusion) or ``daclip-unet`` (DA-CLIP universal restoration).
    arch: Literal["irsde-unet", "refusion-nafnet", "daclip-unet"] = "irsde-unet"
    #: Constructor options (defaults: the official configs; see ``gendeg train irsde --archs``); unknown options are errors.
    options: dict[str, Any] = field(default_factory=dict)
    #: Initialise from this file (an official .pth or a safetensors; loaded safely and strictly).
    pretrained: str | None = None
    #: DA-CLIP controller file for ``daclip-unet`` (e.g. daclip_ViT-B-32.pt): its frozen embeddings of each degraded crop condition the UNet.
    daclip: str | None = None


@dataclass
class IRSDEProcess:
    #: Stationary noise level in 0..255 units (official: 10 deraining/deblurring, 30 other IR-SDE tasks, 50 Refusion/DA-CLIP).
    max_sigma: float = 10.0
    #: Number of discrete steps.
    T: int = 100
    #: Theta schedule: ``cosine``, ``linear`` or ``constant``.
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    #: Signal left at T (exp(-Theta_T dt)).
    eps: float = 0.005


@dataclass
class IRSDELoss:
    #: ``l1`` (official) or ``l2`` between the predicted reverse-step mean and the optimal x*_{t-1}.
    type: Literal["l1", "l2"] = "l1"
    #: Weight of the matching loss.
    weight: float = 1.0


@dataclass
class IRSDESample:
    #: Sampler of the validation restorations: ``posterior`` (official), ``reverse_sde`` or ``reverse_ode``.
    sampler: Literal["posterior", "reverse_sde", "reverse_ode"] = "posterior"
    #: Reverse steps for validation (0: all T).
    steps: int = 0
    #: Seed of the validation sampler's noise.
    seed: int = 0


@dataclass
class IRSDEData(DataConfig):
    crop: int = 128  #: Square training crop in pixels (official GT_size 128).


@dataclass
class IRSDEOptim(OptimConfig):
    lr: float = 1e-4  #: Learning rate (official 1e-4; Adam = AdamW without weight decay).
    betas: tuple[float, float] = (0.9, 0.99)  #: Betas (official 0.9, 0.99).


@dataclass
class IRSDESchedule(ScheduleConfig):
    kind: Literal["constant", "cosine", "multistep"] = "multistep"  #: Learning-rate schedule (official MultiStepLR).
    milestones: list[int] = field(default_factory=lambda: [200000, 400000, 600000])  #: Official lr_steps.


@dataclass
class IRSDETrain(TrainConfig):
    max_steps: int = 700_000  #: Optimizer steps (official niter 700000).
    batch_size: int = 4  #: Images per device per micro-batch (official 4).
    ema_decay: float = 0.995  #: EMA decay (official ema_pytorch beta 0.995; here updated every step).
    val_every: int = 5000  #: Validate every N steps (official val_freq 5000).
    save_every: int = 5000  #: Write a checkpoint and the exported model every N steps.


@dataclass
class IRSDEConfig(_Run):
    #: Name of the run: the exported model is ``<out>/<name>.safetensors`` (GenDeg IR-SDE Loader reads it).
    name: str = "irsde"
    #: Seed of everything (initialisation, data order, crops, degradations, time steps and noise of the loss).
    seed: int = 0
    #: Output folder (``--out`` overrides); default ``runs/<name>``.
    out: str | None = None
    model: IRSDEModel = field(default_factory=IRSDEModel)
    sde: IRSDEProcess = field(default_factory=IRSDEProcess)
    loss: IRSDELoss = field(default_factory=IRSDELoss)
    data: IRSDEData = field(default_factory=IRSDEData)
    sample: IRSDESample = field(default_factory=IRSDESample)
    optim: IRSDEOptim = field(default_factory=IRSDEOptim)
    schedule: IRSDESchedule = field(default_factory=IRSDESchedule)
    train: IRSDETrain = field(default_factory=IRSDETrain)

    def __post_init__(self) -> None:
        _check_train(self)
        checks = [
            (self.sde.max_sigma > 0 and self.sde.T >= 1 and 0 < self.sde.eps < 1, "sde needs max_sigma > 0, T >= 1 and eps in (0, 1)"),
            (self.loss.weight > 0, "loss.weight must be positive"),
            (self.sample.steps >= 0, "sample.steps must be 0 (all T) or more"),
            (self.model.arch != "daclip-unet" or bool(self.model.daclip), "model.daclip must name the DA-CLIP file "
             "(e.g. models/gendeg/restore/daclip/daclip_ViT-B-32.pt) when model.arch is daclip-unet"),
            (0.0 <= self.data.otf.chain_probability <= 1.0, "data.otf.chain_probability must be in 0..1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config: {msg}")
        if self.data.source == "pairs" and self.data.pairs is None:
            raise ConfigError("config: data.source is 'pairs' but data.pairs.root is not set")
        if self.data.source == "folders" and self.data.folders is None:
            raise ConfigError("config: data.source is 'folders' but data.folders.gt / data.folders.lq are not set")
