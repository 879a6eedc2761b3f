"""ImageNet backbones for LPIPS and DISTS, in torchvision's exact key layout.

The networks are torchvision's ``alexnet(weights=None).features`` / ``vgg16(weights=None).features``
(never torchvision's hub download); their weights come from files resolved through the
manifest (``core.weights``). ``widths`` builds the same layer sequence with other channel
widths (tests use tiny ones); the state-dict keys (``features.<index>.weight``) do not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import WeightsError

ALEXNET_WIDTHS = (64, 192, 384, 256, 256)
VGG16_WIDTHS = (64, 128, 256, 512, 512)


def alexnet_features(widths: Sequence[int] | None = None) -> nn.Sequential:
    """torchvision AlexNet ``features`` (conv indices 0, 3, 6, 8, 10)."""
    if widths is None or tuple(widths) == ALEXNET_WIDTHS:
        from torchvision.models import alexnet

        return alexnet(weights=None).features
    a, b, c, d, e = widths
    return nn.Sequential(
        nn.Conv2d(3, a, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(a, b, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(b, c, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c, d, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(d, e, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )


def vgg16_features(widths: Sequence[int] | None = None) -> nn.Sequential:
    """torchvision VGG16 ``features`` (configuration D: 13 convs, max-pools at 4, 9, 16, 23, 30).

    Built directly (the same modules and key names as ``torchvision.models.vgg16().features``),
    without torchvision's 124M-parameter classifier, whose random initialisation alone takes
    seconds on a CPU; the weights are always loaded afterwards.
    """
    widths = VGG16_WIDTHS if widths is None else tuple(widths)
    layers: list[nn.Module] = []
    cin = 3
    for w, n in zip(widths, (2, 2, 3, 3, 3), strict=True):
        for _ in range(n):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True)]
            cin = w
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def load_features(features: nn.Sequential, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Load torchvision ``features.*`` weights into ``features`` (classifier keys are ignored).

    Accepts a full torchvision checkpoint (``features.N.weight``, ``classifier.*``) or the
    features alone (``N.weight``). Missing keys or other shapes raise :class:`WeightsError`.
    """
    if any(k.startswith("features.") for k in state_dict):
        sd = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
    else:
        sd = dict(state_dict)
    own = features.state_dict()
    missing = sorted(set(own) - set(sd))
    if missing:
        raise WeightsError(
            f"{what}: the backbone checkpoint lacks {len(missing)} tensors (e.g. features.{missing[0]}); "
            "is it the torchvision ImageNet checkpoint the manifest names?"
        )
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise WeightsError(
                f"{what}: features.{k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}; "
                "wrong backbone (AlexNet vs VGG16?)"
            )
    features.load_state_dict({k: sd[k] for k in own})
