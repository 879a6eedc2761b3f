"""Perceive-IR restorer loader: the official checkpoint (or one trained here) + DINOv2 -> ``RESTORER``."""

from __future__ import annotations

from pathlib import Path

from ..core.restore.feedforward import DTYPES
from ..core.restore.perceive_ir import find_dinov2, load_perceive_ir
from ..core.weights import resolve
from . import host

CATEGORY = "GenDeg/Restore"
DINOV2_DEFAULT = "dinov2-base"


def dinov2_folder(name: str) -> Path:
    """A DINOv2 folder: absolute, ``<models>/restore/<name>`` holding config.json, or a manifest id."""
    return find_dinov2(name, host.model_search_dirs("restore"))


class GenDegPerceiveIRLoader:
    DESCRIPTION = (
        "Load Perceive-IR's all-in-one restorer (official perceiveIR_3task.pth / perceiveIR_5task.pth, or a "
        ".safetensors from `gendeg train restorer` with arch perceive_ir) from models/gendeg/restore, with the DINOv2-base "
        "folder that guides it. The official .pth is read safely (weights only, strict) and converted once to "
        "<name>.gendeg.safetensors beside it. Run it with GenDeg Restore: each tile is padded to a multiple of 8 "
        "(replicate), guided by DINOv2 features of that tile, restored and cropped; tile_size 0 (or an image that fits "
        "in one tile) is exactly the official whole-image test."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("RESTORER",)
    RETURN_NAMES = ("restorer",)
    OUTPUT_TOOLTIPS = ("The restorer, for GenDeg Restore.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (host.model_choices("restore", lambda e: e.family == "perceive-ir" and e.format != "transformers-folder"), {
                    "tooltip": "Perceive-IR checkpoint in models/gendeg/restore: the official .pth (e.g. "
                    "perceive_ir/perceiveIR_5task.pth) or a .safetensors of the pack's layout. The list also names the "
                    "released checkpoints not downloaded yet; running says how to get one."}),
                "dinov2": ("STRING", {
                    "default": DINOV2_DEFAULT,
                    "tooltip": "DINOv2-base folder (Hugging Face layout: config.json + model.safetensors) under "
                    "models/gendeg/restore, or an absolute path. `gendeg weights fetch dinov2-base` puts it there."}),
                "dtype": (list(DTYPES), {
                    "default": "auto",
                    "tooltip": "Compute precision. auto: fp32 on CPU, bf16 on a GPU that supports it (the release "
                    "evaluates in fp32 and bf16); fp16 is refused (not validated for this network)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None, dinov2: str | None = None):
        return host.validate_model("restore", model_name, dinov2)

    def load(self, model_name: str, dinov2: str = DINOV2_DEFAULT, dtype: str = "auto"):
        path = resolve(model_name, host.model_search_dirs("restore"))
        restorer = load_perceive_ir(path, dinov2_folder(dinov2), dtype=dtype, device=host.torch_device())
        return (restorer,)


NODE_CLASS_MAPPINGS = {"GenDegPerceiveIRLoader": GenDegPerceiveIRLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"GenDegPerceiveIRLoader": "GenDeg Perceive-IR Loader (all-in-one restorer)"}
