"""IR-SDE family nodes: load IR-SDE / Refusion / DA-CLIP universal restoration, restore images."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..core.errors import MissingWeightError
from ..core.image import from_comfy, restore_channels, to_comfy, to_rgb
from ..core.restore.irsde import degradation_probabilities, restore_sde
from ..core.restore.irsde_loader import (
    PRESET_NAMES,
    SDERestorer,
    convert_to_safetensors,
    ensure_daclip_text,
    load_sde_restorer,
)
from ..core.restore.sde import SAMPLERS
from ..core.weights import resolve
from . import host, ui

CATEGORY = "GenDeg/Restore"
NONE = "none"


def _is_network(entry) -> bool:  # noqa: ANN001 - WeightEntry
    """A manifest entry the loader's ``checkpoint`` takes (IR-SDE, Refusion, DA-CLIP networks)."""
    return entry.family in ("irsde", "refusion") or (entry.family == "daclip" and "preset" in entry.config)


def _is_controller(entry) -> bool:  # noqa: ANN001 - WeightEntry
    """A DA-CLIP controller (the loader's ``daclip`` input)."""
    return entry.family == "daclip" and "preset" not in entry.config
#: Working memory per pixel of the noise network, in units of its compute element size
#: (ComfyUI's estimate for image-to-image models: 384 x 3 channels).
PER_PIXEL = 384 * 3
DACLIP_PIXELS = 224 * 224


def _net_handle(restorer: SDERestorer) -> host.ModelHandle:
    return host.model_handle(restorer, {"net": restorer.net}, f"GenDeg IR-SDE {restorer.arch}", key="net")


def _daclip_handles(restorer: SDERestorer) -> list[host.ModelHandle]:
    if restorer.daclip is None:
        return []
    return [host.model_handle(restorer, {"daclip": restorer.daclip}, "GenDeg DA-CLIP", key="daclip")]


def _path(name: str) -> Path:
    return resolve(name, host.model_search_dirs("restore"))


def _as_safetensors(path: Path) -> Path:
    """The ``.safetensors`` twin of a pickled checkpoint, written once."""
    if path.suffix.lower() == ".safetensors":
        return path
    target = path.with_suffix(".safetensors")
    return target if target.is_file() else convert_to_safetensors(path, target)


