"""Validation of a GenDeg fine-tuning run: one fixed clean image degraded at three μ levels.

Every validation samples the EMA network (DDIM, ``validation.steps`` steps, guidance 7.5 /
1.5 by default) on the same clean image, type, caption and seed at three requested μ levels
(default: the 20th / 50th / 80th percentiles of the type's training pairs, σ likewise) and
measures the achieved (μ, σ) as GenDeg does. ``val.csv`` gets ``mu_target_i``, ``mu_i``,
``sigma_i`` and ``mu_abs_error`` (mean |achieved − requested|), plus ``val_loss`` (the
objective without dropout at fixed timesteps and noise) when pairs are held out;
``val/step_N.png`` shows clean | light | medium | heavy, labelled requested → achieved μ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...gendeg.conditioning import SIGMA_RANGE, TYPE_PHRASES, GenDegCondition, intensity_one_hots
from ...io import save_image
from ..data.datasets import center_crop, read_rgb8, to_float
from ..data.seeding import STREAM_VAL, generator
from .data import pair_intensity, squash


class GenDegValidator:
    def __init__(self, task: Any, samples: list[dict[str, Any]], folder: Path) -> None:
        self.task, self.samples, self.folder = task, list(samples), folder
        cfg = task.config.validation
        types: dict[str, Any] = task.summary.get("types", {})
        if cfg.image:
            self.image = to_float(read_rgb8(Path(cfg.image)))
        elif samples:
            self.image = samples[0]["gt"]
        elif task.summary.get("first_clean"):
            self.image = to_float(read_rgb8(Path(task.summary["first_clean"])))
        else:
            raise InputError("validation: no clean image; set validation.image")
        kind = cfg.type.strip().lower().replace(" ", "_").replace("-", "_") if cfg.type else ""
        if not kind:
            kind = max(types, key=lambda k: types[k]["pairs"]) if types else ""
        if kind not in types:
            raise InputError(f"validation.type {cfg.type!r} is not a type of the training pairs ({', '.join(types)})")
        info = types[kind]
        self.kind = kind
        self.phrase = "" if TYPE_PHRASES.get(kind) == info["phrase"] else info["phrase"]
        levels = [info[lvl] for lvl in ("light", "medium", "heavy")]
        if cfg.mu:
            mu_med, s_med = info["medium"]
            ratio = s_med / mu_med if mu_med > 0 else 0.5
            levels = [[float(m), min(SIGMA_RANGE[1], ratio * float(m))] for m in cfg.mu]
        self.levels = [(float(m), float(s)) for m, s in levels]

    def conditions(self) -> list[GenDegCondition]:
        cap = self.task.config.validation.caption
        return [GenDegCondition(self.kind, cap, mu, sigma, phrase=self.phrase) for mu, sigma in self.levels]

    @torch.no_grad()
    def run(self, net: torch.nn.Module, weights: Mapping[str, torch.Tensor], step: int, device: torch.device) -> dict[str, float]:
        """Scores of ``net`` with ``weights`` (the EMA of the trained entries); writes the image row."""
        from ...gendeg.sampler import sample
        from ...synth.sheet import contact_sheet

        cfg = self.task.config.validation
        live = net.state_dict()
        backup = {k: live[k].detach().to("cpu", copy=True) for k in weights}
        was_training = net.training
        net.load_state_dict(dict(weights), strict=False)
        net.eval()
        try:
            model = self.task.view(net, device)
            res = sample(model, self.image[None].to(device), self.conditions(), seed=cfg.seed, steps=cfg.steps,
                         scheduler="ddim", text_guidance=cfg.text_guidance, image_guidance=cfg.image_guidance,
                         resolution=cfg.resolution, batch_size=len(self.levels))
            row: dict[str, float] = {}
            for i, ((mu, _), got, sig) in enumerate(zip(self.levels, res.mu.tolist(), res.sigma.tolist(), strict=True), 1):
                row.update({f"mu_target_{i}": mu, f"mu_{i}": got, f"sigma_{i}": sig})
            row["mu_abs_error"] = sum(abs(row[f"mu_{i}"] - row[f"mu_target_{i}"]) for i in range(1, 4)) / 3
            if self.samples:
                row["val_loss"] = self.held_out_loss(net, device)
        finally:
            net.load_state_dict(backup, strict=False)
            net.train(was_training)
        labels = ["clean"] + [f"{self.kind} mu {m:.3f} -> {a:.3f}" for (m, _), a in zip(self.levels, res.mu.tolist(), strict=True)]
        sheet = contact_sheet([self.image.cpu(), *res.image.cpu()], labels, columns=4, tile=256)
        save_image(self.folder / f"step_{step:07d}.png", sheet[0])
        return row

    def held_out_loss(self, net: torch.nn.Module, device: torch.device) -> float:
        """The objective on the held-out pairs without dropout, at fixed timesteps and noise."""
        from .objective import eps_mse

        data = self.task.config.data
        total = 0.0
        for i, s in enumerate(self.samples):
            gt8, lq8 = (s["gt"] * 255).round().to(torch.uint8), (s["lq"] * 255).round().to(torch.uint8)
            if data.resize == "squash":
                mu, sigma = pair_intensity(gt8, lq8)
                gt8, lq8 = squash(gt8, data.size), squash(lq8, data.size)
            else:
                if gt8.shape != lq8.shape:
                    raise InputError(f"held-out pair {s['name']}: clean and degraded sizes differ (crop mode needs equal sizes)")
                gt8, lq8 = center_crop(gt8, data.size), center_crop(lq8, data.size)
                mu, sigma = pair_intensity(gt8, lq8)
            batch = {"clean": to_float(gt8.contiguous())[None].to(device), "degraded": to_float(lq8.contiguous())[None].to(device),
                     "prompt": [s["prompt"]], "one_hots": intensity_one_hots(mu, sigma)[None].to(device)}
            inp = self.task.inputs(net, batch, generator(self.task.config.seed, STREAM_VAL, i, device=device), uncond=0.0)
            total += float(eps_mse(net(inp.noisy, inp.image_latent, inp.t, inp.text, inp.one_hots), inp.noise))
        return total / len(self.samples)
