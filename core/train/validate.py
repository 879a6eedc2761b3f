"""Validation during training: the EMA network on the fixed held-out pairs.

PSNR and SSIM (the pack's metrics, RGB, no border crop) per image, averaged; LPIPS (AlexNet)
when its weights are in the models folder; and once, for reference, the same scores of the
degraded inputs (``psnr_input`` …: what doing nothing scores). An image grid
``val/step_N.png`` shows the first pairs as rows: degraded | restored | ground truth.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import GenDegError
from ..io import save_image
from ..quality.fullref import psnr, ssim

log = logging.getLogger("gendeg")

GRID_ROWS = 4


class Validator:
    def __init__(self, samples: Sequence[Mapping[str, Any]], folder: Path,
                 restore: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], models_dir: Path | None = None) -> None:
        """``restore(net, lq [1,3,H,W] 0..1) -> [1,3,H,W] 0..1``: how the task restores one image."""
        self.samples, self.folder, self.restore, self.models_dir = list(samples), folder, restore, models_dir
        self._lpips: Any = None
        self._lpips_tried = False
        self._baseline: dict[str, float] | None = None

    def _lpips_model(self, device: torch.device) -> Any:
        if not self._lpips_tried:
            self._lpips_tried = True
            if self.models_dir is not None:
                try:
                    from ..quality.api import load_lpips
                    from ..weights import resolve

                    dirs = [self.models_dir / "quality"]
                    self._lpips = load_lpips("alex", resolve("tv-alexnet", dirs), resolve("lpips-alex", dirs), device)
                except GenDegError:
                    log.info("[GenDeg] validation without LPIPS: its weights are not in %s "
                             "(gendeg weights fetch tv-alexnet; gendeg weights fetch lpips-alex)", self.models_dir / "quality")
        return self._lpips

    def _scores(self, out: torch.Tensor, gt: torch.Tensor, device: torch.device) -> dict[str, float]:
        row = {"psnr": float(psnr(gt, out)[0]), "ssim": float(ssim(gt, out)[0]) if min(gt.shape[-2:]) >= 11 else float("nan")}
        lp = self._lpips_model(device)
        if lp is not None:
            row["lpips"] = float(lp(out, gt)["lpips"][0])
        return row

    def run(self, net: torch.nn.Module, weights: Mapping[str, torch.Tensor], step: int, device: torch.device) -> dict[str, float]:
        """Scores of the network with ``weights`` (the EMA) on every validation pair; writes the grid."""
        model = copy.deepcopy(net)
        # ``weights`` holds the trained entries (EMA); frozen ones (e.g. DriftRec's Fourier W) stay as in ``net``
        model.load_state_dict({**net.state_dict(), **weights})
        model.eval()
        rows: list[dict[str, float]] = []
        base_rows: list[dict[str, float]] = []
        grid: list[torch.Tensor] = []
        for i, s in enumerate(self.samples):
            lq = s["lq"][None].to(device)
            gt = s["gt"][None].to(device)
            with torch.no_grad():
                out = self.restore(model, lq).float().clamp(0, 1)
            rows.append(self._scores(out, gt, device))
            if self._baseline is None:
                base_rows.append(self._scores(lq, gt, device))
            if i < GRID_ROWS:
                grid.append(torch.cat([lq, out, gt], dim=-1).cpu())
        del model
        result = _mean(rows)
        if self._baseline is None:
            self._baseline = {f"{k}_input": v for k, v in _mean(base_rows).items()}
        result.update(self._baseline)
        if grid:
            width = max(g.shape[-1] for g in grid)
            padded = [torch.nn.functional.pad(g, (0, width - g.shape[-1])) for g in grid]
            save_image(self.folder / f"step_{step:07d}.png", torch.cat(padded, dim=-2)[0])
        return result


def _mean(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = list(rows[0]) if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
