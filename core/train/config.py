"""The training config: schema, loading from YAML, overrides.

``gendeg train restorer CONFIG.yaml`` reads a YAML file with the sections below; every key
has a default except ``model.arch`` and the data source's folder. ``gendeg train restorer
--schema`` prints this schema with its documentation (also in ``docs/training.md``).
Relative paths in a config are relative to the working folder the command runs in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import InputError
from .schema import REQUIRED, ConfigError, apply_overrides, from_dict, to_dict


@dataclass
class ModelConfig:
    #: Architecture name: ``nafnet``, ``swinir`` or ``perceive_ir`` (see ``gendeg train restorer --archs``).
    arch: str = REQUIRED
    #: Constructor options of the architecture (width, blocks, ...); unknown options are errors.
    options: dict[str, Any] = field(default_factory=dict)
    #: Initialise from this weights file (safetensors or a pickled checkpoint, loaded safely and strictly).
    pretrained: str | None = None


@dataclass
class OnTheFlyData:
    #: Folder of clean photos (searched recursively); each sample is a random crop degraded by the synthesizer.
    clean: str = "input/clean"
    #: Degradation types drawn uniformly per sample (any of the synthesizer's types).
    types: list[str] = field(default_factory=lambda: ["haze", "rain", "snow", "motion_blur", "low_light", "raindrop"])
    #: GenDeg intensity μ per sample: ``presets`` (uniform between each type's light and heavy preset) or ``[lo, hi]``.
    mu: str | tuple[float, float] = "presets"
    #: Calibrate each sample's strength to its drawn μ (false: draw the strength uniformly from ``strength``).
    calibrate: bool = True
    #: Strength range used when ``calibrate`` is false.
    strength: tuple[float, float] = (0.2, 1.0)
    #: Calibration tolerance on μ.
    tol: float = 0.01
    #: Second degradation applied after the first with probability ``chain_probability`` (e.g. jpeg, noise).
    chain_types: list[str] = field(default_factory=lambda: ["jpeg", "noise"])
    #: Probability of a second degradation (0 = single degradations only).
    chain_probability: float = 0.0
    #: μ range of the second degradation.
    chain_mu: tuple[float, float] = (0.005, 0.03)


@dataclass
class PairsData:
    #: A dataset written by GenDeg Save Dataset Pairs (the folder holding ``metadata.jsonl``).
    root: str = REQUIRED
    #: Keep only these degradation types (empty: all).
    types: list[str] = field(default_factory=list)
    #: Keep only pairs whose achieved μ lies in this range (null: all).
    mu_range: tuple[float, float] | None = None


@dataclass
class FoldersData:
    #: Folder of ground-truth images.
    gt: str = REQUIRED
    #: Folder of degraded images with the same file names (stems) as ``gt``.
    lq: str = REQUIRED


@dataclass
class DataConfig:
    #: Where training pairs come from: ``otf`` (clean photos degraded on the fly), ``pairs`` (a pack dataset) or ``folders`` (gt/ + lq/).
    source: Literal["otf", "pairs", "folders"] = "otf"
    #: Settings of the ``otf`` source.
    otf: OnTheFlyData = field(default_factory=OnTheFlyData)
    #: Settings of the ``pairs`` source.
    pairs: PairsData | None = None
    #: Settings of the ``folders`` source.
    folders: FoldersData | None = None
    #: Square training crop in pixels (paired crops at the same place).
    crop: int = 128
    #: Random horizontal/vertical flips.
    flip: bool = True
    #: Random 90° rotations.
    rot90: bool = True
    #: Images held out for validation (a fixed, seeded choice; never trained on).
    val_count: int = 4
    #: Validation crop (centre, square; 0 = whole images).
    val_crop: int = 256
    #: Data-loader worker processes (0: in the training process).
    workers: int = 2
    #: Decoded images each worker keeps in memory.
    cache_images: int = 64


@dataclass
class OptimConfig:
    #: AdamW learning rate.
    lr: float = 1e-3
    #: AdamW betas.
    betas: tuple[float, float] = (0.9, 0.9)
    #: AdamW weight decay.
    weight_decay: float = 0.0
    #: AdamW epsilon.
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    #: ``constant``, ``cosine`` (to ``min_lr`` at ``train.max_steps``) or ``multistep`` (× ``gamma`` at each milestone).
    kind: Literal["constant", "cosine", "multistep"] = "cosine"
    #: Linear warm-up from 0 over this many steps.
    warmup_steps: int = 0
    #: Final learning rate of ``cosine``.
    min_lr: float = 1e-7
    #: Steps at which ``multistep`` multiplies the learning rate by ``gamma``.
    milestones: list[int] = field(default_factory=list)
    #: Factor of ``multistep``.
    gamma: float = 0.5


@dataclass
class TrainConfig:
    #: Optimizer steps.
    max_steps: int = 10000
    #: Images per device per micro-batch.
    batch_size: int = 8
    #: Micro-batches per optimizer step (effective batch = batch_size × grad_accum × processes).
    grad_accum: int = 1
    #: Clip the gradient norm to this value (null: no clipping).
    clip_grad: float | None = None
    #: ``no``, ``bf16`` or ``fp16`` (fp16 needs a GPU).
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    #: EMA decay of the exported weights (0: no EMA, export the raw weights).
    ema_decay: float = 0.999
    #: Ramp the EMA decay up as min(decay, (1+step)/(10+step)) so early weights do not dominate.
    ema_warmup: bool = True
    #: Log the losses every N steps (CSV, TensorBoard, progress bar).
    log_every: int = 10
    #: Validate every N steps (0: only at the end).
    val_every: int = 500
    #: Write a checkpoint and the exported model every N steps.
    save_every: int = 500
    #: Training checkpoints kept (the newest ones).
    keep_checkpoints: int = 2
    #: Compile the network with torch.compile (GPU).
    compile: bool = False


class RunSections:
    """What every training config shares: ``name``, ``seed``, ``out``, ``optim``, ``schedule``, ``train``
    (and ``data.workers`` / ``data.cache_images``), their checks, the output folder and the fingerprint."""

    name: str
    out: str | None
    optim: OptimConfig
    schedule: ScheduleConfig
    train: TrainConfig

    def check_run_sections(self) -> None:
        """Raise :class:`ConfigError` for out-of-range loop settings."""
        checks = [
            (self.train.max_steps >= 1, "train.max_steps must be at least 1"),
            (self.train.batch_size >= 1, "train.batch_size must be at least 1"),
            (self.train.grad_accum >= 1, "train.grad_accum must be at least 1"),
            (0.0 <= self.train.ema_decay < 1.0, "train.ema_decay must be in 0..1 (exclusive of 1)"),
            (self.train.log_every >= 1 and self.train.save_every >= 1, "train.log_every and train.save_every must be at least 1"),
            (self.train.val_every >= 0, "train.val_every must be 0 or more"),
            (self.train.keep_checkpoints >= 1, "train.keep_checkpoints must be at least 1"),
            (self.optim.lr > 0, "optim.lr must be positive"),
            (self.train.clip_grad is None or self.train.clip_grad > 0, "train.clip_grad must be positive or null"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config: {msg}")

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def fingerprint(self) -> str:
        """A hash of everything that changes the trained weights (not logging, saving or the step budget)."""
        d = self.to_dict()
        d.pop("out", None)
        tr = d["train"]
        for k in ("max_steps", "log_every", "val_every", "save_every", "keep_checkpoints"):
            tr.pop(k, None)
        d["data"].pop("workers", None)
        d["data"].pop("cache_images", None)
        sched = d["schedule"]
        if sched["kind"] != "cosine":  # only cosine depends on the step budget
            tr.pop("max_steps", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RestorerConfig(RunSections):
    #: Name of the run: the exported model is ``<out>/<name>.safetensors``.
    name: str = "restorer"
    #: Seed of everything (initialisation, data order, crops, degradations, loss noise).
    seed: int = 0
    #: Output folder (``--out`` overrides); default ``runs/<name>``.
    out: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: Losses and their options, e.g. ``{l1: {weight: 1.0}, diffloss: {weight: 1.0}}`` (see ``--losses``).
    loss: dict[str, Any] = field(default_factory=lambda: {"l1": {"weight": 1.0}})
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.check_run_sections()
        checks = [
            (self.data.crop >= 8, "data.crop must be at least 8 pixels"),
            (self.data.val_count >= 0 and self.data.workers >= 0, "data.val_count and data.workers must be 0 or more"),
            (0.0 <= self.data.otf.chain_probability <= 1.0, "data.otf.chain_probability must be in 0..1"),
            (bool(self.loss), "loss: give at least one loss, e.g. {l1: {weight: 1.0}}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config: {msg}")
        if self.data.source == "pairs" and self.data.pairs is None:
            raise ConfigError("config: data.source is 'pairs' but data.pairs.root is not set")
        if self.data.source == "folders" and self.data.folders is None:
            raise ConfigError("config: data.source is 'folders' but data.folders.gt / data.folders.lq are not set")
        for name, opts in self.loss.items():
            if opts is not None and not isinstance(opts, dict):
                raise ConfigError(f"config: loss.{name} must be a mapping of options, e.g. {{weight: 1.0}}, got {opts!r}")


def load_config(path: str | Path | None, overrides: list[str] | None = None, schema: type = RestorerConfig) -> Any:
    """Read a YAML config, apply ``--set`` overrides, validate against ``schema``."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such config file (see configs/train/ for examples)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
        except (UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{p}: not a readable YAML text file ({type(exc).__name__})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a training config is a mapping of sections (model:, data:, loss:, ...)")
        data = loaded
    data = apply_overrides(data, overrides or [])
    return from_dict(schema, data)
