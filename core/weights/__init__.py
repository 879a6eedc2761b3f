"""Weights: manifest, resolve, verify, safe load, fetch, convert.

Use :func:`resolve` to find a file, :func:`load_state_dict` to read it (safetensors, or a
pickle with ``weights_only=True`` and an allow-list), :func:`verify_file` for sha256.
"""

from .manifest import MANIFEST_PATH, WeightEntry, WeightFile, entry_for_file, get_entry, load_manifest
from .safe_load import LIGHTNING_GLOBALS, NUMPY_GLOBALS, load_pickle, load_safetensors, load_state_dict
from .store import resolve, safe_join, sha256_file, verify_file

__all__ = [
    "LIGHTNING_GLOBALS",
    "MANIFEST_PATH",
    "NUMPY_GLOBALS",
    "WeightEntry",
    "WeightFile",
    "entry_for_file",
    "get_entry",
    "load_manifest",
    "load_pickle",
    "load_safetensors",
    "load_state_dict",
    "resolve",
    "safe_join",
    "sha256_file",
    "verify_file",
]
