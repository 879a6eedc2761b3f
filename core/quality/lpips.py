"""LPIPS v0.1 (Zhang et al. 2018, richzhang/PerceptualSimilarity): learned perceptual distance.

* Input 0..1 is mapped to [-1, 1], then normalised by the "scaling layer":
  (x − shift) / scale with shift = (−0.030, −0.088, −0.188), scale = (0.458, 0.448, 0.450).
* Backbone features (torchvision AlexNet or VGG16, frozen): AlexNet relu1..relu5
  (features[0:2], [2:5], [5:8], [8:10], [10:12]); VGG16 relu1_2, relu2_2, relu3_3,
  relu4_3, relu5_3 (features[0:4], [4:9], [9:16], [16:23], [23:30]).
* Each feature map is unit-normalised over channels (x / (‖x‖₂ + 1e-10)); the squared
  difference is weighted by the learned 1×1 "lin" head (no bias), averaged over space and
  summed over the five layers. Heads use the official keys ``lin{k}.model.1.weight``
  (``[1, C_k, 1, 1]``, the ``v0.1/alex.pth`` / ``vgg.pth`` files).

Output: ``[B]`` distances ≥ 0, 0 for identical images, lower is better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import WeightsError
from .backbones import ALEXNET_WIDTHS, VGG16_WIDTHS, alexnet_features, load_features, vgg16_features
from .common import as_rgb3, check_pair

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_SLICES = {"alex": (0, 2, 5, 8, 10, 12), "vgg": (0, 4, 9, 16, 23, 30)}


class LPIPS(nn.Module):
    """LPIPS distance network; build, then :meth:`load` the backbone and head state dicts."""

    def __init__(self, net: str = "alex", widths: Sequence[int] | None = None) -> None:
        super().__init__()
        if net not in _SLICES:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.widths = tuple(widths) if widths is not None else (ALEXNET_WIDTHS if net == "alex" else VGG16_WIDTHS)
        features = alexnet_features(widths) if net == "alex" else vgg16_features(widths)
        b = _SLICES[net]
        # Keep torchvision's indices so a torchvision checkpoint loads as is.
        self.features = features
        self._bounds = b
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.widths)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load(self, backbone: Mapping[str, torch.Tensor], heads: Mapping[str, torch.Tensor]) -> LPIPS:
        """Load a torchvision backbone checkpoint and the official ``lin{k}.model.1.weight`` heads."""
        load_features(self.features, backbone, f"LPIPS-{self.net}")
        for k, lin in enumerate(self.lins):
            key = f"lin{k}.model.1.weight"
            if key not in heads:
                raise WeightsError(
                    f"LPIPS-{self.net} heads: key {key!r} missing; expected the official v0.1 "
                    f"{self.net}.pth from richzhang/PerceptualSimilarity (keys lin0..lin4.model.1.weight)"
                )
            w = heads[key]
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise WeightsError(
                    f"LPIPS-{self.net} heads: {key} has shape {tuple(w.shape)}, expected {tuple(lin.weight.shape)}; "
                    "are these the heads of the other backbone (alex vs vgg)?"
                )
            lin.weight.data.copy_(w)
        return self

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised feature maps of ``x`` (already scaled)."""
        out = []
        b = self._bounds
        h = x
        for i in range(5):
            for j in range(b[i], b[i + 1]):
                h = self.features[j](h)
            out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, reference: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``[B]`` LPIPS distance of ``[B,C,H,W]`` images in 0..1 (alpha ignored, grey expanded)."""
        ref, img = check_pair(reference, image)
        return self.distance(as_rgb3(ref), as_rgb3(img)).float()

    def distance(self, reference: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``[B]`` LPIPS of two RGB ``[B,3,H,W]`` batches, without validation (differentiable; training losses)."""
        p = next(self.parameters())
        x = torch.cat([reference, image], dim=0).to(p.device, p.dtype)
        x = (x * 2 - 1 - self.shift.to(x)) / self.scale.to(x)
        n = reference.shape[0]
        total = torch.zeros(n, device=x.device, dtype=x.dtype)
        for f, lin in zip(self.layers(x), self.lins, strict=True):
            d = (f[:n] - f[n:]).pow(2)
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total
