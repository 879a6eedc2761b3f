"""What every training loss shares: the batch it sees, its context, its options.

A loss is a :class:`TrainLoss` built from an options dataclass and a :class:`LossContext`.
Its ``forward`` returns named scalar terms, already weighted internally (e.g. DiffLoss's
γ·L_nat and γλ·L_sem); the engine multiplies their sum by the option ``weight`` and logs
each term. Term names are unique across losses (``l1``, ``diffloss_nat``, …).

Frozen networks inside a loss (the diffusion prior, VGG, CLIP, LPIPS) are built on
``ctx.device``, set to ``requires_grad_(False)`` and eval mode, and kept as *unregistered*
attributes (:meth:`TrainLoss.keep`): they are not in the loss's ``parameters()`` or
``state_dict()``, so they never reach the optimizer or a checkpoint, and ``loss.train()``
does not switch them to training mode.

Options: a dataclass per loss whose first field is ``weight``; every field has a default, a
simple type (float, int, bool, str, list[int], list[float], tuple[int, int], Literal[…],
X | None) and a ``#:`` comment above it that documents it (:func:`option_docs` reads them).
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import InputError
from ..schema import field_docs, from_dict


@dataclass
class LossBatch:
    """One micro-batch as a loss sees it (all ``[B,3,H,W]``, on the same device)."""

    out: torch.Tensor
    """Restorer output, float32 or the autocast dtype, ≈0..1 (not clamped), requires grad."""
    gt: torch.Tensor
    """Ground truth, 0..1."""
    lq: torch.Tensor
    """Degraded input, 0..1."""
    step: int
    """Global optimizer step (0-based), for "every k steps" options."""
    generator: torch.Generator
    """On ``out.device``, seeded by the engine from (seed, step, rank, micro-step): all randomness comes from it."""
    proxies: list[torch.Tensor] = field(default_factory=list)
    """Other restorers' outputs (0..1) for the same inputs: DPL's medium-quality negatives."""
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    """Network-side tensors some losses need (Perceive-IR: ``cfe`` and ``cfe_positive`` ``[B,128]``
    degradation features of the input and of another crop of it, ``labels`` ``[B]`` degradation types)."""


@dataclass
class LossContext:
    """Where a loss is built: its device, the models root, the engine's mixed precision."""

    device: torch.device
    models_dir: pathlib.Path
    """Models root, laid out as ``<root>/<kind>/…`` (``restore``, ``quality``, ``clip``)."""
    mixed_precision: str = "no"
    """``"no"``, ``"bf16"`` or ``"fp16"``: what the engine's accelerator uses."""


class TrainLoss(torch.nn.Module):
    """Returns named, already internally weighted scalar terms; the engine multiplies their
    sum by the config ``weight`` and logs each term."""

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep(self, name: str, module: Any) -> Any:
        """Store a frozen network as a plain attribute (not a registered submodule) and return it."""
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
        object.__setattr__(self, name, module)
        return module


@dataclass
class LossSpec:
    """A registry entry: the options dataclass, the builder, one line of documentation."""

    options: type
    build: Callable[[Any, LossContext], TrainLoss]
    doc: str


# --- options ---------------------------------------------------------------------------


def option_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` from the ``#:`` comments above (or after) each field of an options dataclass."""
    return field_docs(cls)


def make_options(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """An options dataclass from a mapping: unknown keys and wrong types are one-line errors naming ``what``."""
    return from_dict(cls, dict(values or {}), prefix=what)


# --- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Switch autocast off (losses whose arithmetic needs float32: SSIM moments, PSNR, ratios)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def zero_term(batch: LossBatch) -> torch.Tensor:
    """A zero connected to the restorer output (a skipped step still has a graph, DDP stays in sync)."""
    return batch.out.sum() * 0.0


def check_same_shape(batch: LossBatch, what: str) -> None:
    """``out`` and ``gt`` must be ``[B,3,H,W]`` of the same shape."""
    if batch.out.ndim != 4 or batch.out.shape != batch.gt.shape:
        raise InputError(f"{what}: out {tuple(batch.out.shape)} and gt {tuple(batch.gt.shape)} must be [B,3,H,W] of the same shape")


def autocast_dtype(mixed_precision: str) -> torch.dtype:
    """torch dtype of the engine's mixed precision setting (``no`` -> float32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
