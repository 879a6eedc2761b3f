"""Training data sources (pack datasets, gt/lq folders), dataset export, and a run that really learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.core.dataset import PairWriter
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.train.config import load_config
from comfyui_gendeg.core.train.data import build_data
from comfyui_gendeg.core.train.data.sources import list_dataset_pairs, list_folder_pairs
from train_helpers import tiny_config, write_config


def _pack_dataset(root: Path) -> Path:
    """A pack dataset of 6 pairs: 3 haze (μ 0.05, 0.10, 0.15) and 3 rain (μ 0.02, 0.04, 0.06)."""
    writer = PairWriter(root, "ds")
    g = torch.Generator().manual_seed(0)
    for i, (kind, mu) in enumerate([("haze", 0.05), ("haze", 0.10), ("haze", 0.15), ("rain", 0.02), ("rain", 0.04), ("rain", 0.06)]):
        clean = torch.rand(3, 40, 48, generator=g)
        degraded = (clean * 0.7 + 0.3).clamp(0, 1)
        writer.write(clean, degraded, f"img{i}.png", {"type": kind, "mu": mu}, seed=i)
    writer.finalize()
    return writer.root


def test_pack_dataset_pairs_filtered_by_type_and_mu(tmp_path):
    root = _pack_dataset(tmp_path)
    assert len(list_dataset_pairs(root)) == 6
    haze = list_dataset_pairs(root, ["haze"])
    assert len(haze) == 3 and {p.type for p in haze} == {"haze"}
    mid = list_dataset_pairs(root, [], (0.04, 0.10))
    assert sorted(p.mu for p in mid) == [0.04, 0.05, 0.06, 0.10]
    with pytest.raises(InputError, match="no pairs after filtering"):
        list_dataset_pairs(root, ["snow"])
    with pytest.raises(InputError, match="it contains datasets: point data.pairs.root at one of its sub-folders"):
        list_dataset_pairs(tmp_path)
    # a pair whose file was deleted is named, not skipped silently
    next((root / "degraded").glob("img0__*.png")).unlink()
    with pytest.raises(InputError, match="does not exist"):
        list_dataset_pairs(root)


def test_pairs_source_gives_aligned_crops(tmp_path):
    root = _pack_dataset(tmp_path)
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, data={"source": "pairs", "pairs": {"root": str(root), "types": ["haze"]}, "crop": 16, "val_count": 1,
                        "val_crop": 32, "workers": 0})))
    data = build_data(cfg.data, 0)
    assert data.summary["pairs"] == 2 and data.summary["val_pairs"] == 1 and data.summary["types"] == ["haze"]
    s = data.train[5]
    assert s["gt"].shape == (3, 16, 16)
    # the synthetic "degradation" is clean·0.7 + 0.3, so aligned crops satisfy it pixel for pixel (8-bit rounding)
    assert torch.allclose(s["lq"], (s["gt"] * 0.7 + 0.3).clamp(0, 1), atol=1.5 / 255)
    assert data.val[0]["gt"].shape == (3, 32, 32)


def test_folders_source_matches_names_and_reports_gaps(tmp_path):
    for sub in ("gt", "lq"):
        (tmp_path / sub).mkdir()
    for name in ("a", "b"):
        save_image(tmp_path / "gt" / f"{name}.png", torch.rand(3, 20, 20))
    save_image(tmp_path / "lq" / "a.jpg", torch.rand(3, 20, 20))
    with pytest.raises(InputError, match="no degraded image for 1 ground-truth image"):
        list_folder_pairs(tmp_path / "gt", tmp_path / "lq")
    save_image(tmp_path / "lq" / "b.png", torch.rand(3, 24, 20))
    pairs = list_folder_pairs(tmp_path / "gt", tmp_path / "lq")
    assert [(p.name, p.lq.suffix) for p in pairs] == [("a", ".jpg"), ("b", ".png")]
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, data={"source": "folders", "folders": {"gt": str(tmp_path / "gt"), "lq": str(tmp_path / "lq")},
                        "crop": 16, "val_count": 0, "workers": 0})))
    data = build_data(cfg.data, 0)
    with pytest.raises(InputError, match="different sizes"):
        [data.train[k] for k in range(4)]


def test_dataset_export_writes_gt_and_lq_folders_and_resumes(tmp_path, capsys):
    from comfyui_gendeg.cli import main

    root = _pack_dataset(tmp_path)
    out = tmp_path / "export"
    assert main(["dataset", "export", str(root), str(out), "--types", "rain"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 3 and report["written"] == 6
    gt = sorted(p.name for p in (out / "gt").iterdir())
    assert gt == sorted(p.name for p in (out / "lq").iterdir()) and len(gt) == 3
    # the exported folders are a valid `folders` source with the same content
    pairs = list_folder_pairs(out / "gt", out / "lq")
    src = {p.gt.name: p for p in list_dataset_pairs(root, ["rain"])}
    for p in pairs:
        assert p.gt.read_bytes() == src[p.gt.name].gt.read_bytes() and p.lq.read_bytes() == src[p.gt.name].lq.read_bytes()
    assert main(["dataset", "export", str(root), str(out), "--types", "rain"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 6
    assert main(["dataset", "export", str(root), str(out), "--mu-range", "0.2", "0.1"]) == 2


@pytest.mark.slow
def test_tiny_nafnet_trained_on_the_fly_beats_doing_nothing_on_held_out_crops(tmp_path):
    """300 CPU steps of on-the-fly haze on two shipped photos; the third photo is held out."""
    from comfyui_gendeg.core.train.engine import train_restorer

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path,
        data={**tiny_config(tmp_path)["data"], "crop": 48, "val_crop": 128,
              "otf": {"clean": str(tmp_path / "clean"), "types": ["haze"], "calibrate": False, "strength": [0.3, 0.9]}},
        optim={"lr": 3e-3},
        train={"max_steps": 300, "batch_size": 4, "log_every": 50, "val_every": 0, "save_every": 1000, "ema_decay": 0.99},
    )))
    result = train_restorer(cfg, device="cpu", progress=False)
    val = result.last_val
    assert val["psnr"] >= val["psnr_input"] + 1.0, val
    losses = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    first, last = (float(losses[i].split(",")[2]) for i in (1, -1))
    assert last < first


def test_the_documented_loop_dataset_train_restore_score(tmp_path, monkeypatch, capsys):
    """docs/training.md's loop, command by command: dataset workflow → train → restore workflow → score."""
    import shutil

    from comfyui_gendeg.cli import main
    from train_helpers import SAMPLES

    repo = SAMPLES.parent
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input" / "clean").mkdir(parents=True)
    for p in SAMPLES.glob("*.png"):
        shutil.copy(p, tmp_path / "input" / "clean" / p.name)
    shutil.copy(SAMPLES / "rocket.png", tmp_path / "input" / "degraded.png")
    assert main(["run", str(repo / "workflows" / "gendeg_synth_dataset.json"), "--output-dir", "output", "--quiet"]) == 0
    assert main(["train", "restorer", str(repo / "configs" / "train" / "nafnet_pairs.yaml"), "--out", "runs/nafnet_pairs",
                 "--device", "cpu", "--max-steps", "2", "--set", "data.val_count=1", "--set", "data.workers=0",
                 "--set", "train.batch_size=2", "--set", "data.crop=32",
                 "--set", "model.options={width: 8, middle_blk_num: 1, enc_blk_nums: [1], dec_blk_nums: [1]}"]) == 0
    (tmp_path / "models" / "restore").mkdir(parents=True)
    shutil.copy("runs/nafnet_pairs/nafnet_pairs.safetensors", "models/restore/")
    monkeypatch.setenv("GENDEG_MODELS_DIR", str(tmp_path / "models"))
    from comfyui_gendeg.nodes import host

    monkeypatch.setattr(host.SETTINGS, "models_dir", None)
    assert main(["run", str(repo / "workflows" / "gendeg_restore_feedforward.json"), "--set",
                 "2.model_name=nafnet_pairs.safetensors", "--output-dir", "output", "--input-dir", "input", "--quiet"]) == 0
    restored = tmp_path / "output" / "gendeg_restore_feedforward_00001_.png"
    assert restored.is_file()
    capsys.readouterr()
    assert main(["score", "input/clean/rocket.png", str(restored), "--metrics", "psnr,ssim"]) == 0
    assert '"psnr"' in capsys.readouterr().out
