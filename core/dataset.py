"""Datasets: folder listing (sorted, filtered, windowed, sharded) and a resumable pair writer.

Listing
    :func:`list_folder` returns image files sorted by their relative POSIX path, optionally
    recursive and glob-filtered, cut to a ``start``/``limit`` window (so huge folders are
    processed in chunks) and to one shard ``(i, n)`` of a run split across machines: an
    item is kept when its index in the full sorted list modulo ``n`` equals ``i``
    (0-based), so a file's shard never depends on the window.

Pair writer
    :class:`PairWriter` saves (clean, degraded) pairs under ``<out>/<dataset>/``::

        clean/<source stem>__<pair id>.<ext>
        degraded/<source stem>__<pair id>.<ext>
        records/<pair id>.json        one metadata record per pair (written last)
        metadata.jsonl                every record, sorted by (source, pair id)

    The pair id is a hash of the source name, every parameter and the seed, so the same
    job always gives the same file names. Every file is written to a temporary name
    (``.<name>~<host>~<pid>.part``) and renamed into place, and a pair counts as finished
    only when its record exists, so a run killed at any moment and run again skips the
    finished pairs, redoes the rest and ends with the same files and records as an
    uninterrupted run (apart from the ``created`` timestamps). ``metadata.jsonl`` is
    rebuilt atomically from the records by :meth:`PairWriter.finalize`. Temporary files
    left by killed processes of this host are swept away when a writer starts. Every
    output path is checked to stay inside ``<out>`` (``..`` or absolute names are refused).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from .errors import InputError, UnsafePathError
from .io import _HOST, IMAGE_SUFFIXES, encode_image, load_image
from .io import atomic_write_bytes as write_atomic
from .locks import locked_folder
from .weights.store import safe_join

TOOL_NAME = "comfyui-gendeg"
IMAGE_FORMATS = ("png", "jpg", "webp")

#: Keys of an upstream metadata record that never count towards the pair id (they vary run to run).
VOLATILE_KEYS = frozenset({"created", "timestamp", "time", "elapsed", "elapsed_s", "duration_s", "host", "pid"})



#: the checkout's project file: ComfyUI loads a pack cloned into ``custom_nodes`` without installing it
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@functools.lru_cache(maxsize=1)
def tool_version() -> str:
    """The pack's version for dataset records: the ``[project]`` version of the checkout the code
    runs from (a clone in ComfyUI's ``custom_nodes``, an editable install), else the installed
    distribution's (a wheel), else ``0+unknown``."""
    own = project_version(PYPROJECT)
    if own:
        return own
    try:
        from importlib.metadata import version

        return version(TOOL_NAME)
    except Exception:  # noqa: BLE001 - neither a checkout nor an installed distribution
        return "0+unknown"


def project_version(pyproject: Path) -> str | None:
    """``version`` of the ``[project]`` table of a ``pyproject.toml`` of this pack, or ``None``
    (no such file, another project's, or no static version)."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    table = re.search(r"(?ms)^\[project\][ \t]*$(.*?)(?=^\[)", text + "\n[")
    if not table:
        return None
    name = re.search(r'(?m)^name\s*=\s*"([^"]+)"', table.group(1))
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', table.group(1))
    return version.group(1) if version and name and name.group(1) == TOOL_NAME else None


# --- listing -----------------------------------------------------------------------------


def list_folder(
    folder: str | Path,
    pattern: str = "*",
    recursive: bool = False,
    start: int = 0,
    limit: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> list[str]:
    """Relative POSIX paths of the images in ``folder`` (see the module doc for the order).

    ``pattern`` is a glob on the file name (``*.png``) or on the relative path when it has a
    ``/`` (``night/*.jpg``); several patterns are separated by ``;`` (``*.png;*.jpg``).
    ``limit`` 0 means no limit. Hidden files and folders are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give a folder of images (relative to the input folder, or absolute)")
    if start < 0 or limit < 0:
        raise InputError(f"start ({start}) and limit ({limit}) must be ≥ 0")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard {index}/{count}: need 0 ≤ index < count")
    patterns = [p.strip() for p in pattern.split(";") if p.strip()] or ["*"]
    walker = folder.rglob("*") if recursive else folder.glob("*")
    names = []
    for p in walker:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel_posix = PurePosixPath(rel.as_posix())
        if any(rel_posix.match(pat) if "/" in pat else PurePosixPath(rel_posix.name).match(pat) for pat in patterns):
            names.append(rel_posix.as_posix())
    names.sort()
    stop = len(names) if limit == 0 else min(len(names), start + limit)
    return [names[i] for i in range(start, stop) if i % count == index]


def load_folder_images(folder: str | Path, names: Sequence[str], progress: Callable[[int, int], None] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Load ``names`` (from :func:`list_folder`) as ``(rgb [1,3,H,W], mask [1,H,W])`` in 0..1.

    Grey images are expanded to RGB; the mask is ``1 - alpha`` (ComfyUI's convention: 1 where
    transparent), zeros when the image has no alpha.
    """
    out = []
    for i, name in enumerate(names):
        x = load_image(safe_join(folder, name), keep_alpha=True)
        c = x.shape[1]
        alpha = x[:, c - 1] if c in (2, 4) else None
        rgb = x[:, :1].expand(-1, 3, -1, -1).contiguous() if c in (1, 2) else x[:, :3]
        mask = (1.0 - alpha) if alpha is not None else torch.zeros(1, x.shape[2], x.shape[3])
        out.append((rgb, mask))
        if progress is not None:
            progress(i + 1, len(names))
    return out


def folder_signature(folder: str | Path, names: Sequence[str]) -> str:
    """A hash of the listed files' names, sizes and modification times (changes when the folder does)."""
    h = hashlib.sha256()
    for name in names:
        try:
            st = safe_join(folder, name).stat()
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}|missing\n".encode())
    return h.hexdigest()


# --- atomic files --------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (unknown counts as alive: nothing is swept)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            import ctypes

            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
            if not handle:
                return False
            try:
                code = ctypes.c_ulong()
                kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
                return code.value == 259  # STILL_ACTIVE
            finally:
                kernel32.CloseHandle(handle)
        except Exception:  # noqa: BLE001
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


_SWEPT: set[Path] = set()


def sweep_stale_parts(root: Path, *, once: bool = False) -> list[Path]:
    """Delete temp files under ``root`` left by dead processes of this host; returns them.

    With ``once``, a folder already swept by this process is not walked again.
    """
    removed: list[Path] = []
    if (once and root in _SWEPT) or not root.is_dir():
        return removed
    _SWEPT.add(root)
    for p in root.rglob(".*.part"):
        stem = p.name[: -len(".part")]
        bits = stem.rsplit("~", 2)
        if len(bits) != 3 or bits[1] != _HOST or not bits[2].isdigit():
            continue
        if not _pid_alive(int(bits[2])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# --- pair writer ---------------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    """JSON-safe, deterministic form of parameters (tensors/numbers to plain numbers, keys sorted on dump)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _canonical(obj.tolist())
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else str(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return _canonical(obj.item())
    return str(obj)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def pair_id(source: str, params: Mapping[str, Any], seed: int) -> str:
    """Deterministic id of a pair: a hash of the source name, the parameters and the seed.

    Keys in :data:`VOLATILE_KEYS` (timestamps, durations) are left out of the hash.
    """
    stable = {k: v for k, v in _canonical(params).items() if k not in VOLATILE_KEYS}
    text = _dumps({"source": source, "params": stable, "seed": int(seed)})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_metadata(text: str | Mapping[str, Any] | None, count: int) -> list[dict[str, Any]]:
    """Upstream metadata for ``count`` images: a JSON object (shared by all), a JSON list with
    one object per image, or JSON lines. Empty text gives empty records."""
    if text is None:
        return [{} for _ in range(count)]
    if isinstance(text, Mapping):
        return [dict(text) for _ in range(count)]
    text = str(text).strip()
    if not text:
        return [{} for _ in range(count)]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:
            doc = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InputError(f"metadata: not valid JSON ({exc}); connect a node's metadata output or leave it empty") from exc
    if isinstance(doc, dict):
        return [dict(doc) for _ in range(count)]
    if isinstance(doc, list) and all(isinstance(d, dict) for d in doc):
        if len(doc) == count:
            return [dict(d) for d in doc]
        if len(doc) == 1:
            return [dict(doc[0]) for _ in range(count)]
        raise InputError(f"metadata: {len(doc)} records for {count} images; give one per image or one for all")
    raise InputError("metadata: expected a JSON object (or a list of objects, one per image)")


@dataclass
class PairResult:
    pair_id: str
    written: bool
    """False when the pair was already finished and skipped."""
    clean: Path
    degraded: Path
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class SaveReport:
    written: int = 0
    skipped: int = 0
    pairs: list[PairResult] = field(default_factory=list)
    dataset_dir: Path | None = None
    metadata_path: Path | None = None
    writer: PairWriter | None = None


class PairWriter:
    """Write (clean, degraded) pairs of one dataset, resumably (see the module doc).

    ``out_root``: the output folder every path must stay in; ``dataset``: a relative folder
    name inside it; ``image_format``: ``png`` (lossless, default), ``jpg`` or ``webp``.
    """

    def __init__(self, out_root: str | Path, dataset: str, image_format: str = "png", *, quality: int = 95) -> None:
        dataset = str(dataset).strip()
        if not dataset:
            raise InputError("dataset name is empty; give a folder name such as 'haze_v1'")
        fmt = image_format.lower().lstrip(".")
        fmt = "jpg" if fmt == "jpeg" else fmt
        if fmt not in IMAGE_FORMATS:
            raise InputError(f"image format {image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
        self.out_root = Path(os.path.abspath(out_root))
        self.root = safe_join(self.out_root, dataset)
        if self.root == self.out_root:
            raise UnsafePathError(f"dataset name {dataset!r} must name a folder inside {self.out_root}")
        self.dataset = PurePosixPath(self.root.relative_to(self.out_root).as_posix()).as_posix()
        self.image_format = fmt
        self.quality = quality
        self.records_dir = self.root / "records"
        self.metadata_path = self.root / "metadata.jsonl"
        sweep_stale_parts(self.root, once=True)

    # paths ---------------------------------------------------------------------------

    def _image_rel(self, source: str, pid: str) -> str:
        src = str(source).replace("\\", "/").strip()
        if not src:
            return f"pair__{pid}.{self.image_format}"
        if PurePosixPath(src).is_absolute() or (len(src) > 1 and src[1] == ":"):
            raise UnsafePathError(f"filename {source!r}: absolute; give the image's path relative to its folder")
        stem = PurePosixPath(src)
        stem = stem.with_suffix("") if stem.suffix else stem
        return f"{stem.as_posix()}__{pid}.{self.image_format}"

    def paths(self, source: str, pid: str) -> tuple[Path, Path, Path]:
        """(clean, degraded, record) paths of a pair, each checked to stay inside the dataset."""
        rel = self._image_rel(source, pid)
        return (
            safe_join(self.root / "clean", rel),
            safe_join(self.root / "degraded", rel),
            safe_join(self.records_dir, f"{pid}.json"),
        )

    def pair_id(self, source: str, params: Mapping[str, Any], seed: int) -> str:
        """Id of the pair; the image format is part of the parameters."""
        return pair_id(source, {**_canonical(params), "__image_format__": self.image_format}, seed)

    def is_done(self, source: str, params: Mapping[str, Any], seed: int) -> bool:
        """True when the pair was finished by an earlier run (record and both images on disk)."""
        pid = self.pair_id(source, params, seed)
        clean, degraded, record = self.paths(source, pid)
        return record.is_file() and clean.is_file() and degraded.is_file()

    # writing -------------------------------------------------------------------------

    def write(
        self,
        clean: torch.Tensor,
        degraded: torch.Tensor,
        source: str,
        params: Mapping[str, Any] | None = None,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> PairResult:
        """Save one pair (images ``[C,H,W]`` or ``[1,C,H,W]`` in 0..1) unless it is already finished.

        ``params``: every parameter that made the degraded image (merged into the record and
        hashed into the pair id); ``extra``: record fields that do not identify the pair.
        """
        params = _canonical(dict(params or {}))
        pid = self.pair_id(source, params, seed)
        clean_p, degraded_p, record_p = self.paths(source, pid)
        if record_p.is_file() and clean_p.is_file() and degraded_p.is_file():
            return PairResult(pid, False, clean_p, degraded_p)
        c = clean[0] if clean.ndim == 4 else clean
        d = degraded[0] if degraded.ndim == 4 else degraded
        if c.ndim != 3 or d.ndim != 3:
            raise InputError(f"expected single images [C,H,W], got clean {tuple(clean.shape)} and degraded {tuple(degraded.shape)}")
        text = None
        if self.image_format == "png":
            text = {"gendeg": _dumps({"pair_id": pid, "source": source, "dataset": self.dataset})}
        write_atomic(clean_p, encode_image(c, self.image_format, text=text, quality=self.quality))
        write_atomic(degraded_p, encode_image(d, self.image_format, text=text, quality=self.quality))
        record: dict[str, Any] = {
            "pair_id": pid,
            "dataset": self.dataset,
            "source": source,
            "clean": clean_p.relative_to(self.root).as_posix(),
            "degraded": degraded_p.relative_to(self.root).as_posix(),
            "seed": int(seed),
            "image_format": self.image_format,
            "width": int(d.shape[-1]),
            "height": int(d.shape[-2]),
            "tool": TOOL_NAME,
            "version": tool_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        upstream: dict[str, Any] = {}
        for key, value in {**params, **_canonical(dict(extra or {}))}.items():
            if key in record:
                if record[key] != value:
                    upstream[key] = value
            else:
                record[key] = value
        if upstream:
            record["upstream"] = upstream
        write_atomic(record_p, (_dumps(record) + "\n").encode("utf-8"))
        return PairResult(pid, True, clean_p, degraded_p, record)

    def records(self) -> list[dict[str, Any]]:
        """Every finished record of this dataset, sorted by (source, pair id)."""
        out = []
        if self.records_dir.is_dir():
            for p in self.records_dir.glob("*.json"):
                if p.name.startswith("."):
                    continue
                try:
                    out.append(json.loads(p.read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    continue  # never written half (atomic), but a user may have edited one
        out.sort(key=lambda r: (str(r.get("source", "")), str(r.get("pair_id", ""))))
        return out

    def finalize(self) -> Path:
        """Rebuild ``metadata.jsonl`` atomically from the records (deterministic order).

        Shards writing into the same dataset at once take turns (a lock on the dataset folder
        itself, :func:`..locks.locked_folder`, which leaves no file behind), so the last one to
        finish writes a file with every record.
        """
        sweep_stale_parts(self.root)
        with locked_folder(self.root):
            lines = "".join(_dumps(r) + "\n" for r in self.records())
            write_atomic(self.metadata_path, lines.encode("utf-8"))
        return self.metadata_path


def save_pairs(
    out_root: str | Path,
    dataset: str,
    clean: torch.Tensor,
    degraded: torch.Tensor,
    sources: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    seed: int,
    image_format: str = "png",
    params: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    finalize: bool = True,
) -> SaveReport:
    """Save a batch of pairs: ``clean`` ``[B|1,C,H,W]`` and ``degraded`` ``[B,C,H,W]`` in 0..1.

    ``sources``: one name per degraded image (or one name for all, then ``#i`` is appended);
    ``metadata``: one upstream record per image (merged into each record and its id);
    ``params``: the saver's own parameters, recorded too. A clean batch of one is shared by
    every degraded image. Already finished pairs are skipped.
    """
    b = degraded.shape[0]
    if clean.shape[0] not in (1, b):
        raise InputError(f"clean has {clean.shape[0]} images and degraded {b}; give as many clean images as degraded ones (or one)")
    if len(metadata) != b:
        raise InputError(f"{len(metadata)} metadata records for {b} images")
    names = list(sources)
    if len(names) == 1 and b > 1:
        names = [f"{names[0]}#{i}" if names[0] else "" for i in range(b)]
    if len(names) != b:
        raise InputError(f"{len(names)} file names for {b} images; give one per image (one per line) or a single name")
    writer = PairWriter(out_root, dataset, image_format)
    report = SaveReport(dataset_dir=writer.root, writer=writer)
    for i in range(b):
        c = clean[i if clean.shape[0] == b else 0]
        source = names[i]
        upstream = dict(metadata[i])
        if not source:  # no file name: identify the pair by the clean image's content
            source = ""
            upstream = {**upstream, "clean_sha256": hashlib.sha256(c.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]}
        result = writer.write(c, degraded[i], source, upstream, seed, extra=dict(params or {}))
        report.pairs.append(result)
        if result.written:
            report.written += 1
        else:
            report.skipped += 1
        if progress is not None:
            progress(i + 1, b)
    if finalize:
        report.metadata_path = writer.finalize()
    return report
