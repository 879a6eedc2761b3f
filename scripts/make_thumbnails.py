"""Render the template thumbnails ``workflows/<name>.jpg`` the editor shows in its template browser.

Each thumbnail is an illustration made with the weight-free synthesizer from a shipped
sample: left the input the workflow starts from, right what it is about (degraded or
"restored" = clean), with a caption. Run from the repository root after adding a workflow:

    python scripts/make_thumbnails.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from comfyui_gendeg.core.io import load_image, tensor_to_pil
from comfyui_gendeg.core.synth import synthesize
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256

#: workflow stem -> (sample, degradation, strength, left label, right label, degraded side)
PLAN = {
    "gendeg_synth_sweep": ("chelsea.png", "rain", 0.5, "clean", "every type x intensity", "right"),
    "gendeg_synth_dataset": ("coffee.png", "haze", 0.5, "clean", "paired dataset", "right"),
    "gendeg_synth_gendeg_sampling": ("chelsea.png", "snow", 0.5, "clean", "GenDeg-style draws", "right"),
    "gendeg_gendeg_degrade": ("chelsea.png", "haze", 0.6, "clean", "GenDeg haze", "right"),
    "gendeg_gendeg_sweep": ("rocket.png", "low_light", 0.6, "clean", "GenDeg sweep", "right"),
    "gendeg_gendeg_dataset": ("coffee.png", "snow", 0.5, "clean", "GenDeg dataset", "right"),
    "gendeg_restore_irsde": ("rocket.png", "rain", 0.6, "rain", "IR-SDE", "left"),
    "gendeg_restore_daclip": ("chelsea.png", "haze", 0.6, "haze", "DA-CLIP", "left"),
    "gendeg_restore_perceive_ir": ("chelsea.png", "haze", 0.5, "haze", "Perceive-IR + scores", "left"),
    "gendeg_restore_feedforward": ("coffee.png", "noise", 0.6, "noise", "NAFNet", "left"),
    "gendeg_restore_compare_loop": ("chelsea.png", "noise", 0.5, "noise", "3 restorers scored", "left"),
    "gendeg_restore_driftrec": ("coffee.png", "jpeg", 0.95, "JPEG q10", "DriftRec vs FBCNN", "left"),
    "gendeg_quality_folder_csv": ("coffee.png", "jpeg", 0.8, "reference", "scored -> CSV", "right"),
    "gendeg_quality_degrade_restore_score": ("rocket.png", "noise", 0.5, "noise", "restored + scored", "left"),
    "gendeg_quality_dataset_gate": ("chelsea.png", "haze", 0.4, "clean", "quality gate", "right"),
}


def _square(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="area")


def thumbnail(sample: str, kind: str, strength: float, left: str, right: str, degraded_side: str) -> Image.Image:
    clean = _square(load_image(ROOT / "samples" / sample, keep_alpha=False))
    degraded = synthesize(clean, kind, strength, seed=1)
    a, b = (clean, degraded) if degraded_side == "right" else (degraded, clean)
    half = SIZE // 2
    canvas = torch.cat([a[..., :half], b[..., half:]], dim=-1)
    img = tensor_to_pil(canvas).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.line([(half, 0), (half, SIZE)], fill=(255, 255, 255), width=2)
    for text, x in ((left, 6), (right, half + 6)):
        draw.rectangle([x - 3, SIZE - 20, x + 7 * len(text) + 3, SIZE - 5], fill=(0, 0, 0))
        draw.text((x, SIZE - 19), text, fill=(255, 255, 255))
    return img


def main() -> None:
    workflows = sorted((ROOT / "workflows").glob("*.json"))
    missing = [w.stem for w in workflows if w.stem not in PLAN]
    if missing:
        raise SystemExit(f"add a thumbnail plan for: {', '.join(missing)}")
    for wf in workflows:
        img = thumbnail(*PLAN[wf.stem])
        img.save(wf.with_suffix(".jpg"), quality=85)
        print(wf.with_suffix(".jpg").relative_to(ROOT))


if __name__ == "__main__":
    main()
