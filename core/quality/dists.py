"""DISTS (Ding et al. 2020, dingkeyan93/DISTS): structure and texture similarity on VGG16 features.

* VGG16 (torchvision layout) with every max-pool replaced by L2 pooling: a 3×3 Hann
  window (``hanning(5)[1:-1]`` = (0.5, 1, 0.5), outer product, normalised) applied to x²
  with stride 2 and padding 1, per channel, then √(· + 1e-12).
* Stages: features[0:4]; L2pool(64) + [5:9]; L2pool(128) + [10:16]; L2pool(256) + [17:23];
  L2pool(512) + [24:30]. Input 0..1 is normalised with ImageNet mean/std; the raw input
  itself is "stage 0" (3 channels), so there are 3+64+128+256+512+512 = 1475 channels.
* For each stage and channel: S1 = (2 μx μy + c1)/(μx² + μy² + c1) (texture),
  S2 = (2 σxy + c2)/(σx² + σy² + c2) (structure), c1 = c2 = 1e-6, moments over the whole
  map. DISTS = 1 − Σ (α·S1 + β·S2) with α, β ``[1,1475,1,1]`` (file ``weights.pt``:
  keys ``alpha``, ``beta``) normalised by Σα + Σβ.

Output: ``[B]``, 0 for identical images, lower is better. The official script resizes
inputs so the short side is 256; call :func:`resize_like_official` for that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .backbones import VGG16_WIDTHS, load_features, vgg16_features
from .common import as_rgb3, check_pair

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
C1 = C2 = 1e-6


class L2Pool(nn.Module):
    """L2 pooling with a 3×3 Hann window, stride 2, padding 1 (per channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])
        g = a[:, None] * a[None, :]
        g = g / g.sum()
        self.register_buffer("filter", g.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter.to(x), stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS network; build, then :meth:`load` the VGG16 backbone and the alpha/beta file."""

    def __init__(self, widths: Sequence[int] | None = None) -> None:
        super().__init__()
        self.widths = tuple(widths) if widths is not None else VGG16_WIDTHS
        f = vgg16_features(widths)
        self.features = f  # torchvision indices kept (the pools at 4, 9, 16, 23 are replaced below)
        w = self.widths
        self.pools = nn.ModuleList(L2Pool(c) for c in w[:4])
        self.chns = (3, *w)
        self.alpha = nn.Parameter(torch.full((1, sum(self.chns), 1, 1), 0.1))
        self.beta = nn.Parameter(torch.full((1, sum(self.chns), 1, 1), 0.1))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load(self, backbone: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> DISTS:
        """Load a torchvision VGG16 checkpoint and the official ``weights.pt`` (``alpha``, ``beta``)."""
        load_features(self.features, backbone, "DISTS")
        for name in ("alpha", "beta"):
            if name not in weights:
                raise WeightsError(
                    f"DISTS weights: key {name!r} missing; expected the official weights.pt of "
                    "dingkeyan93/DISTS (keys alpha and beta)"
                )
            t = weights[name]
            own = getattr(self, name)
            if t.numel() != own.numel():
                raise WeightsError(f"DISTS weights: {name} has {t.numel()} values, expected {own.numel()} (1475 for VGG16)")
            own.data.copy_(t.reshape(own.shape))
        return self

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[input, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] with L2 pooling between stages."""
        h = (x - self.mean.to(x)) / self.std.to(x)
        feats = [x]
        bounds = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))
        for i, (a, b) in enumerate(bounds):
            if i > 0:
                h = self.pools[i - 1](h)
            for j in range(a, b):
                h = self.features[j](h)
            feats.append(h)
        return feats

    def forward(self, reference: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``[B]`` DISTS of ``[B,C,H,W]`` images in 0..1 (alpha ignored, grey expanded)."""
        ref, img = check_pair(reference, image)
        return self.distance(as_rgb3(ref), as_rgb3(img)).float()

    def distance(self, reference: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``[B]`` DISTS of two RGB ``[B,3,H,W]`` batches, without validation (differentiable; training losses)."""
        p = self.alpha
        x = torch.cat([reference, image], dim=0).to(p.device, p.dtype)
        n = reference.shape[0]
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, self.chns, dim=1)
        betas = torch.split(self.beta / w_sum, self.chns, dim=1)
        dist1 = torch.zeros(n, device=x.device, dtype=x.dtype)
        dist2 = torch.zeros_like(dist1)
        for f, a, b in zip(self.stages(x), alphas, betas, strict=True):
            fx, fy = f[:n], f[n:]
            mx, my = fx.mean(dim=(2, 3), keepdim=True), fy.mean(dim=(2, 3), keepdim=True)
            s1 = (2 * mx * my + C1) / (mx * mx + my * my + C1)
            vx = ((fx - mx) ** 2).mean(dim=(2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean(dim=(2, 3), keepdim=True)
            cov = (fx * fy).mean(dim=(2, 3), keepdim=True) - mx * my
            s2 = (2 * cov + C2) / (vx + vy + C2)
            dist1 = dist1 + (a * s1).sum(dim=(1, 2, 3))
            dist2 = dist2 + (b * s2).sum(dim=(1, 2, 3))
        return 1 - (dist1 + dist2)


def resize_like_official(x: torch.Tensor, short_side: int = 256) -> torch.Tensor:
    """Shrink ``[B,C,H,W]`` so its short side is ``short_side`` (the official DISTS pre-processing)."""
    h, w = x.shape[-2:]
    if min(h, w) <= short_side:
        return x
    s = short_side / min(h, w)
    return F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False)
