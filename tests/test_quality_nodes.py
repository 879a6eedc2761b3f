"""Quality nodes in graphs: folder scoring into CSV through the runner, gates on lists, report appends."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.graph.executor import Executor
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.quality.report import append_rows, gate, parse_rules
from comfyui_gendeg.nodes import host
from comfyui_gendeg.nodes.quality import GenDegQualityGate, GenDegSaveScores, GenDegScoreReference
from comfyui_gendeg.nodes.standins import runner_registry
from skimage.metrics import peak_signal_noise_ratio


def _img(seed, h=40, w=48, c=3):
    return torch.rand(1, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_score_reference_node_outputs_means_table_and_records():
    ref = _img(0)
    imgs = torch.cat([(ref + s * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1) for s in (0.05, 0.2)])
    res = GenDegScoreReference().score(ref, imgs, "psnr, ssim", filenames="a.png\nb.png")
    psnr, ssim, ms_ssim, lpips, dists, table, scores = res["result"]
    recs = json.loads(scores)
    want = [peak_signal_noise_ratio(ref[0].double().numpy(), imgs[i].double().numpy(), data_range=1) for i in range(2)]
    assert [r["file"] for r in recs] == ["a.png", "b.png"]
    assert np.allclose([r["psnr"] for r in recs], want, atol=1e-4)
    assert psnr == pytest.approx(np.mean(want), abs=1e-4)
    assert recs[0]["ssim"] > recs[1]["ssim"] and 0 < ssim < 1
    assert all(v != v for v in (ms_ssim, lpips, dists))  # not asked for: NaN
    lines = table.splitlines()
    assert lines[0].split() == ["image", "psnr↑", "ssim↑"] and lines[1].startswith("a.png") and lines[-1].startswith("mean")
    assert res["ui"]["gendeg_stats"][1]["psnr"] == pytest.approx(want[1], abs=1e-3)
    with pytest.raises(InputError, match="same size"):
        GenDegScoreReference().score(ref, _img(2, 40, 40), "psnr")
    with pytest.raises(InputError, match="channels"):
        GenDegScoreReference().score(ref, _img(2, c=1), "psnr")


def test_gate_rules_and_modes():
    assert parse_rules("psnr >= 25, lpips<0.2\nniqe <= 1e1") == [("psnr", ">=", 25.0), ("lpips", "<", 0.2), ("niqe", "<=", 10.0)]
    recs = [{"psnr": 30, "lpips": 0.1}, {"psnr": 20, "lpips": 0.1}, {"psnr": 20, "lpips": 0.5}]
    assert gate(recs, parse_rules("psnr >= 25, lpips < 0.2")) == [True, False, False]
    assert gate(recs, parse_rules("psnr >= 25, lpips < 0.2"), "any") == [True, True, False]
    assert gate(recs, []) == [True, True, True]
    with pytest.raises(InputError, match="cannot read"):
        parse_rules("psnr is big")
    with pytest.raises(InputError, match="only has the scores"):
        gate(recs, parse_rules("dists < 0.1"))


def test_gate_node_splits_batches_and_lists_and_keeps_pairs():
    clean = [_img(i) for i in range(3)]
    degraded = [torch.cat([c, c * 0.2]) for c in clean[:1]] + [c * 0.2 for c in clean[1:]]  # a batch of 2, then singles
    scores = [GenDegScoreReference().score(c, d, "psnr")["result"][6] for c, d in zip(clean, degraded, strict=True)]
    res = GenDegQualityGate().gate(degraded, scores, ["psnr >= 30"], ["all"], paired=[clean[0], clean[0], clean[1], clean[2]],
                                   filenames=["x\ny", "z", "w"])
    passed, dropped, names, pairs, report = res["result"]
    assert len(passed) == 1 and len(dropped) == 3 and torch.equal(passed[0], clean[0])
    assert names == ["x"] and torch.equal(pairs[0], clean[0])
    assert report.startswith("1 of 4 passed")
    with pytest.raises(InputError, match="score records"):
        GenDegQualityGate().gate(degraded, scores[:1], ["psnr >= 30"], ["all"])


def test_report_appends_write_the_header_once_and_survive_concurrent_writers(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [{"file": "a", "psnr": 30.0}])
    append_rows(path, [{"file": "b", "psnr": float("inf")}, {"file": "c"}])
    rows = list(csv.DictReader(open(path)))
    assert [r["file"] for r in rows] == ["a", "b", "c"] and rows[1]["psnr"] == "inf" and rows[2]["psnr"] == ""
    with pytest.raises(InputError, match="add lpips"):
        append_rows(path, [{"file": "d", "lpips": 0.1}])

    jl = tmp_path / "r.jsonl"
    threads = [threading.Thread(target=append_rows, args=(jl, [{"file": f"{t}-{i}", "v": i} for i in range(50)])) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = jl.read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(x)["file"] for x in lines)
    fresh = tmp_path / "new.csv"  # four writers start a CSV together: one header
    threads = [threading.Thread(target=append_rows, args=(fresh, [{"file": f"{t}-{i}", "v": i} for i in range(20)])) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh.read_text().count("file,v") == 1 and len(list(csv.DictReader(open(fresh)))) == 80
    # the lock is on the report itself: nothing else is left in the output folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "r.csv", "r.jsonl"]


def test_folder_scoring_graph_writes_a_csv(tmp_path):
    inp = host.SETTINGS.input_dir
    for i in range(3):
        x = _img(10 + i).permute(0, 3, 1, 2)
        save_image(inp / "gt" / f"im{i}.png", x)
        save_image(inp / "restored" / f"im{i}.png", (x + 0.03 * (i + 1) * torch.randn(x.shape, generator=torch.Generator().manual_seed(i))).clamp(0, 1))
    prompt = {
        "1": {"class_type": "GenDegLoadImageFolder", "inputs": {"folder": "gt", "pattern": "*", "recursive": False, "start": 0, "limit": 0, "output": "list"}},
        "2": {"class_type": "GenDegLoadImageFolder", "inputs": {"folder": "restored", "pattern": "*", "recursive": False, "start": 0, "limit": 0, "output": "list"}},
        "3": {"class_type": "GenDegScoreReference", "inputs": {"reference": ["1", 0], "image": ["2", 0], "metrics": "psnr,ssim", "y_channel": True, "crop_border": 2, "filenames": ["2", 2]}},
        "4": {"class_type": "GenDegSaveScores", "inputs": {"scores": ["3", 6], "report": "scores/run.csv", "extra": "{\"model\": \"none\"}"}},
    }
    classes, _, _ = runner_registry()
    Executor(classes).execute(prompt)
    Executor(classes).execute(prompt)  # a second run appends below the same header
    rows = list(csv.DictReader(open(host.SETTINGS.output_dir / "scores" / "run.csv")))
    assert [r["file"] for r in rows] == ["im0.png", "im1.png", "im2.png"] * 2
    assert list(rows[0]) == ["file", "model", "psnr", "ssim"]
    psnrs = [float(r["psnr"]) for r in rows[:3]]
    assert psnrs[0] > psnrs[1] > psnrs[2]


def test_save_scores_refuses_paths_outside_the_output_folder():
    from comfyui_gendeg.core.errors import UnsafePathError

    with pytest.raises(UnsafePathError):
        GenDegSaveScores().save(['[{"psnr": 1}]'], ["../escape.csv"])


def test_score_command_prints_strict_json(tmp_path, capsys):
    from comfyui_gendeg.cli import main as cli

    x = _img(20).permute(0, 3, 1, 2)
    save_image(tmp_path / "ref.png", x)
    save_image(tmp_path / "dark.png", x * 0.5)
    assert cli(["score", str(tmp_path / "ref.png"), str(tmp_path / "ref.png"), str(tmp_path / "dark.png"),
                "--metrics", "psnr,ssim", "--y-channel", "--crop-border", "2"]) == 0
    res = json.loads(capsys.readouterr().out)  # strict JSON: no bare Infinity
    assert res["images"][0]["psnr"] == "inf" and res["images"][0]["ssim"] == pytest.approx(1.0)
    assert 0 < res["images"][1]["ssim"] < 1 and res["mean"]["psnr"] == "inf"
    assert cli(["score", str(tmp_path / "ref.png"), "--metrics", "psnr"]) == 2  # a reference alone: clear error
    assert "at least one image" in capsys.readouterr().err


@pytest.mark.slow
def test_degrade_restore_score_workflow_runs_on_a_tiny_nafnet(tmp_path):
    """The shipped comparison workflow, headless, with a tiny random NAFNet where the real one goes."""
    from pathlib import Path

    from comfyui_gendeg.cli import main as cli
    from spandrel.architectures.NAFNet import NAFNet

    models = tmp_path / "models"
    (models / "restore").mkdir(parents=True)
    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    torch.save(net.state_dict(), models / "restore" / "NAFNet-SIDD-width64.pth")
    wf = Path(__file__).resolve().parents[1] / "workflows" / "gendeg_quality_degrade_restore_score.json"
    out = tmp_path / "out"
    assert cli(["run", str(wf), "--models-dir", str(models), "--output-dir", str(out), "--device", "cpu",
                "--set", "2.mu=0.04"]) == 0
    rows = list(csv.DictReader(open(out / "gendeg_quality_compare.csv")))
    assert [r["stage"] for r in rows] == ["degraded", "restored"]
    assert all(r["file"] == "chelsea.png" and 0 < float(r["ssim"]) < 1 and float(r["ms_ssim"]) > 0 for r in rows)
