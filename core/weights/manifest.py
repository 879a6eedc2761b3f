"""``weights_manifest.yaml``: every checkpoint the pack knows (schema in the file's header).

:func:`parse_manifest` validates the whole document and reports every problem at once
(unknown family, malformed sha256, missing licence or source, unsafe file path, ...), so a
bad edit to the manifest fails loudly in the tests rather than at a user's download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import WeightsError
from .safe_load import ALLOW_LISTS

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "weights_manifest.yaml"

#: family -> model sub-folder (``models/gendeg/<kind>`` in ComfyUI, ``<models-dir>/<kind>`` outside).
FAMILIES: dict[str, str] = {
    "gendeg": "gendeg",
    "gendeg-structure": "gendeg",
    "irsde": "restore",
    "daclip": "restore",
    "refusion": "restore",
    "driftrec": "restore",
    "feedforward": "restore",
    "diffloss": "restore",
    "perceive-ir": "restore",
    "lpips": "quality",
    "dists": "quality",
    "niqe": "quality",
    "perceiver": "quality",
    "clip": "clip",
    "sd": "sd",
}
_FAMILIES_TO_KIND = FAMILIES  # older name

ENTRY_KEYS = {"id", "family", "description", "files", "format", "licence", "source", "config", "notes", "allow"}
REQUIRED_ENTRY_KEYS = ("id", "family", "files", "format", "licence", "source")
FILE_KEYS = {"path", "url", "urls", "hf", "sha256", "size"}
HF_KEYS = {"repo", "filename", "revision"}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry. ``path`` is relative to the entry's model folder (POSIX separators)."""

    path: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None

    @property
    def downloadable(self) -> bool:
        return bool(self.urls or (self.hf_repo and self.hf_filename))


@dataclass(frozen=True)
class WeightEntry:
    id: str
    family: str
    files: tuple[WeightFile, ...]
    format: str
    licence: str
    source: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    allow: tuple[str, ...] = ()
    """Allow-lists (:data:`~.safe_load.ALLOW_LISTS` names) its pickles need to load."""

    @property
    def kind(self) -> str:
        """The model folder this entry's files go in (``models/gendeg/<kind>``)."""
        return FAMILIES.get(self.family, self.family)


def _check_rel_path(value: Any) -> str | None:
    """Problem with a manifest file path, or None if it is a clean relative POSIX path."""
    if not isinstance(value, str) or not value.strip():
        return "is empty or not a string"
    if "\\" in value:
        return "uses backslashes; write it with '/'"
    p = PurePosixPath(value)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", value):
        return "is absolute; give it relative to the model folder"
    if any(part in ("..", "") for part in value.split("/")):
        return "contains '..' or an empty component"
    return None


