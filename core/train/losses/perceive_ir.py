"""Perceive-IR's training objective besides L1: InfoNCE on CFE features, L_clip and DPL.

The official release trains its restorer on L1 + 0.1·InfoNCE + 0.05·L_clip + 0.1·DPL
(``loss_weights`` contrastive / clip / perceptual); the formulas below follow its code.

**infonce** (weight 0.1): for each anchor b (the CFE feature a_b of the degraded input), the
positive p_b (the CFE feature of another crop of the same degraded image) and the negatives
n_j = a_j of the other samples of the batch whose degradation type differs (no gradient through
the negatives)::

    L_b = −log( exp(a_b·p_b/τ) / (exp(a_b·p_b/τ) + Σ_{j: type_j ≠ type_b} exp(a_b·a_j/τ)) ),  τ = 0.1

averaged over the anchors that have at least one negative (0, still connected to the graph,
when none has). Features are unit vectors, so a·b is the cosine. Needs an architecture with a
degradation encoder (``perceive_ir``), whose task puts ``cfe``, ``cfe_positive`` and ``labels``
into ``LossBatch.features``; negatives come from this process's batch only.

**clip_quality** (weight 0.05)::

    L_clip = mean_b (1 − softmax_k(cos(f(R_b), T_k))[excellent])

f = the frozen CLIP image embedding of the restored image clamped to [0, 1], resized to the
CLIP's input size (224×224 for ViT-B/32) with a plain bicubic resize (no antialiasing, no
crop, as the release) and normalised with CLIP's mean/std; T_k = the unit text embeddings of
the quality perceiver's tier prompts: the release's ``quality_prompts_*.pth`` or a file of
``gendeg train perceiver``, loaded on its CLIP; raw cosines, no logit scale (unlike the
stage-1 perceiver's scores).

**dpl** (weight 0.1): VGG16 (torchvision ``features``, ImageNet weights, frozen) feature maps
φ_l after layers 3, 7, 11 and 15 (relu1_2, conv2_2, relu3_1, relu3_3), inputs clamped to
[0, 1] and normalised with the ImageNet mean/std, level weights w_l = 1/12, 1/6, 1/3, 1::

    DPL = Σ_l w_l · mean_b [ D_l(R, GT) / max(2·D_l(R, LQ) + Σ_k m_k·w_kb·D_l(R, P_k), 1e-6) ]

D_l(a, b) = mean |φ_l(a) − φ_l(b)| per image; P_k are the proxy restorers' outputs
(``batch.proxies``; none: only the degraded input is a negative); m_k the per-proxy weights
(option ``proxy_weights``, 1 each by default, 0 switches a proxy off); w_kb = 1.25 when proxy
k's PSNR against GT on image b is at most the reference PSNR, else 0.75 (the release's rule).
The release's reference is the model's PSNR on a fixed probe set, measured at each epoch's
start; here it is the mean PSNR of the restorer's outputs over the batch. PSNR on outputs
clamped to [0, 1], without gradient. GT, LQ and proxies pass through VGG without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...quality.backbones import load_features, vgg16_features
from ...quality.clip import FrozenCLIP, load_clip
from ...quality.perceiver import QualityPerceiver, load_perceiver
from ...weights import load_manifest, load_state_dict, resolve
from ...weights.store import safe_join
from .base import LossBatch, LossContext, TrainLoss, check_same_shape, full_precision
from .perceptual import quality_folders

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DPL_LAYERS = (3, 7, 11, 15)
DPL_WEIGHTS = (1 / 12, 1 / 6, 1 / 3, 1.0)
HARD, EASY = 1.25, 0.75


@dataclass
class ClipQualityOptions:
    #: Multiplier of L_clip in the total (Perceive-IR: 0.05).
    weight: float = 0.05
    #: CLIP folder under <models>/clip (or a manifest id): the CLIP the prompts were trained with.
    clip: str = "clip-vit-base-patch32"
    #: Quality-perceiver prompts under <models>/quality (or a manifest id): Perceive-IR's quality_prompts_*.pth or a file of `gendeg train perceiver`.
    prompts: str = "perceiver-prompts"


@dataclass
class InfoNCEOptions:
    #: Multiplier of the InfoNCE term in the total (Perceive-IR: 0.1).
    weight: float = 0.1
    #: Temperature τ of the logits (Perceive-IR: 0.1).
    temperature: float = 0.1


@dataclass
class DPLOptions:
    #: Multiplier of DPL in the total (Perceive-IR: 0.1).
    weight: float = 0.1
    #: m_k, one weight per proxy in batch.proxies (None: 1 for every proxy; 0 switches one off).
    proxy_weights: list[float] | None = None


# --- L_clip --------------------------------------------------------------------------------


class ClipQualityLoss(TrainLoss):
    """mean(1 − p_excellent) with p = softmax of raw cosines to the perceiver's tier prompts."""

    def __init__(self, perceiver: QualityPerceiver) -> None:
        super().__init__()
        clip = perceiver.clip
        if "excellent" not in perceiver.tiers:
            raise InputError(f"clip_quality: the prompt file has tiers {perceiver.tiers}, none named 'excellent'")
        self.excellent = perceiver.tiers.index("excellent")
        with torch.no_grad():
            text = perceiver.text_features().detach()
        self.keep("clip", clip)
        object.__setattr__(self, "text", text)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Unit CLIP embeddings ``[B, D]`` of ``[B,3,H,W]`` images (clamped, plain bicubic resize), differentiable."""
        clip: FrozenCLIP = self.clip
        s = clip.image_size
        x = image.float().clamp(0, 1)
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        mean = torch.tensor(clip.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(clip.std, device=x.device).view(1, 3, 1, 1)
        px = ((x - mean) / std).to(clip.dtype)
        vis = clip.model.vision_model(pixel_values=px)
        pooled = vis.pooler_output if hasattr(vis, "pooler_output") else vis[1]
        return F.normalize(clip.model.visual_projection(pooled).float(), dim=-1)

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        f = self.image_features(batch.out.to(self.clip.device))
        p = (f @ self.text.to(f.device).T).softmax(dim=-1)
        return {"clip_quality": (1.0 - p[:, self.excellent]).mean()}


def clip_folder(ctx: LossContext, name: str) -> Path:
    """A CLIP folder: ``<models>/clip/<name>`` holding config.json, or a manifest id's folder."""
    name = name.strip()
    if Path(name).is_absolute():
        return Path(name)
    root = Path(ctx.models_dir) / "clip"
    cand = safe_join(root, name)
    if (cand / "config.json").is_file():
        return cand
    if name in load_manifest():
        return resolve(name, [root]).parent  # MissingWeightError with the fetch command
    raise InputError(f"clip_quality: CLIP folder {name!r} not found in {root}; fetch one with "
                     "`gendeg weights fetch clip-vit-base-patch32` or give a folder name under it")