class GenDegIRSDELoader:
    DESCRIPTION = (
        "Load a diffusion-SDE restorer: an IR-SDE task network (ConditionalUNet), a Refusion network (NAFNet) or "
        "DA-CLIP universal restoration (universal-ir.pth + daclip_ViT-B-32.pt; wild-ir.pth + "
        "wild-daclip_ViT-L-14.pt), official .pth/.pt files or safetensors, from models/gendeg/restore. The network "
        "size is read from the file; the task preset sets the SDE (max_sigma, T=100, eps=0.005, cosine schedule) as "
        "in the official configs."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SDE_RESTORER",)
    RETURN_NAMES = ("sde_restorer",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (
                    host.model_choices("restore", _is_network),
                    {"tooltip": "Noise network in models/gendeg/restore: an IR-SDE task .pth, a Refusion .pth, or "
                     "universal-ir.pth / wild-ir.pth for DA-CLIP (or their .safetensors)."},
                ),
                "task": (
                    list(PRESET_NAMES),
                    {"default": "auto", "tooltip": "Which official task config the network was trained with (sets "
                     "max_sigma: 10 for IR-SDE deraining/deblurring, 30 for other IR-SDE tasks, 50 for Refusion and "
                     "DA-CLIP). auto: the settings a gendeg train irsde file carries, else from the weights manifest or the file "
                     "name; asks you to choose if unsure."},
                ),
                "daclip": (
                    [NONE, *host.model_choices("restore", _is_controller)],
                    {"default": NONE, "tooltip": "DA-CLIP controller for universal restoration "
                     "(daclip_ViT-B-32.pt with universal-ir.pth, wild-daclip_ViT-L-14.pt with wild-ir.pth); none "
                     "for IR-SDE and Refusion networks."},
                ),
                "convert_to_safetensors": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Write a .safetensors copy beside each pickled file (once) and "
                     "load that: later loads never unpickle anything and start faster."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str | None = None, daclip: str | None = None):
        return host.validate_model("restore", checkpoint, daclip)

    def load(self, checkpoint: str, task: str = "auto", daclip: str = NONE, convert_to_safetensors: bool = False):
        net_path = _path(checkpoint)
        daclip_path = None if daclip in (NONE, "", None) else _path(daclip)
        if convert_to_safetensors:
            net_path = _as_safetensors(net_path)
            daclip_path = _as_safetensors(daclip_path) if daclip_path is not None else None
        restorer = load_sde_restorer(net_path, task, daclip_path)
        restorer.net.to(host.offload_device())
        if restorer.daclip is not None:
            restorer.daclip.to(host.offload_device())
        return (restorer,)


class GenDegIRSDERestore:
    DESCRIPTION = (
        "Restore images with IR-SDE / Refusion / DA-CLIP (from GenDeg IR-SDE Loader): start from the degraded "
        "image plus noise and run the reverse mean-reverting SDE. posterior sampling is the official default; fewer "
        "steps than the model's T trade quality for speed. Large images: the network runs in overlapping tiles "
        "blended smoothly, the tile is halved on out-of-memory. Grey and RGBA images are handled (alpha kept)."
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
                "sde_restorer": ("SDE_RESTORER", {"tooltip": "The restorer from GenDeg IR-SDE Loader."}),
                "sampler": (
                    list(SAMPLERS),
                    {"default": "posterior", "tooltip": "posterior: estimate the clean image each step and sample "
                     "the exact posterior (official default, best). reverse_sde: Euler-Maruyama on the reverse SDE. "
                     "reverse_ode: deterministic probability-flow ODE (no noise after the start)."},
                ),
                "steps": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1000, "tooltip": "Reverse steps; 0 = all of the model's T "
                     "(100 for the official models). Fewer steps visit an evenly spaced subset (faster, usually "
                     "softer)."},
                ),
                "seed": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Seed of all the sampler's noise; "
                     "same inputs and seed give the same result."},
                ),
                "tile_size": (
                    "INT",
                    {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Largest tile side in pixels for the "
                     "network (0 = whole image). Use 512-1024 for very large images; halved automatically on "
                     "out-of-memory."},
                ),
                "tile_overlap": (
                    "INT",
                    {"default": 64, "min": 0, "max": 1024, "step": 8, "tooltip": "Overlap between neighbouring tiles "
                     "in pixels; larger hides seams better."},
                ),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": 64, "tooltip": "How many images run through the sampler "
                     "together (more is faster on a GPU, needs more memory). Part of the seed: change it and the "
                     "noise changes."},
                ),
                "precision": (
                    ["auto", "fp32", "bf16", "fp16"],
                    {"default": "auto", "tooltip": "Network precision (autocast). auto: fp16 on CUDA, fp32 "
                     "elsewhere. The SDE arithmetic always stays fp32."},
                ),
            }
        }

    def restore(
        self,
        image: torch.Tensor,
        sde_restorer: SDERestorer,
        sampler: str = "posterior",
        steps: int = 0,
        seed: int = 0,
        tile_size: int = 0,
        tile_overlap: int = 64,
        batch_size: int = 1,
        precision: str = "auto",
    ):
        device = host.torch_device()
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        x, layout = to_rgb(from_comfy(image))
        n_steps = len(sde_restorer.sde.timesteps(steps or None))
        chunks = [(i, min(i + batch_size, x.shape[0])) for i in range(0, x.shape[0], batch_size)]
        bar = host.progress(n_steps * len(chunks), "IR-SDE")
        generator = torch.Generator().manual_seed(int(seed))
        outs = []
        start = time.perf_counter()
        h, w = x.shape[-2:]
        pixels = (min(tile_size, h) * min(tile_size, w) if tile_size > 0 else h * w) * min(batch_size, x.shape[0])
        per_pixel = PER_PIXEL * (4 if precision == "fp32" else 2)
        handles = [_net_handle(sde_restorer), *_daclip_handles(sde_restorer)]
        with host.use_on_device(*handles, pixels=pixels, bytes_per_pixel=per_pixel) as device:
            for k, (a, b) in enumerate(chunks):
                outs.append(
                    restore_sde(
                        sde_restorer, x[a:b].contiguous(), sampler=sampler, steps=steps or None, generator=generator,
                        device=device, precision=precision, tile=tile_size, overlap=tile_overlap,
                        is_oom=host.is_oom, on_oom=host.free_memory,
                        progress=lambda i, n, k=k: bar(k * n + i, n * len(chunks)),
                    )
                )
        seconds = time.perf_counter() - start
        restored = to_comfy(restore_channels(torch.cat(outs), layout))
        stats = ui.stats_ui([{"steps": n_steps, "seconds_per_image": seconds / x.shape[0]}])
        return {"ui": ui.merge_ui(stats, ui.compare_ui(image, restored)), "result": (restored,)}


