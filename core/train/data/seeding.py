"""Seeds derived from integers, so every random choice is a pure function of (seed, step, index)."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from any integers (NumPy's SeedSequence hashing: well mixed, stable across versions)."""
    state = np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def generator(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``parts``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(derive_seed(*parts))
    return g


def randint(g: torch.Generator, n: int) -> int:
    """A uniform integer in 0..n-1 drawn from ``g``."""
    return int(torch.randint(0, n, (1,), generator=g, device=g.device))


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    """A uniform float in lo..hi drawn from ``g``."""
    return lo + (hi - lo) * float(torch.rand((), generator=g, device=g.device))


#: Streams of randomness, so adding draws to one never shifts another.
STREAM_DATA, STREAM_VAL, STREAM_LOSS, STREAM_INIT, STREAM_ORDER = 1, 2, 3, 4, 5
#: Where the second ("positive") crop of a sample is drawn (Perceive-IR's contrastive term).
STREAM_POSITIVE = 6
