"""GenDeg nodes: load the model, build conditions, sample degradations, correct structure, filter by intensity."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError
from ..core.gendeg.conditioning import (
    DEFAULT_CAPTION,
    GENDEG_TYPES,
    MU_RANGE,
    PRESET_NAMES,
    PRESETS,
    SIGMA_RANGE,
    clean_phrase,
    condition_sweep,
    custom_type_name,
    make_condition,
    normalize_type,
)
from ..core.gendeg.conditioning import GenDegCondition as Condition
from ..core.image import from_comfy, resize, restore_channels, to_comfy, to_rgb
from ..core.weights import resolve
from . import host, ui
from .synth import GenDegMeasureIntensity

CATEGORY = "GenDeg/Degrade"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
_SCHEDULERS = ("euler_a", "ddim", "dpmpp_2m", "unipc")


#: Working memory per pixel, in units of the weights' element size, as ComfyUI estimates
#: SD 1.x: the UNet ~164 per image pixel (10486 per latent pixel at 1/8 side; x3 guidance
#: branches here) and the VAE decoder ~2178 per image pixel (comfy/model_base.py, comfy/sd.py).
_UNET_PER_PIXEL = 3 * 164
_VAE_PER_PIXEL = 2178
_VAE_TILE_PIXELS = 1024 * 1024
#: Feed-forward nets: ComfyUI's upscale-model estimate (384 x 3 channels x fp32 per pixel).
_NAFNET_PER_PIXEL = 384 * 3 * 4


def _model_handle(model) -> host.ModelHandle:  # noqa: ANN001 - GenDegModel
    """GenDeg's parts (UNet, VAE, text encoder, projections) as one host-managed model.

    On first use the weights are cast to the compute dtype where they are, so the size the
    host (ComfyUI's memory manager) sees is the size they have on the GPU.
    """
    if getattr(model, "_gendeg_model_handles", None) is None:
        model.to_compute(model.parameter_device())
    parts = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoder,
             "stats_proj": model.stats_proj, "cc_projection": model.cc_projection}
    return host.model_handle(model, parts, "GenDeg generator")


def _activation_estimate(model, image: torch.Tensor, resolution: int, images_at_once: int,  # noqa: ANN001
                         vae_tiling: str) -> tuple[int, float]:
    """(pixels, bytes per pixel) of one UNet batch plus one VAE decode at the working size."""
    h, w = image.shape[1], image.shape[2]
    work = resolution * resolution if resolution > 0 else (-(-h // 8) * 8) * (-(-w // 8) * 8)
    vae_pixels = min(work, _VAE_TILE_PIXELS) if vae_tiling != "off" and work > _VAE_TILE_PIXELS else work
    unet_size = torch.empty((), dtype=model.dtype).element_size()
    vae_size = torch.empty((), dtype=model.vae_dtype).element_size()
    per_pixel = _UNET_PER_PIXEL * unet_size + _VAE_PER_PIXEL * vae_size * vae_pixels / work
    return work * max(1, images_at_once), per_pixel


@functools.lru_cache(maxsize=512)
def _is_lora_file(path: str, mtime: float, size: int) -> bool:
    from ..core.gendeg.lora import is_lora

    return is_lora(path)


def _gendeg_files() -> tuple[list[str], list[str]]:
    """(generator checkpoints incl. the manifest's, GenDeg LoRAs on disk) of the gendeg folders, told apart by
    the LoRA metadata."""
    ckpts, loras = [], []
    dirs = host.model_search_dirs("gendeg")
    for name in host.model_choices("gendeg", lambda e: e.family == "gendeg"):
        if name.endswith(".raw.gendeg.safetensors"):
            continue
        lora = False
        if name.lower().endswith(".safetensors"):
            path = next((d / name for d in dirs if (d / name).is_file()), None)
            if path is not None:
                st = path.stat()
                lora = _is_lora_file(str(path), st.st_mtime, st.st_size)
        (loras if lora else ckpts).append(name)
    return ckpts, loras


def _preset_help() -> str:
    return "; ".join(f"{t} {v['light'][0]}/{v['medium'][0]}/{v['heavy'][0]}" for t, v in PRESETS.items())


class GenDegModelLoader:
    DESCRIPTION = (
        "Load the GenDeg generator (InstructPix2Pix on Stable Diffusion 1.5 conditioned on degradation type and "
        "intensity) from models/gendeg/gendeg: the official PyTorch-Lightning .ckpt (converted once to "
        "<name>.gendeg.safetensors next to it), that converted file, or a diffusers folder. The CLIP ViT-L/14 "
        "tokenizer comes from a tokenizer/ folder next to the checkpoint or from models/gendeg/clip; nothing is "
        "downloaded. Inside ComfyUI its memory manager loads the model to the GPU for sampling and unloads it when "
        "other models need the room; headless it waits on the CPU and moves to the GPU only while sampling. "
        "lora_name puts a GenDeg LoRA from gendeg train gendeg (in the same folder) on the loaded model; a whole "
        "fine-tuned model is chosen as ckpt_name."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("GENDEG_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The GenDeg generator (UNet, VAE, text encoder, intensity projections).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names, loras = _gendeg_files()
        return {
            "required": {
                "ckpt_name": (names, {
                    "tooltip": "GenDeg checkpoint in models/gendeg/gendeg: gendeg.ckpt (official), "
                    "gendeg.gendeg.safetensors (converted) or a diffusers folder.",
                }),
                "unet_weights": (["ema", "raw"], {
                    "default": "ema",
                    "tooltip": "ema: the exponential-moving-average UNet (what the authors sample with); raw: the "
                    "last training weights. The intensity projections are always the raw ones (they have no EMA).",
                }),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {
                    "default": "auto",
                    "tooltip": "Compute precision: auto = bf16 on GPUs that support it (else fp16), fp32 on CPU. "
                    "The VAE runs in fp32 when fp16 is chosen (SD 1.5's VAE overflows in fp16).",
                }),
            },
            "optional": {
                "compile": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "torch.compile the UNet on CUDA (slow first run, faster after; ignored on CPU).",
                }),
                "lora_name": (["none", *loras], {
                    "default": "none",
                    "tooltip": "A GenDeg LoRA made by gendeg train gendeg (put the .safetensors in models/gendeg/gendeg): "
                    "adapters on the UNet's attention layers and the fine-tuned intensity projections, trained on this "
                    "base. Its new types are chosen in GenDeg Condition by their phrase (custom_phrase).",
                }),
                "lora_strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                    "tooltip": "How much of the LoRA to apply: 1 = as trained, 0 = the base model.",
                }),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name: str | None = None, lora_name: str | None = None):
        return host.validate_model("gendeg", ckpt_name, lora_name)

    def load(self, ckpt_name: str, unet_weights: str = "ema", dtype: str = "auto", compile: bool = False,
             lora_name: str = "none", lora_strength: float = 1.0):
        from ..core.gendeg.lora import apply_lora
        from ..core.gendeg.model import load_gendeg

        path = resolve(ckpt_name, host.model_search_dirs("gendeg"))
        model = load_gendeg(
            path,
            tokenizer_dirs=host.model_search_dirs("clip") + host.model_search_dirs("gendeg"),
            ema=unet_weights == "ema",
            dtype=dtype,
            device=host.torch_device(),
            offload_device=host.offload_device(),
            compile=bool(compile),
        )
        model.info["name"] = ckpt_name
        if lora_name and lora_name != "none":
            apply_lora(model, resolve(lora_name, host.model_search_dirs("gendeg")), float(lora_strength))
        return (model,)


class GenDegCondition:
    DESCRIPTION = (
        "What GenDeg should make: a degradation type (haze, rain, snow, motion blur, low light, raindrop, "
        "rain+haze, snow+haze), a scene caption (any captioning node can feed it) and an intensity (mu, sigma): "
        "set by the sliders, by a preset (light/medium/heavy = 20th/50th/80th percentiles of GenDeg's training "
        "data for that type), or from an example pair (GenDeg Intensity From Pair -> mu, sigma). mu_sweep makes one "
        "condition per listed mu; chain nodes through 'previous' to sweep several types. A type learnt by "
        "fine-tuning (gendeg train gendeg) is chosen by its phrase: custom_phrase (e.g. 'in underwater conditions') "
        "and custom_type (its name); it has no presets, so set preset to custom."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("GENDEG_COND", "STRING")
    RETURN_NAMES = ("condition", "prompt")
    OUTPUT_TOOLTIPS = ("A list of GenDeg conditions (previous ones first).", "The text prompt(s) GenDeg sees, one per line.")
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "degradation": (list(GENDEG_TYPES), {"default": "haze", "tooltip": "Degradation type."}),
                "caption": ("STRING", {
                    "default": DEFAULT_CAPTION, "multiline": True,
                    "tooltip": "Scene caption (what the image shows); GenDeg appends the type's phrase, e.g. "
                    "', in hazy conditions'. Connect a captioning node here for best results.",
                }),
                "preset": (["custom", *PRESET_NAMES], {
                    "default": "medium",
                    "tooltip": "custom: use the mu/sigma sliders; light/medium/heavy: typical values of this type "
                    f"(mu light/medium/heavy: {_preset_help()}).",
                }),
                "mu": ("FLOAT", {
                    "default": 0.109, "min": MU_RANGE[0], "max": 1.0, "step": 0.001,
                    "tooltip": "Requested mean |clean - degraded| (0..1 units, at 256x256). GenDeg knows 0..0.7 in "
                    "128 bins; larger values act as 0.7.",
                }),
                "sigma": ("FLOAT", {
                    "default": 0.069, "min": SIGMA_RANGE[0], "max": 1.0, "step": 0.001,
                    "tooltip": "Requested standard deviation of |clean - degraded| (0..1 units). GenDeg knows 0..0.4 "
                    "in 128 bins; larger values act as 0.4.",
                }),
            },
            "optional": {
                "mu_sweep": ("STRING", {
                    "default": "",
                    "tooltip": "Comma-separated mu values (e.g. 0.05,0.1,0.2): one condition per value, sigma scaled "
                    "with mu from the type's medium preset. Empty: one condition.",
                }),
                "type_name": ("STRING", {
                    "forceInput": True,
                    "tooltip": "Overrides degradation when connected (a GenDeg type name such as rain+haze).",
                }),
                "previous": ("GENDEG_COND", {"tooltip": "Conditions to put before this one (for sweeps over types)."}),
                "custom_phrase": ("STRING", {
                    "default": "",
                    "tooltip": "A type learnt by fine-tuning (gendeg train gendeg): its phrase, e.g. 'in underwater "
                    "conditions' (as in the run's config; the prompt becomes '<caption>, <phrase>'). Empty: the "
                    "degradation type's own phrase. Custom types have no presets: set preset to custom.",
                }),
                "custom_type": ("STRING", {
                    "default": "",
                    "tooltip": "Name of the custom type (recorded in the metadata, e.g. underwater); empty: 'custom'. "
                    "Only used with custom_phrase.",
                }),
                "source_dataset": ("STRING", {
                    "forceInput": True,
                    "tooltip": "The real dataset the intensity was drawn from (the dataset output of GenDeg Degradation "
                    "Plan in gendeg_sampling mode); recorded in GenDeg Sample's metadata.",
                }),
            },
        }

    def condition(self, degradation: str, caption: str, preset: str, mu: float, sigma: float, mu_sweep: str = "",
                  type_name: str | None = None, previous: list[Condition] | None = None, custom_phrase: str = "",
                  custom_type: str = "", source_dataset: str | None = None):
        phrase = clean_phrase(custom_phrase)
        if phrase:
            kind = custom_type_name(custom_type or type_name or "custom")
        else:
            kind = normalize_type(type_name if type_name else degradation)
        if mu_sweep and mu_sweep.strip():
            try:
                mus = [float(v) for v in mu_sweep.replace(";", ",").split(",") if v.strip()]
            except ValueError:
                raise InputError(f"mu_sweep: expected numbers separated by commas, got {mu_sweep!r}") from None
            conds = condition_sweep([kind], caption, mus, phrase=phrase, reference=(mu, sigma) if phrase else None)
        else:
            conds = [make_condition(kind, caption, mu=mu, sigma=sigma, preset=preset, phrase=phrase)]
        if source_dataset and source_dataset.strip():
            conds = [dataclasses.replace(c, source_dataset=source_dataset.strip()) for c in conds]
        out = list(previous or []) + conds
        return (out, "\n".join(c.prompt for c in out))


class GenDegIntensityFromPair(GenDegMeasureIntensity):
    """The same measurement as GenDeg Measure Intensity, offered where GenDeg users look for it."""

    DESCRIPTION = (
        "Measure GenDeg's intensity (mu, sigma) of a real clean/degraded pair, exactly as GenDeg measured its "
        "training pairs, so you can ask GenDeg for 'this much haze': connect mu and sigma to GenDeg Condition. "
        "One clean image may be paired with a batch of degraded ones."
    )
    CATEGORY = CATEGORY


class GenDegSample:
    DESCRIPTION = (
        "Degrade clean images with GenDeg: every image under every condition (image-major order). Euler ancestral "
        "with 100 steps and guidance 7.5 (text) / 1.5 (image) reproduce the paper; the three guidance branches run "
        "in one UNet batch. The aspect ratio is kept (about resolution^2 pixels, sides multiples of 8) and the "
        "result is returned at the input size. Outputs the achieved mu/sigma (measured as GenDeg measures) so a "
        "graph can check it got what it asked for, JSON metadata per image, and the clean images aligned with the "
        "outputs (for GenDeg Save Dataset Pairs)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT", "FLOAT", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("degraded", "mu", "sigma", "metadata", "clean", "labels")
    OUTPUT_TOOLTIPS = (
        "Degraded images at the input size and channels (N = images x conditions).",
        "Achieved mu (mean over the outputs).",
        "Achieved sigma (mean over the outputs).",
        "JSON: one record per output image (type, prompt, requested and achieved mu/sigma, seed, sampler settings).",
        "The clean image of each output, in the same order.",
        "One label per output image: type, requested -> achieved mu (for GenDeg Contact Sheet).",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Clean images (any size, grey/RGB/RGBA, a batch is fine)."}),
                "model": ("GENDEG_MODEL", {"tooltip": "The generator from GenDeg Model Loader."}),
                "condition": ("GENDEG_COND", {"tooltip": "Conditions from GenDeg Condition (a list makes one output per condition)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": "Random seed; output k uses seed + k, so results do not depend on batch_size."}),
                "steps": ("INT", {"default": 100, "min": 1, "max": 1000, "tooltip": "Sampling steps (the paper: 100)."}),
                "scheduler": (list(_SCHEDULERS), {
                    "default": "euler_a",
                    "tooltip": "euler_a: Euler ancestral as the official code (k-diffusion sigmas); ddim, dpmpp_2m "
                    "(DPM-Solver++ 2M) and unipc reach similar quality in 20-30 steps.",
                }),
                "text_guidance": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "How strongly the type and intensity are followed (the paper: 7.5)."}),
                "image_guidance": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip": "How closely the clean image's content is kept (the paper: 1.5)."}),
            },
            "optional": {
                "resolution": ("INT", {
                    "default": 512, "min": 0, "max": 4096, "step": 8,
                    "tooltip": "Working size: about resolution x resolution pixels with the input's aspect ratio "
                    "(the paper: 512). 0 works at the input size (rounded to a multiple of 8).",
                }),
                "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Images through the UNet at once (x3 guidance branches); more is faster on a GPU."}),
                "vae_tiling": (["auto", "on", "off"], {"default": "auto", "tooltip": "Tiled VAE encode/decode: auto tiles above 1024 px working size (saves memory)."}),
            },
        }

    def sample(self, image: torch.Tensor, model, condition: list[Condition], seed: int, steps: int,
               scheduler: str, text_guidance: float, image_guidance: float, resolution: int = 512,
               batch_size: int = 4, vae_tiling: str = "auto"):
        from ..core.gendeg.sampler import sample

        conds = list(condition or [])
        x = from_comfy(image)
        rgb, layout = to_rgb(x)
        n_steps = steps * -(-(x.shape[0] * max(1, len(conds))) // batch_size)
        t0 = time.perf_counter()
        pixels, per_pixel = _activation_estimate(model, image, resolution, min(batch_size, x.shape[0] * max(1, len(conds))),
                                                 vae_tiling)
        with host.use_on_device(_model_handle(model), pixels=pixels, bytes_per_pixel=per_pixel) as device:
            model.to_compute(device)
            result = sample(model, rgb, conds, seed=seed, steps=steps, scheduler=scheduler,
                            text_guidance=text_guidance, image_guidance=image_guidance, resolution=resolution,
                            batch_size=batch_size, vae_tiling=vae_tiling, progress=host.progress(n_steps, "GenDeg"))
        seconds = time.perf_counter() - t0
        idx = result.source_index
        alpha = layout.alpha[idx] if layout.alpha is not None else None
        out_layout = type(layout)(layout.channels, alpha)
        out = to_comfy(restore_channels(result.image, out_layout))
        clean = image[idx]
        rows = []
        for k, (c, i) in enumerate(zip(result.conditions, idx, strict=True)):
            rows.append({
                "engine": "gendeg",
                "type": c.degradation,
                "caption": c.caption,
                "prompt": c.prompt,
                "preset": c.preset,
                "mu_requested": round(c.mu, 6),
                "sigma_requested": round(c.sigma, 6),
                "mu": round(float(result.mu[k]), 6),
                "sigma": round(float(result.sigma[k]), 6),
                "seed": int(seed) + k,
                "source_index": int(i),
                "steps": int(steps),
                "scheduler": scheduler,
                "text_guidance": float(text_guidance),
                "image_guidance": float(image_guidance),
                "resolution": int(resolution),
                "model": str(model.info.get("name") or Path(str(model.info.get("path", ""))).name),
                "ema": bool(model.info.get("ema", True)),
            })
            if c.phrase:  # a fine-tuned type (only then: the keys of old records, hence their pair ids, stay)
                rows[-1]["phrase"] = c.phrase
            if c.source_dataset:  # drawn by a gendeg_sampling plan (same rule: only when set)
                rows[-1]["source_dataset"] = c.source_dataset
            if model.info.get("lora"):
                rows[-1]["lora"] = model.info["lora"]
        meta = json.dumps(rows[0] if len(rows) == 1 else rows)
        labels = "\n".join(f"{r['type']} {r['mu_requested']:.3f} -> {r['mu']:.3f}" for r in rows)
        stats = [{"mu": r["mu"], "sigma": r["sigma"], "mu_requested": r["mu_requested"]} for r in rows]
        stats[0]["seconds_per_image"] = seconds / len(rows)
        return {
            "ui": ui.merge_ui(ui.stats_ui(stats), ui.compare_ui(clean, out)),
            "result": (out, float(result.mu.mean()), float(result.sigma.mean()), meta, clean, labels),
        }


class GenDegStructureCorrect:
    DESCRIPTION = (
        "GenDeg's optional structure correction: a NAFNet (6 channels in: clean + generated) whose output is added "
        "to the generated image to restore the clean image's geometry (the official code applies it to haze, motion "
        "blur and raindrops). Loads the official nafnet_sd.ckpt from models/gendeg/gendeg."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("corrected",)
    OUTPUT_TOOLTIPS = ("Structure-corrected degraded images (input size and channels).",)
    FUNCTION = "correct"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clean": ("IMAGE", {"tooltip": "The clean images GenDeg started from (same order as degraded; one image is reused for all)."}),
                "degraded": ("IMAGE", {"tooltip": "GenDeg's output for those images."}),
                "ckpt_name": (host.model_choices("gendeg", lambda e: e.family == "gendeg-structure"), {"tooltip": "The structure-correction NAFNet (official: nafnet_sd.ckpt)."}),
            },
            "optional": {
                "apply_to": (["all", "auto"], {
                    "default": "all",
                    "tooltip": "all: correct every image; auto: only haze, motion blur and raindrop images (as the "
                    "official --auto_s), read from the metadata input.",
                }),
                "metadata": ("STRING", {"forceInput": True, "tooltip": "GenDeg Sample's metadata (needed for apply_to = auto)."}),
                "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 16, "tooltip": "0: whole image; else overlapping tiles of this side, at least 64 (less memory)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name: str | None = None):
        return host.validate_model("gendeg", ckpt_name)

    def correct(self, clean: torch.Tensor, degraded: torch.Tensor, ckpt_name: str, apply_to: str = "all",
                metadata: str | None = None, tile_size: int = 0):
        from ..core.gendeg.structure import AUTO_TYPES, correct_structure, load_structure_model

        net = load_structure_model(resolve(ckpt_name, host.model_search_dirs("gendeg")))
        c, _ = to_rgb(from_comfy(clean, name="clean"))
        d, layout = to_rgb(from_comfy(degraded, name="degraded"))
        if c.shape[0] == 1 and d.shape[0] > 1:
            c = c.expand(d.shape[0], -1, -1, -1)
        if c.shape[0] != d.shape[0]:
            raise InputError(f"clean has {c.shape[0]} images and degraded {d.shape[0]}; connect the clean output of GenDeg Sample")
        if c.shape[-2:] != d.shape[-2:]:
            c = resize(c, tuple(d.shape[-2:]))
        select = list(range(d.shape[0]))
        if apply_to == "auto":
            if not metadata:
                raise InputError("apply_to = auto needs the metadata of GenDeg Sample connected")
            rows = json.loads(metadata)
            rows = rows if isinstance(rows, list) else [rows] * d.shape[0]
            if len(rows) != d.shape[0]:
                raise InputError(f"metadata has {len(rows)} records for {d.shape[0]} images")
            select = [i for i, r in enumerate(rows) if r.get("type") in AUTO_TYPES]
        out = d.clone()
        if select:
            pixels = tile_size * tile_size if tile_size > 0 else len(select) * d.shape[-2] * d.shape[-1]
            handle = host.model_handle(net, {"nafnet": net}, "GenDeg structure NAFNet")
            with host.use_on_device(handle, pixels=pixels, bytes_per_pixel=_NAFNET_PER_PIXEL) as device:
                out[select] = correct_structure(net, c[select], d[select], device=device, tile=tile_size,
                                                progress=host.progress(1, "structure"))
        result = to_comfy(restore_channels(out, layout))
        return {"ui": ui.compare_ui(degraded, result), "result": (result,)}


class GenDegIntensityFilter:
    DESCRIPTION = (
        "GenDeg's intensity filtering for datasets: keep only samples whose achieved mu is close to the requested "
        "one (|achieved - requested| <= max(abs_tolerance, rel_tolerance x requested)). Reads the metadata of GenDeg "
        "Sample (or GenDeg Synthesize), outputs the kept pairs as lists for GenDeg Save Dataset Pairs."
    )
    CATEGORY = "GenDeg/Dataset"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("clean", "degraded", "metadata", "filename")
    OUTPUT_IS_LIST = (True, True, True, True)
    OUTPUT_TOOLTIPS = ("Kept clean images (one per item).", "Kept degraded images.", "Their metadata (JSON).", "Their file names.")
    FUNCTION = "filter"
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clean": ("IMAGE", {"tooltip": "Clean images aligned with degraded (the clean output of GenDeg Sample)."}),
                "degraded": ("IMAGE", {"tooltip": "Generated degraded images."}),
                "metadata": ("STRING", {"forceInput": True, "tooltip": "JSON metadata with mu_requested and mu per image."}),
                "abs_tolerance": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Always accept an error up to this (mu units)."}),
                "rel_tolerance": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Also accept an error up to this fraction of the requested mu."}),
            },
            "optional": {
                "filename": ("STRING", {"forceInput": True, "tooltip": "Source file names (one per clean batch, or one per line)."}),
            },
        }

    def filter(self, clean: list[torch.Tensor], degraded: list[torch.Tensor], metadata: list[str],
               abs_tolerance: list[float], rel_tolerance: list[float], filename: list[str] | None = None):
        from ..core.gendeg.filtering import filter_by_intensity

        kept = filter_by_intensity(clean, degraded, metadata, filename, float(abs_tolerance[0]), float(rel_tolerance[0]))
        stats = [{"kept": len(kept.degraded), "dropped": kept.dropped}]
        return {"ui": ui.stats_ui(stats), "result": (kept.clean, kept.degraded, kept.metadata, kept.filenames)}


NODE_CLASS_MAPPINGS = {
    "GenDegModelLoader": GenDegModelLoader,
    "GenDegCondition": GenDegCondition,
    "GenDegIntensityFromPair": GenDegIntensityFromPair,
    "GenDegSample": GenDegSample,
    "GenDegStructureCorrect": GenDegStructureCorrect,
    "GenDegIntensityFilter": GenDegIntensityFilter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegModelLoader": "GenDeg Model Loader",
    "GenDegCondition": "GenDeg Condition (type + intensity)",
    "GenDegIntensityFromPair": "GenDeg Intensity From Pair",
    "GenDegSample": "GenDeg Sample (diffusion)",
    "GenDegStructureCorrect": "GenDeg Structure Correct",
    "GenDegIntensityFilter": "GenDeg Intensity Filter",
}
