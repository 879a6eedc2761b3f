"""Shared pieces of the training tests: tiny configs, clean photos, a CLI runner in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

#: A NAFNet small enough to train a few hundred CPU steps in seconds (spandrel still detects it).
TINY_NAFNET = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1]}


def clean_photos(folder: Path) -> Path:
    """The shipped sample photos copied into ``folder`` (the on-the-fly source)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted(SAMPLES.glob("*.png")):
        shutil.copy(p, folder / p.name)
    return folder


def tiny_config(root: Path, **sections) -> dict:
    """A small on-the-fly haze config rooted at ``root`` (sections override / extend the defaults)."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "out": str(root / "run"),
        "model": {"arch": "nafnet", "options": dict(TINY_NAFNET)},
        "data": {"source": "otf", "otf": {"clean": str(clean_photos(root / "clean")), "types": ["haze"], "calibrate": False,
                                          "strength": [0.3, 0.9]},
                 "crop": 32, "val_count": 1, "val_crop": 64, "workers": 0, "cache_images": 8},
        "loss": {"l1": {"weight": 1.0}},
        "optim": {"lr": 2e-3},
        "train": {"max_steps": 8, "batch_size": 2, "log_every": 2, "val_every": 0, "save_every": 4},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def subprocess_env() -> dict[str, str]:
    """One thread per process (the 2 cores are shared), no progress bars, no network."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GENDEG_NO_PROGRESS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def gendeg(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfyui_gendeg", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
