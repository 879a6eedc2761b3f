"""The training engine: config schema, schedules, EMA, deterministic data, export, resume, multi-process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.train import schema
from comfyui_gendeg.core.train.config import RestorerConfig, ScheduleConfig, load_config
from comfyui_gendeg.core.train.data import build_data
from comfyui_gendeg.core.train.data.datasets import StepSampler
from comfyui_gendeg.core.train.ema import EMA
from comfyui_gendeg.core.train.schedule import lr_at
from helpers import free_port
from safetensors.torch import load_file
from train_helpers import TINY_NAFNET, gendeg, subprocess_env, tiny_config, write_config

# --- config -------------------------------------------------------------------------


def test_config_defaults_and_overrides(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", {"model": {"arch": "nafnet"}}),
                      ["train.max_steps=123", "loss.diffloss.weight=0", "optim.betas=[0.9, 0.99]"])
    assert isinstance(cfg, RestorerConfig)
    assert cfg.train.max_steps == 123 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.loss == {"diffloss": {"weight": 0}}  # a config without a loss section: --set creates it
    assert cfg.data.source == "otf" and cfg.data.otf.mu == "presets"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"model": {"arch": "nafnet"}, "trian": {}}, "unknown key 'trian' at the top level; valid keys: name, seed, out, model"),
        ({"model": {"arch": "nafnet"}, "train": {"max_step": 3}}, "unknown key 'train.max_step' in train; valid keys: max_steps"),
        ({"model": {"arch": "nafnet"}, "train": {"max_steps": "many"}}, "train.max_steps must be int, got 'many'"),
        ({"model": {"arch": "nafnet"}, "train": {"mixed_precision": "fp8"}}, "train.mixed_precision must be one of 'no', 'bf16', 'fp16'"),
        ({"model": {"arch": "nafnet"}, "optim": {"lr": float("nan")}}, "optim.lr must be a finite number"),
        ({"model": {"arch": "nafnet"}, "optim": {"betas": [0.9]}}, "optim.betas must be [float, float] (2 values)"),
        ({}, "model.arch is required"),
        ({"model": {"arch": "nafnet"}, "data": {"source": "pairs"}}, "data.pairs.root is not set"),
        ({"model": {"arch": "nafnet"}, "train": {"max_steps": 0}}, "train.max_steps must be at least 1"),
    ],
)
def test_config_errors_name_the_key_and_the_valid_choices(tmp_path, data, needle):
    with pytest.raises(schema.ConfigError) as err:
        load_config(write_config(tmp_path / "c.yaml", data))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: nafnet\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        load_config(None, ["train.max_steps"])


def test_schema_documents_every_key():
    import dataclasses
    import typing

    def sections(cls):
        yield cls
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            for arg in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(arg):
                    yield from sections(arg)

    for cls in sections(RestorerConfig):
        docs = schema.field_docs(cls)
        undocumented = [f.name for f in dataclasses.fields(cls)
                        if f.name not in docs and not dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])
                        and not any(dataclasses.is_dataclass(a) for a in typing.get_args(typing.get_type_hints(cls)[f.name]))]
        assert not undocumented, f"{cls.__name__}: {undocumented}"
    text = "\n".join(schema.describe(RestorerConfig))
    assert "  max_steps: 10000  # int. Optimizer steps." in text
    assert "source: otf  # one of 'otf', 'pairs', 'folders'." in text


def test_docs_training_schema_is_up_to_date():
    """docs/training.md carries the schema printed by `gendeg train restorer --schema`."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text(encoding="utf-8")
    assert "\n".join(schema.describe(RestorerConfig)) in doc, "regenerate the schema block: gendeg train restorer --schema"


