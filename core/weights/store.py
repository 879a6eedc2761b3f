"""Find checkpoints on disk and verify them.

``resolve`` turns a manifest id or a file name into a path inside the model folders the
caller passes (the node layer gets them from the host: ComfyUI's ``models/gendeg/<kind>``
or ``--models-dir``/``GENDEG_MODELS_DIR`` outside it). ``sha256_file`` caches digests by
(path, size, mtime) in a small JSON file so large files are hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import HashMismatchError, MissingWeightError, UnsafePathError
from .manifest import WeightEntry, WeightFile, entry_for_file, get_entry, load_manifest

_CACHE_LOCK = threading.Lock()


def _cache_file() -> Path:
    base = os.environ.get("GENDEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "comfyui-gendeg")
    return Path(base) / "sha256.json"


def sha256_file(path: str | Path, *, use_cache: bool = True, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, cached by (absolute path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_path = _cache_file()
    if use_cache:
        with _CACHE_LOCK:
            try:
                cache = json.loads(cache_path.read_text())
            except (OSError, ValueError):
                cache = {}
        if key in cache:
            return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if use_cache:
        with _CACHE_LOCK:
            try:
                cache = json.loads(cache_path.read_text())
            except (OSError, ValueError):
                cache = {}
            cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
            cache[key] = digest
            try:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(cache, indent=0))
                os.replace(tmp, cache_path)
            except OSError:
                pass  # a read-only home only costs re-hashing
    return digest


def verify_file(path: str | Path, expected_sha256: str | None, expected_size: int | None = None) -> str:
    """Check size and sha256 (when known); returns the digest or raises :class:`HashMismatchError`."""
    path = Path(path)
    if expected_size is not None and path.stat().st_size != expected_size:
        raise HashMismatchError(
            f"{path.name}: size {path.stat().st_size} bytes, the manifest says {expected_size}; "
            "the download is incomplete or it is a different file. Delete it and fetch it again."
        )
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise HashMismatchError(
            f"{path.name}: sha256 {digest} does not match the manifest's {expected_sha256}; "
            "the file is corrupt or not the published one. Delete it and run the fetch command again."
        )
    return digest


def safe_join(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that leave ``root``."""
    root_p = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise UnsafePathError(f"{relative}: absolute paths are not allowed here; give a path inside {root_p}")
    target = (root_p / rel).resolve()
    if target != root_p and root_p not in target.parents:
        raise UnsafePathError(f"{relative}: escapes {root_p}; give a path inside that folder")
    return target


def _missing(name: str, folders: Sequence[Path], entry: WeightEntry | None) -> MissingWeightError:
    where = folders[0] if folders else Path("models")
    if entry is not None:
        how = f"Fetch it with:  gendeg weights fetch {entry.id}"
        if not any(f.urls or f.hf_repo for f in entry.files):
            how = f"It cannot be downloaded automatically ({entry.source}); get it by hand and put it there."
        elif entry.notes:
            how += f"  ({entry.notes.strip().splitlines()[0]})"
    else:
        how = "Put the file there (or pick one that exists); `gendeg weights list` shows the known checkpoints."
    return MissingWeightError(f"weight file {name!r} not found. It belongs in {where}. {how}")


def resolve(name: str, folders: Sequence[str | Path], *, verify: bool = False) -> Path:
    """Path of a checkpoint given a manifest id or a file name relative to one of ``folders``.

    An id resolves to its first file. Raises :class:`MissingWeightError` (naming the file,
    the folder and the fetch command) when it is not there; with ``verify`` the manifest's
    size and sha256 are checked too.
    """
    folders = [Path(f) for f in folders]
    entry: WeightEntry | None = None
    wfile: WeightFile | None = None
    manifest = load_manifest()
    if name in manifest:
        entry = get_entry(name, manifest)
        wfile = entry.files[0]
        rel = wfile.path
    else:
        rel = name
        found = entry_for_file(name, manifest)
        if found:
            entry, wfile = found
    if Path(rel).is_absolute():
        if Path(rel).exists():
            return Path(rel)
        raise _missing(rel, folders, entry)
    for folder in folders:
        candidate = safe_join(folder, rel)
        if candidate.exists():
            if verify and wfile is not None and candidate.is_file():
                verify_file(candidate, wfile.sha256, wfile.size)
            return candidate
    raise _missing(rel, folders, entry)
