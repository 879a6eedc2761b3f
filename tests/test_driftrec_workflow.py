"""The shipped DriftRec workflow runs end to end on tiny random weights (DriftRec and FBCNN in their layouts)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core.restore.driftrec_loader import save_driftrec
from driftrec_helpers import tiny_net

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "gendeg_restore_driftrec.json"


def _models(root: Path) -> Path:
    """Tiny stand-ins under the workflow's file names. The feed-forward slot gets a tiny NAFNet: spandrel's FBCNN
    needs 512 channels at its deepest level (its quality-factor head is fixed), far too big for a test."""
    from spandrel.architectures.NAFNet import NAFNet

    restore = root / "restore"
    net = tiny_net()
    save_driftrec(restore / "driftrec" / "driftrec_jpeg.safetensors", net.state_dict(), net.config,
                  {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0})
    torch.manual_seed(0)
    torch.save(NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]).state_dict(), restore / "fbcnn_color.pth")
    return root


def test_workflow_runs_and_writes_one_csv_with_three_methods(tmp_path):
    models = _models(tmp_path / "models")
    out = tmp_path / "out"
    rc = cli.main(["run", str(WORKFLOW), "--models-dir", str(models), "--output-dir", str(out), "--set", "4.steps=2"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "gendeg_restore_driftrec.csv", encoding="utf-8")))
    assert [r["method"] for r in rows] == ["JPEG q10 (input)", "DriftRec", "FBCNN"]
    assert all(float(r["psnr"]) > 0 and 0 < float(r["ssim"]) <= 1 for r in rows)
    assert len(list(out.glob("gendeg_restore_driftrec_0*.png"))) == 1
    assert len(list(out.glob("gendeg_restore_driftrec_fbcnn_*.png"))) == 1


def test_workflow_without_weights_names_the_missing_files(tmp_path, capsys):
    rc = cli.main(["run", str(WORKFLOW), "--models-dir", str(tmp_path), "--validate-only"])
    assert rc != 0
    text = "".join(capsys.readouterr())
    assert "driftrec/driftrec_jpeg.safetensors" in text and "fbcnn_color.pth" in text
