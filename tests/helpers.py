"""Small shared test helpers (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import socket
import urllib.request

import torch
import torch.nn.functional as F


def scene(b: int = 1, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth, textured test scene in 0.1..0.9 (gradients + fine texture), ``[B,3,H,W]``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, h // 8 + 1, w // 8 + 1, generator=g)
    x = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)
    fine = torch.rand(b, 3, h, w, generator=g) * 0.2
    return (0.1 + 0.8 * (0.8 * x + fine).clamp(0, 1)).clamp(0, 1)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    """GET a JSON document from a local test server."""
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())