def _tokenizer_folders() -> list[str]:
    """Folders under models/gendeg/clip holding CLIP tokenizer files (vocab.json + merges.txt or tokenizer.json)."""
    names: set[str] = set()
    for root in host.model_search_dirs("clip"):
        if root.is_dir():
            for f in list(root.rglob("vocab.json")) + list(root.rglob("tokenizer.json")):
                names.add(f.parent.relative_to(root).as_posix())
    return sorted(names)


def _load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    for root in host.model_search_dirs("clip"):
        path = root / folder
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    raise MissingWeightError(
        f"CLIP tokenizer folder {folder!r} not found in {host.model_search_dirs('clip')[0]}; fetch one with "
        "`gendeg weights fetch clip-vit-base-patch32` (OpenCLIP and OpenAI CLIP share the BPE vocabulary)"
    )


class GenDegDaCLIPDegradation:
    DESCRIPTION = (
        "Ask DA-CLIP which degradation it sees (motion-blurry, hazy, jpeg-compressed, low-light, noisy, raindrop, "
        "rainy, shadowed, snowy, uncompleted): softmax of 100 x cosine between its degradation embedding and the "
        "text embedding of each name, as the official example. Needs a restorer loaded with a DA-CLIP file (its text "
        "tower is read from that file on first use) and CLIP tokenizer files."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("degradation", "probabilities")
    OUTPUT_IS_LIST = (True, True)
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to classify (any size, 1-4 channels, batches)."}),
                "sde_restorer": ("SDE_RESTORER", {"tooltip": "A DA-CLIP restorer from GenDeg IR-SDE Loader (a "
                                 "'daclip' file given)."}),
                "tokenizer": (_tokenizer_folders(), {"tooltip": "Folder under models/gendeg/clip with CLIP tokenizer "
                              "files (e.g. clip-vit-base-patch32)."}),
                "labels": ("STRING", {"default": "", "tooltip": "Comma-separated names to compare; empty = the ten "
                           "degradations DA-CLIP was trained on."}),
            }
        }

    def detect(self, image: torch.Tensor, sde_restorer: SDERestorer, tokenizer: str, labels: str = ""):
        import json

        names = tuple(n.strip() for n in labels.split(",") if n.strip()) or None
        x, _ = to_rgb(from_comfy(image))
        ensure_daclip_text(sde_restorer)  # (re)reads the text tower first, so the host sizes the whole DA-CLIP
        with host.use_on_device(*_daclip_handles(sde_restorer), pixels=x.shape[0] * DACLIP_PIXELS,
                                bytes_per_pixel=PER_PIXEL * 4) as device:
            names, probs = degradation_probabilities(
                sde_restorer, x, _load_tokenizer(tokenizer), names, device=device,
                precision="fp16" if device.type == "cuda" else "fp32",
            )
        top = [names[int(i)] for i in probs.argmax(dim=-1)]
        table = [json.dumps({n: round(float(p), 5) for n, p in zip(names, row, strict=True)}) for row in probs]
        stats = ui.stats_ui([{n: float(p) for n, p in zip(names, row, strict=True)} for row in probs])
        return {"ui": stats, "result": (top, table)}


NODE_CLASS_MAPPINGS = {
    "GenDegIRSDELoader": GenDegIRSDELoader,
    "GenDegIRSDERestore": GenDegIRSDERestore,
    "GenDegDaCLIPDegradation": GenDegDaCLIPDegradation,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegIRSDELoader": "GenDeg IR-SDE Loader (IR-SDE / Refusion / DA-CLIP)",
    "GenDegIRSDERestore": "GenDeg IR-SDE Restore",
    "GenDegDaCLIPDegradation": "GenDeg DA-CLIP Degradation Type",
}