def build_clip_quality(options: ClipQualityOptions, ctx: LossContext) -> ClipQualityLoss:
    prompts = resolve(options.prompts, quality_folders(ctx))
    clip = load_clip(clip_folder(ctx, options.clip), ctx.device)
    return ClipQualityLoss(load_perceiver(prompts, clip))


# --- InfoNCE on CFE features ---------------------------------------------------------------


def degradation_infonce(anchor: torch.Tensor, positive: torch.Tensor, labels: torch.Tensor,
                        temperature: float = 0.1) -> torch.Tensor:
    """Mean InfoNCE of unit features ``anchor``/``positive`` ``[B,D]`` against the detached anchors
    of other degradation ``labels`` ``[B]`` (see the module doc); 0 when no anchor has a negative."""
    a, p = anchor.float(), positive.float()
    pos = (a * p).sum(dim=-1, keepdim=True) / temperature  # [B,1]
    neg = a @ a.detach().T / temperature  # [B,B]
    is_neg = labels.view(-1, 1) != labels.view(1, -1)
    logits = torch.cat([pos, neg.masked_fill(~is_neg, float("-inf"))], dim=1)
    per_anchor = torch.logsumexp(logits, dim=1) - pos[:, 0]
    valid = is_neg.any(dim=1)
    if not bool(valid.any()):
        return a.sum() * 0.0
    return per_anchor[valid].mean()


