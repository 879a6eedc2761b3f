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
* Perceive-IR's official stage-1 prompts (``quality_prompts_*.pth``) load into the same
  model (:mod:`.perceive_ir_prompts`): their prompt has no template words, ``[SOS] v_1 … v_16
  [EOS] …`` (a fixed *frame* of stored start/end/padding token embeddings around the
  contexts, the text feature read at the end token), and images go to CLIP through a plain
  224×224 bicubic resize (``image_mode="resize"``) as the official image encoder does. Same
  outputs, same file format when saved (with the frame tensors).
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
from ..weights.safe_load import encode_metadata
from .clip import FrozenCLIP

log = logging.getLogger("gendeg")

TIERS = ("excellent", "mediocre", "terrible")
TIER_VALUES = (1.0, 0.5, 0.0)
TRIPLET_FOLDERS = ("gt", "restored", "degraded")
FORMAT = "gendeg-perceiver"


class QualityPerceiver(torch.nn.Module):
    """Frozen CLIP + learnable tier contexts ``ctx`` ``[3, n_ctx, W]``."""

    def __init__(self, clip: FrozenCLIP, n_ctx: int = 8, tiers: Sequence[str] = TIERS,
                 generator: torch.Generator | None = None, ctx: torch.Tensor | None = None,
                 frame: tuple[torch.Tensor, torch.Tensor] | None = None, eos: Sequence[int] | None = None,
                 image_mode: str = "crop") -> None:
        """``frame`` (prefix ``[T,p,W]``, suffix ``[T,s,W]``) with ``eos`` (per tier) replaces the
        template prompt by fixed token embeddings around the contexts (the official layout)."""
        super().__init__()
        self.clip = clip
        self.tiers = tuple(tiers)
        self.image_mode = image_mode
        width = clip.model.text_model.embeddings.token_embedding.weight.shape[1]
        if ctx is None:
            ctx = torch.randn(len(self.tiers), n_ctx, width, generator=generator) * 0.02
        if ctx.ndim != 3 or ctx.shape[0] != len(self.tiers) or ctx.shape[2] != width:
            raise WeightsError(f"prompt contexts have shape {tuple(ctx.shape)}, expected [{len(self.tiers)}, n_ctx, {width}]")
        self.ctx = torch.nn.Parameter(ctx.float().to(clip.device))
        self.frame: tuple[torch.Tensor, torch.Tensor] | None = None
        if frame is not None:
            prefix, suffix = (t.float().to(clip.device) for t in frame)
            n = len(self.tiers)
            if prefix.ndim != 3 or suffix.ndim != 3 or prefix.shape[0] != n or suffix.shape[0] != n or {prefix.shape[2], suffix.shape[2]} != {width}:
                raise WeightsError(f"prompt frame has shapes {tuple(prefix.shape)} / {tuple(suffix.shape)}, expected [{n}, *, {width}]")
            length = prefix.shape[1] + self.n_ctx + suffix.shape[1]
            if eos is None or len(eos) != n or not all(prefix.shape[1] + self.n_ctx <= int(e) < length for e in eos):
                raise WeightsError(f"prompt end-token positions {eos} do not lie in the frame's suffix (length {length})")
            clip.check_prompt_length(length)
            self.frame = (prefix, suffix)
            self._eos = torch.tensor([int(e) for e in eos])
            return
        # [SOS] X…X <tier> . [EOS]: the tokenizer gives [SOS] <tier> . [EOS]; contexts go after SOS.
        self._ids = []
        for ids in clip.tokenize([f"{t}." for t in self.tiers]):
            self._ids.append(ids[:1] + [ids[-1]] * n_ctx + ids[1:])  # placeholders replaced by ctx

    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[1])

    @property
    def layout(self) -> str:
        """``"template"`` (the pack's ``[SOS] ctx <tier> . [EOS]``) or ``"frame"`` (Perceive-IR's)."""
        return "template" if self.frame is None else "frame"

    def text_features(self) -> torch.Tensor:
        """``[3, D]`` unit-norm embeddings of the three learned prompts (differentiable in ``ctx``)."""
        if self.frame is not None:
            prefix, suffix = self.frame
            emb = torch.cat([prefix.to(self.ctx.device), self.ctx, suffix.to(self.ctx.device)], dim=1)
            return self.clip.encode_embeddings(emb, self._eos)
        return self.clip.encode_tokens(self._ids, context=self.ctx, context_at=1)

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` scaled cosine similarities of unit-norm image embeddings to the tier prompts."""
        txt = self.text_features()
        return self.clip.logit_scale.to(txt.device) * image_features.to(txt.device) @ txt.T

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` tier probabilities (excellent, mediocre, terrible) of ``[B,C,H,W]`` images in 0..1."""
        return self.logits(self.clip.image_features(image, mode=self.image_mode)).softmax(dim=-1)

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
            "image_mode": self.image_mode,
        }
        tensors = {"ctx": self.ctx.detach().float().cpu().contiguous()}
        if self.frame is not None:
            meta["layout"] = "frame"
            meta["eos"] = json.dumps(self._eos.tolist())
            tensors["frame_prefix"] = self.frame[0].detach().float().cpu().contiguous()
            tensors["frame_suffix"] = self.frame[1].detach().float().cpu().contiguous()
        meta.update(encode_metadata(extra or {}))
        path = Path(path)
        atomic_write_bytes(path, st_save(tensors, metadata=meta))
        return path


def load_perceiver(path: str | Path, clip: FrozenCLIP) -> QualityPerceiver:
    """Load learned prompts from ``path`` onto ``clip``; refuses files made for another CLIP architecture.

    ``path`` is a file of ``gendeg train perceiver`` (safetensors) or Perceive-IR's official
    ``quality_prompts_*.pth`` (read safely, see :mod:`.perceive_ir_prompts`).
    """
    from safetensors import safe_open

    from ..weights import load_safetensors
    from ..weights.safe_load import PICKLE_SUFFIXES

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        from .perceive_ir_prompts import load_official_prompts

        return load_official_prompts(path, clip)
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
    frame, eos = None, None
    if meta.get("layout") == "frame":
        if "frame_prefix" not in tensors or "frame_suffix" not in tensors or "eos" not in meta:
            raise WeightsError(f"{path.name}: a frame-layout prompt file without its frame tensors; convert the prompts again")
        frame, eos = (tensors["frame_prefix"], tensors["frame_suffix"]), json.loads(meta["eos"])
    return QualityPerceiver(clip, n_ctx=tensors["ctx"].shape[1], tiers=tiers, ctx=tensors["ctx"], frame=frame, eos=eos,
                            image_mode=meta.get("image_mode", "crop"))


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
