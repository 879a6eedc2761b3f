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
NO_REFERENCE = ("piqe", "niqe", "clip_iqa", "perceiver")
HIGHER_IS_BETTER = {
    "psnr": True, "ssim": True, "ms_ssim": True, "lpips": False, "dists": False,
    "piqe": False, "niqe": False, "clip_iqa": True, "perceiver": True,
    "p_excellent": True, "p_mediocre": False, "p_terrible": False,
}
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
    ``y_channel``/``crop`` apply to PSNR, SSIM and MS-SSIM. Work is split in batches of
    ``batch_size``; ``progress(i, n)`` is called after each.
    """
    metrics = list(metrics)
    if image.ndim != 4 or image.shape[0] == 0:
        raise InputError(f"image: expected a non-empty [B,C,H,W] batch, got shape {tuple(image.shape)}")
    needs_ref = [m for m in metrics if m in FULL_REFERENCE]
    if needs_ref and reference is None:
        raise InputError(f"{', '.join(needs_ref)} compare against a reference image; connect one (or pick no-reference metrics)")
    if reference is not None:
        from .common import check_pair

        check_pair(reference, image)  # clear errors before any work
    b = image.shape[0]
    chunks = list(range(0, b, batch_size))
    out: dict[str, list[torch.Tensor]] = {}
    for ci, start in enumerate(chunks):
        img = image[start : start + batch_size]
        ref = None
        if reference is not None:
            ref = reference if reference.shape[0] == 1 else reference[start : start + batch_size]
            ref = ref.to(img.device)
        for m in metrics:
            if m in ("psnr", "ssim", "ms_ssim"):
                fn = getattr(fullref, m)
                res = {m: fn(ref, img, y_channel=y_channel, crop=crop).cpu()}
            elif m == "piqe":
                res = {"piqe": piqe(img).cpu()}
            else:
                res = _model_for(m, models)(img, ref)
            for k, v in res.items():
                out.setdefault(k, []).append(v.float())
        if progress is not None:
            progress(ci + 1, len(chunks))
    return {k: torch.cat(v) for k, v in out.items()}


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
