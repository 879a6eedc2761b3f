"""GenDeg nodes end to end on a tiny random checkpoint in the official layout (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.gendeg.structure import StructureNAFNet
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS, gendeg, host
from test_gendeg_fixtures import make_tiny_checkpoint

IDS = ("GenDegModelLoader", "GenDegCondition", "GenDegIntensityFromPair", "GenDegSample", "GenDegStructureCorrect",
       "GenDegIntensityFilter")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gendeg_models")
    path, _, _ = make_tiny_checkpoint(folder, seed=5)
    torch.manual_seed(0)
    net = StructureNAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])
    torch.save({"state_dict": net.state_dict()}, folder / "nafnet_sd.ckpt")
    return folder


@pytest.fixture
def models(shared):
    root = host.models_dir() / "gendeg"
    root.mkdir(parents=True)
    for name in ("gendeg.ckpt", "nafnet_sd.ckpt", "tokenizer"):
        (root / name).symlink_to(shared / name)
    return root


def _run(node_id: str, **kwargs):
    cls = NODE_CLASS_MAPPINGS[node_id]
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def test_node_contracts():
    for node_id in IDS:
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert cls.DESCRIPTION and cls.CATEGORY in ("GenDeg/Degrade", "GenDeg/Dataset")
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert "tooltip" in value[1], f"{node_id}.{name} has no tooltip"
    assert NODE_CLASS_MAPPINGS["GenDegModelLoader"].RETURN_TYPES == ("GENDEG_MODEL",)
    assert NODE_CLASS_MAPPINGS["GenDegCondition"].RETURN_TYPES[0] == "GENDEG_COND"


def test_conditions_presets_sweeps_and_chains():
    (one, prompt), = [_run("GenDegCondition", degradation="haze", caption="a bridge", preset="heavy", mu=0.5, sigma=0.3)]
    assert len(one) == 1 and (one[0].mu, one[0].sigma) == (0.168, 0.100)
    assert prompt == "a bridge, in hazy conditions"
    custom, _ = _run("GenDegCondition", degradation="rain", caption="x", preset="custom", mu=0.2, sigma=0.1,
                     type_name="snow+haze", previous=one)
    assert [c.degradation for c in custom] == ["haze", "snow+haze"] and custom[1].mu == 0.2
    sweep, text = _run("GenDegCondition", degradation="rain", caption="x", preset="medium", mu=0.1, sigma=0.1,
                       mu_sweep="0.05, 0.1,0.2")
    assert [c.mu for c in sweep] == [0.05, 0.1, 0.2] and len(text.splitlines()) == 3
    with pytest.raises(InputError):
        _run("GenDegCondition", degradation="rain", caption="x", preset="custom", mu=0.1, sigma=0.1, mu_sweep="a,b")


def test_intensity_from_pair_matches_the_measure():
    torch.manual_seed(0)
    clean = torch.rand(1, 40, 40, 3)
    degraded = (clean * 0.6 + 0.3).clamp(0, 1)
    mu, sigma = _run("GenDegIntensityFromPair", clean=clean, degraded=degraded)
    m, s = measure_intensity(clean.permute(0, 3, 1, 2), degraded.permute(0, 3, 1, 2))
    assert mu == pytest.approx(float(m[0])) and sigma == pytest.approx(float(s[0]))
    ramp = torch.linspace(0, 1, 40)
    smooth = torch.stack([ramp[None].expand(40, 40), ramp[:, None].expand(40, 40), 0.5 * torch.ones(40, 40)], -1)[None]
    small = (smooth[:, ::2, ::2] * 0.5).clamp(0, 1)  # a half-size, darker copy
    mu2, _ = _run("GenDegIntensityFromPair", clean=smooth, degraded=small)
    mu3, _ = _run("GenDegIntensityFromPair", clean=smooth, degraded=smooth * 0.5)
    assert abs(mu2 - mu3) < 0.01  # a smaller degraded image is resized to the clean size first


def test_load_sample_filter_and_correct(models):
    (model,) = _run("GenDegModelLoader", ckpt_name="gendeg.ckpt", unet_weights="ema", dtype="auto")
    assert model.dtype == torch.float32 and model.info["ema"] is True
    assert (models / "gendeg.gendeg.safetensors").exists()
    names = NODE_CLASS_MAPPINGS["GenDegModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert "gendeg.ckpt" in names
    conds, _ = _run("GenDegCondition", degradation="haze", caption="a hill", preset="custom", mu=0.1, sigma=0.05,
                    mu_sweep="0.05,0.3")
    rgba = torch.rand(2, 21, 30, 4)
    deg, mu, sigma, meta, clean, labels = _run(
        "GenDegSample", image=rgba, model=model, condition=conds, seed=11, steps=2, scheduler="euler_a",
        text_guidance=7.5, image_guidance=1.5, resolution=16, batch_size=3)
    assert deg.shape == (4, 21, 30, 4) and clean.shape == (4, 21, 30, 4)
    torch.testing.assert_close(deg[..., 3], rgba[[0, 0, 1, 1], ..., 3])  # alpha carried around the model
    torch.testing.assert_close(clean, rgba[[0, 0, 1, 1]])
    rows = json.loads(meta)
    assert [r["mu_requested"] for r in rows] == [0.05, 0.3, 0.05, 0.3]
    assert [r["seed"] for r in rows] == [11, 12, 13, 14] and rows[0]["engine"] == "gendeg"
    assert rows[0]["prompt"] == "a hill, in hazy conditions" and rows[0]["model"] == "gendeg.ckpt"
    assert mu == pytest.approx(sum(r["mu"] for r in rows) / 4, abs=1e-5)
    assert len(labels.splitlines()) == 4 and labels.startswith("haze 0.050 -> ")
    assert model.parameter_device() == torch.device("cpu")  # offloaded after sampling
    assert "source_dataset" not in rows[0]  # only recorded when a plan drew the intensity (old pair ids stay)
    grey = torch.rand(1, 17, 19, 1)
    # a gendeg_sampling plan's draw: its dataset output reaches the condition, then the metadata
    drawn, _ = _run("GenDegCondition", degradation="haze", caption="a hill", preset="custom", mu=0.21, sigma=0.08,
                    source_dataset="Dense-Haze")
    g, _, _, g_meta, *_ = _run("GenDegSample", image=grey, model=model, condition=drawn, seed=0, steps=1,
                               scheduler="ddim", text_guidance=7.5, image_guidance=1.5, resolution=0)
    assert g.shape == (1, 17, 19, 1)
    assert json.loads(g_meta)["source_dataset"] == "Dense-Haze" and json.loads(g_meta)["mu_requested"] == 0.21

    # intensity filter: tolerance decides what is kept; everything dropped is an error
    d_list, c_list = [deg], [clean]
    k_clean, k_deg, k_meta, k_names = _run("GenDegIntensityFilter", clean=c_list, degraded=d_list, metadata=[meta],
                                          abs_tolerance=[1.0], rel_tolerance=[0.0], filename=["a.png\nb.png"])
    assert len(k_deg) == 4 and k_deg[0].shape == (1, 21, 30, 4) and k_names == ["a.png", "b.png", "b.png", "b.png"]
    fake = json.dumps([{**r, "mu": r["mu_requested"] + (0.0 if k % 2 == 0 else 0.5)} for k, r in enumerate(rows)])
    _, k_deg, k_meta, _ = _run("GenDegIntensityFilter", clean=c_list, degraded=d_list, metadata=[fake],
                               abs_tolerance=[0.01], rel_tolerance=[0.1])
    assert len(k_deg) == 2 and json.loads(k_meta[1])["mu_requested"] == 0.05
    torch.testing.assert_close(k_deg[1], deg[2:3])
    with pytest.raises(InputError, match="dropped all"):
        _run("GenDegIntensityFilter", clean=c_list, degraded=d_list, metadata=[json.dumps(
            [{**r, "mu": 0.9} for r in rows])], abs_tolerance=[0.0], rel_tolerance=[0.0])

    (corrected,) = _run("GenDegStructureCorrect", clean=clean, degraded=deg, ckpt_name="nafnet_sd.ckpt")
    assert corrected.shape == deg.shape and torch.isfinite(corrected).all()
    torch.testing.assert_close(corrected[..., 3], deg[..., 3])
    mixed = json.dumps([{**r, "type": t} for r, t in zip(rows, ["haze", "rain", "raindrop", "snow"], strict=True)])
    (auto,) = _run("GenDegStructureCorrect", clean=clean, degraded=deg, ckpt_name="nafnet_sd.ckpt", apply_to="auto",
                   metadata=mixed)
    torch.testing.assert_close(auto[[1, 3]], deg[[1, 3]])  # rain and snow are left alone (official --auto_s)
    torch.testing.assert_close(auto[[0, 2]], corrected[[0, 2]])


def test_sample_refuses_bad_images(models):
    (model,) = _run("GenDegModelLoader", ckpt_name="gendeg.ckpt", unet_weights="raw", dtype="fp32")
    assert model.info["ema"] is False
    conds, _ = _run("GenDegCondition", degradation="rain", caption="x", preset="light", mu=0.1, sigma=0.1)
    bad = torch.rand(1, 16, 16, 3)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        _run("GenDegSample", image=bad, model=model, condition=conds, seed=0, steps=1, scheduler="euler_a",
             text_guidance=7.5, image_guidance=1.5)
    with pytest.raises(InputError, match="expected 1-4 channels"):
        _run("GenDegSample", image=torch.rand(1, 16, 16, 5), model=model, condition=conds, seed=0, steps=1,
             scheduler="euler_a", text_guidance=7.5, image_guidance=1.5)


def test_gendeg_module_is_a_node_module():
    assert gendeg.NODE_CLASS_MAPPINGS.keys() == set(IDS)


def test_shipped_gendeg_workflows_run_headless(shared, tmp_path):
    """The three GenDeg workflows run end to end on the tiny model (few steps, small working size)."""
    import shutil
    from pathlib import Path

    from comfyui_gendeg import cli

    models = tmp_path / "m"
    (models / "gendeg").mkdir(parents=True)
    (models / "gendeg" / "gendeg.ckpt").symlink_to(shared / "gendeg.ckpt")
    (models / "clip").mkdir()
    (models / "clip" / "clip-vit-large-patch14").symlink_to(shared / "tokenizer")  # tokenizer from models/clip
    inp = tmp_path / "in" / "clean"
    inp.mkdir(parents=True)
    samples = Path(cli.__file__).resolve().parent / "samples"
    shutil.copy(samples / "rocket.png", inp / "rocket.png")
    out = tmp_path / "out"
    common = ["--models-dir", str(models), "--input-dir", str(tmp_path / "in"), "--output-dir", str(out),
              "--temp-dir", str(tmp_path / "t"), "--device", "cpu", "--quiet"]
    wf = Path(cli.__file__).resolve().parent / "workflows"
    assert cli.main(["run", str(wf / "gendeg_gendeg_degrade.json"), *common,
                     "--set", "4.steps=1", "--set", "4.resolution=16"]) == 0
    assert len(list(out.glob("gendeg_degrade_*.png"))) == 1
    assert cli.main(["run", str(wf / "gendeg_gendeg_sweep.json"), *common,
                     "--set", "6.steps=1", "--set", "6.resolution=16", "--set", "6.scheduler=ddim"]) == 0
    assert len(list(out.glob("gendeg_sweep_*.png"))) == 1
    assert cli.main(["run", str(wf / "gendeg_gendeg_dataset.json"), *common,
                     "--set", "6.steps=1", "--set", "6.resolution=16", "--set", "7.abs_tolerance=1.0"]) == 0
    records = (out / "gendeg_dataset" / "metadata.jsonl").read_text().splitlines()
    assert len(records) == 3  # one image x three conditions, all within the (wide) tolerance
    rec = json.loads(records[0])
    assert rec["engine"] == "gendeg" and "mu_requested" in rec and rec["source"] == "rocket.png"
