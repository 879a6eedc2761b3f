"""One entry point for every metric: names, directions, loaders and batched scoring.

Metric names (lower-case, as used by nodes and ``gendeg score --metrics``):

=========== ======== =============== ======================================
name        needs    range           better
=========== ======== =============== ======================================
psnr        ref      dB, inf if same higher
ssim        ref      -1..1           higher
ms_ssim     ref      0..1            higher
lpips       ref+net  ≥ 0             lower  (IQA_MODEL lpips-alex / lpips-vgg)
dists       ref+net  ≈ 0..1          lower  (IQA_MODEL dists)
piqe        —        0..100          lower
niqe        model    ≥ 0             lower  (IQA_MODEL niqe, or a fitted file)
clip_iqa    CLIP     0..1            higher (IQA_MODEL clip-iqa: ResNet-50 CLIP = published configuration;
                                            a ViT CLIP folder = variant, not comparable with published numbers)
perceiver   CLIP+p.  0..1            higher (IQA_MODEL perceiver; also p_excellent/p_mediocre/p_terrible)
=========== ======== =============== ======================================

Image size: psnr, ssim and ms_ssim read the images tile by tile (bounded memory, time linear in
the pixels, any size the loaders accept). lpips and dists run whole images through VGG16/AlexNet,
whose activations take about 1.8 KB (VGG) / 0.2 KB (AlexNet) per pixel; images above
:data:`NET_MEMORY_BUDGET` worth of them (2.3 MP for VGG, 19.5 MP for AlexNet) are refused with
a one-line error, because tiling would change their whole-image pooling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..weights import load_state_dict
from . import fullref
from .piqe import piqe

FULL_REFERENCE = ("psnr", "ssim", "ms_ssim", "lpips", "dists")
#: Full-reference metrics without weights, computed tile by tile (any image size).
PIXEL_METRICS = ("psnr", "ssim", "ms_ssim")
NO_REFERENCE = ("piqe", "niqe", "clip_iqa", "perceiver")
HIGHER_IS_BETTER = {
    "psnr": True, "ssim": True, "ms_ssim": True, "lpips": False, "dists": False,
    "piqe": False, "niqe": False, "clip_iqa": True, "perceiver": True,
    "p_excellent": True, "p_mediocre": False, "p_terrible": False,
}
#: Peak memory of one reference/image pair through the LPIPS/DISTS networks, bytes per pixel
#: (measured on the CPU at 512² and 1024², batch 1; about the same on a GPU).
NET_BYTES_PER_PIXEL = {"lpips-alex": 220, "lpips-vgg": 1800, "dists": 1850}
#: Memory LPIPS/DISTS may use per call: larger images are refused (4 GiB: 2.3 MP for the VGG
#: ones, e.g. 1536x1536; 19.5 MP for LPIPS-alex), batches are split to stay below it.
NET_MEMORY_BUDGET = 4 * 2**30
#: Metrics computed by an IQA_MODEL (kind -> metric name).
MODEL_KINDS = {"lpips-alex": "lpips", "lpips-vgg": "lpips", "dists": "dists", "niqe": "niqe",
               "clip-iqa": "clip_iqa", "perceiver": "perceiver"}


@dataclass
class IQAModel:
    """A loaded quality model (the ``IQA_MODEL`` type): what it computes and the object that does it."""

    kind: str
    net: Any
    files: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return MODEL_KINDS[self.kind]

    @property
    def needs_reference(self) -> bool:
        return self.metric in FULL_REFERENCE

    def to(self, device: torch.device | str) -> IQAModel:
        """Move the networks to ``device`` (NIQE's statistics follow the images)."""
        if self.kind == "perceiver":
            self.net.clip.to(device)
            self.net.to(device)
        elif self.kind != "niqe":
            self.net.to(device)
        return self

    def __call__(self, image: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Scores ``{name: [B]}`` of ``[B,C,H,W]`` images in 0..1 (``reference`` for lpips/dists)."""
        if self.needs_reference:
            if reference is None:
                raise InputError(f"{self.metric} compares against a reference image; connect one")
            return {self.metric: self.net(reference, image).cpu()}
        if self.kind == "niqe":
            from .niqe import niqe

            mu, cov, block = self.net
            return {"niqe": niqe(image, mu, cov, block=block).cpu()}
        if self.kind == "clip-iqa":
            from .clip_iqa import clip_iqa

            return {"clip_iqa": clip_iqa(self.net, image, tuple(self.info.get("prompts", ("Good photo.", "Bad photo.")))).cpu()}
        q, p = self.net.score(image)
        p = p.cpu()
        return {"perceiver": q.cpu(), "p_excellent": p[:, 0], "p_mediocre": p[:, 1], "p_terrible": p[:, 2]}


# --- loading ---------------------------------------------------------------------------


def load_lpips(net: str, backbone: str | Path, heads: str | Path, device: torch.device | str = "cpu",
               widths: Sequence[int] | None = None) -> IQAModel:
    """LPIPS (``net`` "alex" or "vgg") from a torchvision backbone checkpoint and the official heads file."""
    from .lpips import LPIPS

    m = LPIPS(net, widths=widths).load(load_state_dict(backbone), load_state_dict(heads)).to(device)
    return IQAModel(f"lpips-{net}", m, (str(backbone), str(heads)))


def load_dists(backbone: str | Path, weights: str | Path, device: torch.device | str = "cpu",
               widths: Sequence[int] | None = None) -> IQAModel:
    """DISTS from a torchvision VGG16 checkpoint and the official ``weights.pt`` (alpha, beta)."""
    from .dists import DISTS

    m = DISTS(widths=widths).load(load_state_dict(backbone), load_state_dict(weights)).to(device)
    return IQAModel("dists", m, (str(backbone), str(weights)))


def load_niqe(path: str | Path) -> IQAModel:
    """NIQE pristine model (``mu``, ``cov``) from our safetensors/npz or the authors' ``.mat``."""
    from .niqe import load_model

    return IQAModel("niqe", load_model(path), (str(path),))


def load_clip_iqa(source: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  prompts: tuple[str, str] = ("Good photo.", "Bad photo.")) -> IQAModel:
    """CLIP-IQA: ``source`` is the ResNet-50 CLIP ``.safetensors`` (the published configuration) or a
    transformers CLIP folder (the ViT variant, noted as not comparable with published numbers)."""
    from . import clip_iqa

    clip = clip_iqa.load(source, device, dtype)
    info = {"prompts": prompts, "official": clip_iqa.is_official(clip), "note": clip_iqa.variant_note(clip)}
    return IQAModel("clip-iqa", clip, (str(source),), info)


def notes(models: Sequence[IQAModel | None]) -> dict[str, str]:
    """``{metric: note}`` for scores that must not be read as the published metric (the ViT CLIP-IQA)."""
    return {m.metric: m.info["note"] for m in models if m is not None and m.kind == "clip-iqa" and not m.info.get("official", True)}


def load_perceiver_model(clip_folder: str | Path, prompts_file: str | Path, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> IQAModel:
    """Quality perceiver: a local CLIP folder plus the prompt file made by ``gendeg train perceiver``."""
    from .clip import load_clip
    from .perceiver import load_perceiver

    clip = load_clip(clip_folder, device, dtype)
    return IQAModel("perceiver", load_perceiver(prompts_file, clip), (str(clip_folder), str(prompts_file)))


# --- scoring ---------------------------------------------------------------------------


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """``"psnr, SSIM,ms-ssim"`` -> ``["psnr", "ssim", "ms_ssim"]`` (unknown names are an error)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for n in names:
        n = n.strip().lower().replace("-", "_")
        if not n:
            continue
        if n not in FULL_REFERENCE and n not in NO_REFERENCE:
            raise InputError(f"unknown metric {n!r}; choose from {', '.join(FULL_REFERENCE + NO_REFERENCE)}")
        if n not in out:
            out.append(n)
    if not out:
        raise InputError("no metric chosen; e.g. psnr,ssim")
    return out


def _model_for(metric: str, models: Sequence[IQAModel]) -> IQAModel:
    for m in models:
        if m is not None and m.metric == metric:
            return m
    kinds = [k for k, v in MODEL_KINDS.items() if v == metric]
    raise InputError(f"metric {metric!r} needs a loaded model ({' or '.join(kinds)}); connect a GenDegIQALoader")


def score(image: torch.Tensor, metrics: Sequence[str], reference: torch.Tensor | None = None, *,
          models: Sequence[IQAModel] = (), y_channel: bool = False, crop: int = 0, batch_size: int = 16,
          progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Every requested metric for ``[B,C,H,W]`` images in 0..1 -> ``{name: [B] float32 CPU}``.

    Full-reference metrics need ``reference`` (batch 1 or B, same size and channels).
    ``y_channel``/``crop`` apply to PSNR, SSIM and MS-SSIM; those three read the images in
    tiles, in bounded memory whatever their size. LPIPS and DISTS refuse images above
    :data:`NET_MAX_PIXELS`. Work is split in batches of ``batch_size``; ``progress(i, n)``
    reports the share done (every tile of the pixel metrics, every batch of the others).
    """
    metrics = list(metrics)
    if image.ndim != 4 or image.shape[0] == 0:
        raise InputError(f"image: expected a non-empty [B,C,H,W] batch, got shape {tuple(image.shape)}")
    needs_ref = [m for m in metrics if m in FULL_REFERENCE]
    if needs_ref and reference is None:
        raise InputError(f"{', '.join(needs_ref)} compare against a reference image; connect one (or pick no-reference metrics)")
    if reference is not None:
        from .common import check_pair

        # clear errors before any work; the pixel metrics check the values in their own pass
        check_pair(reference, image, values=not set(metrics) <= set(PIXEL_METRICS))
    nets = {m: _model_for(m, models) for m in metrics if m in ("lpips", "dists")}
    for model in nets.values():
        check_net_size(model.kind, image)
    b = image.shape[0]
    chunks = list(range(0, b, batch_size))
    steps = len(chunks) * len(metrics)
    out: dict[str, list[torch.Tensor]] = {}
    for ci, start in enumerate(chunks):
        img = image[start : start + batch_size]
        ref = None
        if reference is not None:
            ref = reference if reference.shape[0] == 1 else reference[start : start + batch_size]
            ref = ref.to(img.device)
        for mi, m in enumerate(metrics):
            step = ci * len(metrics) + mi
            if m in PIXEL_METRICS:
                fn = getattr(fullref, m)
                res = {m: fn(ref, img, y_channel=y_channel, crop=crop, progress=_share(progress, step, steps)).cpu()}
            elif m == "piqe":
                res = {"piqe": piqe(img).cpu()}
            elif m in nets:  # as many images per call as fit the memory budget
                per_call = max(1, NET_MEMORY_BUDGET // (img.shape[-2] * img.shape[-1] * NET_BYTES_PER_PIXEL[nets[m].kind]))
                parts = [nets[m](img[j : j + per_call], ref if ref.shape[0] == 1 else ref[j : j + per_call])[m]
                         for j in range(0, img.shape[0], per_call)]
                res = {m: torch.cat(parts)}
            else:
                res = _model_for(m, models)(img, ref)
            for k, v in res.items():
                out.setdefault(k, []).append(v.float())
            if progress is not None:
                progress((step + 1) * _SHARE, steps * _SHARE)
    return {k: torch.cat(v) for k, v in out.items()}


_SHARE = 100


def _share(progress: Callable[[int, int], None] | None, step: int, steps: int) -> Callable[[int, int], None] | None:
    """``progress`` for the ``step``-th of ``steps`` equal parts of a job, as ``_SHARE`` sub-steps."""
    if progress is None:
        return None
    return lambda i, n: progress(step * _SHARE + (_SHARE * i) // max(n, 1), steps * _SHARE)


def check_net_size(kind: str, image: torch.Tensor) -> None:
    """Refuse LPIPS/DISTS (model ``kind``) on images whose network activations would need more than
    :data:`NET_MEMORY_BUDGET`; their scores pool over the whole image, so tiles would change them."""
    h, w = image.shape[-2:]
    per_px = NET_BYTES_PER_PIXEL[kind]
    if h * w * per_px > NET_MEMORY_BUDGET:
        limit = NET_MEMORY_BUDGET // per_px
        side = math.isqrt(limit)
        raise InputError(
            f"{MODEL_KINDS[kind]} ({kind}) on {w}x{h} ({h * w / 1e6:.1f} MP) would need about {h * w * per_px / 2**30:.1f} GB "
            f"for its network; the limit is {limit / 1e6:.1f} MP per image (e.g. {side}x{side}): downscale or crop both "
            "images first (psnr, ssim and ms_ssim have no size limit)"
        )


def rows(scores: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per-image records ``[{"file": name, metric: value, ...}]`` (``file`` only when names are given)."""
    n = len(next(iter(scores.values()))) if scores else 0
    out = []
    for i in range(n):
        r: dict[str, Any] = {}
        if names is not None and i < len(names):
            r["file"] = names[i]
        r.update({k: float(v[i]) for k, v in scores.items()})
        out.append(r)
    return out


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def format_table(scores: Mapping[str, torch.Tensor], names: Sequence[str] | None = None,
                 notes: Mapping[str, str] | None = None) -> str:
    """A readable fixed-width table: one row per image plus a mean row; arrows say which way is better.

    ``notes`` (metric -> text) mark a column with ``*`` and add the text under the table.
    """
    if not scores:
        return "(no scores)"
    notes = {k: v for k, v in (notes or {}).items() if k in scores}
    metrics = list(scores)
    n = len(scores[metrics[0]])
    labels = [str(names[i]) if names is not None and i < len(names) else f"#{i}" for i in range(n)]
    heads = ["image"] + [f"{m}{'*' if m in notes else ''}{'↑' if HIGHER_IS_BETTER.get(m, True) else '↓'}" for m in metrics]
    body = [[labels[i]] + [_fmt(float(scores[m][i])) for m in metrics] for i in range(n)]
    if n > 1:
        body.append(["mean"] + [_fmt(float(scores[m].double().mean())) for m in metrics])
    widths = [max(len(r[j]) for r in [heads, *body]) for j in range(len(heads))]
    line = lambda r: "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    return "\n".join([line(heads), *(line(r) for r in body), *(f"* {m}: {t}" for m, t in notes.items())])
