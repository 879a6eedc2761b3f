"""Training Perceive-IR's restorer (``model.arch: perceive_ir``) with its own objective.

Per micro-batch (``lq``, ``gt``, ``positive_lq``: another crop of each degraded image, and the
degradation ``type`` of each sample)::

    s = DINOv2(lq)                                  # frozen: CLS tokens of hidden states 1, 4, 8, 12
    out, a, p = net(lq, s, positive_image=positive_lq)   # a, p: CFE features [B,128]
    terms = the configured losses on (out, gt, lq) with features {cfe: a, cfe_positive: p, labels: type}

with the release's loss weights in ``configs/train/perceive_ir.yaml``: l1 1, infonce 0.1,
clip_quality 0.05, dpl 0.1. DINOv2 is a frozen helper on the training device: it is not in the
network's parameters, the optimizer, the checkpoints or the exported file (the release's
checkpoints hold the restorer alone). Validation restores as the release's test does
(replicate-pad to 8, DINOv2 of the padded image, crop, clamp). The export is the pack's
Perceive-IR safetensors (``gendeg.perceive_ir`` header), read by ``GenDegPerceiveIRLoader``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..restore.nets.perceive_ir import MULTIPLE, DinoGuidance, PerceiveIRConfig, load_dino_guidance
from ..restore.perceive_ir import find_dinov2, save_pack
from .engine import RestorerTask, StepContext

log = logging.getLogger("gendeg")


def type_labels(types: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer labels ``[B]`` of degradation type names, equal exactly when the names are (stable across processes)."""
    return torch.tensor([zlib.crc32(str(t).encode("utf-8")) for t in types], dtype=torch.long, device=device)


class PerceiveIRTask(RestorerTask):
    """A :class:`RestorerTask` whose network takes DINOv2 guidance and returns CFE features too."""

    name = "perceive_ir"
    positive_crops = True

    def __init__(self, config: Any, models_dir: Path) -> None:
        super().__init__(config, models_dir)
        self.guidance: DinoGuidance | None = None

    def network_config(self) -> PerceiveIRConfig:
        o = self.options
        return PerceiveIRConfig(o["dim"], list(o["blocks"]), list(o["heads"]), o["refinement_blocks"], o["semantic_dim"])

    def setup(self, device: torch.device) -> None:
        super().setup(device)  # the losses
        folder = find_dinov2(self.options.get("dinov2", "dinov2-base"), [Path(self.models_dir) / "restore"])
        self.guidance = load_dino_guidance(folder, device)
        if self.guidance.hidden_size != self.options["semantic_dim"]:
            raise InputError(f"config: model.options.semantic_dim is {self.options['semantic_dim']} but the DINOv2 in {folder} "
                             f"has hidden size {self.guidance.hidden_size}; set them equal (768 for dinov2-base)")
        if "infonce" in self.losses and self.config.data.source == "folders":
            log.warning("[GenDeg] data.source folders has no degradation types: every pair counts as one type, so the "
                        "InfoNCE term has no negatives (it stays 0); use a pack dataset or the on-the-fly source")

    def semantics(self, lq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert self.guidance is not None, "setup() loads the DINOv2 guidance"
        return self.guidance(lq.to(self.guidance.mean.device))

    def loss_terms(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        from .losses import LossBatch

        lq, gt = batch["lq"], batch["gt"]  # [B,3,h,w] 0..1, h and w multiples of 8
        if lq.shape[-1] % MULTIPLE or lq.shape[-2] % MULTIPLE:
            raise InputError(f"config: data.crop must be a multiple of {MULTIPLE} for perceive_ir, got {lq.shape[-1]}")
        with ctx.autocast():
            semantics = self.semantics(lq)
            restored, cfe, cfe_positive = model(lq, semantics, positive_image=batch["positive_lq"])
        features = {"cfe": cfe.float(), "cfe_positive": cfe_positive.float(), "labels": type_labels(batch["type"], lq.device)}
        lb = LossBatch(out=restored.float(), gt=gt, lq=lq, step=ctx.step, generator=ctx.generator, features=features)
        terms: dict[str, torch.Tensor] = {}
        for weight, loss_fn in self.losses.values():
            for term, value in loss_fn(lb).items():
                terms[term] = weight * value.float()
        return terms

    @torch.no_grad()
    def restore(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """The release's test procedure: replicate-pad to 8, DINOv2 of the padded image, crop, clamp."""
        h, w = lq.shape[-2:]
        x = F.pad(lq, (0, (-w) % MULTIPLE, 0, (-h) % MULTIPLE), mode="replicate")
        out, _, _ = net(x, self.semantics(x))
        return out[..., :h, :w].clamp(0, 1)

    def export(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        return save_pack(path, weights, self.network_config(), extra=metadata)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "gendeg.dinov2": str(self.options.get("dinov2", "dinov2-base"))}


__all__ = ["PerceiveIRTask", "type_labels"]
