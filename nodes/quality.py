"""Quality nodes: full-reference and no-reference scores, IQA model loader, quality
perceiver, quality gate and score reports. Algorithms live in ``core/quality``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError
from ..core.image import from_comfy
from ..core.quality import api
from ..core.quality.report import append_rows, gate, parse_rules
from ..core.weights import resolve, safe_join
from . import host, ui

CATEGORY = "GenDeg/Quality"
IQA_KINDS = list(api.MODEL_KINDS)
DEFAULT_FILES = {
    "lpips-alex": ("tv-alexnet", "lpips-alex"),
    "lpips-vgg": ("tv-vgg16", "lpips-vgg"),
    "dists": ("tv-vgg16", "dists"),
    "niqe": ("niqe-pristine",),
    "perceiver": ("perceiver-prompts",),
}
NAN = float("nan")


def _names(filenames: str | None, n: int) -> list[str] | None:
    """File names from a STRING (one per line, or a single name for a single image)."""
    if not filenames or not str(filenames).strip():
        return None
    names = [s.strip() for s in str(filenames).splitlines() if s.strip()]
    return names if len(names) == n else (names * n if len(names) == 1 else None)


def _mean(scores: dict[str, torch.Tensor], key: str) -> float:
    v = scores.get(key)
    return float(v.double().mean()) if v is not None else NAN


#: Working memory per pixel (fp32 bytes) of the quality networks: VGG/AlexNet feature maps of
#: image and reference (LPIPS, DISTS), CLIP's vision tower at its 224 px input (CLIP-IQA ViT
#: variant, perceiver). CLIP-IQA's ResNet-50 runs at full resolution, one image at a time, with
#: about 512 bytes per input pixel (stem and layer1 activations, fp32).
_PER_PIXEL = 2048 * 4
_CLIP_PIXELS = 224 * 224
_RESNET_CLIP_BYTES_PER_PIXEL = 512


def _handle(model: api.IQAModel) -> host.ModelHandle | None:
    """The torch modules of an IQA model as one host-managed model (NIQE has none)."""
    if model.kind == "niqe":
        return None
    if model.kind == "clip-iqa":
        parts = {"clip": model.net.model}
    elif model.kind == "perceiver":
        parts = {"perceiver": model.net, "clip": model.net.clip.model}
    else:
        parts = {"net": model.net}
    return host.model_handle(model, parts, f"GenDeg IQA {model.kind}")


@contextmanager
def _placed(image: torch.Tensor, *models: Any) -> Iterator[tuple[torch.device, list[api.IQAModel]]]:
    """The compute device and the given models, placed there by the host for the ``with`` block."""
    chosen = [m for m in models if m is not None]
    b, h, w = image.shape[0], image.shape[1], image.shape[2]
    pixels = 0
    for m in chosen:
        if m.kind == "clip-iqa" and m.info.get("official"):
            pixels = max(pixels, -(-h * w * _RESNET_CLIP_BYTES_PER_PIXEL // _PER_PIXEL))
        elif m.kind in ("clip-iqa", "perceiver"):
            pixels = max(pixels, min(b, 32) * _CLIP_PIXELS)
        elif m.kind != "niqe":
            pixels = max(pixels, 2 * b * h * w)
    handles = [hd for hd in map(_handle, chosen) if hd is not None]
    with host.use_on_device(*handles, pixels=pixels, bytes_per_pixel=_PER_PIXEL) as dev:
        yield dev, chosen


def _outputs(scores: dict[str, torch.Tensor], names: list[str] | None, keys: tuple[str, ...],
             models: tuple[Any, ...] = ()) -> dict[str, Any]:
    table = api.format_table(scores, names, api.notes(models))
    records = api.rows(scores, names)
    result = (*(_mean(scores, k) for k in keys), table, json.dumps(records, allow_nan=True))
    return {"ui": ui.stats_ui([{k: v for k, v in r.items() if k != "file" and math.isfinite(v)} for r in records]),
            "result": result}


_METRIC_TIP = "Comma-separated metric names. {}"
_MODEL_TIP = "A model from GenDegIQALoader for {} (optional for the pixel metrics)."
_FILES_TIP = "Optional file name(s) (one per line) used to label the rows of the table and the scores JSON."
_SCORES_TIP = "JSON list with one record per image ({\"file\": ..., metric: value, ...}) for GenDegQualityGate and GenDegSaveScores."


class GenDegScoreReference:
    DESCRIPTION = (
        "Score images against their references: PSNR (dB, data range 1), SSIM, MS-SSIM (no weights; scikit-image/piq "
        "conventions), LPIPS and DISTS (connect an IQA model). Optional BT.601 Y channel and border crop as restoration "
        "papers report. One reference can score a whole batch. The FLOAT outputs are batch means (a metric not asked for "
        "gives NaN); the table and the scores JSON have every image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("psnr", "ssim", "ms_ssim", "lpips", "dists", "table", "scores")
    OUTPUT_TOOLTIPS = (
        "Mean PSNR in dB (higher is better; inf if identical).",
        "Mean SSIM (1 = identical).",
        "Mean MS-SSIM (1 = identical; needs 161 px or more).",
        "Mean LPIPS distance (lower is better).",
        "Mean DISTS (lower is better).",
        "A readable table: one row per image, plus the mean.",
        _SCORES_TIP,
    )
    FUNCTION = "score"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "Ground-truth image(s): one for all, or one per image."}),
                "image": ("IMAGE", {"tooltip": "Image(s) to score; same size and channel count as the reference."}),
                "metrics": ("STRING", {"default": "psnr,ssim", "tooltip": _METRIC_TIP.format("Any of psnr, ssim, ms_ssim, lpips, dists.")}),
                "y_channel": ("BOOLEAN", {"default": False, "tooltip": "PSNR/SSIM/MS-SSIM on BT.601 luma Y only (as most restoration papers)."}),
                "crop_border": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "Pixels removed from every border before PSNR/SSIM/MS-SSIM."}),
            },
            "optional": {
                "iqa_model": ("IQA_MODEL", {"tooltip": _MODEL_TIP.format("lpips or dists")}),
                "iqa_model_2": ("IQA_MODEL", {"tooltip": "A second model (e.g. DISTS next to LPIPS)."}),
                "filenames": ("STRING", {"forceInput": True, "tooltip": _FILES_TIP}),
            },
        }

    def score(self, reference, image, metrics="psnr,ssim", y_channel=False, crop_border=0, iqa_model=None, iqa_model_2=None, filenames=None):
        with _placed(image, iqa_model, iqa_model_2) as (dev, models):
            ref, img = from_comfy(reference, dev, "reference"), from_comfy(image, dev, "image")
            names = _names(filenames, img.shape[0])
            scores = api.score(img, api.parse_metrics(metrics), ref, models=models, y_channel=y_channel,
                               crop=crop_border, progress=host.progress(1, "score"))
        return _outputs(scores, names, ("psnr", "ssim", "ms_ssim", "lpips", "dists"))


class GenDegScoreNoReference:
    DESCRIPTION = (
        "Score images without a reference: PIQE (MATLAB piqe.m; no weights, 0..100, lower is better), NIQE (the authors' "
        "MATLAB features; a pristine model from GenDegIQALoader: the authors' or one fitted with `gendeg quality fit-niqe`), "
        "CLIP-IQA (the published ResNet-50 configuration, or a ViT variant marked * in the table as not comparable with "
        "published numbers) and the quality perceiver (CLIP models from GenDegIQALoader). FLOAT outputs are batch means "
        "(NaN when not asked for)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("piqe", "niqe", "clip_iqa", "perceiver", "table", "scores")
    OUTPUT_TOOLTIPS = (
        "Mean PIQE (0..100, lower is better).",
        "Mean NIQE (lower is better).",
        "Mean CLIP-IQA (0..1, higher is better). Comparable with published CLIP-IQA numbers only with the ResNet-50 "
        "CLIP (the table marks the ViT variant with *).",
        "Mean quality-perceiver score (0..1, higher is better).",
        "A readable table: one row per image, plus the mean.",
        _SCORES_TIP,
    )
    FUNCTION = "score"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Image(s) to score."}),
                "metrics": ("STRING", {"default": "piqe", "tooltip": _METRIC_TIP.format("Any of piqe, niqe, clip_iqa, perceiver.")}),
            },
            "optional": {
                "iqa_model": ("IQA_MODEL", {"tooltip": _MODEL_TIP.format("niqe, clip_iqa or perceiver")}),
                "iqa_model_2": ("IQA_MODEL", {"tooltip": "A second model (e.g. CLIP-IQA next to NIQE)."}),
                "filenames": ("STRING", {"forceInput": True, "tooltip": _FILES_TIP}),
            },
        }

    def score(self, image, metrics="piqe", iqa_model=None, iqa_model_2=None, filenames=None):
        with _placed(image, iqa_model, iqa_model_2) as (dev, models):
            img = from_comfy(image, dev, "image")
            names = _names(filenames, img.shape[0])
            scores = api.score(img, api.parse_metrics(metrics), models=models, progress=host.progress(1, "score"))
        return _outputs(scores, names, ("piqe", "niqe", "clip_iqa", "perceiver"), tuple(models))


class GenDegIQALoader:
    DESCRIPTION = (
        "Load a quality model from the models folder (models/gendeg/quality, CLIPs in models/gendeg/clip): LPIPS "
        "(AlexNet or VGG16 backbone + official heads), DISTS (VGG16 + alpha/beta), NIQE pristine model, CLIP-IQA or the "
        "quality perceiver (CLIP + prompts: Perceive-IR's official quality_prompts_*.pth with OpenAI's ViT-B/32 in Hugging Face "
        "layout, or a file of `gendeg train perceiver`). CLIP-IQA uses the published configuration "
        "(OpenAI's ResNet-50 CLIP, full resolution, no positional embedding) when clip/resnet50-clip-openai is present "
        "(`gendeg weights fetch clip-rn50-openai`), else the ViT CLIP folder named in 'clip' — a variant whose numbers are "
        "not comparable with published CLIP-IQA numbers. Files are the manifest's unless named; nothing is downloaded "
        "(`gendeg weights fetch ID` does that)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IQA_MODEL",)
    RETURN_NAMES = ("iqa_model",)
    OUTPUT_TOOLTIPS = ("The loaded model, for the score nodes and GenDegQualityPerceiver.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "kind": (IQA_KINDS, {"default": "lpips-alex", "tooltip": "Which quality model to load."}),
                "clip": ("STRING", {"default": "clip-vit-base-patch32", "tooltip": "CLIP folder (under models/gendeg/clip, or absolute) for the perceiver, and for clip-iqa when its ResNet-50 CLIP is absent (ViT variant: not comparable with published CLIP-IQA numbers)."}),
                "file": ("STRING", {"default": "", "tooltip": "Model file (relative to models/gendeg/quality — models/gendeg/clip for clip-iqa — or absolute); empty = the manifest's default. For LPIPS/DISTS the heads/alpha-beta file; for the perceiver the prompts (.safetensors of gendeg train perceiver, or Perceive-IR's quality_prompts_*.pth, e.g. perceive_ir/quality_prompts_100000.pth); for clip-iqa the ResNet-50 CLIP .safetensors (or a transformers CLIP folder for the ViT variant)."}),
                "backbone": ("STRING", {"default": "", "tooltip": "LPIPS/DISTS backbone checkpoint (torchvision layout); empty = the manifest's."}),
            }
        }

    def load(self, kind, clip="clip-vit-base-patch32", file="", backbone=""):
        dev = host.offload_device()  # the score nodes place it on the compute device while they run
        dirs = host.model_search_dirs("quality")
        defaults = DEFAULT_FILES.get(kind, ())
        if kind in ("lpips-alex", "lpips-vgg", "dists"):
            bb = resolve(backbone.strip() or defaults[0], dirs)
            head = resolve(file.strip() or defaults[1], dirs)
            model = api.load_lpips(kind[6:], bb, head, dev) if kind != "dists" else api.load_dists(bb, head, dev)
        elif kind == "niqe":
            model = api.load_niqe(resolve(file.strip() or defaults[0], dirs))
        elif kind == "clip-iqa":
            model = api.load_clip_iqa(_clip_iqa_source(file, clip), dev)
        else:
            model = api.load_perceiver_model(_clip_folder(clip), resolve(file.strip() or defaults[0], dirs), dev)
        return (model,)


#: The CLIP of CLIP-IQA's published configuration (manifest id).
CLIP_IQA_OFFICIAL = "clip-rn50-openai"


def _clip_iqa_source(file: str, clip: str) -> Path:
    """What CLIP-IQA runs on: ``file`` when given (the ResNet CLIP .safetensors, its folder, or a transformers
    CLIP folder), else the manifest's ResNet-50 CLIP when present, else the ViT folder ``clip`` (variant)."""
    from ..core.errors import MissingWeightError

    dirs = host.model_search_dirs("clip")
    name = (file or "").strip()
    if name:
        if not Path(name).is_absolute():
            for d in dirs:
                cand = safe_join(d, name)
                if cand.is_dir():
                    return cand
        return resolve(name, dirs)
    try:
        return resolve(CLIP_IQA_OFFICIAL, dirs)
    except MissingWeightError as official_missing:
        try:
            return _clip_folder(clip)
        except InputError:
            raise InputError(f"CLIP-IQA: no CLIP found. {official_missing} (Or name a transformers CLIP folder in 'clip' "
                             "for the ViT variant, whose numbers are not comparable with published CLIP-IQA numbers.)") from None