def test_shipped_example_configs_validate():
    root = Path(__file__).resolve().parent.parent / "configs" / "train"
    files = sorted(root.glob("*.yaml"))
    assert {"nafnet_otf_weather.yaml", "nafnet_pairs.yaml"} <= {f.name for f in files}
    for f in files:
        if f.name.startswith(("driftrec", "irsde", "gendeg")):
            continue  # other training commands with their own schemas
        cfg = load_config(f)
        assert cfg.model.arch in ("nafnet", "swinir", "perceive_ir")
    weather = load_config(root / "nafnet_otf_weather.yaml")
    assert weather.data.source == "otf" and weather.data.otf.clean == "input/clean"
    assert set(weather.data.otf.types) == {"haze", "rain", "snow", "motion_blur", "low_light", "raindrop"}
    assert weather.data.otf.mu == "presets"
    assert {"l1", "diffloss"} <= set(weather.loss)
    off = load_config(root / "nafnet_otf_weather.yaml", ["loss.diffloss.weight=0"])
    assert off.loss["diffloss"]["weight"] == 0


# --- schedules and EMA -------------------------------------------------------------


def test_learning_rate_schedules_closed_forms():
    base, n = 1e-3, 100
    cos = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr=1e-6)
    assert lr_at(0, base, cos, n) == pytest.approx(base / 10)
    assert lr_at(9, base, cos, n) == pytest.approx(base)
    assert lr_at(10, base, cos, n) == pytest.approx(base)
    assert lr_at(55, base, cos, n) == pytest.approx(1e-6 + (base - 1e-6) * 0.5)
    assert lr_at(100, base, cos, n) == pytest.approx(1e-6)
    ms = ScheduleConfig(kind="multistep", milestones=[50, 20], gamma=0.5)
    assert [lr_at(s, base, ms, n) for s in (0, 19, 20, 49, 50, 99)] == pytest.approx([base, base, base / 2, base / 2, base / 4, base / 4])
    assert lr_at(77, base, ScheduleConfig(kind="constant"), n) == base


def test_ema_is_the_exponential_average():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9, warmup=False)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=0)
    assert torch.allclose(ema.shadow["weight"], 0.9 * w0 + 0.1 * (w0 + 1.0))
    warm = EMA(net, decay=0.999, warmup=True)
    assert warm.decay_at(0) == pytest.approx(1 / 10) and warm.decay_at(10_000) == pytest.approx(0.999)


# --- data ----------------------------------------------------------------------------


def test_samples_are_a_function_of_seed_and_sample_number(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path)))
    a = build_data(cfg.data, 0).train
    b = build_data(cfg.data, 0).train
    order = [3, 1, 2, 0, 3]
    first = [a[k] for k in order]
    again = [b[k] for k in reversed(order)][::-1]  # another instance, another order of requests
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x["gt"], y["gt"]) and torch.equal(x["lq"], y["lq"])
    assert not torch.equal(first[0]["gt"], first[1]["gt"])
    other = build_data(cfg.data, 1).train
    assert not torch.equal(other[3]["lq"], first[0]["lq"])
    s = first[0]
    assert s["gt"].shape == (3, 32, 32) and s["lq"].shape == (3, 32, 32) and s["type"] == "haze"
    assert 0 <= float(s["lq"].min()) and float(s["lq"].max()) <= 1


def test_step_sampler_partitions_samples_across_processes_and_resumes():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    # 2 processes, batch 2, accumulation 2: one optimizer step uses 8 distinct samples
    r0, r1 = take(StepSampler(0, 2, 2, 0, 2), 8), take(StepSampler(0, 2, 2, 1, 2), 8)
    assert sorted(r0[:4] + r1[:4]) == list(range(8)) and sorted(r0 + r1) == list(range(16))
    # a run restarted at step 1 continues exactly where step 1 of the full run is
    assert take(StepSampler(1, 2, 2, 0, 2), 4) == r0[4:8]


def test_validation_split_is_fixed_and_never_trained_on(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path)))
    d1, d2 = build_data(cfg.data, 0), build_data(cfg.data, 0)
    assert len(d1.val) == 1 and torch.equal(d1.val[0]["lq"], d2.val[0]["lq"])
    val_name = d1.val[0]["name"].split(":")[0]
    assert all(Path(f).stem != val_name for f in d1.train.files)
    assert d1.summary["images"] == 2 and d1.summary["val_images"] == 1


