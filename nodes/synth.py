"""Nodes of the procedural synthesizer: synthesize, measure intensity, plan, contact sheet, samples."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError
from ..core.image import from_comfy, mask_to_bchw, restore_channels, to_comfy, to_rgb
from ..core.intensity import measure_intensity
from ..core.io import list_images, load_image
from ..core.synth import REGISTRY, TYPES, get
from ..core.synth.calibrate import SynthResult, degrade_at_strength, grey_finish
from ..core.synth.joint import degrade_to_intensity
from ..core.synth.plan import LEVELS, MODES, PRESETS, make_plan, shard_positions
from ..core.synth.sheet import contact_sheet
from . import host, ui

DEGRADE = "GenDeg/Degrade"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
SMALL_JOB_PIXELS = 512 * 512


def _sigma_help() -> str:
    return "; ".join(f"{name}: {deg.sigma_param}" for name, deg in REGISTRY.items() if deg.sigma_param)


def _params_help() -> str:
    lines = []
    for name, deg in REGISTRY.items():
        keys = ", ".join(f"{k}={v.default!r}" for k, v in deg.params.items() if k != "depth_near_is_bright")
        lines.append(f"{name}: {keys}")
    return "; ".join(lines)


@contextmanager
def _threads_for(x: torch.Tensor):
    """Small CPU jobs run on one torch thread: their many tiny ops lose more to thread
    synchronisation than they gain (5x slower on a busy 2-core machine); big batches keep all."""
    small = x.device.type == "cpu" and x.shape[0] * x.shape[-2] * x.shape[-1] < SMALL_JOB_PIXELS
    n = torch.get_num_threads()
    if small and n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and n > 1:
            torch.set_num_threads(n)


def parse_params(text: str | None) -> dict[str, Any]:
    """Expert parameters from a JSON object string (empty = none)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"expert_params: not valid JSON ({exc.msg} at character {exc.pos}); write e.g. {{\"beta_max\": 2.5}}") from None
    if not isinstance(value, dict):
        raise InputError("expert_params: expected a JSON object such as {\"beta_max\": 2.5}")
    return value


def metadata_of(result: SynthResult, kind: str, seed: int, mode: str, depth: str | None,
                source: str | None = None) -> list[dict[str, Any]]:
    """One JSON-able record per image: engine, type, strength, requested/achieved μ and σ (and how σ was
    chosen: requested, typical of real data, or free), seed, parameters, the source dataset of a
    GenDeg-style draw."""
    rows = []
    for i in range(result.image.shape[0]):
        rows.append({
            "engine": "synth",
            "type": kind,
            "intensity_mode": mode,
            **result.intensity_of(i),
            "seed": int(seed),
            "params": result.params_of(i),
            **({"depth": depth} if depth else {}),
            **({"source_dataset": source} if source else {}),
        })
    return rows