def _clip_folder(name: str) -> Path:
    name = (name or "").strip()
    if not name:
        raise InputError("clip: give a CLIP folder name (under models/gendeg/clip) or an absolute path")
    if Path(name).is_absolute():
        return Path(name)
    for d in host.model_search_dirs("clip"):
        cand = safe_join(d, name)
        if (cand / "config.json").is_file() or (cand.is_file() and cand.suffix.lower() in (".pt", ".pth", ".bin")):
            return cand  # a pickled file (OpenAI's ViT-B-32.pt) is refused by load_clip with a hint
    try:  # a manifest id whose first file is <folder>/config.json
        return resolve(name, host.model_search_dirs("clip")).parent
    except Exception:  # noqa: BLE001 - report the folder the user must fill
        raise InputError(
            f"CLIP folder {name!r} not found in {', '.join(map(str, host.model_search_dirs('clip')))}; "
            "fetch one with `gendeg weights fetch clip-vit-base-patch32` or give an absolute path"
        ) from None


class GenDegQualityPerceiver:
    DESCRIPTION = (
        "Perceive-IR quality perceiver: a frozen CLIP compares each image with three learned prompts (excellent, "
        "mediocre, terrible: the paper's official stage-1 prompts or your own); the probabilities are the softmax of the three similarities and the quality is the "
        "expected tier, 1·p_excellent + 0.5·p_mediocre + 0·p_terrible (0..1, higher is better). Outputs are batch "
        "means; the scores JSON has every image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("quality", "p_excellent", "p_mediocre", "p_terrible", "table", "scores")
    OUTPUT_TOOLTIPS = (
        "Mean expected tier (0..1).",
        "Mean probability of 'excellent'.",
        "Mean probability of 'mediocre'.",
        "Mean probability of 'terrible'.",
        "A readable table: one row per image, plus the mean.",
        _SCORES_TIP,
    )
    FUNCTION = "perceive"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Image(s) to judge."}),
                "iqa_model": ("IQA_MODEL", {"tooltip": "A perceiver from GenDegIQALoader (kind = perceiver)."}),
            },
            "optional": {"filenames": ("STRING", {"forceInput": True, "tooltip": _FILES_TIP})},
        }

    def perceive(self, image, iqa_model, filenames=None):
        if getattr(iqa_model, "kind", None) != "perceiver":
            raise InputError(f"iqa_model is {getattr(iqa_model, 'kind', type(iqa_model).__name__)!r}; load one with kind = perceiver")
        with _placed(image, iqa_model) as (dev, models):
            img = from_comfy(image, dev, "image")
            names = _names(filenames, img.shape[0])
            scores = api.score(img, ["perceiver"], models=models)
        return _outputs(scores, names, ("perceiver", "p_excellent", "p_mediocre", "p_terrible"))


