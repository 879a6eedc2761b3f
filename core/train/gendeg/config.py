"""The config of ``gendeg train gendeg``: fine-tune GenDeg on your own clean/degraded pairs.

It shares the ``name``, ``seed``, ``out``, ``optim``, ``schedule`` and ``train`` sections with
``gendeg train restorer`` (with the official GenDeg training values as defaults: AdamW
lr 1e-4, betas (0.9, 0.999), weight decay 0.01, a constant learning rate, EMA 0.9999 with
warm-up) and adds ``model`` (the GenDeg to start from, LoRA or full), ``data`` (pairs,
captions, type phrases), ``objective`` and ``validation``. ``gendeg train gendeg --schema``
prints it with its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import FoldersData, OptimConfig, PairsData, RunSections, ScheduleConfig, TrainConfig
from ..schema import REQUIRED, ConfigError


@dataclass
class LoraSettings:
    #: LoRA rank (size of the low-rank update of each attention projection).
    rank: int = 16
    #: LoRA alpha: the update is scaled by alpha / rank.
    alpha: float = 16.0
    #: Dropout on the LoRA input during training.
    dropout: float = 0.0
    #: Attention layers of the UNet that get adapters (self- and cross-attention query, key, value, output).
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class GenDegModelConfig:
    #: The GenDeg to fine-tune: a path, or a file name in <models>/gendeg (official .ckpt, our .safetensors, or a diffusers folder).
    base: str = REQUIRED
    #: Start from the base's EMA UNet (what the authors sample with) or its raw training UNet.
    unet_weights: Literal["ema", "raw"] = "ema"
    #: ``lora``: adapters on the UNet's attention layers (small file, little memory); ``full``: every UNet weight.
    mode: Literal["lora", "full"] = "lora"
    #: LoRA settings (mode lora).
    lora: LoraSettings = field(default_factory=LoraSettings)
    #: Learning-rate factor of the two intensity projections (stats_proj, cc_projection) over the UNet's (official: 10); they are always trained.
    projection_lr_scale: float = 10.0
    #: Recompute UNet activations in the backward pass (less memory, about 30 % slower).
    gradient_checkpointing: bool = False


@dataclass
class GenDegDataConfig:
    #: Where pairs come from: ``pairs`` (a dataset written by GenDeg Save Dataset Pairs) or ``folders`` (gt/ + lq/).
    source: Literal["pairs", "folders"] = "folders"
    #: Settings of the ``pairs`` source (types come from its metadata).
    pairs: PairsData | None = None
    #: Settings of the ``folders`` source.
    folders: FoldersData | None = None
    #: Degradation type of the ``folders`` pairs: a GenDeg type (haze, rain, ...) or a new name with its phrase in ``phrases``.
    type: str = ""
    #: Phrase per type, appended to the caption (``"<caption>, <phrase>"``), e.g. {underwater: "in underwater conditions"}; GenDeg's own types have theirs.
    phrases: dict[str, str] = field(default_factory=dict)
    #: Caption of each pair: ``auto`` (metadata caption, else a text file, else ``caption_text``), ``metadata``, ``files`` (gt/NAME.txt) or ``fixed``.
    caption: Literal["auto", "metadata", "files", "fixed"] = "auto"
    #: The fixed caption (and the fallback of ``auto``).
    caption_text: str = "a photo of a scene"
    #: ``squash``: each pair resized to size×size with Pillow's Lanczos (the official recipe); ``crop``: random size×size crops at full resolution.
    resize: Literal["squash", "crop"] = "squash"
    #: Training image side in pixels (official: 256), a multiple of 8.
    size: int = 256
    #: Random horizontal flips (official: p = 0.5).
    flip: bool = True
    #: Pairs held out for validation (a fixed, seeded choice; never trained on).
    val_count: int = 0
    #: Data-loader worker processes (0: in the training process).
    workers: int = 2
    #: Decoded pairs each worker keeps in memory.
    cache_images: int = 64


@dataclass
class ObjectiveConfig:
    #: Classifier-free-guidance dropout unit p (official 0.05): with one uniform draw u per sample, u < p nulls text + intensity, p <= u < 2p nulls them and zeroes the image, 2p <= u < 3p zeroes the image.
    uncond: float = 0.05


@dataclass
class ValidationConfig:
    #: Clean image degraded at every validation (empty: the clean image of the first held-out pair, else of the first training pair).
    image: str = ""
    #: Type to render (empty: the most frequent type of the training pairs).
    type: str = ""
    #: Three μ levels (empty: the 20th / 50th / 80th percentiles of the type's training pairs).
    mu: list[float] = field(default_factory=list)
    #: Scene caption of the validation prompt.
    caption: str = "a photo of a scene"
    #: Sampling steps (DDIM).
    steps: int = 20
    #: Text (type + intensity) guidance scale.
    text_guidance: float = 7.5
    #: Image guidance scale.
    image_guidance: float = 1.5
    #: Working resolution (0: the image's own size).
    resolution: int = 256
    #: Sampling seed.
    seed: int = 0


@dataclass
class GenDegOptimConfig(OptimConfig):
    #: AdamW learning rate of the UNet (official: 1e-4; the projections get projection_lr_scale times it).
    lr: float = 1e-4
    #: AdamW betas (official: PyTorch's defaults).
    betas: tuple[float, float] = (0.9, 0.999)
    #: AdamW weight decay (official: PyTorch's default 0.01).
    weight_decay: float = 0.01
    #: AdamW epsilon.
    eps: float = 1e-8


@dataclass
class GenDegScheduleConfig(ScheduleConfig):
    #: ``constant`` (official), ``cosine`` (to ``min_lr`` at ``train.max_steps``) or ``multistep`` (× ``gamma`` at each milestone).
    kind: Literal["constant", "cosine", "multistep"] = "constant"


@dataclass
class GenDegTrainSection(TrainConfig):
    #: Optimizer steps.
    max_steps: int = 2000
    #: Pairs per device per micro-batch.
    batch_size: int = 4
    #: EMA decay of the exported UNet weights (official 0.9999, with warm-up; the projections are exported raw, as officially).
    ema_decay: float = 0.9999


@dataclass
class GenDegTrainConfig(RunSections):
    #: Name of the run: the result is ``<out>/<name>.safetensors`` (a LoRA, or a whole GenDeg in the pack's layout).
    name: str = "gendeg_finetune"
    #: Seed of everything (LoRA initialisation, data order, flips, dropout, timesteps, noise).
    seed: int = 0
    #: Output folder (``--out`` overrides); default ``runs/<name>``.
    out: str | None = None
    model: GenDegModelConfig = field(default_factory=GenDegModelConfig)
    data: GenDegDataConfig = field(default_factory=GenDegDataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    optim: GenDegOptimConfig = field(default_factory=GenDegOptimConfig)
    schedule: GenDegScheduleConfig = field(default_factory=GenDegScheduleConfig)
    train: GenDegTrainSection = field(default_factory=GenDegTrainSection)

    def __post_init__(self) -> None:
        self.check_run_sections()
        checks = [
            (self.data.size >= 8 and self.data.size % 8 == 0, "data.size must be a multiple of 8 (at least 8)"),
            (self.data.val_count >= 0 and self.data.workers >= 0, "data.val_count and data.workers must be 0 or more"),
            (0.0 <= self.objective.uncond <= 1.0 / 3.0, "objective.uncond must be in 0..1/3 (three cases of p each)"),
            (self.model.lora.rank >= 1, "model.lora.rank must be at least 1"),
            (self.model.lora.alpha > 0, "model.lora.alpha must be positive"),
            (0.0 <= self.model.lora.dropout < 1.0, "model.lora.dropout must be in 0..1"),
            (bool(self.model.lora.targets), "model.lora.targets: name at least one attention layer (to_q, to_k, to_v, to_out.0)"),
            (self.model.projection_lr_scale >= 0, "model.projection_lr_scale must be 0 or more"),
            (self.validation.steps >= 1, "validation.steps must be at least 1"),
            (len(self.validation.mu) in (0, 3), "validation.mu: give three μ levels, or none for the data's percentiles"),
            (all(0.0 <= m <= 1.0 for m in self.validation.mu), "validation.mu values must be in 0..1"),
            (self.validation.resolution >= 0, "validation.resolution must be 0 or more"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config: {msg}")
        if self.data.source == "pairs" and self.data.pairs is None:
            raise ConfigError("config: data.source is 'pairs' but data.pairs.root is not set")
        if self.data.source == "folders":
            if self.data.folders is None:
                raise ConfigError("config: data.source is 'folders' but data.folders.gt / data.folders.lq are not set")
            if not self.data.type.strip():
                raise ConfigError("config: data.type is required with folders: the degradation type of the pairs "
                                  "(a GenDeg type such as haze, or a new name with its phrase in data.phrases)")
