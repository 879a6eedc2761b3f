"""``weights_manifest.yaml``: every checkpoint the pack knows (schema in the file's header)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import WeightsError

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "weights_manifest.yaml"

_FAMILIES_TO_KIND = {
    "gendeg": "gendeg",
    "gendeg-structure": "gendeg",
    "irsde": "restore",
    "daclip": "restore",
    "refusion": "restore",
    "driftrec": "restore",
    "feedforward": "restore",
    "diffloss": "restore",
    "lpips": "quality",
    "dists": "quality",
    "niqe": "quality",
    "perceiver": "quality",
    "clip": "clip",
    "sd": "sd",
}


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry. ``path`` is relative to the entry's model folder."""

    path: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None


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

    @property
    def kind(self) -> str:
        """The model folder this entry's files go in (``models/gendeg/<kind>``)."""
        return _FAMILIES_TO_KIND.get(self.family, self.family)


def _parse_file(entry_id: str, raw: dict[str, Any]) -> WeightFile:
    if "path" not in raw:
        raise WeightsError(f"manifest entry {entry_id!r}: every file needs a 'path'")
    urls = raw.get("urls") or ([raw["url"]] if raw.get("url") else [])
    sha = raw.get("sha256")
    if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha).lower())):
        raise WeightsError(f"manifest entry {entry_id!r}: sha256 of {raw['path']} is not 64 hex digits")
    hf = raw.get("hf") or {}
    return WeightFile(
        path=str(raw["path"]),
        urls=tuple(urls),
        sha256=str(sha).lower() if sha else None,
        size=int(raw["size"]) if raw.get("size") is not None else None,
        hf_repo=hf.get("repo"),
        hf_filename=hf.get("filename"),
        hf_revision=hf.get("revision"),
    )


def parse_manifest(data: dict[str, Any]) -> dict[str, WeightEntry]:
    """Validate and index a loaded manifest document by entry id."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise WeightsError("weights manifest: expected a mapping with an 'entries' list")
    out: dict[str, WeightEntry] = {}
    for raw in data["entries"]:
        missing = [k for k in ("id", "family", "files", "format", "licence", "source") if k not in raw]
        if missing:
            raise WeightsError(f"manifest entry {raw.get('id', '?')!r}: missing {', '.join(missing)}")
        if raw["id"] in out:
            raise WeightsError(f"manifest: duplicate id {raw['id']!r}")
        out[raw["id"]] = WeightEntry(
            id=raw["id"],
            family=raw["family"],
            files=tuple(_parse_file(raw["id"], f) for f in raw["files"]),
            format=raw["format"],
            licence=raw["licence"],
            source=raw["source"],
            description=raw.get("description", ""),
            config=dict(raw.get("config") or {}),
            notes=raw.get("notes", ""),
        )
    return out


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, WeightEntry]:
    with open(path, encoding="utf-8") as fh:
        return parse_manifest(yaml.safe_load(fh))


def load_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, WeightEntry]:
    """All entries of the manifest at ``path`` (cached until the file changes)."""
    path = Path(path)
    return _load(str(path), path.stat().st_mtime)


def get_entry(entry_id: str, manifest: dict[str, WeightEntry] | None = None) -> WeightEntry:
    manifest = load_manifest() if manifest is None else manifest
    if entry_id not in manifest:
        raise WeightsError(f"no weight named {entry_id!r} in the manifest; `gendeg weights list` shows the known ids")
    return manifest[entry_id]


def entry_for_file(name: str, manifest: dict[str, WeightEntry] | None = None) -> tuple[WeightEntry, WeightFile] | None:
    """The entry and file whose path (or base name) is ``name``, if the manifest knows it."""
    manifest = load_manifest() if manifest is None else manifest
    base = Path(name).name
    for entry in manifest.values():
        for f in entry.files:
            if f.path == name or Path(f.path).name == base:
                return entry, f
    return None