def _records(scores: list[str]) -> list[list[dict]]:
    out = []
    for s in scores:
        try:
            recs = json.loads(s) if isinstance(s, str) else s
        except json.JSONDecodeError as exc:
            raise InputError(f"scores: not the JSON a GenDeg score node writes ({exc})") from exc
        if isinstance(recs, dict):
            recs = [recs]
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise InputError("scores: expected a JSON list of per-image records from a GenDeg score node")
        out.append(recs)
    return out


class GenDegQualityGate:
    DESCRIPTION = (
        "Keep or drop images by thresholds on any score (e.g. 'psnr >= 25, lpips <= 0.2', with all or any rule). Takes "
        "batches or lists (from GenDegLoadImageFolder) with the scores JSON of a score node, and outputs lists of single "
        "images: passed and dropped, plus the matching file names and an optional paired image (e.g. the clean partner) "
        "so pairs stay together when building datasets."
    )
    CATEGORY = CATEGORY
    INPUT_IS_LIST = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("passed", "dropped", "passed_filenames", "passed_paired", "report")
    OUTPUT_IS_LIST = (True, True, True, True, False)
    OUTPUT_TOOLTIPS = (
        "Images that pass (one list item each).",
        "Images that fail.",
        "File names of the passed images (from the scores JSON or the filenames input).",
        "The paired images of those that pass (empty when nothing is connected).",
        "How many passed and why the others were dropped.",
    )
    FUNCTION = "gate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Images (batches or a list) in the order of the scores."}),
                "scores": ("STRING", {"forceInput": True, "tooltip": "The scores JSON of a score node (one per images item)."}),
                "rules": ("STRING", {"default": "psnr >= 25", "multiline": True, "tooltip": "Thresholds, comma or newline separated: NAME OP VALUE with OP one of >= <= > < == !=."}),
                "mode": (["all", "any"], {"default": "all", "tooltip": "all: an image passes when every rule holds; any: when one does."}),
            },
            "optional": {
                "paired": ("IMAGE", {"tooltip": "Images travelling with `images` (e.g. the clean originals), gated the same way."}),
                "filenames": ("STRING", {"forceInput": True, "tooltip": "File names, when the scores JSON has none."}),
            },
        }

    def gate(self, images, scores, rules, mode, paired=None, filenames=None):
        rules_, mode_ = parse_rules(rules[0]), mode[0]
        flat = [img[i : i + 1] for img in images for i in range(img.shape[0])]
        records = [r for recs in _records(scores) for r in recs]
        if len(records) != len(flat):
            raise InputError(f"{len(flat)} images but {len(records)} score records; connect the scores of these very images")
        pairs = [p[i : i + 1] for p in (paired or []) for i in range(p.shape[0])]
        if pairs and len(pairs) not in (1, len(flat)):
            raise InputError(f"paired has {len(pairs)} images for {len(flat)} images; give one per image")
        names = [r.get("file") for r in records]
        if filenames and all(n is None for n in names):
            listed = [s.strip() for f in filenames for s in str(f).splitlines() if s.strip()]
            names = listed if len(listed) == len(flat) else names
        ok = gate(records, rules_, mode_)
        passed = [x for x, k in zip(flat, ok, strict=True) if k]
        dropped = [x for x, k in zip(flat, ok, strict=True) if not k]
        passed_names = [str(n if n is not None else i) for i, (n, k) in enumerate(zip(names, ok, strict=True)) if k]
        passed_pairs = [pairs[i if len(pairs) > 1 else 0] for i, k in enumerate(ok) if k] if pairs else []
        report = f"{len(passed)} of {len(flat)} passed ({mode_} of: {rules[0].strip()})"
        return {"ui": ui.stats_ui([{"passed": len(passed), "dropped": len(dropped)}]),
                "result": (passed, dropped, passed_names, passed_pairs, report)}