def _parse_file(entry_id: str, raw: Any, problems: list[str]) -> WeightFile | None:
    where = f"manifest entry {entry_id!r}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: every item of 'files' must be a mapping, got {raw!r}")
        return None
    unknown = set(raw) - FILE_KEYS
    if unknown:
        problems.append(f"{where}: unknown file key(s) {sorted(unknown)}; allowed: {sorted(FILE_KEYS)}")
    if "path" not in raw:
        problems.append(f"{where}: every file needs a 'path'")
        return None
    path_problem = _check_rel_path(raw["path"])
    if path_problem:
        problems.append(f"{where}: file path {raw['path']!r} {path_problem}")
    urls = raw.get("urls") or ([raw["url"]] if raw.get("url") else [])
    if isinstance(urls, str):
        urls = [urls]
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            problems.append(f"{where}: url {url!r} of {raw['path']} must start with https://")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA_RE.match(sha.lower())):
        problems.append(f"{where}: sha256 of {raw['path']} is not 64 hex digits (use null when unknown)")
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        problems.append(f"{where}: size of {raw['path']} must be a positive number of bytes (or null)")
    hf = raw.get("hf") or {}
    if not isinstance(hf, dict):
        problems.append(f"{where}: 'hf' of {raw['path']} must be a mapping {{repo, filename, revision}}")
        hf = {}
    elif hf:
        if set(hf) - HF_KEYS:
            problems.append(f"{where}: unknown hf key(s) {sorted(set(hf) - HF_KEYS)}; allowed: {sorted(HF_KEYS)}")
        if not hf.get("repo") or not hf.get("filename"):
            problems.append(f"{where}: 'hf' of {raw['path']} needs both repo and filename")
    return WeightFile(
        path=str(raw["path"]),
        urls=tuple(str(u) for u in urls),
        sha256=sha.lower() if isinstance(sha, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        hf_repo=hf.get("repo"),
        hf_filename=hf.get("filename"),
        hf_revision=str(hf["revision"]) if hf.get("revision") is not None else None,
    )


def _parse_entry(raw: Any, problems: list[str]) -> WeightEntry | None:
    if not isinstance(raw, dict):
        problems.append(f"manifest: every entry must be a mapping, got {raw!r}")
        return None
    entry_id = raw.get("id", "?")
    where = f"manifest entry {entry_id!r}"
    n_before = len(problems)
    missing = [k for k in REQUIRED_ENTRY_KEYS if k not in raw]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
        return None
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        hint = " ('licence' is spelled with a c)" if "license" in unknown else ""
        problems.append(f"{where}: unknown key(s) {sorted(unknown)}{hint}; allowed: {sorted(ENTRY_KEYS)}")
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
        problems.append(f"{where}: id must be letters, digits, '.', '_', '+' or '-' (no spaces or slashes)")
    if raw["family"] not in FAMILIES:
        problems.append(f"{where}: unknown family {raw['family']!r}; known: {', '.join(sorted(FAMILIES))}")
    for key in ("licence", "source", "format"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            problems.append(f"{where}: '{key}' must be a non-empty string")
    allow = raw.get("allow") or []
    if isinstance(allow, str):
        allow = [allow]
    for name in allow:
        if name not in ALLOW_LISTS:
            problems.append(f"{where}: unknown allow-list {name!r}; known: {', '.join(sorted(ALLOW_LISTS))}")
    if raw.get("config") is not None and not isinstance(raw["config"], dict):
        problems.append(f"{where}: 'config' must be a mapping")
    files_raw = raw["files"]
    if not isinstance(files_raw, list) or not files_raw:
        problems.append(f"{where}: 'files' must be a non-empty list")
        return None
    files = [_parse_file(str(entry_id), f, problems) for f in files_raw]
    paths = [f.path for f in files if f is not None]
    if len(set(paths)) != len(paths):
        problems.append(f"{where}: a file path is listed twice")
    if len(problems) != n_before:
        return None
    return WeightEntry(
        id=entry_id,
        family=raw["family"],
        files=tuple(f for f in files if f is not None),
        format=raw["format"],
        licence=raw["licence"],
        source=raw["source"],
        description=str(raw.get("description") or ""),
        config=dict(raw.get("config") or {}),
        notes=str(raw.get("notes") or ""),
        allow=tuple(allow),
    )


def parse_manifest(data: Any) -> dict[str, WeightEntry]:
    """Validate and index a loaded manifest document by entry id.

    Raises :class:`WeightsError` listing every problem found.
    """
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise WeightsError("weights manifest: expected a mapping with an 'entries' list")
    problems: list[str] = []
    out: dict[str, WeightEntry] = {}
    owners: dict[tuple[str, str], str] = {}
    for raw in data["entries"]:
        entry = _parse_entry(raw, problems)
        if entry is None:
            continue
        if entry.id in out:
            problems.append(f"manifest: duplicate id {entry.id!r}")
            continue
        for f in entry.files:
            key = (entry.kind, f.path)
            if key in owners:
                problems.append(f"manifest: {entry.kind}/{f.path} belongs to both {owners[key]!r} and {entry.id!r}")
            owners[key] = entry.id
        out[entry.id] = entry
    if problems:
        raise WeightsError("weights manifest is invalid:\n  " + "\n  ".join(problems))
    return out


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, WeightEntry]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise WeightsError(f"{path}: not valid YAML ({exc})") from exc
    return parse_manifest(data)


def load_manifest(path: str | Path | None = None) -> dict[str, WeightEntry]:
    """All entries of the manifest at ``path`` (default: the pack's own; cached until the file changes)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise WeightsError(f"{path}: the weights manifest is missing ({exc})") from exc
    return _load(str(path), mtime)


def get_entry(entry_id: str, manifest: dict[str, WeightEntry] | None = None) -> WeightEntry:
    manifest = load_manifest() if manifest is None else manifest
    if entry_id not in manifest:
        raise WeightsError(f"no weight named {entry_id!r} in the manifest; `gendeg weights list` shows the known ids")
    return manifest[entry_id]


def entry_for_file(name: str, manifest: dict[str, WeightEntry] | None = None) -> tuple[WeightEntry, WeightFile] | None:
    """The entry and file whose path (or, failing that, base name) is ``name``, if the manifest knows it."""
    manifest = load_manifest() if manifest is None else manifest
    name = str(name).replace("\\", "/")
    for entry in manifest.values():
        for f in entry.files:
            if f.path == name:
                return entry, f
    base = PurePosixPath(name).name
    for entry in manifest.values():
        for f in entry.files:
            if PurePosixPath(f.path).name == base:
                return entry, f
    return None
