"""ComfyUI-GenDeg: degrade, restore and score images.

ComfyUI imports this file from ``custom_nodes/<any folder name>/__init__.py``; the same
package is importable as ``comfyui_gendeg`` after ``pip install -e .``. Imports inside
the pack are relative so that both ways load the very same files.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
