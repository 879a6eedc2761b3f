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
import dataclasses
import inspect
import pathlib
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ...errors import InputError


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
    lines = inspect.getsource(cls).splitlines()
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
            continue
        m = re.match(r"^(\w+)\s*:", s)
        if m and m.group(1) in names:
            inline = s.split("#:", 1)[1].strip() if "#:" in s else ""
            docs[m.group(1)] = " ".join([*pending, inline]).strip()
        pending = []
    return docs


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(matches, value converted) for the simple option types."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False, value
            items = [_coerce(v, a) for v, a in zip(value, args, strict=True)]
        else:
            items = [_coerce(v, args[0]) for v in value] if args else [(True, v) for v in value]
        if not all(ok for ok, _ in items):
            return False, value
        conv = [v for _, v in items]
        return True, (tuple(conv) if origin is tuple else conv)
    return isinstance(value, tp), value


def make_options(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """An options dataclass from a mapping: unknown keys and wrong types are :class:`InputError`s."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{what}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(fields)}")
    kw = {}
    for name, value in values.items():
        ok, conv = _coerce(value, hints[name])
        if not ok:
            raise InputError(f"{what}: option {name} must be {_type_name(hints[name])}, got {value!r}")
        kw[name] = conv
    return cls(**kw)


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