# --- a whole run: export, spandrel, resume -----------------------------------------


def _train(tmp_path: Path, *args: str, **sections) -> subprocess.CompletedProcess:
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, **sections))
    return gendeg("train", "restorer", str(cfg), "--device", "cpu", *args, cwd=tmp_path)


def _train_here(tmp_path: Path, capsys, *args: str, **sections) -> tuple[int, str, str]:
    """The same command in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from comfyui_gendeg.cli import main

    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, **sections))
    capsys.readouterr()
    code = main(["train", "restorer", str(cfg), "--device", "cpu", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("nafnet", TINY_NAFNET),
        ("swinir", {"img_size": 32, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 8, "mlp_ratio": 2.0}),
    ],
)
def test_exported_model_loads_in_spandrel_and_in_the_pack_with_identical_outputs(tmp_path, arch, options):
    from comfyui_gendeg.core.restore.feedforward import load_restorer
    from comfyui_gendeg.core.train.archs import build_model
    from comfyui_gendeg.core.train.checkpoint import export_model, read_metadata
    from spandrel import ModelLoader

    torch.manual_seed(0)
    net, opts = build_model(arch, options)
    with torch.no_grad():  # trained-looking weights, not the initial ones
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    path = export_model(tmp_path / "m.safetensors", net.state_dict(), {"gendeg.arch": arch, "gendeg.training": {"options": opts}})
    desc = ModelLoader().load_from_file(path)
    assert desc.scale == 1 and desc.input_channels == 3 and desc.architecture.id.lower() == arch
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        want = net(x)
        got = desc.model.eval()(x)
    assert torch.equal(got, want)
    restorer = load_restorer(path)
    assert restorer.architecture.lower() == arch
    assert read_metadata(path)["gendeg.training"]["options"] == opts


def test_train_cli_writes_model_checkpoints_metrics_and_validation(tmp_path):
    proc = _train(tmp_path, "--set", "train.val_every=4")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert (run / "tiny.safetensors").is_file() and (run / "config.yaml").is_file()
    assert [p.name for p in sorted((run / "checkpoints").glob("*.pt"))] == ["step_0000004.pt", "step_0000008.pt"]
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,lr,") and "l1" in metrics[0] and len(metrics) == 1 + 4
    val = (run / "val.csv").read_text().splitlines()
    assert val[0].startswith("step,psnr,ssim") and "psnr_input" in val[0] and len(val) == 3
    assert (run / "val" / "step_0000004.png").is_file() and (run / "val" / "step_0000008.png").is_file()
    from comfyui_gendeg.core.train.checkpoint import read_metadata

    meta = read_metadata(run / "tiny.safetensors")
    assert meta["gendeg.steps"] == 8 and meta["gendeg.training"]["arch"] == "nafnet"
    assert meta["gendeg.training"]["data"]["source"] == "otf"
    # a second run into the same folder is refused (nothing lost), --resume continues
    again = _train(tmp_path)
    assert again.returncode == 2 and "pass --resume" in again.stderr and "Traceback" not in again.stderr


def _tiny_prior_models(root: Path) -> Path:
    """A models folder holding a tiny same-layout DiffLoss prior (random weights)."""
    from comfyui_gendeg.core.train.priors import TINY, GuidedDiffusionUNet, save_prior

    folder = root / "models" / "restore" / "diffloss"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = GuidedDiffusionUNet(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    save_prior(net.state_dict(), folder / "256x256_diffusion_uncond.safetensors", TINY)
    return root / "models"


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    """Kill the run (SIGKILL) after a checkpoint, resume: bit-identical final weights.

    The losses include DiffLoss on a tiny prior, so the per-step loss randomness (t, noise)
    is covered as well as the data's.
    """
    steps = {"max_steps": 12, "save_every": 3, "log_every": 3}
    loss = {"l1": {"weight": 1.0}, "diffloss": {"weight": 1.0, "gamma": 1.0, "checkpointing": False}}
    runs = {}
    for name in ("full", "cut"):
        root = tmp_path / name
        root.mkdir()
        models = _tiny_prior_models(root)
        cfg = write_config(root / "c.yaml", tiny_config(root, loss=loss, train={**tiny_config(root)["train"], **steps}))
        runs[name] = (root, cfg, ["--device", "cpu", "--models-dir", str(models)])
    root, cfg, opts = runs["full"]
    proc = gendeg("train", "restorer", str(cfg), *opts, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "diffloss_nat" in (root / "run" / "metrics.csv").read_text().splitlines()[0]
    want = load_file(root / "run" / "tiny.safetensors")

    root, cfg, opts = runs["cut"]
    cmd = [sys.executable, "-m", "comfyui_gendeg", "train", "restorer", str(cfg), *opts]
    p = subprocess.Popen(cmd, cwd=root, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = root / "run" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None and not list(ckpts.glob("step_0000006.pt")):
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed; make it longer"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (root / "run" / "summary.json").exists()
    resumed = gendeg("train", "restorer", str(cfg), *opts, "--resume", cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    got = load_file(root / "run" / "tiny.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    rows = (root / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["3", "6", "9", "12"]  # no duplicate rows after the resume


def test_resume_refuses_a_changed_config(tmp_path, capsys):
    assert _train_here(tmp_path, capsys, "--max-steps", "4")[0] == 0
    code, _, err = _train_here(tmp_path, capsys, "--resume", "--set", "optim.lr=0.5")
    assert code == 2 and "config changed since the checkpoint" in err


@pytest.mark.slow
def test_two_process_run_through_accelerate_trains_and_writes_one_checkpoint(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, train={**tiny_config(tmp_path)["train"], "max_steps": 4}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "comfyui_gendeg", "train", "restorer", str(cfg), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == ["step_0000004.pt"]
    assert proc.stdout.count('"model"') == 1  # only the main process reports
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_0000004.pt", weights_only=True)
    from comfyui_gendeg.core.train.archs import build_model
    from comfyui_gendeg.core.train.data.seeding import STREAM_INIT, derive_seed

    net, _ = build_model("nafnet", TINY_NAFNET, derive_seed(0, STREAM_INIT))  # the initial weights
    assert not torch.equal(net.state_dict()["intro.weight"], state["model"]["intro.weight"])  # it trained
    assert state["optimizer"]["state"], "AdamW took steps"


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"model": {"arch": "unet9000"}}, "not a trainable architecture; choose one of nafnet, swinir"),
        ({"model": {"arch": "nafnet", "options": {"widht": 8}}}, "valid options: img_channel, width"),
        ({"data": {"source": "otf", "otf": {"clean": "nowhere"}}}, "data.otf.clean"),
        ({"loss": {"l1": {"weight": -1}}}, "loss.l1.weight must be a number >= 0"),
        ({"loss": {"l7": {"weight": 1}}}, "l7"),
        ({"train": {"mixed_precision": "fp16"}}, "fp16 needs a CUDA GPU"),
        ({"loss": {"l1": {}, "diffloss": {"weight": 1.0}}}, "gendeg weights fetch guided-diffusion-256-uncond"),
        ({"loss": {"dpl": {}}}, "gendeg weights fetch tv-vgg16"),
        ({"loss": {"diffloss": {"gama": 1.0}}}, "gama"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, sections, needle):
    code, _, err = _train_here(tmp_path, capsys, **sections)
    assert code == 2 and needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not list((tmp_path / "run").glob("checkpoints/*"))


def test_schema_and_listing_flags(tmp_path, capsys):
    from comfyui_gendeg.cli import main

    assert main(["train", "restorer", "--schema"]) == 0
    assert "max_steps: 10000" in capsys.readouterr().out
    assert main(["train", "restorer", "--archs"]) == 0
    out = capsys.readouterr().out
    assert "nafnet (MIT)" in out and "swinir (Apache-2.0)" in out
