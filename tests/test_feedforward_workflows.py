"""The shipped feed-forward workflows run end to end on tiny random weights saved under the manifest's names."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core.restore.nets.daclip import DaCLIP, TextConfig, VisionConfig
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet
from PIL import Image
from spandrel.architectures.NAFNet import NAFNet
from spandrel.architectures.SCUNet import SCUNet

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _nafnet_params(path: Path) -> None:
    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    torch.save({"params": net.state_dict()}, path)  # the official files wrap the weights in "params"


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models" / "restore"
    (root / "daclip").mkdir(parents=True)
    _nafnet_params(root / "NAFNet-SIDD-width64.pth")
    torch.manual_seed(1)
    torch.save(SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64).state_dict(), root / "scunet_color_real_psnr.pth")
    unet = ConditionalUNet(3, 3, 8, (1, 2, 4, 8), context_dim=16, use_degra_context=True, use_image_context=True)
    torch.save(unet.state_dict(), root / "daclip" / "universal-ir.pth")
    clip = DaCLIP(VisionConfig(32, 8, 128, 2, 2, 16), TextConfig(8, 50, 64, 1, 2, 16))
    torch.save({"epoch": np.int64(3), "state_dict": clip.state_dict()}, root / "daclip" / "daclip_ViT-B-32.pt")
    return tmp_path / "models"


def test_feedforward_workflow_restores_a_loaded_photo(models, tmp_path):
    inp = tmp_path / "input"
    inp.mkdir()
    rgb = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(inp / "degraded.png")
    out = tmp_path / "out"
    path = WORKFLOWS / "gendeg_restore_feedforward.json"
    args = ["run", str(path), "--models-dir", str(models), "--input-dir", str(inp), "--output-dir", str(out)]
    assert cli.main(args) == 0
    saved = list(out.glob("gendeg_restore_feedforward_*.png"))
    assert len(saved) == 1
    restored = np.asarray(Image.open(saved[0]))
    assert restored.shape == (45, 70, 3) and np.abs(restored.astype(int) - rgb).mean() > 1  # the net changed it


def test_compare_loop_reports_every_restorer(models, tmp_path):
    out = tmp_path / "out"
    path = WORKFLOWS / "gendeg_restore_compare_loop.json"
    args = ["run", str(path), "--models-dir", str(models), "--output-dir", str(out), "--set", "8.steps=2"]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(out / "gendeg_restore_compare.csv", encoding="utf-8")))
    restorers = sorted(r["restorer"] for r in rows)
    assert restorers == sorted(["none (degraded)", "NAFNet-SIDD-width64", "SCUNet real PSNR", "DA-CLIP universal"])
    assert all(float(r["psnr"]) > 0 and 0 < float(r["ssim"]) <= 1 for r in rows)
    for stem in ("nafnet", "scunet", "daclip"):
        assert len(list(out.glob(f"gendeg_restore_compare_{stem}_*.png"))) == 1


def test_workflows_without_weights_name_the_missing_file(tmp_path, capsys):
    rc = cli.main(["run", str(WORKFLOWS / "gendeg_restore_feedforward.json"), "--models-dir", str(tmp_path), "--validate-only"])
    assert rc != 0
    captured = capsys.readouterr()
    assert "NAFNet-SIDD-width64.pth" in captured.out + captured.err