class GenDegSynthesize:
    DESCRIPTION = (
        "Degrade images with the physically based synthesizer (no weights; CPU or GPU): haze (atmospheric scattering "
        "with depth), rain streaks, snow, camera-shake motion blur, low light (exposure drop + sensor noise), "
        "raindrops on glass, JPEG, sensor noise, and GenDeg's mixed rain+haze / snow+haze (haze, then the rain or "
        "snow in front of it, one strength). Intensity is GenDeg's (mu, sigma) (mean and std of |clean - degraded| at "
        "256x256): the strength is searched per image until mu lands within the tolerance, and a second physical "
        "parameter of the type until sigma does; sigma 0 means the typical sigma of GenDeg's real data at that mu "
        "(the median), so results look like real data. Or a raw strength 0..1. Outputs the degraded images, the "
        "achieved mu and sigma, and JSON metadata for GenDeg Save Dataset Pairs."
    )
    CATEGORY = DEGRADE
    RETURN_TYPES = ("IMAGE", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("degraded", "mu", "sigma", "metadata")
    OUTPUT_TOOLTIPS = (
        "Degraded images, same size and channels as the input.",
        "Achieved GenDeg mu (mean over the batch).",
        "Achieved GenDeg sigma (mean over the batch).",
        "JSON: type, strength, requested/achieved mu and sigma, seed and every parameter (a list for a batch).",
    )
    FUNCTION = "synthesize"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Clean images (any size, grey/RGB/RGBA, batches)."}),
                "type": (list(TYPES), {"default": "haze", "tooltip": "Which degradation to synthesize."}),
                "intensity_mode": (["mu", "strength", "sigma"], {
                    "default": "mu",
                    "tooltip": "mu: reach GenDeg's mu (and sigma: the sigma input, 0 = typical of real data); strength: "
                    "use the strength and the default parameters directly (no calibration, sigma ignored); sigma: reach "
                    "the sigma input with the typical mu of real data at that sigma.",
                }),
                "mu": ("FLOAT", {
                    "default": 0.08, "min": 0.0, "max": 1.0, "step": 0.001,
                    "tooltip": "Target GenDeg mu = mean |clean - degraded| (0..1 units, at 256x256). Typical: "
                    + "; ".join(f"{k} {v['light']}/{v['medium']}/{v['heavy']}" for k, v in PRESETS.items())
                    + " (light/medium/heavy).",
                }),
                "strength": ("FLOAT", {
                    "default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Degradation strength 0..1 (0 = untouched), used when intensity_mode is strength.",
                }),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": "Random seed (streaks, drops, noise, trajectories, airlight)."}),
            },
            "optional": {
                "type_name": ("STRING", {
                    "forceInput": True,
                    "tooltip": "Overrides type when connected (e.g. the type output of GenDeg Degradation Plan).",
                }),
                "depth": ("IMAGE", {"tooltip": "Haze, rain+haze, snow+haze: depth map 0..1 from any depth node (see depth_near_is_bright). Without it a proxy is used."}),
                "depth_mask": ("MASK", {"tooltip": "Haze, rain+haze, snow+haze: depth map as a MASK (used when depth is not connected)."}),
                "source_dataset": ("STRING", {
                    "forceInput": True,
                    "tooltip": "The real dataset the intensity was drawn from (the dataset output of GenDeg Degradation "
                    "Plan in gendeg_sampling mode); recorded in the metadata.",
                }),
                "depth_near_is_bright": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Haze: true for inverse depth / disparity maps where near is bright (MiDaS, Depth Anything); false when far is bright.",
                }),
                "tolerance": ("FLOAT", {
                    "default": 0.005, "min": 0.0005, "max": 0.1, "step": 0.0005,
                    "tooltip": "mu mode: stop when |achieved mu - target| is at most this.",
                }),
                "expert_params": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Optional JSON object of physical parameters for the chosen type. Parameters and defaults: " + _params_help(),
                }),
                "sigma": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                    "tooltip": "Target GenDeg sigma = std of |clean - degraded| (0..1 units, at 256x256). 0: the typical "
                    "sigma of GenDeg's real data at the requested mu (the median; a default, clamped silently to what "
                    "the image allows). Reached by searching the type's second parameter (" + _sigma_help() + "); a "
                    "value outside what the image can reach at that mu is clamped with a warning. jpeg and noise have "
                    "no second parameter: leave 0.",
                }),
            },
        }

    def synthesize(
        self, image: torch.Tensor, type: str, intensity_mode: str, mu: float, strength: float, seed: int,
        type_name: str | None = None, depth: torch.Tensor | None = None, depth_mask: torch.Tensor | None = None,
        depth_near_is_bright: bool = True, tolerance: float = 0.005, expert_params: str = "", sigma: float = 0.0,
        source_dataset: str | None = None,
    ):
        kind = get(type_name if type_name else type).name
        device = host.torch_device()
        rgb, layout = to_rgb(from_comfy(image, device))
        params = parse_params(expert_params)
        depth_map, depth_src = None, None
        if REGISTRY[kind].uses_depth:  # haze and the mixed types with haze
            params.setdefault("depth_near_is_bright", bool(depth_near_is_bright))
            if depth is not None:
                depth_map, depth_src = from_comfy(depth, device, name="depth"), "image"
            elif depth_mask is not None:
                depth_map, depth_src = mask_to_bchw(depth_mask, device), "mask"
            else:
                depth_src = "proxy"
        if intensity_mode not in ("mu", "strength", "sigma"):
            raise InputError(f"intensity_mode must be mu, strength or sigma, got {intensity_mode!r}")
        sigma = float(sigma or 0.0)
        if intensity_mode == "sigma" and sigma <= 0:
            raise InputError("intensity_mode sigma needs a sigma above 0 (or set intensity_mode to mu)")
        with _threads_for(rgb):
            finish = grey_finish if layout.channels in (1, 2) else None  # measure what is output
            if intensity_mode == "strength":
                result = degrade_at_strength(rgb, kind, strength, seed, depth=depth_map, params=params, finish=finish)
            else:
                result = degrade_to_intensity(rgb, kind, mu if intensity_mode == "mu" else None,
                                              sigma if sigma > 0 else None, seed, depth=depth_map, params=params,
                                              tol=tolerance, progress=host.progress(22, f"synth {kind}"), finish=finish)
        out = to_comfy(restore_channels(result.image, layout))
        rows = metadata_of(result, kind, seed, intensity_mode, depth_src, source_dataset)
        meta = json.dumps(rows[0] if len(rows) == 1 else rows)
        stats = [{"mu": r["mu"], "sigma": r["sigma"], "strength": r["strength"]} for r in rows]
        return {
            "ui": ui.merge_ui(ui.stats_ui(stats), ui.compare_ui(image, out)),
            "result": (out, float(result.mu.mean()), float(result.sigma.mean()), meta),
        }