class GenDegSaveScores:
    DESCRIPTION = (
        "Append the per-image scores of score nodes to a CSV or JSONL report in the output folder (header written once; "
        "appends are locked and flushed, so several runs can share a file). Extra columns (e.g. the model used) can be "
        "added as JSON."
    )
    CATEGORY = CATEGORY
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report_path",)
    OUTPUT_TOOLTIPS = ("Path of the report file.",)
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scores": ("STRING", {"forceInput": True, "tooltip": "The scores JSON of a score node (a list of them is fine)."}),
                "report": ("STRING", {"default": "gendeg_scores.csv", "tooltip": "Report file relative to the output folder; .csv or .jsonl."}),
            },
            "optional": {
                "filenames": ("STRING", {"forceInput": True, "tooltip": "File names for rows whose scores have none."}),
                "extra": ("STRING", {"default": "", "tooltip": "JSON object of constant columns added to every row, e.g. {\"model\": \"nafnet\"}."}),
            },
        }

    def rows(self, scores, report, filenames=None, extra=None):
        """``(report path, rows)`` this call appends (a Ray job appends every batch's rows once, at the end)."""
        rows = [r for recs in _records(scores) for r in recs]
        listed = [s.strip() for f in (filenames or []) for s in str(f).splitlines() if s.strip()]
        consts = json.loads(extra[0]) if extra and extra[0].strip() else {}
        if not isinstance(consts, dict):
            raise InputError("extra: expected a JSON object like {\"model\": \"nafnet\"}")
        out = []
        for i, r in enumerate(rows):
            file = r.get("file") or (listed[i] if len(listed) == len(rows) else "")
            out.append({"file": file, **consts, **{k: v for k, v in r.items() if k != "file"}})
        return safe_join(host.output_dir(), report[0].strip() or "gendeg_scores.csv"), out

    def save(self, scores, report, filenames=None, extra=None):
        path, out = self.rows(scores, report, filenames, extra)
        path = append_rows(path, out)
        return {"ui": {"text": [f"{len(out)} rows -> {path}"]}, "result": (str(path),)}


NODE_CLASS_MAPPINGS = {
    "GenDegScoreReference": GenDegScoreReference,
    "GenDegScoreNoReference": GenDegScoreNoReference,
    "GenDegIQALoader": GenDegIQALoader,
    "GenDegQualityPerceiver": GenDegQualityPerceiver,
    "GenDegQualityGate": GenDegQualityGate,
    "GenDegSaveScores": GenDegSaveScores,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegScoreReference": "GenDeg Score vs Reference (PSNR/SSIM/LPIPS/DISTS)",
    "GenDegScoreNoReference": "GenDeg Score without Reference (PIQE/NIQE/CLIP-IQA)",
    "GenDegIQALoader": "GenDeg IQA Model Loader",
    "GenDegQualityPerceiver": "GenDeg Quality Perceiver (Perceive-IR)",
    "GenDegQualityGate": "GenDeg Quality Gate",
    "GenDegSaveScores": "GenDeg Save Scores (CSV/JSONL)",
}
