"""Exceptions with messages that say what was wrong and what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GenDegError(Exception):
    """Base class of every error the pack raises on purpose (bad input, bad file, ...)."""


class InputError(GenDegError, ValueError):
    """An input has the wrong shape, dtype, range or value."""


class WeightsError(GenDegError):
    """A checkpoint is missing, corrupt, of the wrong family, or fails verification."""


class MissingWeightError(WeightsError, FileNotFoundError):
    """A checkpoint is not on disk; the message names the file, its folder and the fetch command."""


class UnsafeCheckpointError(WeightsError):
    """A pickled checkpoint needs globals outside the allow-list and was refused."""


class HashMismatchError(WeightsError):
    """A file's sha256 differs from the manifest."""


class UnsafePathError(GenDegError, ValueError):
    """A path escapes the folder it must stay in."""


class Interrupted(GenDegError):
    """The user (or the runner) asked to stop; raised between steps."""


class WriteError(GenDegError, OSError):
    """A file could not be written (full disk, read-only or missing folder, a folder in the way).

    Raised after the partial file was removed; an existing file of that name is unchanged.
    """


class OutOfMemoryError(GenDegError, MemoryError):
    """Not enough memory for an image or a model; the message says how big it is and what to do."""


#: Texts of the allocation failures of torch (CPU and accelerators), numpy and the C++ runtime.
_OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc", "unable to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for :class:`MemoryError` and for the ``RuntimeError`` torch raises when an allocation fails."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def human_bytes(n: float) -> str:
    """``3072000000`` -> ``"2.9 GiB"`` (binary units)."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def image_memory_error(action: str, width: int, height: int, channels: int = 3, device: object = None) -> OutOfMemoryError:
    """The error for an allocation that failed trying to ``action`` ("load", "degrade", ...) a ``width`` × ``height`` image."""
    copy = human_bytes(4.0 * width * height * channels)
    on = f" on {device}" if device is not None else ""
    return OutOfMemoryError(
        f"not enough memory to {action} a {width}x{height} image{on} (one float32 copy of it takes {copy}, and the "
        f"work needs several): downscale or crop it first (half the size needs a quarter of the memory), or close "
        f"other programs, or use a machine with more memory"
    )


@contextlib.contextmanager
def explain_out_of_memory(
    action: str, width: int, height: int, channels: int = 3, device: object = None
) -> Iterator[None]:
    """Turn an allocation failure inside the block into :func:`image_memory_error` (other errors pass)."""
    try:
        yield
    except GenDegError:
        raise
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise image_memory_error(action, width, height, channels, device) from None
