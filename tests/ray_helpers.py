"""Shared by the Ray tests: a small mixed-size image folder, a folder-driven prompt using every
writer (dataset pairs, scores as CSV and JSONL, SaveImage, a quality gate, a balanced plan),
and a snapshot of an output folder that ignores only the records' ``created`` timestamps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: Mixed sizes on purpose: Ray Data's own image reader needs one size; the workers decode.
SIZES = [(40, 32), (48, 36), (32, 32), (56, 40), (36, 44), (40, 40)]


def make_folder(input_dir: Path) -> Path:
    folder = input_dir / "clean"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        img = np.clip(0.6 * base + 0.4 * rng.random((h, w, 3)) * 255, 0, 255).astype("uint8")
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def every_writer_prompt() -> dict:
    """Folder → balanced plan → synthesize → pairs; scores → CSV + JSONL; gate → SaveImage + gated pairs."""
    return {
        "1": {"class_type": "GenDegLoadImageFolder", "inputs": {"folder": "clean", "pattern": "*", "recursive": False,
                                                                 "start": 0, "limit": 0, "output": "list"}},
        "2": {"class_type": "GenDegDegradationPlan", "inputs": {"types": "haze,noise,low_light", "intensities": "light,heavy",
                                                                 "mode": "balanced", "seeds": 1, "count": 0, "base_seed": 3,
                                                                 "filenames": ["1", 2]}},
        "3": {"class_type": "GenDegSynthesize", "inputs": {"type": "haze", "intensity_mode": "mu", "mu": ["2", 1],
                                                            "strength": 0.5, "seed": ["2", 2], "depth_near_is_bright": True,
                                                            "tolerance": 0.005, "expert_params": "", "image": ["1", 0],
                                                            "type_name": ["2", 0]}},
        "4": {"class_type": "GenDegSaveDatasetPairs", "inputs": {"dataset": "pairs", "image_format": "png", "seed": ["2", 2],
                                                                  "clean": ["1", 0], "degraded": ["3", 0],
                                                                  "filename": ["1", 2], "metadata": ["3", 3]}},
        "5": {"class_type": "GenDegScoreReference", "inputs": {"metrics": "psnr,ssim", "y_channel": False, "crop_border": 0,
                                                                "reference": ["1", 0], "image": ["3", 0],
                                                                "filenames": ["1", 2]}},
        "6": {"class_type": "GenDegQualityGate", "inputs": {"rules": "psnr >= 17", "mode": "all", "images": ["3", 0],
                                                             "scores": ["5", 6], "paired": ["1", 0], "filenames": ["1", 2]}},
        "7": {"class_type": "GenDegSaveScores", "inputs": {"report": "scores/all.csv", "extra": '{"run": "ray-test"}',
                                                            "scores": ["5", 6]}},
        "8": {"class_type": "GenDegSaveScores", "inputs": {"report": "scores/all.jsonl", "extra": "", "scores": ["5", 6]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "shots/deg"}},
        "10": {"class_type": "GenDegSaveDatasetPairs", "inputs": {"dataset": "gated", "image_format": "png", "seed": 0,
                                                                   "clean": ["6", 3], "degraded": ["6", 0],
                                                                   "filename": ["6", 2]}},
    }


def seed_output(out: Path) -> None:
    """An earlier SaveImage file: both runs must continue its numbering (at 4)."""
    (out / "shots").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(out / "shots" / "deg_00003_.png")


def snapshot(root: Path) -> dict[str, object]:
    """Every file under ``root``: bytes, except records and metadata.jsonl parsed without ``created``."""
    snap: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or ".metadata.lock" in p.name:
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix == ".json" and "/records/" in f"/{rel}":
            rec = json.loads(p.read_text())
            rec.pop("created")
            snap[rel] = rec
        elif p.name == "metadata.jsonl":
            recs = [json.loads(line) for line in p.read_text().splitlines()]
            for rec in recs:
                rec.pop("created")
            snap[rel] = recs
        else:
            snap[rel] = p.read_bytes()
    return snap
