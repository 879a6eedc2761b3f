"""``gendeg score`` (metrics as JSON) and ``gendeg quality fit-niqe`` (NIQE pristine model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.errors import InputError
from ._args import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score images against a reference (or without one) and print JSON",
        description="Score IMG files against REF with the chosen metrics and print JSON (one record per image and the "
        "means; an infinite PSNR is written as the string \"inf\"). With only no-reference metrics (piqe, niqe, clip_iqa, perceiver) every path is an image to score. "
        "A clip_iqa from a ViT CLIP gets a \"notes\" entry: it is not comparable with published CLIP-IQA numbers. "
        "Model files come from the models folder (--models-dir, GENDEG_MODELS_DIR): quality/ and clip/.",
    )
    p.add_argument("paths", nargs="+", metavar="REF IMG", help="reference then image(s); only images for no-reference metrics")
    p.add_argument("--metrics", "-m", default="psnr,ssim", help="comma-separated: psnr,ssim,ms_ssim,lpips,dists,piqe,niqe,clip_iqa,perceiver")
    p.add_argument("--y-channel", action="store_true", help="PSNR/SSIM/MS-SSIM on BT.601 luma only")
    p.add_argument("--crop-border", type=int, default=0, metavar="N", help="pixels cropped from each border first")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default alex)")
    p.add_argument("--niqe-model", default="niqe-pristine", help="NIQE model: manifest id or file (default niqe-pristine)")
    p.add_argument("--clip", default="clip-vit-base-patch32",
                   help="transformers CLIP folder for the perceiver (name under clip/ or a path); clip_iqa falls back to it "
                   "(ViT variant, not comparable with published CLIP-IQA numbers) when the ResNet-50 CLIP is absent")
    p.add_argument("--clip-iqa-model", default="", metavar="FILE",
                   help="CLIP for clip_iqa: the ResNet-50 CLIP .safetensors (published configuration; default: the manifest's "
                   "clip-rn50-openai when present) or a transformers CLIP folder (ViT variant)")
    p.add_argument("--perceiver", default="perceiver-prompts",
                   help="perceiver prompts: manifest id or file under quality/ (a .safetensors of gendeg train perceiver, or "
                   "Perceive-IR's official quality_prompts_*.pth: perceive-ir-quality-prompts)")
    p.add_argument("--models-dir", help="models folder (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:1, mps (default: the best available)")
    p.set_defaults(func=run_score)

    q = sub.add_parser("quality", help="quality tools (fit a NIQE model)", description="Quality tools.")
    qs = q.add_subparsers(dest="quality_command", metavar="TOOL")
    f = qs.add_parser(
        "fit-niqe",
        help="fit a NIQE pristine model from clean images",
        description="Fit NIQE's pristine multivariate Gaussian (mu [36], cov [36,36]) on the sharpest 96x96 blocks of the "
        "clean images in FOLDER and write it as safetensors; or convert the authors' .mat with --from-mat.",
    )
    f.add_argument("folder", metavar="FOLDER", nargs="?", help="folder of clean, sharp images")
    f.add_argument("out", metavar="OUT.safetensors", help="where to write the model")
    f.add_argument("--from-mat", metavar="MAT", help="convert mu_prisparam/cov_prisparam from the authors' .mat instead (needs scipy)")
    f.add_argument("--block", type=int, default=96, help="block size (default 96, as the authors)")
    f.add_argument("--sharpness", type=finite_float, default=0.75, help="keep blocks sharper than this fraction of the sharpest (0.75)")
    f.add_argument("--recursive", action="store_true", help="also read sub-folders")
    f.set_defaults(func=run_fit_niqe)
    q.set_defaults(func=lambda a: (q.print_help(), 2)[1])


def _device(name: str | None):  # noqa: ANN202 - torch.device, imported lazily
    from ..core.device import parse_device

    return parse_device(name)


def _models_for(metrics: list[str], args: argparse.Namespace, device) -> list:
    from ..core.quality import api
    from ..core.weights import resolve
    from ..nodes import host

    if args.models_dir:
        host.SETTINGS.models_dir = Path(args.models_dir)
    qdirs = host.model_search_dirs("quality")
    models = []
    if "lpips" in metrics:
        bb = "tv-alexnet" if args.lpips_net == "alex" else "tv-vgg16"
        models.append(api.load_lpips(args.lpips_net, resolve(bb, qdirs), resolve(f"lpips-{args.lpips_net}", qdirs), device))
    if "dists" in metrics:
        models.append(api.load_dists(resolve("tv-vgg16", qdirs), resolve("dists", qdirs), device))
    if "niqe" in metrics:
        models.append(api.load_niqe(resolve(args.niqe_model, qdirs)))
    if "clip_iqa" in metrics or "perceiver" in metrics:
        from ..nodes.quality import _clip_folder, _clip_iqa_source

        if "clip_iqa" in metrics:
            models.append(api.load_clip_iqa(_clip_iqa_source(args.clip_iqa_model, args.clip), device))
        if "perceiver" in metrics:
            models.append(api.load_perceiver_model(_clip_folder(args.clip), resolve(args.perceiver, qdirs), device))
    return models


def run_score(args: argparse.Namespace) -> int:
    from ..core.errors import explain_out_of_memory
    from ..core.io import load_image
    from ..core.quality import api

    metrics = api.parse_metrics(args.metrics)
    needs_ref = any(m in api.FULL_REFERENCE for m in metrics)
    if needs_ref and len(args.paths) < 2:
        raise InputError("give a reference and at least one image: gendeg score REF IMG [IMG ...]")
    ref_path = args.paths[0] if needs_ref else None
    images = args.paths[1:] if needs_ref else args.paths
    device = _device(args.device)
    models = _models_for(metrics, args, device)
    ref = load_image(ref_path) if ref_path else None
    if ref is not None:
        with explain_out_of_memory("score", ref.shape[-1], ref.shape[-2], device=device):
            ref = ref.to(device)
    records = []
    for path in images:
        img = load_image(path)
        with explain_out_of_memory("score", img.shape[-1], img.shape[-2], device=device):
            s = api.score(img.to(device), metrics, ref, models=models, y_channel=args.y_channel, crop=args.crop_border,
                          progress=_progress_for(img, path))
        records.append({"file": path, **{k: float(v[0]) for k, v in s.items()}})
    keys = [k for k in records[0] if k != "file"]
    mean = {k: sum(r[k] for r in records) / len(records) for k in keys}
    out = {"reference": ref_path, "metrics": metrics, "y_channel": args.y_channel, "crop_border": args.crop_border,
           "images": records, "mean": mean}
    if api.notes(models):
        out["notes"] = api.notes(models)
    json.dump(_finite(out), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    return 0


#: Images from this many pixels on get a progress bar while they are scored.
PROGRESS_PIXELS = 4_000_000


def _progress_for(img, path: str):  # noqa: ANN202 - a progress callable or None
    """A progress bar (stderr; off with GENDEG_NO_PROGRESS=1) for a big image, else None."""
    if img.shape[-2] * img.shape[-1] < PROGRESS_PIXELS:
        return None
    from ..nodes import host

    return host.progress(1, f"score {Path(path).name}")


def _finite(obj):
    """Strict JSON: infinities (PSNR of identical images) become the strings "inf"/"-inf", NaN "nan"."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _niqe_source(path: Path):
    """An image for NIQE fitting with as little memory as possible: 8-bit files as uint8 arrays
    (a quarter of a float tensor), anything else (16-bit, float) through ``load_image``."""
    import numpy as np
    from PIL import Image

    from ..core.errors import GenDegError, image_memory_error
    from ..core.io import load_image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "LA", "RGB", "RGBA", "P"):
                return load_image(path)
            w, h = img.size
            if w * h > Image.MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {w}x{h} pixels is more than the {Image.MAX_IMAGE_PIXELS} pixel limit "
                                 "(a decompression bomb, or an image to downscale before loading)")
            bands = len(img.getbands())
            try:
                img.load()
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                return np.asarray(img)
            except MemoryError:
                pass  # raised below, once the partial buffers are released
        raise image_memory_error("load", w, h, bands)
    except GenDegError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        return load_image(path)  # it words the error


def run_fit_niqe(args: argparse.Namespace) -> int:
    from ..core.io import list_images
    from ..core.quality.niqe import fit_pristine, load_model, save_model

    if args.from_mat:
        mu, cov, block = load_model(args.from_mat)
        save_model(args.out, mu, cov, source=f"converted from {Path(args.from_mat).name}", block=block)
        print(json.dumps({"out": args.out, "source": args.from_mat, "block": block}))
        return 0
    if not args.folder:
        raise InputError("give a FOLDER of clean images (or --from-mat MAT)")
    if not 0 <= args.sharpness <= 1:
        raise InputError(f"--sharpness must be a fraction in 0..1 (the authors use 0.75), got {args.sharpness}")
    folder = Path(args.folder)
    files = list_images(folder, recursive=args.recursive)
    if not files:
        raise InputError(f"{folder}: no images found")
    mu, cov = fit_pristine((_niqe_source(f) for f in files), block=args.block, sharpness=args.sharpness)
    save_model(args.out, mu, cov, source=f"fitted on {len(files)} images of {folder.name}", block=args.block)
    print(json.dumps({"out": args.out, "images": len(files), "block": args.block}))
    return 0
