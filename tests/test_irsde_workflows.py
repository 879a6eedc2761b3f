"""The shipped IR-SDE and DA-CLIP workflows run end to end on tiny random weights in the official layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core.restore.nets.daclip import DaCLIP, TextConfig, VisionConfig
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture
def models(tmp_path):
    """Tiny stand-ins saved under the manifest's file names (the real ones are hundreds of MB)."""
    root = tmp_path / "models" / "restore"
    (root / "irsde").mkdir(parents=True)
    (root / "daclip").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(ConditionalUNet(3, 3, 8, irsde_ch_mult(2)).state_dict(), root / "irsde" / "rain100h_sde.pth")
    unet = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=16, use_degra_context=True, use_image_context=True)
    torch.save(unet.state_dict(), root / "daclip" / "universal-ir.pth")
    clip = DaCLIP(VisionConfig(32, 8, 128, 2, 2, 16), TextConfig(8, 50, 64, 1, 2, 16))
    torch.save({"epoch": np.int64(3), "state_dict": clip.state_dict()}, root / "daclip" / "daclip_ViT-B-32.pt")
    return tmp_path / "models"


@pytest.mark.parametrize("name", ["gendeg_restore_irsde.json", "gendeg_restore_daclip.json"])
def test_workflow_runs_with_weights_in_place(name, models, tmp_path):
    path = WORKFLOWS / name
    assert cli.main(["run", str(path), "--models-dir", str(models), "--validate-only"]) == 0
    out = tmp_path / "out"
    rc = cli.main(["run", str(path), "--models-dir", str(models), "--output-dir", str(out), "--set", "4.steps=2"])
    assert rc == 0
    stem = name[: -len(".json")]
    assert len(list(out.glob(f"{stem}_*.png"))) == 1
    rows = list(csv.DictReader(open(out / f"{stem}_restored_scores.csv", encoding="utf-8")))
    assert rows and float(rows[0]["psnr"]) > 0


def test_workflow_without_weights_names_the_missing_file(tmp_path, capsys):
    rc = cli.main(["run", str(WORKFLOWS / "gendeg_restore_daclip.json"), "--models-dir", str(tmp_path), "--validate-only"])
    assert rc != 0
    captured = capsys.readouterr()
    assert "universal-ir.pth" in captured.out + captured.err