class GenDegMeasureIntensity:
    DESCRIPTION = (
        "GenDeg's intensity of a (clean, degraded) pair, exactly as the official code measures its training pairs: "
        "both as 8-bit RGB, resized to 256x256 with Lanczos, mu and sigma = mean and std of |clean - degraded| (0..1)."
    )
    CATEGORY = DEGRADE
    RETURN_TYPES = ("FLOAT", "FLOAT")
    RETURN_NAMES = ("mu", "sigma")
    OUTPUT_TOOLTIPS = ("Mean |clean - degraded| (mean over the batch).", "Std of |clean - degraded| (mean over the batch).")
    FUNCTION = "measure"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clean": ("IMAGE", {"tooltip": "Clean images."}),
                "degraded": ("IMAGE", {"tooltip": "Degraded images, paired with clean (sizes may differ: both are resized to 256x256)."}),
            }
        }

    def measure(self, clean: torch.Tensor, degraded: torch.Tensor):
        c, d = from_comfy(clean, name="clean"), from_comfy(degraded, name="degraded")
        if c.shape[0] != d.shape[0]:
            if 1 not in (c.shape[0], d.shape[0]):
                raise InputError(
                    f"clean has {c.shape[0]} images and degraded {d.shape[0]}; give equal batches or one clean image"
                )
            n = max(c.shape[0], d.shape[0])
            c, d = c.expand(n, -1, -1, -1), d.expand(n, -1, -1, -1)
        mu, sigma = measure_intensity(c, d)
        stats = [{"mu": float(m), "sigma": float(s)} for m, s in zip(mu, sigma, strict=True)]
        return {"ui": ui.stats_ui(stats), "result": (float(mu.mean()), float(sigma.mean()))}


