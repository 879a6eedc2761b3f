"""The quality perceiver of Perceive-IR: a frozen CLIP with three learned prompts.

* Prompts (CoOp-style): ``[SOS] v_1 … v_n <tier> . [EOS]`` for the tiers ``excellent``,
  ``mediocre``, ``terrible``; each tier has its own ``n_ctx`` learnable context vectors
  (``ctx`` ``[3, n_ctx, W]``, W the text width); CLIP itself stays frozen.
* Probabilities: p = softmax(s · cos(image, prompt_k)) over the three tiers, s = CLIP's
  logit scale. Scalar quality q = 1·p_excellent + 0.5·p_mediocre + 0·p_terrible (the
  expected tier on a 0..1 scale; higher is better).
* Training (:func:`train_prompts`): cross-entropy of those logits against the tier labels
  of (ground truth = excellent, restored = mediocre, degraded = terrible) triplets. Image
  embeddings are computed once (CLIP is frozen), so an epoch is three text passes.
* File: a small safetensors with ``ctx`` and metadata (tiers, CLIP name and config hash,
  training summary). Loading it against a CLIP of another architecture is refused.

Perceive-IR has no official code or weights; this follows the paper's description.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError, WeightsError
from ..io import atomic_write_bytes, list_images, load_image
from .clip import FrozenCLIP

log = logging.getLogger("gendeg")

TIERS = ("excellent", "mediocre", "terrible")
TIER_VALUES = (1.0, 0.5, 0.0)
TRIPLET_FOLDERS = ("gt", "restored", "degraded")
FORMAT = "gendeg-perceiver"


class QualityPerceiver(torch.nn.Module):
    """Frozen CLIP + learnable tier contexts ``ctx`` ``[3, n_ctx, W]``."""

    def __init__(self, clip: FrozenCLIP, n_ctx: int = 8, tiers: Sequence[str] = TIERS,
                 generator: torch.Generator | None = None, ctx: torch.Tensor | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.tiers = tuple(tiers)
        width = clip.model.text_model.embeddings.token_embedding.weight.shape[1]
        if ctx is None:
            ctx = torch.randn(len(self.tiers), n_ctx, width, generator=generator) * 0.02
        if ctx.ndim != 3 or ctx.shape[0] != len(self.tiers) or ctx.shape[2] != width:
            raise WeightsError(f"prompt contexts have shape {tuple(ctx.shape)}, expected [{len(self.tiers)}, n_ctx, {width}]")
        self.ctx = torch.nn.Parameter(ctx.float().to(clip.device))
        # [SOS] X…X <tier> . [EOS]: the tokenizer gives [SOS] <tier> . [EOS]; contexts go after SOS.
        self._ids = []
        for ids in clip.tokenize([f"{t}." for t in self.tiers]):
            self._ids.append(ids[:1] + [ids[-1]] * n_ctx + ids[1:])  # placeholders replaced by ctx

    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[1])

    def text_features(self) -> torch.Tensor:
        """``[3, D]`` unit-norm embeddings of the three learned prompts (differentiable in ``ctx``)."""
        return self.clip.encode_tokens(self._ids, context=self.ctx, context_at=1)

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` scaled cosine similarities of unit-norm image embeddings to the tier prompts."""
        txt = self.text_features()
        return self.clip.logit_scale.to(txt.device) * image_features.to(txt.device) @ txt.T

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` tier probabilities (excellent, mediocre, terrible) of ``[B,C,H,W]`` images in 0..1."""
        return self.logits(self.clip.image_features(image)).softmax(dim=-1)

    @torch.no_grad()
    def score(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quality ``[B]`` in 0..1, probabilities ``[B,3]``): quality = Σ p_k · (1, 0.5, 0)."""
        p = self.probabilities(image)
        values = torch.tensor(TIER_VALUES, device=p.device)
        return (p * values).sum(dim=-1), p

    # --- file --------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``ctx`` and metadata (tiers, CLIP name and config hash, ``extra``) as safetensors."""
        from safetensors.torch import save as st_save

        meta = {
            "format": FORMAT,
            "tiers": json.dumps(list(self.tiers)),
            "clip_name": self.clip.name,
            "clip_config_hash": self.clip.config_hash(),
            "n_ctx": str(self.n_ctx),
        }
        for k, v in (extra or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        path = Path(path)
        atomic_write_bytes(path, st_save({"ctx": self.ctx.detach().float().cpu().contiguous()}, metadata=meta))
        return path


def load_perceiver(path: str | Path, clip: FrozenCLIP) -> QualityPerceiver:
    """Load learned prompts from ``path`` onto ``clip``; refuses files made for another CLIP architecture."""
    from safetensors import safe_open

    from ..weights import load_safetensors

    path = Path(path)
    tensors = load_safetensors(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT or "ctx" not in tensors:
        raise WeightsError(
            f"{path.name}: not a quality-perceiver prompt file (expected format {FORMAT!r} with a 'ctx' tensor); "
            "make one with `gendeg train perceiver`"
        )
    want = meta.get("clip_config_hash")
    have = clip.config_hash()
    if want and want != have:
        raise WeightsError(
            f"{path.name}: these prompts were trained for CLIP {meta.get('clip_name', '?')!r} (config {want}), "
            f"but the loaded CLIP {clip.name!r} has config {have}; load the CLIP they were trained with"
        )
    if meta.get("clip_name") and meta["clip_name"] != clip.name:
        log.warning("[GenDeg] %s was trained with CLIP %r, loading it on %r (same architecture)", path.name, meta["clip_name"], clip.name)
    tiers = tuple(json.loads(meta.get("tiers", json.dumps(list(TIERS)))))
    return QualityPerceiver(clip, n_ctx=tensors["ctx"].shape[1], tiers=tiers, ctx=tensors["ctx"])


# --- training ------------------------------------------------------------------------


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    accuracy: float = 0.0
    mean_quality: dict[str, float] = field(default_factory=dict)


def find_triplets(root: str | Path) -> list[tuple[Path, Path, Path]]:
    """(gt, restored, degraded) files under ``root/gt``, ``root/restored``, ``root/degraded``
    matched by file name without suffix; names missing from any folder are skipped (logged)."""
    root = Path(root)
    missing = [d for d in TRIPLET_FOLDERS if not (root / d).is_dir()]
    if missing:
        raise InputError(
            f"{root}: triplet folder needs sub-folders gt/, restored/ and degraded/ with matching file names; "
            f"missing {', '.join(m + '/' for m in missing)}"
        )
    by = [{p.stem: p for p in list_images(root / d)} for d in TRIPLET_FOLDERS]
    names = sorted(set(by[0]) & set(by[1]) & set(by[2]))
    skipped = (set(by[0]) | set(by[1]) | set(by[2])) - set(names)
    if skipped:
        log.warning("[GenDeg] %d names are not in all three folders and are skipped (e.g. %s)", len(skipped), sorted(skipped)[0])
    if not names:
        raise InputError(f"{root}: no file name is present in all of gt/, restored/ and degraded/")
    return [(by[0][n], by[1][n], by[2][n]) for n in names]


def embed_triplet_folder(clip: FrozenCLIP, root: str | Path, progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings ``[3N, D]`` and tier labels ``[3N]`` of every triplet under ``root``."""
    triplets = find_triplets(root)
    feats, labels = [], []
    for i, files in enumerate(triplets):
        for label, f in enumerate(files):
            feats.append(clip.image_features(load_image(f)))
            labels.append(label)
        if progress is not None:
            progress(i + 1, len(triplets))
    return torch.cat(feats), torch.tensor(labels)


def train_prompts(perceiver: QualityPerceiver, features: torch.Tensor, labels: torch.Tensor, *, epochs: int = 200,
                  lr: float = 2e-3, batch_size: int = 256, weight_decay: float = 0.0,
                  generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Learn ``perceiver.ctx`` by cross-entropy on precomputed unit-norm image ``features``
    ``[N,D]`` with tier ``labels`` ``[N]`` (0 excellent, 1 mediocre, 2 terrible). Adam, mini-batches
    drawn with ``generator``; returns the mean loss of each epoch and the final accuracy."""
    if features.shape[0] == 0:
        raise InputError("no training images")
    if labels.shape[0] != features.shape[0]:
        raise InputError(f"{features.shape[0]} features but {labels.shape[0]} labels")
    device = perceiver.ctx.device
    features, labels = features.to(device), labels.to(device)
    opt = torch.optim.Adam([perceiver.ctx], lr=lr, weight_decay=weight_decay)
    result = TrainResult()
    n = features.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(perceiver.logits(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        result.losses.append(total / n)
        if progress is not None:
            progress(epoch + 1, epochs)
    with torch.no_grad():
        logits = perceiver.logits(features)
        result.accuracy = float((logits.argmax(dim=-1) == labels).float().mean())
        q = (logits.softmax(dim=-1) * torch.tensor(TIER_VALUES, device=device)).sum(dim=-1)
        for k, tier in enumerate(perceiver.tiers):
            sel = labels == k
            if sel.any():
                result.mean_quality[tier] = float(q[sel].mean())
    return result
