"""Issue 17 at the user's surfaces: the σ input of GenDeg Synthesize, the gendeg_sampling plan,
old workflows without σ, ``gendeg synth --sigma`` and ``gendeg measure --realism``."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core import realism
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.graph.executor import Executor
from comfyui_gendeg.core.graph.formats import load_any
from comfyui_gendeg.core.graph.object_info import object_info
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.core.io import load_image, save_image
from comfyui_gendeg.core.synth.plan import make_plan
from comfyui_gendeg.nodes import synth as S
from comfyui_gendeg.nodes.standins import runner_registry

ROOT = Path(__file__).resolve().parents[1]


def photo(h: int = 40, w: int = 60, name: str = "chelsea.png") -> torch.Tensor:
    """A shipped photo, small, ``[1,3,H,W]``."""
    return torch.nn.functional.interpolate(load_image(ROOT / "samples" / name), size=(h, w), mode="area")


def comfy(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


# --- nodes ----------------------------------------------------------------------------------------


def test_synthesize_node_reaches_a_requested_sigma_and_records_it():
    x = comfy(photo())
    out = S.GenDegSynthesize().synthesize(x, "rain", "mu", 0.05, 0.5, 3, sigma=0.06)["result"]
    meta = json.loads(out[3])
    mu, sg = measure_intensity(x.permute(0, 3, 1, 2), out[0].permute(0, 3, 1, 2))
    assert meta["sigma_requested"] == 0.06 and meta["sigma_mode"] == "requested"
    assert abs(float(mu[0]) - 0.05) <= 0.005 and abs(float(sg[0]) - 0.06) <= 0.01
    assert meta["sigma"] == pytest.approx(float(sg[0]), abs=1e-5) and "opacity" in meta["params"]
    # sigma 0 (the default): the typical σ of real data at that μ
    meta0 = json.loads(S.GenDegSynthesize().synthesize(x, "rain", "mu", 0.05, 0.5, 3)["result"][3])
    assert meta0["sigma_mode"] == "typical"
    assert meta0["sigma_requested"] == pytest.approx(realism.typical_sigma("rain", 0.05), abs=1e-6)
    # intensity_mode sigma: σ alone, the typical μ at that σ
    meta_s = json.loads(S.GenDegSynthesize().synthesize(x, "snow", "sigma", 0.0, 0.5, 3, sigma=0.05)["result"][3])
    assert meta_s["mu_requested"] == pytest.approx(realism.typical_mu("snow", 0.05), abs=1e-6)
    with pytest.raises(InputError, match="intensity_mode sigma needs a sigma above 0"):
        S.GenDegSynthesize().synthesize(x, "snow", "sigma", 0.0, 0.5, 3)
    with pytest.raises(InputError, match="jpeg has no second parameter"):
        S.GenDegSynthesize().synthesize(x, "jpeg", "mu", 0.01, 0.5, 3, sigma=0.02)


def test_gendeg_sampling_plan_feeds_the_synthesizer_with_the_official_draws():
    items = make_plan("rain,haze", "", "gendeg_sampling", 1, 40, 5)
    assert [i.type.split("+")[0] for i in items[:4]] == ["rain", "haze", "rain", "haze"]  # the types take turns
    rain = [i for q, i in enumerate(items) if q % 2 == 0]
    # each type's items are the official sequence of draws from its own stream
    import hashlib
    stream = random.Random(hashlib.sha256(b"5\0rain").digest())
    ref = [realism.sample_official("rain", stream, k) for k in range(20)]
    assert [(i.mu, i.sigma, i.dataset) for i in rain] == [(d.mu, d.sigma, d.dataset) for d in ref]
    assert rain[0].uniform and not rain[1].uniform  # draw 0 is one of the every-20th uniform draws
    for i in items:
        assert i.dataset in realism.datasets(i.type.split("+")[0]) and i.level == i.dataset
        assert i.type == ("rain+haze" if i.dataset == "ORD" else "snow+haze" if i.dataset == "CSD" else i.type)
    # the node's outputs, fed to GenDeg Synthesize: the dataset lands in the metadata
    types, mus, seeds, labels, sigmas, datasets = S.GenDegDegradationPlan().plan(
        ["low_light"], [""], ["gendeg_sampling"], [1], [2], [0])
    assert len(types) == 2 and all(d in ("LOLv2", "SID") for d in datasets) and all(s > 0 for s in sigmas)
    x = comfy(photo(32, 48))
    out = S.GenDegSynthesize().synthesize(x, "haze", "mu", mus[1], 0.5, seeds[1], type_name=types[1],
                                          sigma=sigmas[1], source_dataset=datasets[1])["result"]
    meta = json.loads(out[3])
    assert meta["type"] == "low_light" and meta["source_dataset"] == datasets[1]
    assert meta["mu_requested"] == pytest.approx(mus[1], abs=1e-6) and meta["sigma_requested"] == pytest.approx(sigmas[1], abs=1e-6)
    with pytest.raises(InputError, match="gendeg_sampling draws for GenDeg's types"):
        make_plan("jpeg", "", "gendeg_sampling", 1, 3, 0)


def _as_saved_before_sigma(doc: dict) -> dict:
    """The file as the editor saved it before issue 17: no σ widget, four plan outputs."""
    doc = copy.deepcopy(doc)
    for n in doc["nodes"]:
        if n["type"] == "GenDegSynthesize":
            assert n["widgets_values"][-1] == 0.0
            n["widgets_values"] = n["widgets_values"][:-1]
        if n["type"] == "GenDegDegradationPlan":
            n["outputs"] = n["outputs"][:4]
    return doc


def test_old_workflows_without_sigma_validate_and_run_with_the_same_mu(tmp_path):
    classes, names, modules = runner_registry()
    info = object_info(classes, names, modules)
    for name in ("gendeg_synth_dataset.json", "gendeg_restore_irsde.json"):
        old = _as_saved_before_sigma(json.loads((ROOT / "workflows" / name).read_text()))
        prompt, _ = load_any(old, info)
        synth = [n for n in prompt.values() if n["class_type"] == "GenDegSynthesize"]
        # no saved value: the widget's default (0 = typical), as the editor fills it when it opens the file
        assert synth and all(n["inputs"]["sigma"] == 0.0 for n in synth)
        assert not Executor(classes).validate(copy.deepcopy(prompt), check_files=False)
    # and it runs: every planned μ is reached, σ is the typical one of real data
    old = _as_saved_before_sigma(json.loads((ROOT / "workflows" / "gendeg_synth_dataset.json").read_text()))
    wf = tmp_path / "old.json"
    wf.write_text(json.dumps(old))
    clean = tmp_path / "input" / "clean"
    for i, name in enumerate(("coffee.png", "chelsea.png")):
        save_image(clean / f"{i}_{name}", photo(40, 60, name)[0])
    args = ["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "out"),
            "--temp-dir", str(tmp_path / "temp"), "--device", "cpu", "--quiet", "--set", "2.types=rain,haze",
            "--set", "2.intensities=medium"]
    assert cli.main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "gendeg_synth_dataset" / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["type"] for r in records} == {"rain", "haze"}
    for r in records:
        assert abs(r["mu"] - r["mu_requested"]) <= 0.005 and r["sigma_mode"] == "typical"
        assert r["sigma_requested"] == pytest.approx(realism.typical_sigma(r["type"], r["mu_requested"]), abs=1e-6)


# --- command line ---------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_synth_sigma(tmp_path, capsys):
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    save_image(src, photo()[0])
    assert cli.main(["synth", str(src), str(out), "--type", "snow", "--mu", "0.05", "--sigma", "0.06", "--seed", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sigma_requested"] == 0.06 and report["sigma_mode"] == "requested" and report["warnings"] == []
    assert abs(report["mu"] - 0.05) <= 0.005 and abs(report["sigma"] - 0.06) <= 0.01
    assert cli.main(["measure", str(src), str(out)]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["sigma"] == pytest.approx(report["sigma"], abs=1e-6)  # written file = reported numbers
    assert cli.main(["synth", str(src), str(out), "--type", "snow", "--sigma", "0.05"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mu_requested"] == pytest.approx(realism.typical_mu("snow", 0.05), abs=1e-6)
    assert cli.main(["synth", str(src), str(out), "--type", "snow", "--mu", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["sigma_mode"] == "typical"
    # unreachable: clamped with the warning, exit 0
    assert cli.main(["synth", str(src), str(out), "--type", "rain", "--mu", "0.05", "--sigma", "0.35"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["warnings"]) == 1 and "outside the reachable region" in report["warnings"][0]
    before = out.read_bytes()
    for bad, says in [
        (["--strength", "0.5", "--sigma", "0.05"], "--sigma needs calibration"),
        (["--mu", "0.05", "--sigma", "0"], "--sigma must be above 0"),
        ([], "give --mu"),
    ]:
        assert cli.main(["synth", str(src), str(out), "--type", "rain", *bad]) == 2
        assert says in one_error_line(capsys)
    assert cli.main(["synth", str(src), str(out), "--type", "jpeg", "--mu", "0.01", "--sigma", "0.02"]) == 2
    assert "jpeg has no second parameter" in one_error_line(capsys)
    assert out.read_bytes() == before  # a refused command loses nothing


def test_cli_measure_realism(tmp_path, capsys):
    x = photo()
    y = S.GenDegSynthesize().synthesize(comfy(x), "rain", "mu", 0.05, 0.5, 1)["result"][0].permute(0, 3, 1, 2)
    (tmp_path / "gt").mkdir()
    save_image(tmp_path / "gt" / "a.png", x[0])
    save_image(tmp_path / "lq" / "a.png", y[0])
    save_image(tmp_path / "gt" / "b.png", x[0])
    save_image(tmp_path / "lq" / "b.png", x[0].clamp(0, 1) * 0.5)
    assert cli.main(["measure", str(tmp_path / "gt" / "a.png"), str(tmp_path / "lq" / "a.png"), "--realism", "rain"]) == 0
    row = json.loads(capsys.readouterr().out)
    dist = realism.conditional_sigma("rain", row["mu"])
    assert row["sigma_percentile"] == pytest.approx(dist.percentile(row["sigma"]), abs=0.01)
    assert row["typical"] == (5 <= row["sigma_percentile"] <= 95) and row["real_sigma_band"][0] < row["real_sigma_band"][1]
    assert cli.main(["measure", str(tmp_path), "--realism", "rain"]) == 0  # one folder with gt/ and lq/
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[0]["clean"].endswith("a.png")
    summary = lines[-1]["summary"]
    assert summary["pairs"] == 2 and summary["typical_fraction"] == (lines[0]["typical"] + lines[1]["typical"]) / 2
    assert summary["median_percentile"] == pytest.approx((lines[0]["sigma_percentile"] + lines[1]["sigma_percentile"]) / 2, abs=0.01)
    assert cli.main(["measure", str(tmp_path / "gt"), str(tmp_path / "lq"), "--realism", "low-light"]) == 0  # alias
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["type"] == "low_light"
    assert cli.main(["measure", str(tmp_path), "--realism", "jpeg"]) == 2
    assert "choose one of" in one_error_line(capsys)
    assert cli.main(["measure", str(tmp_path / "gt")]) == 2
    assert "gt/ and lq/" in one_error_line(capsys)
    assert cli.main(["measure", str(tmp_path / "gt"), str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in one_error_line(capsys)


def test_gendeg_sampling_workflow_builds_pairs_with_the_source_dataset(tmp_path):
    clean = tmp_path / "input" / "clean"
    for i, name in enumerate(("coffee.png", "chelsea.png", "rocket.png")):
        save_image(clean / f"{i}_{name}", photo(32, 48, name)[0])
    wf = ROOT / "workflows" / "gendeg_synth_gendeg_sampling.json"
    args = ["run", str(wf), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "out"),
            "--temp-dir", str(tmp_path / "temp"), "--device", "cpu", "--quiet", "--set", "2.types=rain,snow,haze"]
    assert cli.main(args) == 0
    records = [json.loads(line) for line in
               (tmp_path / "out" / "gendeg_synth_gendeg_sampling" / "metadata.jsonl").read_text().splitlines()]
    plan = make_plan("rain,snow,haze", "", "gendeg_sampling", 1, 0, 0, [f"{i}_{n}" for i, n in
                                                                       enumerate(("coffee.png", "chelsea.png", "rocket.png"))])
    assert len(records) == 3
    for r in records:
        item = next(i for i in plan if i.dataset == r["source_dataset"] and abs(i.mu - r["mu_requested"]) < 1e-6)
        assert r["type"] == item.type and r["sigma_requested"] == pytest.approx(item.sigma, abs=1e-6)
        assert r["sigma_mode"] == "requested"


def test_measure_pairs_in_sub_folders_of_an_export(tmp_path):
    """`gendeg dataset export` keeps a dataset's sub-folders under gt/ and lq/: they pair by relative path."""
    from comfyui_gendeg.core.realism_check import find_pairs

    x = photo()
    for sub in ("haze", "rain"):
        save_image(tmp_path / "gt" / sub / "a.png", x[0])
        save_image(tmp_path / "lq" / sub / "a.png", x[0] * 0.5)
    save_image(tmp_path / "gt" / "rain" / "b.png", x[0])  # no degraded image: skipped
    pairs = find_pairs(tmp_path, None)
    assert [(c.relative_to(tmp_path).as_posix(), d.relative_to(tmp_path).as_posix()) for c, d in pairs] == [
        ("gt/haze/a.png", "lq/haze/a.png"), ("gt/rain/a.png", "lq/rain/a.png")]