class GenDegDegradationPlan:
    DESCRIPTION = (
        "Plan which degradations to make: types x intensities x seeds as a grid (sweeps), or random / balanced "
        "draws (datasets), or (mu, sigma) drawn as GenDeg's own dataset synthesis draws them from its real datasets "
        "(gendeg_sampling). Outputs lists, so the nodes downstream run once per planned item. Presets light / "
        "medium / heavy are GenDeg mu values per type from the 20th/50th/80th percentiles of GenDeg's training-set "
        "histograms (ours for jpeg and noise), each with the typical sigma of real data at that mu."
    )
    CATEGORY = "GenDeg/Dataset"
    RETURN_TYPES = ("STRING", "FLOAT", "INT", "STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("type", "mu", "seed", "label", "sigma", "dataset")
    OUTPUT_IS_LIST = (True, True, True, True, True, True)
    OUTPUT_TOOLTIPS = (
        "Degradation type per item (connect to type_name of GenDeg Synthesize or GenDeg Condition).",
        "Target GenDeg mu per item (connect to mu of GenDeg Synthesize or GenDeg Condition).",
        "Seed per item.",
        "Readable label per item (for GenDeg Contact Sheet).",
        "Target GenDeg sigma per item: drawn (gendeg_sampling) or the typical sigma of real data at that mu; 0 for "
        "jpeg and noise (connect to sigma of GenDeg Synthesize or GenDeg Condition).",
        "gendeg_sampling: the real dataset each (mu, sigma) was drawn from (connect to source_dataset of GenDeg "
        "Synthesize or GenDeg Condition to record it); empty otherwise.",
    )
    FUNCTION = "plan"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "types": ("STRING", {"default": "all", "tooltip": "Comma-separated types, or all: " + ", ".join(TYPES)}),
                "intensities": ("STRING", {
                    "default": "light,medium,heavy",
                    "tooltip": "Comma-separated presets (" + ", ".join(LEVELS) + ") and/or mu values such as 0.05.",
                }),
                "mode": (list(MODES), {
                    "default": "grid",
                    "tooltip": "grid: every combination in order; random: independent draws; balanced: every combination "
                    "equally often, shuffled; gendeg_sampling: (mu, sigma) drawn as GenDeg's dataset synthesis does (a "
                    "source dataset with the official weights, mu from its histogram, sigma from the real sigma at that "
                    "mu, every 20th draw uniform; types take turns; intensities are not used; ORD / CSD draws are "
                    "rain+haze / snow+haze).",
                }),
                "seeds": ("INT", {"default": 1, "min": 1, "max": 10000, "tooltip": "grid: seeds per combination (base_seed, base_seed+1, ...)."}),
                "count": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip": "random/balanced/gendeg_sampling: number of items (0 = one per combination x seeds; gendeg_sampling: one per type)."}),
                "base_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "First seed (grid) or the seed of the random draws."}),
            },
            "optional": {
                "filenames": ("STRING", {
                    "forceInput": True,
                    "tooltip": "random/balanced/gendeg_sampling: connect the filenames of GenDeg Load Image Folder to plan exactly one item "
                    "per image, aligned with the images (random: each file's choice depends only on its name and "
                    "base_seed; balanced and gendeg_sampling: on its position in the whole folder, so a `gendeg run --shard I/N` "
                    "plans exactly the unsharded run's items for its files).",
                }),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    INPUT_IS_LIST = True

    def plan(self, types: list[str], intensities: list[str], mode: list[str], seeds: list[int], count: list[int],
             base_seed: list[int], filenames: list[str] | None = None, prompt: list[Any] | None = None,
             unique_id: list[Any] | None = None):
        keys = [line for text in filenames for line in (str(text).splitlines() or [""])] if filenames else None
        if keys is not None and mode[0] == "grid":
            raise InputError("filenames only apply to random, balanced or gendeg_sampling mode (grid plans every combination); "
                             "set mode to balanced or disconnect filenames")
        positions = None
        if keys and mode[0] in ("balanced", "gendeg_sampling") and host.shard()[1] > 1:
            # this run loads one shard of the folder: plan each file as the unsharded run would
            start = _loader_start(prompt[0] if prompt else None, unique_id[0] if unique_id else None)
            positions = shard_positions(len(keys), host.shard(), start)
        items = make_plan(types[0], intensities[0], mode[0], int(seeds[0]), int(count[0]), int(base_seed[0]), keys,
                          positions)
        return ([i.type for i in items], [i.mu for i in items], [i.seed for i in items], [i.label for i in items],
                [i.sigma for i in items], [i.dataset for i in items])


def _loader_start(prompt: Any, unique_id: Any) -> int:
    """``start`` of the GenDeg Load Image Folder whose filenames feed plan node ``unique_id`` (0 if unknown).

    Shards keep the files whose index in the sorted folder is I modulo N, counted before the
    start window, so the shard's first file's position in the window depends on ``start``.
    """
    try:
        link = prompt[str(unique_id)]["inputs"]["filenames"]
        src = prompt[str(link[0])]
        if src.get("class_type") == "GenDegLoadImageFolder":
            start = src.get("inputs", {}).get("start", 0)
            return int(start) if isinstance(start, int | float) and not isinstance(start, bool) else 0
    except (KeyError, TypeError, IndexError, ValueError):
        pass
    return 0


class GenDegContactSheet:
    DESCRIPTION = "Lay a list or batch of images out as one labelled grid image (labels drawn under each tile)."
    CATEGORY = DEGRADE
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("sheet",)
    OUTPUT_TOOLTIPS = ("The contact sheet (RGB).",)
    FUNCTION = "sheet"
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Images: a list (e.g. one per planned item) and/or batches."}),
                "columns": ("INT", {"default": 3, "min": 1, "max": 64, "tooltip": "Tiles per row."}),
                "tile": ("INT", {"default": 256, "min": 32, "max": 2048, "tooltip": "Tile width in pixels (height keeps the aspect ratio)."}),
            },
            "optional": {
                "labels": ("STRING", {"forceInput": True, "tooltip": "One label per image, in order (e.g. the label output of GenDeg Degradation Plan)."}),
                "mu": ("FLOAT", {"forceInput": True, "tooltip": "Achieved mu per image (e.g. from GenDeg Synthesize), appended to the labels."}),
            },
        }

    def sheet(self, images: list[torch.Tensor], columns: list[int], tile: list[int], labels: list[str] | None = None,
              mu: list[float] | None = None):
        flat = [from_comfy(batch, name="images")[i] for batch in images for i in range(batch.shape[0])]
        names = [line for text in (labels or []) for line in (str(text).splitlines() or [""])]
        if mu:
            names += [""] * (len(flat) - len(names))
            names = [f"{n} -> {float(m):.3f}".strip() if k < len(mu) else n for k, (n, m) in
                     enumerate(zip(names, list(mu) + [0.0] * len(names), strict=False))]
        return (to_comfy(contact_sheet(flat, names, int(columns[0]), int(tile[0]))),)


