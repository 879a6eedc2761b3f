"""What the manifest says about the files a loader can pick, for editors and workflows.

* :func:`known_files`: the manifest's file names for a model folder kind (``restore``,
  ``gendeg``, ...), so a loader's list shows the checkpoints the pack knows even before
  they are downloaded (running the loader then names the file, its folder and the fetch
  command).
* :func:`direct_url`: the one URL a browser can download a file from (a plain HTTPS URL, or
  the Hugging Face ``resolve`` URL of a Hub file), or None (manual downloads: Google Drive,
  SharePoint).
* :func:`frontend_model_entry`: the ``{name, url, directory, hash, hash_type}`` record the
  ComfyUI frontend reads from a workflow node's ``properties.models`` to offer a missing
  model (``directory`` is the ComfyUI model folder name, ``gendeg_<kind>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .manifest import WeightEntry, WeightFile, entry_for_file, load_manifest

#: ComfyUI model-folder name (``folder_paths``) of a kind: ``models/gendeg/<kind>``.
FOLDER_KEY_PREFIX = "gendeg_"


def folder_key(kind: str) -> str:
    """``gendeg_<kind>``: the name ComfyUI knows ``models/gendeg/<kind>`` by."""
    return f"{FOLDER_KEY_PREFIX}{kind}"


def known_files(kind: str, accept: Callable[[WeightEntry], bool] | None = None) -> list[str]:
    """Manifest file paths (relative to the ``kind`` folder) of the entries stored there.

    ``accept(entry)`` narrows the entries (e.g. only feed-forward restorers). Sorted, unique.
    """
    names = {
        f.path
        for entry in load_manifest().values()
        if entry.kind == kind and (accept is None or accept(entry))
        for f in entry.files
    }
    return sorted(names)


def direct_url(wfile: WeightFile) -> str | None:
    """A URL that downloads ``wfile`` directly (first plain URL, else the Hub's resolve URL), or None."""
    if wfile.urls:
        return wfile.urls[0]
    if wfile.hf_repo and wfile.hf_filename:
        return f"https://huggingface.co/{wfile.hf_repo}/resolve/{wfile.hf_revision or 'main'}/{wfile.hf_filename}"
    return None


def frontend_model_entry(name: str) -> dict[str, Any] | None:
    """The ComfyUI frontend's missing-model record for the manifest file ``name``, or None.

    ``name`` is what a loader widget holds (the path relative to its model folder). None when
    the manifest does not know the file or has no direct URL for it (the frontend's schema
    requires a URL; the loader's own message covers manual downloads).
    """
    found = entry_for_file(name)
    if found is None:
        return None
    entry, wfile = found
    url = direct_url(wfile)
    if url is None:
        return None
    record: dict[str, Any] = {"name": name, "url": url, "directory": folder_key(entry.kind)}
    if wfile.sha256:
        record["hash"] = wfile.sha256
        record["hash_type"] = "sha256"
    return record


def node_models(widget_values: Any) -> list[dict[str, Any]]:
    """``properties.models`` of a workflow node: a record per widget value naming a downloadable manifest file.

    ``widget_values`` is a node's ``widgets_values`` (a list, or a mapping as newer frontends
    save it). The frontend only considers records whose name is one of these values, so that is
    all this returns (in widget order, each name once).
    """
    values = widget_values.values() if isinstance(widget_values, dict) else (widget_values or [])
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value.strip() or value in seen:
            continue
        record = frontend_model_entry(value)
        if record is not None:
            seen.add(value)
            out.append(record)
    return out
