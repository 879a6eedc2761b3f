"""The synthesizer reaches its own presets and the real-data μ range on real photos (issue 10, item 10).

Photos: the three shipped samples and two photos scikit-image ships with its package
(``skimage/data``, read from disk: no download), centre-cropped to 2:3 and resized to 128×192
so the five run as one batch. Targets: the light/medium/heavy presets of every type and, for
GenDeg's six types, the 95th percentile of μ in GenDeg's real training data (pooled histograms
``GenDeg/data/<type>/Mu_*.json`` of sudraj2002/GenDeg, all datasets of a type together, as
GenDeg's loader pools them; read off the 128-bin histograms with linear interpolation).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.synth import TYPES
from comfyui_gendeg.core.synth.calibrate import DEFAULT_TOL, degrade_to_mu
from comfyui_gendeg.core.synth.plan import LEVELS, PRESETS
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
skimage = pytest.importorskip("skimage")
SKDATA = Path(skimage.__file__).resolve().parent / "data"

PHOTOS = {
    "chelsea": ROOT / "samples" / "chelsea.png",
    "coffee": ROOT / "samples" / "coffee.png",
    "rocket": ROOT / "samples" / "rocket.png",
    "astronaut": SKDATA / "astronaut.png",
    "motorcycle": SKDATA / "motorcycle_left.png",
}

#: 95th percentile of μ in GenDeg's real data per type (pooled Mu_*.json histograms; datasets:
#: haze CityscapesFog, DenseHaze, I-HAZE, NH-HAZE, RESIDE; rain ORD, Rain13K, Rain1400, RainDS,
#: RealRain1k, SPAC; snow CSD, CityscapesSnow, Snow100k; motion blur HIDE, REDS, RealBlur;
#: low light LOLv2, SID; raindrop RainDS, Raindrop). No histograms exist for the mixed types.
REAL_MU_P95 = {"haze": 0.229, "rain": 0.228, "snow": 0.184, "motion_blur": 0.063, "low_light": 0.271, "raindrop": 0.092}

#: requests that are physically out of reach on one photo, kept as documented exceptions that
#: must be clamped *with the warning*: rocket is a dusk photo (mean 0.26 at 256², a smooth sky over
#: most of the frame). Darkening cannot take away more than its brightness minus the sensor-noise
#: floor (μ tops out at 0.199 = low light medium, just reached), and blurring a smooth sky changes little (μ 0.037 at a camera path
#: of half the frame).
OUT_OF_REACH = {("rocket", "low_light", "heavy"), ("rocket", "low_light", "p95"),
                ("rocket", "motion_blur", "heavy"), ("rocket", "motion_blur", "p95"), ("rocket", "raindrop", "p95")}


def load_photos(h: int = 128, w: int = 192) -> torch.Tensor:
    out = []
    for path in PHOTOS.values():
        img = Image.open(path).convert("RGB")
        iw, ih = img.size
        cw, ch = min(iw, ih * w // h), min(ih, iw * h // w)  # centre crop to w:h
        left, top = (iw - cw) // 2, (ih - ch) // 2
        img = img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return load_photos()


@pytest.mark.parametrize("kind", TYPES)
def test_presets_and_the_real_data_mu_range_are_reached_on_real_photos(photos, kind, caplog):
    targets = {level: PRESETS[kind][level] for level in LEVELS}
    if kind in REAL_MU_P95:
        targets["p95"] = REAL_MU_P95[kind]
    names = list(PHOTOS)
    for level, mu in targets.items():
        with caplog.at_level(logging.WARNING, logger="gendeg"):
            r = degrade_to_mu(photos, kind, mu, seed=0)
        for i, name in enumerate(names):
            achieved = float(r.mu[i])
            warned = [w for w in r.warnings if f"for image {i} " in w or f"image {i} reached" in w]
            if (name, kind, level) in OUT_OF_REACH:
                assert achieved < mu - DEFAULT_TOL, f"{name} {kind} {level}: expected out of reach, got {achieved:.4f}"
                assert warned and "outside the reachable range" in warned[0], r.warnings
            else:
                assert abs(achieved - mu) <= DEFAULT_TOL, f"{name} {kind} {level}: requested {mu}, achieved {achieved:.4f}"
                assert not warned, warned
