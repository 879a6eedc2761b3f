"""Synth nodes, plans, contact sheets, `gendeg synth` / `gendeg measure` and the shipped synth workflows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.core.io import load_image, save_image
from comfyui_gendeg.core.presets import GENDEG_PRESETS as PRESETS_MS
from comfyui_gendeg.core.synth import TYPES
from comfyui_gendeg.core.synth.plan import PRESETS, make_plan
from comfyui_gendeg.core.synth.sheet import contact_sheet
from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS
from comfyui_gendeg.nodes import synth as S

ROOT = Path(__file__).resolve().parents[1]


def photo(h: int = 48, w: int = 72) -> torch.Tensor:
    """The shipped cat photo, small, as a ComfyUI IMAGE ``[1,H,W,3]``."""
    x = load_image(ROOT / "samples" / "chelsea.png")
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="area")
    return x.permute(0, 2, 3, 1).contiguous()


def test_nodes_are_registered_with_contract_ids_and_documented():
    for node_id in ("GenDegSynthesize", "GenDegMeasureIntensity", "GenDegDegradationPlan", "GenDegContactSheet", "GenDegSampleImage"):
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("GenDeg/")
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (_, opts) in spec.get(section, {}).items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert S.GenDegSynthesize.RETURN_TYPES == ("IMAGE", "FLOAT", "FLOAT", "STRING")
    # outputs only ever grow at the end (old workflows link the first four by slot)
    assert S.GenDegDegradationPlan.RETURN_NAMES == ("type", "mu", "seed", "label", "sigma", "dataset")
    assert S.GenDegDegradationPlan.OUTPUT_IS_LIST == (True,) * 6
    assert S.GenDegSynthesize.INPUT_TYPES()["required"]["type"][0] == list(TYPES)


def test_synthesize_node_mu_mode_metadata_ui_and_seed():
    img = photo()
    node = S.GenDegSynthesize()
    out = node.synthesize(img, "haze", "mu", 0.08, 0.5, 7)
    degraded, mu, sigma, meta = out["result"]
    assert degraded.shape == img.shape and degraded.dtype == torch.float32
    assert abs(mu - 0.08) <= 0.005
    m = json.loads(meta)
    assert m["type"] == "haze" and m["seed"] == 7 and m["mu_requested"] == pytest.approx(0.08)
    assert m["mu"] == pytest.approx(mu, abs=1e-5) and m["sigma"] == pytest.approx(sigma, abs=1e-5)
    assert m["params"]["beta_max"] == 2.0 and m["depth"] == "proxy" and 0 < m["strength"] < 1
    assert out["ui"]["gendeg_stats"][0]["mu"] == pytest.approx(mu, abs=1e-4)
    assert len(out["ui"]["gendeg_compare"]) == 1
    # what the node reports is what anyone measuring its output gets
    got_mu, _ = measure_intensity(img.permute(0, 3, 1, 2), degraded.permute(0, 3, 1, 2))
    assert float(got_mu[0]) == pytest.approx(mu, abs=1e-5)
    again = node.synthesize(img, "haze", "mu", 0.08, 0.5, 7)["result"][0]
    assert torch.equal(again, degraded)


def test_synthesize_node_strength_mode_type_override_params_and_depth():
    img = photo()
    node = S.GenDegSynthesize()
    a = node.synthesize(img, "haze", "strength", 0.0, 0.6, 1, type_name="noise")["result"]
    assert json.loads(a[3])["type"] == "noise" and json.loads(a[3])["strength"] == pytest.approx(0.6)
    weak = node.synthesize(img, "noise", "strength", 0.0, 0.6, 1, expert_params='{"sigma_max": 0.05}')["result"]
    assert weak[1] < a[1]
    # a depth map changes haze; a MASK works too; the inverse-depth toggle flips it
    ramp = torch.linspace(0, 1, img.shape[2]).view(1, 1, -1).expand(1, img.shape[1], -1).contiguous()
    d_img = node.synthesize(img, "haze", "strength", 0.0, 0.7, 1, depth=ramp[..., None].expand(-1, -1, -1, 3))["result"]
    d_mask = node.synthesize(img, "haze", "strength", 0.0, 0.7, 1, depth_mask=ramp)["result"]
    d_flip = node.synthesize(img, "haze", "strength", 0.0, 0.7, 1, depth_mask=ramp, depth_near_is_bright=False)["result"]
    proxy = node.synthesize(img, "haze", "strength", 0.0, 0.7, 1)["result"]
    assert torch.allclose(d_img[0], d_mask[0], atol=1e-6)
    assert not torch.allclose(d_mask[0], d_flip[0]) and not torch.allclose(d_mask[0], proxy[0])
    assert json.loads(d_mask[3])["depth"] == "mask"
    # near = bright: the right side (bright) is near, so it keeps more contrast than the left
    d = d_mask[0][0]
    assert float(d[:, -10:].std()) > float(d[:, :10].std())
    with pytest.raises(InputError, match="valid JSON"):
        node.synthesize(img, "rain", "strength", 0.0, 0.5, 1, expert_params="{beta: 1}")
    with pytest.raises(InputError, match="unknown parameter"):
        node.synthesize(img, "rain", "strength", 0.0, 0.5, 1, expert_params='{"beta_max": 1}')
    with pytest.raises(InputError, match="unknown degradation type"):
        node.synthesize(img, "rain", "strength", 0.0, 0.5, 1, type_name="hail")


def test_synthesize_node_mixed_types_use_depth_params_and_calibrate():
    img = photo()
    node = S.GenDegSynthesize()
    ramp = torch.linspace(0, 1, img.shape[2]).view(1, 1, -1).expand(1, img.shape[1], -1).contiguous()
    out = node.synthesize(img, "rain+haze", "mu", 0.15, 0.5, 3, depth_mask=ramp, expert_params='{"angle": 5, "beta_max": 2.5}')
    y, mu, _, meta = out["result"]
    m = json.loads(meta)
    assert m["type"] == "rain+haze" and m["depth"] == "mask" and abs(mu - 0.15) <= 0.005
    assert m["params"]["angle"] == 5 and m["params"]["beta_max"] == 2.5
    # snow+haze by the type_name override (e.g. from a plan), with the depth proxy
    s = node.synthesize(img, "haze", "strength", 0.0, 0.6, 3, type_name="snow_haze")["result"]
    assert json.loads(s[3])["type"] == "snow+haze" and json.loads(s[3])["depth"] == "proxy"
    haze_only = node.synthesize(img, "haze", "strength", 0.0, 0.6, 3)["result"]
    assert s[1] > haze_only[1]  # the snow adds to the haze at the same strength
    plan = make_plan("rain+haze,snow+haze", "light,heavy", "grid")
    assert [(i.type, i.mu) for i in plan] == [
        ("rain+haze", PRESETS["rain+haze"]["light"]), ("rain+haze", PRESETS["rain+haze"]["heavy"]),
        ("snow+haze", PRESETS["snow+haze"]["light"]), ("snow+haze", PRESETS["snow+haze"]["heavy"]),
    ]


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_synthesize_node_keeps_grey_and_alpha(channels):
    rgb = photo(33, 47)  # odd size
    grey = rgb.mean(dim=-1, keepdim=True)
    alpha = torch.linspace(0, 1, 47).view(1, 1, 47, 1).expand(1, 33, 47, 1)
    img = {1: grey, 2: torch.cat([grey, alpha], -1), 4: torch.cat([rgb, alpha], -1)}[channels]
    out, mu, _, _ = S.GenDegSynthesize().synthesize(img, "snow", "strength", 0.0, 0.8, 3)["result"]
    assert out.shape == img.shape and mu > 0.01
    if channels in (2, 4):
        assert torch.allclose(out[..., -1:], img[..., -1:], atol=1e-6)
    # per-channel noise on a grey image: the reported mu is the one of the (grey) output
    out, mu, _, _ = S.GenDegSynthesize().synthesize(img, "noise", "mu", 0.05, 0.0, 3)["result"]
    measured = measure_intensity(img.permute(0, 3, 1, 2), out.permute(0, 3, 1, 2))[0]
    assert float(measured[0]) == pytest.approx(mu, abs=1e-5) and abs(mu - 0.05) <= 0.005


def test_synthesize_node_batches_calibrate_per_image():
    img = torch.cat([photo(), photo().flip(2) * 0.7])
    out, mu, _, meta = S.GenDegSynthesize().synthesize(img, "rain", "mu", 0.05, 0.5, 2)["result"]
    rows = json.loads(meta)
    assert out.shape == img.shape and isinstance(rows, list) and len(rows) == 2
    assert all(abs(r["mu"] - 0.05) <= 0.005 for r in rows)
    assert rows[0]["strength"] != rows[1]["strength"]


def test_measure_node_matches_core():
    img = photo()
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = S.GenDegMeasureIntensity().measure(img, noisy)
    mu, sigma = measure_intensity(img.permute(0, 3, 1, 2), noisy.permute(0, 3, 1, 2))
    assert out["result"] == (pytest.approx(float(mu[0])), pytest.approx(float(sigma[0])))


def test_plan_grid_balanced_random_and_presets():
    grid = make_plan("all", "light,medium,heavy", "grid", seeds=2, base_seed=10)
    assert len(grid) == len(TYPES) * 3 * 2
    assert [(i.type, i.level, i.seed) for i in grid[:3]] == [("haze", "light", 10), ("haze", "light", 11), ("haze", "medium", 10)]
    assert grid[0].mu == PRESETS["haze"]["light"] and "haze light" in grid[0].label
    for kind, levels in PRESETS.items():  # presets grow light -> heavy
        assert levels["light"] < levels["medium"] < levels["heavy"], kind
    bal = make_plan("rain,snow", "light,0.2", "balanced", count=12, base_seed=1)
    counts = Counter((i.type, i.level) for i in bal)
    assert len(counts) == 4 and set(counts.values()) == {3}
    assert {i.mu for i in bal if i.level == "mu=0.2"} == {0.2}
    # random with keys: a file's item does not depend on which other files are in the run
    files = [f"img{i:03d}.png" for i in range(20)]
    full = make_plan("all", "light,heavy", "random", keys=files, base_seed=5)
    half = make_plan("all", "light,heavy", "random", keys=files[10:], base_seed=5)
    assert full[10:] == half and len(full) == 20
    assert make_plan("all", "light", "random", count=7, base_seed=3) == make_plan("all", "light", "random", count=7, base_seed=3)
    with pytest.raises(InputError, match="choose one of"):
        make_plan("haze,fog")
    with pytest.raises(InputError, match="neither a preset"):
        make_plan("haze", "strong")
    with pytest.raises(InputError, match="mode must be"):
        make_plan(mode="spiral")


def test_plan_node_lists_and_filenames():
    types, mus, seeds, labels, sigmas, datasets = S.GenDegDegradationPlan().plan(["haze,noise"], ["light,heavy"], ["grid"],
                                                                                 [1], [0], [0])
    assert types == ["haze", "haze", "noise", "noise"] and len(mus) == len(seeds) == len(labels) == 4
    # presets carry their typical sigma; noise has no GenDeg statistics (0: none); no source datasets
    assert sigmas == [PRESETS_MS["haze"]["light"][1], PRESETS_MS["haze"]["heavy"][1], 0.0, 0.0] and datasets == [""] * 4
    names = ["a.png", "b.png", "c.png"]
    types, *_ = S.GenDegDegradationPlan().plan(["all"], ["light"], ["balanced"], [1], [0], [0], filenames=names)
    assert len(types) == 3 and len(set(types)) == 3
    with pytest.raises(InputError, match="random, balanced or gendeg_sampling"):
        S.GenDegDegradationPlan().plan(["all"], ["light"], ["grid"], [1], [0], [0], filenames=names)


def test_contact_sheet_layout_and_labels():
    tiles = [torch.full((3, 20, 40), v) for v in (0.2, 0.5, 0.8, 1.0)] + [torch.full((1, 40, 40), 0.4)]
    sheet = contact_sheet(tiles, ["a", "b", "c", "d", "e"], columns=2, tile=64, gap=4, label_height=16)
    # 3 rows: two of 32 px + label, one of 64 px + label; 2 columns of 64 px
    assert sheet.shape == (1, 3, 4 + (32 + 16 + 4) * 2 + (64 + 16 + 4), 2 * 64 + 3 * 4)
    first = sheet[0, :, 4:36, 4:68]
    assert torch.allclose(first, torch.full_like(first, 0.2), atol=0.01)
    label_band = sheet[0, :, 36:52, 4:68]
    assert float(label_band.max()) > 0.5  # text drawn (background is dark)
    unlabeled = contact_sheet(tiles[:1], [], columns=2, tile=64)
    assert float(unlabeled[0, :, 36:52, 4:68].max()) < 0.2
    node = S.GenDegContactSheet().sheet([torch.rand(2, 20, 30, 3), torch.rand(1, 20, 30, 3)], [3], [32], ["x\ny", "z"], [0.1, 0.2, 0.3])
    assert node[0].shape[0] == 1 and node[0].shape[-1] == 3
    with pytest.raises(InputError, match="no images"):
        contact_sheet([])


def test_sample_image_node():
    names = S.sample_names()
    assert {"chelsea.png", "coffee.png", "rocket.png"} <= set(names)
    assert (ROOT / "samples" / "LICENSE.md").is_file()
    img, name = S.GenDegSampleImage().load("chelsea.png")
    assert img.shape[-1] == 3 and img.shape[2] == 320 and name == "chelsea.png"
    with pytest.raises(InputError, match="unknown sample"):
        S.GenDegSampleImage().load("../weights_manifest.yaml")


def test_cli_synth_and_measure(tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(src, photo(40, 56)[0].permute(2, 0, 1))
    out = tmp_path / "out.png"
    assert cli.main(["synth", str(src), str(out), "--type", "rain", "--mu", "0.05", "--seed", "4", "-p", "angle=15"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["type"] == "rain" and report["params"]["angle"] == 15 and abs(report["mu"] - 0.05) <= 0.005
    assert cli.main(["measure", str(src), str(out)]) == 0
    measured = json.loads(capsys.readouterr().out)
    # both rounded to 6 decimals; and the PNG writer rounds 255·x in float32 where the measure rounds it
    # exactly, so a pixel at a .5 boundary may be one level apart (1 pixel in 6720 here: 6e-7 of mu)
    assert measured["mu"] == pytest.approx(report["mu"], abs=2e-6) and measured["sigma"] == pytest.approx(report["sigma"], abs=2e-6)
    assert cli.main(["synth", str(src), str(out), "--type", "noise", "--strength", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out)["strength"] == 0.3
    assert cli.main(["synth", str(src), str(out), "--type", "raindrop", "--strength", "5"]) == 2
    assert "strength must be in 0..4.28571," in capsys.readouterr().err  # coverage up to 3 (the top of its range)
    assert cli.main(["synth", str(src), str(out), "--type", "rain+haze", "--strength", "1.5"]) == 2
    assert "strength must be in 0..1," in capsys.readouterr().err
    # noise extends past strength 1 until its sigma reaches 1 (the top of sigma_max's range)
    assert cli.main(["synth", str(src), str(out), "--type", "noise", "--strength", "4"]) == 2
    assert "strength must be in 0..3.33333" in capsys.readouterr().err
    assert cli.main(["measure", str(src), str(tmp_path / "missing.png")]) == 2


def test_sweep_workflow_runs_and_writes_a_labelled_sheet(tmp_path):
    wf = ROOT / "workflows" / "gendeg_synth_sweep.json"
    args = ["run", str(wf), "--output-dir", str(tmp_path / "out"), "--temp-dir", str(tmp_path / "temp"), "--device", "cpu",
            "--quiet", "--set", "2.types=noise,jpeg"]
    assert cli.main(args) == 0
    files = sorted((tmp_path / "out").glob("gendeg_synth_sweep_*.png"))
    assert len(files) == 1
    sheet = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(files[0]))
    # 2 types x 3 intensities -> 2 rows x 3 columns of 256 px tiles
    assert sheet.shape[1] == 3 * 256 + 4 * 4 and sheet.shape[0] > 2 * 256 * 213 // 320


def test_dataset_workflow_builds_pairs_with_metadata(tmp_path):
    clean = tmp_path / "input" / "clean"
    for i, name in enumerate(("coffee.png", "chelsea.png", "rocket.png")):
        x = load_image(ROOT / "samples" / name)
        save_image(clean / f"{i}_{name}", torch.nn.functional.interpolate(x, size=(40, 60), mode="area"))
    wf = ROOT / "workflows" / "gendeg_synth_dataset.json"
    args = ["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "out"),
            "--temp-dir", str(tmp_path / "temp"), "--device", "cpu", "--quiet", "--set", "2.types=noise,jpeg,low_light"]
    assert cli.main(args) == 0
    lines = (tmp_path / "out" / "gendeg_synth_dataset" / "metadata.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    assert {r["type"] for r in records} == {"noise", "jpeg", "low_light"}  # balanced: one of each
    for r in records:
        assert r["engine"] == "synth" and "mu_requested" in r and "sigma" in r and "params" in r
        assert (tmp_path / "out" / "gendeg_synth_dataset" / r["degraded"]).is_file()


def _dataset_records(tmp_path: Path, out: str, extra: list[str]) -> dict[str, dict]:
    wf = ROOT / "workflows" / "gendeg_synth_dataset.json"
    args = ["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / out),
            "--temp-dir", str(tmp_path / "temp"), "--device", "cpu", "--quiet",
            "--set", "2.types=noise,jpeg,low_light", "--set", "2.intensities=light,heavy", *extra]
    assert cli.main(args) == 0
    folder = tmp_path / out / "gendeg_synth_dataset"
    records = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    by_file = {}
    for r in records:
        pixels = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(folder / r["degraded"]))
        by_file[r["source"]] = {"type": r["type"], "mu": r["mu_requested"], "seed": r["seed"], "pixels": pixels}
    return by_file


@pytest.mark.parametrize("start", [0, 1])
def test_dataset_workflow_shards_are_exact_subsets_of_the_unsharded_run(tmp_path, start):
    """`gendeg run --shard I/N` of the balanced dataset workflow plans and writes exactly the
    unsharded run's items for its files (also when the loader's start window is not a multiple of N)."""
    clean = tmp_path / "input" / "clean"
    for i in range(7):
        x = load_image(ROOT / "samples" / ("coffee.png", "chelsea.png", "rocket.png")[i % 3])
        save_image(clean / f"{i:02d}.png", torch.nn.functional.interpolate(x, size=(24 + 2 * i, 32), mode="area"))
    window = ["--set", f"1.start={start}"]
    full = _dataset_records(tmp_path, "full", window)
    assert len(full) == 7 - start
    # balanced over the 6 combinations: the unsharded window holds each type at least twice
    assert min(Counter(r["type"] for r in full.values()).values()) >= 2
    shards = [_dataset_records(tmp_path, f"shard{i}", [*window, "--shard", f"{i}/2"]) for i in range(2)]
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(full)
    for shard in shards:
        for name, r in shard.items():
            f = full[name]
            assert (r["type"], r["mu"], r["seed"]) == (f["type"], f["mu"], f["seed"]), name
            assert np.array_equal(r["pixels"], f["pixels"]), name


def test_presets_mean_the_same_mu_in_both_engines():
    """"medium snow" asks the synthesizer and GenDeg for the same GenDeg μ."""
    from comfyui_gendeg.core.gendeg.conditioning import PRESETS as GENDEG

    for kind, levels in GENDEG.items():
        for level, (mu, _sigma) in levels.items():
            assert PRESETS[kind][level] == mu, (kind, level)


def test_cli_progress_bar_is_drawn_on_a_terminal_only(monkeypatch):
    import io
    import sys
    import time

    from comfyui_gendeg.commands.synth import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("GENDEG_NO_PROGRESS", raising=False)
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar("synth haze") as progress:
            progress(0, 700)
            time.sleep(0.6)  # the bar appears once a job takes longer than half a second
            progress(350, 700)
            progress(700, 700)
        assert ("synth haze" in stream.getvalue()) is shown, stream.getvalue()
    monkeypatch.setenv("GENDEG_NO_PROGRESS", "1")
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar("synth haze") as progress:
        time.sleep(0.6)
        progress(1, 2)
    assert stream.getvalue() == ""
