"""Dataset nodes: load a folder of images (sorted, windowed, sharded), save (clean, degraded) pairs resumably."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..core.dataset import (
    IMAGE_FORMATS,
    PairWriter,
    folder_signature,
    list_folder,
    load_folder_images,
    parse_metadata,
    save_pairs,
)
from ..core.errors import InputError
from ..core.image import from_comfy
from . import host, ui

CATEGORY = "GenDeg/Dataset"
MAX_INT = 2**31 - 1


def _folder_path(folder: str) -> Path:
    folder = (folder or "").strip().strip('"').strip("'").strip()  # a path pasted with quotes
    p = Path(folder).expanduser()
    return p if p.is_absolute() else host.input_dir() / p


class GenDegLoadImageFolder:
    DESCRIPTION = (
        "Load every image of a folder, sorted by path: optionally recursive, filtered by a glob pattern, cut to a "
        "start/limit window (process huge folders in chunks) and to this run's shard (`gendeg run --shard I/N`). "
        "Outputs a list (each image its own size; the next nodes run once per image) or one batch (same-size "
        "images), the masks (1 where transparent) and the file names relative to the folder."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("images", "masks", "filenames")
    OUTPUT_IS_LIST = (True, True, True)
    OUTPUT_TOOLTIPS = (
        "The images (RGB, 0..1): one list item per image, or a single batch in batch mode.",
        "Masks from the alpha channel (1 where transparent, 0 where opaque or no alpha).",
        "File names relative to the folder (in batch mode one item, the names one per line).",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": (
                    "STRING",
                    {"default": "", "tooltip": "Folder of images: relative to ComfyUI's input folder, or an absolute path."},
                ),
                "pattern": (
                    "STRING",
                    {
                        "default": "*",
                        "tooltip": "Glob on the file name (*.png), or on the relative path when it has a / "
                        "(night/*.jpg); several patterns separated by ; (*.png;*.jpg).",
                    },
                ),
                "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also load images in sub-folders."}),
                "start": (
                    "INT",
                    {"default": 0, "min": 0, "max": MAX_INT, "tooltip": "Index of the first image (in sorted order) to load."},
                ),
                "limit": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_INT,
                        "tooltip": "How many images from start to load; 0 loads all the rest. Use a window to process "
                        "a huge folder in chunks.",
                    },
                ),
                "output": (
                    ["list", "batch"],
                    {
                        "default": "list",
                        "tooltip": "list: each image on its own (any sizes). batch: one IMAGE batch (all images must "
                        "have the same size).",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, folder: str, pattern: str = "*", recursive: bool = False, start: int = 0, limit: int = 0, output: str = "list"):
        try:
            root = _folder_path(folder)
            names = list_folder(root, pattern, recursive, start, limit, host.shard())
            return folder_signature(root, names)
        except Exception:  # noqa: BLE001 - the run itself reports the problem
            return float("nan")

    def select(self, root: Path, pattern: str, recursive: bool, start: int, limit: int) -> list[str]:
        """The file names this run loads: the window, cut to this run's shard (a Ray worker loads its batch)."""
        everything = list_folder(root, pattern, recursive, start, limit)
        if not everything:
            raise InputError(f"{root}: no images match {pattern!r} (recursive={recursive}, start={start}, limit={limit})")
        return list_folder(root, pattern, recursive, start, limit, host.shard())

    def load(self, folder: str, pattern: str = "*", recursive: bool = False, start: int = 0, limit: int = 0, output: str = "list"):
        if not (folder or "").strip().strip("\"'"):
            raise InputError("folder is empty; give a folder of images (relative to the input folder, or absolute)")
        root = _folder_path(folder)
        names = self.select(root, pattern, recursive, start, limit)
        loaded = load_folder_images(root, names, host.progress(len(names), "load images"))
        images = [rgb.permute(0, 2, 3, 1).contiguous() for rgb, _ in loaded]
        masks = [mask for _, mask in loaded]
        if output == "batch" and images:
            first = images[0].shape[1:3]
            for name, img in zip(names, images, strict=True):
                if img.shape[1:3] != first:
                    raise InputError(
                        f"batch output needs images of one size: {names[0]} is {first[1]}x{first[0]} but {name} is "
                        f"{img.shape[2]}x{img.shape[1]}; use output=list, or resize them first"
                    )
            return ([torch.cat(images)], [torch.cat(masks)], ["\n".join(names)])
        return (images, masks, names)


