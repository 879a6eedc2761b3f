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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import HashMismatchError, MissingWeightError, UnsafePathError
from .manifest import WeightEntry, WeightFile, entry_for_file, get_entry, load_manifest

_CACHE_LOCK = threading.Lock()


def _cache_file() -> Path:
    base = os.environ.get("GENDEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "comfyui-gendeg")
    return Path(base) / "sha256.json"


def _hash_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (no cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cache_key(path: Path) -> tuple[Path, str]:
    path = Path(path).resolve()
    st = path.stat()
    return path, f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache() -> dict[str, str]:
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _store_cache(path: Path, key: str, digest: str) -> None:
    cache_path = _cache_file()
    with _CACHE_LOCK:
        cache = _read_cache()
        cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
        cache[key] = digest
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(cache, indent=0))
            os.replace(tmp, cache_path)
        except OSError:
            pass  # a read-only home only costs re-hashing


def sha256_file(path: str | Path, *, use_cache: bool = True) -> str:
    """Hex sha256 of a file, cached by (absolute path, size, mtime in ns).

    The cache (``$GENDEG_CACHE_DIR/sha256.json``, default ``~/.cache/comfyui-gendeg``)
    makes repeated verification of multi-GB checkpoints free; any change to the file's
    size or modification time invalidates its entry.
    """
    path, key = _cache_key(Path(path))
    if use_cache:
        with _CACHE_LOCK:
            cached = _read_cache().get(key)
        if cached:
            return cached
    digest = _hash_file(path)
    if use_cache:
        _store_cache(path, key, digest)
    return digest


def remember_sha256(path: str | Path, digest: str) -> None:
    """Record a digest computed elsewhere (e.g. while downloading) for ``path`` as it is now."""
    path, key = _cache_key(Path(path))
    _store_cache(path, key, digest)


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
    """``root / relative`` as an absolute path, refusing absolute paths and ``..`` that leave ``root``.

    The check is lexical (``..`` and absolute parts), so symbolic links a user placed inside
    ``root`` on purpose (a model folder on another disk) keep working.
    """
    root_p = Path(os.path.abspath(root))
    rel_s = str(relative).replace("\\", "/")
    if Path(rel_s).is_absolute() or rel_s.startswith("/") or (len(rel_s) > 1 and rel_s[1] == ":"):
        raise UnsafePathError(f"{relative}: absolute paths are not allowed here; give a path inside {root_p}")
    target = Path(os.path.normpath(root_p / rel_s))
    if target != root_p and root_p not in target.parents:
        raise UnsafePathError(f"{relative}: escapes {root_p}; give a path inside that folder")
    return target


def _sentence(text: str) -> str:
    """``text`` stripped, ending with exactly one full stop."""
    text = " ".join(text.split()).rstrip(" .")
    return f"{text}." if text else ""


def _fetch_hint(entry: WeightEntry, folders: Sequence[Path]) -> str:
    """How to get ``entry``'s files: the fetch command, or where to download them by hand; plus its first note."""
    if not any(f.downloadable for f in entry.files):
        how = f"It cannot be downloaded automatically: get it by hand from {entry.source} and save it there."
    else:
        how = f"Fetch it with: gendeg weights fetch {entry.id}"
        if folders and folders[0].name == entry.kind:
            how += f" --models-dir {folders[0].parent}"
        how = _sentence(how)
    if entry.notes:
        how += " Note: " + _sentence(entry.notes.strip().splitlines()[0])
    return how


def _missing(name: str, folders: Sequence[Path], entry: WeightEntry | None) -> MissingWeightError:
    """The missing-weight error: which file, the folder it belongs in, and how to get it."""
    where = folders[0] if folders else Path("models")
    if entry is not None:
        target = where / name
        place = f"It belongs in {target.parent} (as {target})."
        how = _fetch_hint(entry, folders)
    else:
        place = f"It belongs in {where}."
        how = "Put the file there (or pick one that exists); `gendeg weights list` shows the known checkpoints."
    searched = "" if len(folders) <= 1 else " Searched: " + ", ".join(str(f) for f in folders) + "."
    return MissingWeightError(f"weight file {name!r} not found. {place} {how}{searched}")


def default_folders(entry: WeightEntry, models_root: str | Path) -> list[Path]:
    """Where ``entry``'s files live under a models root (``<root>/<kind>``)."""
    return [Path(models_root) / entry.kind]


def find_file(rel: str, folders: Sequence[str | Path]) -> Path | None:
    """First existing ``folder/rel`` (checked to stay inside its folder); also tries the base name alone."""
    candidates = [rel]
    base = PurePosixPath(rel.replace("\\", "/")).name
    if base != rel:
        candidates.append(base)
    for candidate_rel in candidates:
        for folder in folders:
            candidate = safe_join(folder, candidate_rel)
            if candidate.exists():
                return candidate
    return None


def resolve(name: str, folders: Sequence[str | Path], *, verify: bool = False) -> Path:
    """Path of a checkpoint given a manifest id or a file name relative to one of ``folders``.

    An id resolves to its first file. Raises :class:`MissingWeightError` (naming the file,
    the folder and the fetch command) when it is not there; with ``verify`` the manifest's
    size and sha256 are checked too (:class:`HashMismatchError`). Names containing ``..``
    that leave the folder raise :class:`UnsafePathError`.
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
        if found and not Path(name).is_absolute():
            entry, wfile = found
            rel = wfile.path  # its place in the model folder (the bare name is tried too)
    if Path(rel).is_absolute():
        if Path(rel).exists():
            return Path(rel)
        raise _missing(rel, folders, entry)
    path = find_file(rel, folders)
    if path is None:
        raise _missing(rel, folders, entry)
    if verify and wfile is not None and path.is_file():
        verify_file(path, wfile.sha256, wfile.size)
    return path


@dataclass(frozen=True)
class FileStatus:
    """What :func:`check_entry` found for one file of an entry."""

    entry_id: str
    path: str
    """Manifest path (relative to the model folder)."""
    location: Path | None
    """Where it was found (None when missing)."""
    status: str
    """``ok`` (hash matches), ``unverified`` (manifest has no sha256), ``missing`` or ``mismatch``."""
    sha256: str | None = None
    message: str = ""


def check_entry(entry: WeightEntry, folders: Sequence[str | Path]) -> list[FileStatus]:
    """Verify every file of ``entry`` found in ``folders`` (size and sha256 when known)."""
    out: list[FileStatus] = []
    for f in entry.files:
        path = find_file(f.path, [Path(p) for p in folders])
        if path is None or not path.is_file():
            out.append(FileStatus(entry.id, f.path, None, "missing", message=str(_missing(f.path, [Path(p) for p in folders], entry))))
            continue
        try:
            digest = verify_file(path, f.sha256, f.size)
        except HashMismatchError as exc:
            out.append(FileStatus(entry.id, f.path, path, "mismatch", message=str(exc)))
            continue
        out.append(FileStatus(entry.id, f.path, path, "ok" if f.sha256 else "unverified", digest))
    return out
