"""Feed-forward restoration nodes: load any scale-1 spandrel model, restore images tiled."""

from __future__ import annotations

import time

from ..core.image import from_comfy, to_comfy
from ..core.restore.feedforward import DTYPES, Restorer, load_restorer, restore
from ..core.weights import resolve
from . import host, ui

CATEGORY = "GenDeg/Restore"
#: Working memory per pixel of a feed-forward net, in units of its element size: ComfyUI's
#: estimate for image-to-image models (384 x 3 channels; comfy_extras/nodes_upscale_model.py).
PER_PIXEL = 384 * 3


def _pixels(image, tile: int, tile_batch: int) -> int:  # noqa: ANN001 - IMAGE [B,H,W,C]
    """Pixels the net sees at once: a batch of tiles, or whole images."""
    b, h, w = image.shape[0], image.shape[1], image.shape[2]
    if tile > 0:
        return min(tile, h) * min(tile, w) * tile_batch
    return h * w * min(b, tile_batch)


class GenDegRestorerLoader:
    DESCRIPTION = (
        "Load a feed-forward restoration network (NAFNet, SCUNet, SwinIR, Uformer, KBNet, DRUNet, FBCNN, ... "
        "anything spandrel detects with scale 1, including nets trained with DiffLoss) from models/gendeg/restore. "
        "Pickled .pth files are read safely (weights only); upscalers are refused."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("RESTORER",)
    RETURN_NAMES = ("restorer",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    host.model_choices("restore", lambda e: e.family == "feedforward"),
                    {"tooltip": "Checkpoint file in models/gendeg/restore (.safetensors, .pth, .pt, .ckpt). The "
                     "list also names the known checkpoints not downloaded yet; running says how to get one."},
                ),
                "dtype": (
                    list(DTYPES),
                    {
                        "default": "auto",
                        "tooltip": "Compute precision. auto: fp32 on CPU, bf16/fp16 on a GPU where the model supports "
                        "it. fp16/bf16 are refused for models spandrel marks as unsafe in that precision.",
                    },
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None):
        return host.validate_model("restore", model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        path = resolve(model_name, host.model_search_dirs("restore"))
        restorer = load_restorer(path, dtype=dtype, device=host.torch_device())
        return (restorer,)


class GenDegRestore:
    DESCRIPTION = (
        "Restore images with a feed-forward network (from GenDeg Restorer Loader). Large images run in overlapping "
        "tiles blended with smooth weights; the tile is halved automatically when the GPU runs out of memory. "
        "Grey and RGBA images are handled (alpha is kept as is)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("restored",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Degraded images (any size, 1-4 channels, a batch is fine)."}),
                "restorer": ("RESTORER", {"tooltip": "The network from GenDeg Restorer Loader."}),
                "tile_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 0,
                        "max": 8192,
                        "step": 8,
                        "tooltip": "Largest tile side in pixels; 0 runs the whole image at once. Smaller tiles need "
                        "less memory; halved automatically on out-of-memory.",
                    },
                ),
                "overlap": (
                    "INT",
                    {
                        "default": 32,
                        "min": 0,
                        "max": 512,
                        "step": 8,
                        "tooltip": "Minimum overlap between neighbouring tiles in pixels; larger hides seams better.",
                    },
                ),
                "tile_batch": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Tiles (of all images in the batch) run through the network at once; "
                        "more is faster on a GPU and needs more memory.",
                    },
                ),
            }
        }

    def restore(self, image, restorer: Restorer, tile_size: int = 512, overlap: int = 32, tile_batch: int = 1):
        x = from_comfy(image)
        t0 = time.perf_counter()
        handle = host.model_handle(restorer, {"net": restorer.descriptor.model}, f"GenDeg restorer {restorer.architecture}")
        per_pixel = PER_PIXEL * restorer.dtype.itemsize
        with host.use_on_device(handle, pixels=_pixels(image, tile_size, tile_batch), bytes_per_pixel=per_pixel) as device:
            out = restore(
                restorer,
                x,
                device=device,
                tile=tile_size,
                overlap=overlap,
                tile_batch=tile_batch,
                progress=host.progress(1, "GenDeg restore"),
                is_oom=host.is_oom,
                on_oom=host.free_memory,
                offload_device=None,  # the host places the model (ComfyUI's memory manager inside ComfyUI)
            )
        seconds = time.perf_counter() - t0
        result = to_comfy(out)
        stats = ui.stats_ui([{"seconds_per_image": seconds / x.shape[0]}])
        return {"ui": ui.merge_ui(ui.compare_ui(image, result), stats), "result": (result,)}


NODE_CLASS_MAPPINGS = {
    "GenDegRestorerLoader": GenDegRestorerLoader,
    "GenDegRestore": GenDegRestore,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegRestorerLoader": "GenDeg Restorer Loader (feed-forward)",
    "GenDegRestore": "GenDeg Restore (feed-forward)",
}