class GenDegSaveDatasetPairs:
    DESCRIPTION = (
        "Save (clean, degraded) image pairs into output/<dataset>/clean and /degraded with one metadata record per "
        "pair (source file, every parameter from the metadata input, seed, time, tool version) in "
        "records/<id>.json and metadata.jsonl. Files are written atomically; pairs finished by an earlier run are "
        "skipped, so a run interrupted at any moment and run again gives the same dataset."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("dataset_dir",)
    OUTPUT_TOOLTIPS = ("The dataset folder that was written.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    #: Rebuild metadata.jsonl when the node finishes (a Ray job does it once, on the driver, at the end).
    FINALIZE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clean": ("IMAGE", {"tooltip": "Clean images (one per degraded image, or one shared by a batch)."}),
                "degraded": ("IMAGE", {"tooltip": "Degraded images, paired with clean in order."}),
                "dataset": (
                    "STRING",
                    {
                        "default": "gendeg_dataset",
                        "tooltip": "Dataset folder name inside the output folder (sub-folders allowed; '..' and "
                        "absolute paths are refused).",
                    },
                ),
                "image_format": (list(IMAGE_FORMATS), {"default": "png", "tooltip": "png is lossless; jpg/webp at quality 95."}),
                "seed": (
                    "INT",
                    {
                        "control_after_generate": True,
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "tooltip": "The seed that made the degraded images, recorded and part of the pair id "
                        "(connect the same seed as the degradation node).",
                    },
                ),
            },
            "optional": {
                "filename": (
                    "STRING",
                    {
                        "forceInput": True,
                        "tooltip": "Source file name (from GenDeg Load Image Folder); one per line for a batch. "
                        "Without it, pairs are named by their content hash.",
                    },
                ),
                "metadata": (
                    "STRING",
                    {
                        "forceInput": True,
                        "tooltip": "JSON metadata of the degradation (e.g. from GenDeg Synthesize): merged into each "
                        "record and part of the pair id. An object, or a list with one object per image.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    def save(
        self,
        clean: list[torch.Tensor],
        degraded: list[torch.Tensor],
        dataset: list[str],
        image_format: list[str],
        seed: list[int],
        filename: list[str] | None = None,
        metadata: list[str] | None = None,
        prompt: list[Any] | None = None,
    ):
        if not clean or not degraded:  # e.g. a quality gate upstream dropped every image
            return {"ui": ui.stats_ui([{"written": 0, "skipped": 0}]), "result": ("",)}
        if len(clean) != len(degraded) and 1 not in (len(clean), len(degraded)):
            raise InputError(
                f"{len(clean)} clean and {len(degraded)} degraded images: connect lists of the same length "
                "(or one clean image for all)"
            )
        n = max(len(clean), len(degraded))

        def item(values: list[Any] | None, i: int, default: Any = None) -> Any:
            return default if not values else values[min(i, len(values) - 1)]

        extra = {}
        if prompt and prompt[0]:
            blob = json.dumps(prompt[0], sort_keys=True, default=str).encode()
            extra["workflow_sha256"] = hashlib.sha256(blob).hexdigest()
        total = sum(item(degraded, i).shape[0] for i in range(n))
        bar = host.progress(total, "save pairs")
        done = written = skipped = 0
        writers: dict[tuple[str, str], PairWriter] = {}
        for i in range(n):
            c = from_comfy(item(clean, i), name="clean")
            d = from_comfy(item(degraded, i), name="degraded")
            names = str(item(filename, i, "") or "").splitlines() or [""]
            report = save_pairs(
                host.output_dir(),
                item(dataset, i),
                c,
                d,
                names,
                parse_metadata(item(metadata, i), d.shape[0]),
                int(item(seed, i)),
                item(image_format, i),
                params=extra,
                finalize=False,
                progress=lambda j, _m, base=done: bar(base + j, total),
            )
            writers.setdefault((item(dataset, i), item(image_format, i)), report.writer)
            done += d.shape[0]
            written += report.written
            skipped += report.skipped
        if self.FINALIZE:
            for writer in writers.values():
                writer.finalize()
        dirs = sorted({str(w.root) for w in writers.values()})
        return {"ui": ui.stats_ui([{"written": written, "skipped": skipped}]), "result": ("\n".join(dirs),)}


NODE_CLASS_MAPPINGS = {
    "GenDegLoadImageFolder": GenDegLoadImageFolder,
    "GenDegSaveDatasetPairs": GenDegSaveDatasetPairs,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegLoadImageFolder": "GenDeg Load Image Folder",
    "GenDegSaveDatasetPairs": "GenDeg Save Dataset Pairs",
}