def sample_names() -> list[str]:
    return [p.name for p in list_images(SAMPLES_DIR)] if SAMPLES_DIR.is_dir() else []


class GenDegSampleImage:
    DESCRIPTION = "One of the small sample images shipped with the pack (public domain; see samples/LICENSE.md), for trying graphs."
    CATEGORY = "GenDeg/Dataset"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "filename")
    OUTPUT_TOOLTIPS = ("The sample image (RGB, 0..1).", "Its file name.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = sample_names()
        return {"required": {"sample": (names, {"default": names[0] if names else "", "tooltip": "Which sample image."})}}

    def load(self, sample: str):
        if sample not in sample_names():
            raise InputError(f"unknown sample {sample!r}; choose one of {', '.join(sample_names())}")
        x = load_image(SAMPLES_DIR / sample, keep_alpha=False)
        return (to_comfy(x), sample)


NODE_CLASS_MAPPINGS = {
    "GenDegSynthesize": GenDegSynthesize,
    "GenDegMeasureIntensity": GenDegMeasureIntensity,
    "GenDegDegradationPlan": GenDegDegradationPlan,
    "GenDegContactSheet": GenDegContactSheet,
    "GenDegSampleImage": GenDegSampleImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegSynthesize": "GenDeg Synthesize (physical)",
    "GenDegMeasureIntensity": "GenDeg Measure Intensity",
    "GenDegDegradationPlan": "GenDeg Degradation Plan",
    "GenDegContactSheet": "GenDeg Contact Sheet",
    "GenDegSampleImage": "GenDeg Sample Image",
}
