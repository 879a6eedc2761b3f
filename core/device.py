"""Device names given by people (``--device``): parsed and checked in one place.

``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"xpu"``; empty / ``None`` / ``"auto"``
pick the best available (CUDA, then Apple MPS, then the CPU). A name torch does not know,
or a device this machine lacks, raises :class:`InputError` with the names that work here.
"""

from __future__ import annotations

import torch

from .errors import InputError

#: Device types the pack computes on.
SUPPORTED = ("cpu", "cuda", "mps", "xpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def available_devices() -> list[str]:
    """Device names that work on this machine, best first (``cuda:0``…, ``mps``, ``xpu``, ``cpu``)."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        names.append("mps")
    if _xpu_available():
        names.append("xpu")
    return [*names, "cpu"]


def best_device() -> torch.device:
    """CUDA if present, else Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def parse_device(text: str | None, option: str = "--device") -> torch.device:
    """A device name -> ``torch.device``, checked to exist here; ``option`` names the setting in messages."""
    name = (text or "").strip().lower()
    if name in ("", "auto"):
        return best_device()
    here = ", ".join(available_devices())
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"{option} {text!r}: not a device name; use one of: {here}") from None
    if dev.type not in SUPPORTED:
        raise InputError(f"{option} {text!r}: the pack does not compute on {dev.type!r} devices; use one of: {here}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"{option} {text}: CUDA is not available on this machine (no NVIDIA GPU or driver, or a CPU-only "
                f"build of torch); use one of: {here}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{option} {text}: this machine has {count} CUDA device(s); use one of: {here}")
    elif dev.type == "mps" and not _mps_available():
        raise InputError(f"{option} {text}: Apple's MPS is not available on this machine; use one of: {here}")
    elif dev.type == "xpu" and not _xpu_available():
        raise InputError(f"{option} {text}: no Intel XPU is available on this machine; use one of: {here}")
    return dev
