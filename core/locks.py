"""Inter-process locks that leave no files behind in the user's folders.

* :func:`locked_file`: an exclusive lock on an open file itself (the report being appended to).
* :func:`locked_folder`: an exclusive lock on a folder itself (a dataset whose index is rebuilt).

On POSIX both are ``flock`` on a descriptor of the object itself, so nothing is created and a
killed process releases its lock with its descriptors. Where ``flock`` is unavailable (Windows)
or refused (some network file systems), a ``.<name>.lock`` beside the file (inside the folder)
is created exclusively and removed on release; after ``timeout`` seconds of waiting the error
says which file to delete if no run is writing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def _sidecar(lock: Path, timeout: float) -> Iterator[None]:
    """Hold ``lock`` (created with O_EXCL) for the block; it is removed afterwards."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise InputError(f"{lock}: still locked after {timeout:.0f}s; delete it if no run is writing") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(lock)


@contextlib.contextmanager
def locked_file(fh: IO, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive lock on the open file ``fh`` for the block (``flock`` on its descriptor)."""
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass  # flock refused here: fall back to a lock file next to it
        else:
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return
    path = Path(fh.name)
    with _sidecar(path.with_name(f".{path.name}.lock"), timeout):
        yield


@contextlib.contextmanager
def locked_folder(folder: str | Path, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive lock on ``folder`` itself for the block (created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass  # flock refused here: fall back to a lock file inside it
            else:
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return
        finally:
            os.close(fd)
    with _sidecar(folder / ".lock", timeout):
        yield