class InfoNCELoss(TrainLoss):
    """Perceive-IR's contrastive term on the CFE degradation features (``batch.features``)."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise InputError(f"infonce: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        f = batch.features
        if not all(k in f for k in ("cfe", "cfe_positive", "labels")):
            raise InputError("infonce needs degradation features of the input and of a second crop (model.arch perceive_ir); "
                             "remove loss.infonce for this architecture")
        return {"infonce": degradation_infonce(f["cfe"], f["cfe_positive"], f["labels"], self.temperature)}


def build_infonce(options: InfoNCEOptions, ctx: LossContext) -> InfoNCELoss:
    return InfoNCELoss(options.temperature)


# --- DPL -----------------------------------------------------------------------------------


def _no_inplace(features: nn.Sequential) -> nn.Sequential:
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False  # a kept pre-ReLU map (layer 7) must not be overwritten by the next ReLU
    return features


class DPLoss(TrainLoss):
    """Perceive-IR's difficulty-adaptive perceptual loss (see the module doc)."""

    def __init__(self, features: nn.Sequential, proxy_weights: list[float] | None = None) -> None:
        super().__init__()
        if len(features) <= max(DPL_LAYERS):
            raise InputError(f"dpl: the VGG features have {len(features)} layers, need at least {max(DPL_LAYERS) + 1}")
        self.keep("features", _no_inplace(features[: max(DPL_LAYERS) + 1]))
        self.proxy_weights = None if proxy_weights is None else [float(w) for w in proxy_weights]
        if self.proxy_weights is not None and any(w < 0 for w in self.proxy_weights):
            raise InputError(f"dpl: proxy_weights must be >= 0, got {self.proxy_weights}")

    def feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG maps after layers 3, 7, 11, 15 of ``x`` clamped to 0..1 and ImageNet-normalised."""
        p = next(self.features.parameters())
        mean = torch.tensor(IMAGENET_MEAN, device=p.device, dtype=p.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=p.device, dtype=p.dtype).view(1, 3, 1, 1)
        h = (x.to(p.device, p.dtype).clamp(0, 1) - mean) / std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in DPL_LAYERS:
                out.append(h)
        return out

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        check_same_shape(batch, "dpl")
        proxies = list(batch.proxies)
        m = self.proxy_weights if self.proxy_weights is not None else [1.0] * len(proxies)
        if len(m) != len(proxies):
            raise InputError(f"dpl: proxy_weights has {len(m)} values but the batch has {len(proxies)} proxies; give one per proxy")
        for k, p in enumerate(proxies):
            if p.shape != batch.out.shape:
                raise InputError(f"dpl: proxy {k} has shape {tuple(p.shape)}, the output {tuple(batch.out.shape)}; "
                                 "proxies must be other restorers' outputs for the same batch")
        b = batch.out.shape[0]
        with torch.no_grad(), full_precision(batch.out.device):
            def psnr(x: torch.Tensor) -> torch.Tensor:
                mse = (x.float().clamp(0, 1) - batch.gt.float()).pow(2).flatten(1).mean(1)
                return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))

            mean_psnr = psnr(batch.out).mean()
            w = [torch.where(psnr(p) <= mean_psnr, HARD, EASY) for p in proxies]  # [B] each
            negatives = torch.cat([batch.gt, batch.lq, *proxies]).float()
            fixed = self.feats(negatives)
        r = self.feats(batch.out.float())
        total = batch.out.new_zeros((), dtype=torch.float32)
        for lw, fr, fn in zip(DPL_WEIGHTS, r, fixed, strict=True):
            fr = fr.float()
            parts = fn.float().split(b)

            def dist(other: torch.Tensor, fr: torch.Tensor = fr) -> torch.Tensor:
                return (fr - other).abs().flatten(1).mean(1)  # [B]

            den = 2 * dist(parts[1])
            for k in range(len(proxies)):
                den = den + m[k] * w[k] * dist(parts[2 + k])
            total = total + lw * (dist(parts[0]) / den.clamp_min(1e-6)).mean()
        return {"dpl": total}


def build_dpl(options: DPLOptions, ctx: LossContext) -> DPLoss:
    path = resolve("tv-vgg16", quality_folders(ctx))  # a missing file fails before building VGG16
    features = vgg16_features()
    load_features(features, load_state_dict(path), "DPL")
    return DPLoss(features.to(ctx.device), options.proxy_weights)
