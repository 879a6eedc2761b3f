"""The face of the pack: ComfyUI V1 node classes (thin adapters over ``core``).

Every module in this folder that defines ``NODE_CLASS_MAPPINGS`` (and optionally
``NODE_DISPLAY_NAME_MAPPINGS``) contributes its nodes. Modules whose name starts with an
underscore, and the helpers :mod:`.host`, :mod:`.ui`, :mod:`.common`, :mod:`.standins`, are not node modules. A module that
fails to import is reported (``IMPORT_ERRORS``) and skipped, so one broken optional
dependency does not take every other node down with it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import traceback

log = logging.getLogger("gendeg")

_NOT_NODE_MODULES = {"host", "standins", "common", "ui"}

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
IMPORT_ERRORS: dict[str, str] = {}


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _NOT_NODE_MODULES:
            continue
        try:
            module = importlib.import_module(f".{info.name}", __name__)
        except Exception:  # noqa: BLE001 - reported, not swallowed
            IMPORT_ERRORS[info.name] = traceback.format_exc()
            log.error("[GenDeg] could not import nodes.%s:\n%s", info.name, IMPORT_ERRORS[info.name])
            continue
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", {})
        for node_id, cls in mappings.items():
            if node_id in NODE_CLASS_MAPPINGS:
                raise RuntimeError(f"node id {node_id!r} is defined twice (nodes.{info.name})")
            NODE_CLASS_MAPPINGS[node_id] = cls
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))


_discover()
