"""Weights: manifest, resolve, verify, safe load, fetch, convert.

Use :func:`resolve` to find a file, :func:`load_state_dict` to read it (safetensors, or a
pickle with ``weights_only=True`` and an allow-list), :func:`verify_file` for sha256,
:func:`fetch_entry` to download (only on explicit request) and
:func:`convert_to_safetensors` to convert a pickle once.
"""

from .convert import convert_to_safetensors
from .fetch import download_url, fetch_entry, fetch_file
from .manifest import (
    FAMILIES,
    MANIFEST_PATH,
    WeightEntry,
    WeightFile,
    entry_for_file,
    get_entry,
    load_manifest,
    parse_manifest,
)
from .safe_load import (
    ALLOW_LISTS,
    LIGHTNING_GLOBALS,
    NUMPY_GLOBALS,
    InertObject,
    allow_list,
    decode_metadata,
    find_state_dict,
    key_mismatch,
    load_pickle,
    load_safetensors,
    load_state_dict,
)
from .store import FileStatus, check_entry, default_folders, resolve, safe_join, sha256_file, verify_file

__all__ = [
    "ALLOW_LISTS",
    "FAMILIES",
    "LIGHTNING_GLOBALS",
    "MANIFEST_PATH",
    "NUMPY_GLOBALS",
    "FileStatus",
    "InertObject",
    "WeightEntry",
    "WeightFile",
    "allow_list",
    "check_entry",
    "convert_to_safetensors",
    "decode_metadata",
    "default_folders",
    "download_url",
    "entry_for_file",
    "fetch_entry",
    "fetch_file",
    "find_state_dict",
    "get_entry",
    "key_mismatch",
    "load_manifest",
    "load_pickle",
    "load_safetensors",
    "load_state_dict",
    "parse_manifest",
    "resolve",
    "safe_join",
    "sha256_file",
    "verify_file",
]
