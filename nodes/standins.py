"""Stand-ins for ComfyUI's core ``LoadImage``, ``SaveImage`` and ``PreviewImage``.

Used only by the headless runner and the studio (``gendeg run`` / ``gendeg studio``), never
registered inside ComfyUI (ComfyUI has the real ones): :data:`STANDIN_CLASS_MAPPINGS` is
merged with the pack's ``NODE_CLASS_MAPPINGS`` by :func:`runner_registry`. Same ids, inputs,
outputs and files as ComfyUI's: ``LoadImage`` gives an RGB ``IMAGE`` and ``MASK = 1 − alpha``;
``SaveImage`` writes ``<prefix>_00001_.png`` (counter continued from the files already
there, sub-folders allowed in the prefix, never outside the output folder) with the
prompt and workflow as PNG text chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, UnsafePathError
from ..core.io import IMAGE_SUFFIXES, atomic_write_bytes, load_image
from . import host

_ANNOTATION = re.compile(r"^(.*?)\s*\[(input|output|temp)\]$")


def _annotated_path(name: str) -> Path:
    """``"a.png"`` → input folder; ``"a.png [output]"`` → output folder (ComfyUI's annotation)."""
    m = _ANNOTATION.match(name)
    base, where = (m.group(1), m.group(2)) if m else (name, "input")
    root = {"input": host.input_dir, "output": host.output_dir, "temp": host.temp_dir}[where]()
    path = Path(base)
    return path if path.is_absolute() else root / path


def input_image_files() -> list[str]:
    """Image files directly in the input folder (what ComfyUI's LoadImage lists)."""
    folder = host.input_dir()
    if not folder.is_dir():
        return []
    return sorted(
        f.name for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


class LoadImage:
    """ComfyUI's LoadImage: one image file from the input folder → IMAGE (RGB) and MASK (1 − alpha)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": (input_image_files(), {"image_upload": True, "tooltip": "An image file in the input folder."})
            }
        }

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    DESCRIPTION = "Loads an image from the input folder (headless stand-in for ComfyUI's LoadImage)."

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = load_image(_annotated_path(image))  # [1,C,H,W] 0..1
        c = x.shape[1]
        rgb = x[:, :3] if c >= 3 else x[:, :1].expand(-1, 3, -1, -1)
        if c in (2, 4):
            mask = 1.0 - x[:, -1]
        else:
            mask = torch.zeros((1, 64, 64), dtype=torch.float32)
        return rgb.permute(0, 2, 3, 1).contiguous().float(), mask.float()

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        path = _annotated_path(image)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        path = _annotated_path(image)
        if not path.is_file():
            return f"Invalid image file: {image} (looked for {path}; put it in the input folder or pass --input-dir)"
        return True


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", f"{now.tm_mon:02d}"),
        ("%day%", f"{now.tm_mday:02d}"),
        ("%hour%", f"{now.tm_hour:02d}"),
        ("%minute%", f"{now.tm_min:02d}"),
        ("%second%", f"{now.tm_sec:02d}"),
    ):
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, output_dir: Path, width: int = 0, height: int = 0) -> tuple[Path, str, int, str]:
    """ComfyUI's ``get_save_image_path``: ``(folder, filename, next_counter, subfolder)``.

    The counter is one more than the highest ``<filename>_<digits>_`` already in the folder.
    A prefix that leads outside ``output_dir`` raises :class:`UnsafePathError`.
    """
    folder, filename, subfolder = resolve_prefix(prefix, output_dir, width, height)
    return folder, filename, next_counter(folder, filename), subfolder


def resolve_prefix(prefix: str, output_dir: Path, width: int = 0, height: int = 0) -> tuple[Path, str, str]:
    """``(folder, filename, subfolder)`` of a SaveImage prefix (``%width%``-style fields filled in).

    A prefix that leads outside ``output_dir`` raises :class:`UnsafePathError`.
    """
    if "%" in prefix:
        prefix = _compute_vars(prefix, width, height)
    norm = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(norm), os.path.basename(norm)
    root = Path(os.path.abspath(output_dir))
    folder = Path(os.path.abspath(root / subfolder))
    if os.path.commonpath((str(root), str(folder))) != str(root) or os.path.isabs(subfolder):
        raise UnsafePathError(f"filename_prefix {prefix!r} leads outside the output folder {root}; use a relative prefix")
    return folder, filename, subfolder


def next_counter(folder: Path, filename: str) -> int:
    """One more than the highest ``<filename>_<digits>_`` file in ``folder`` (1 when there is none)."""
    counter = 1
    if folder.is_dir():
        best = 0
        for name in os.listdir(folder):
            head = name[: len(filename) + 1]
            if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
                continue
            try:
                best = max(best, int(name[len(filename) + 1 :].split("_")[0]))
            except ValueError:
                continue
        counter = best + 1
    return counter


def _encode_png_like_comfyui(image: torch.Tensor, text: dict[str, str], compress_level: int) -> bytes:
    """``[H,W,C]`` 0..1 → PNG bytes exactly as ComfyUI writes them (``uint8(clip(255·x))``, i.e. truncated)."""
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    arr = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    img = Image.fromarray(arr)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


class SaveImage:
    """ComfyUI's SaveImage: PNGs in the output folder with the prompt and workflow as text chunks."""

    kind = "output"
    prefix_append = ""
    compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save; may contain sub-folders and %date% style fields.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    DESCRIPTION = "Saves the input images to the output folder (headless stand-in for ComfyUI's SaveImage)."

    def _root(self) -> Path:
        return host.output_dir()

    def save_images(
        self,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: dict | None = None,
        extra_pnginfo: dict | None = None,
    ) -> dict[str, Any]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InputError(f"images must be an IMAGE tensor [B,H,W,C], got {getattr(images, 'shape', type(images))}")
        root = self._root()
        root.mkdir(parents=True, exist_ok=True)
        folder, filename, subfolder = resolve_prefix(filename_prefix + self.prefix_append, root, images.shape[2], images.shape[1])
        text: dict[str, str] = {}
        if prompt is not None:
            text["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            text[key] = json.dumps(value)
        blobs = [_encode_png_like_comfyui(image, text, self.compress_level) for image in images]
        return {"ui": {"images": self._place(folder, filename, subfolder, blobs)}}

    def _place(self, folder: Path, filename: str, subfolder: str, blobs: list[bytes]) -> list[dict[str, str]]:
        """Write the encoded PNGs as ``<filename>_<counter>_.png``, the counter continued from the folder."""
        counter = next_counter(folder, filename)
        results = []
        for batch_number, blob in enumerate(blobs):
            name = numbered_name(filename, batch_number, counter + batch_number)
            atomic_write_bytes(folder / name, blob)
            results.append({"filename": name, "subfolder": subfolder, "type": self.kind})
        return results


def numbered_name(filename: str, batch_number: int, counter: int) -> str:
    """ComfyUI's file name for image ``batch_number`` of a call: ``<filename>_<counter:05>_.png``."""
    return f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"


class PreviewImage(SaveImage):
    """ComfyUI's PreviewImage: like SaveImage, into the temp folder."""

    kind = "temp"
    compress_level = 1

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + uuid.uuid4().hex[:5]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE", {"tooltip": "The images to preview."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    DESCRIPTION = "Saves the input images to the temp folder for viewing (headless stand-in for PreviewImage)."

    def _root(self) -> Path:
        return host.temp_dir()

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt=None, extra_pnginfo=None):  # noqa: ANN001
        return super().save_images(images, "ComfyUI", prompt, extra_pnginfo)


STANDIN_CLASS_MAPPINGS: dict[str, type] = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage}
STANDIN_DISPLAY_NAME_MAPPINGS = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image"}

#: What ComfyUI reports as ``python_module`` for this pack's nodes.
PACK_PYTHON_MODULE = "custom_nodes.ComfyUI-GenDeg"


def runner_registry(include_standins: bool = True) -> tuple[dict[str, type], dict[str, str], dict[str, str]]:
    """``(classes, display_names, python_modules)`` the headless runner and the studio use."""
    from . import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    classes = dict(NODE_CLASS_MAPPINGS)
    names = dict(NODE_DISPLAY_NAME_MAPPINGS)
    modules = {nid: PACK_PYTHON_MODULE for nid in classes}
    if include_standins:
        for nid, cls in STANDIN_CLASS_MAPPINGS.items():
            classes.setdefault(nid, cls)
            names.setdefault(nid, STANDIN_DISPLAY_NAME_MAPPINGS[nid])
            modules.setdefault(nid, "nodes")
    return classes, names, modules
