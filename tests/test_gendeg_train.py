"""GenDeg fine-tuning (`gendeg train gendeg`): data, the official objective, LoRA/full, export, resume (tiny, CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.gendeg import conditioning as C
from comfyui_gendeg.core.gendeg.lora import apply_lora, read_lora
from comfyui_gendeg.core.gendeg.model import load_gendeg
from comfyui_gendeg.core.gendeg.sampler import sample
from comfyui_gendeg.core.intensity import measure_intensity
from comfyui_gendeg.core.io import save_image
from comfyui_gendeg.core.train.config import load_config
from comfyui_gendeg.core.train.data.seeding import generator
from comfyui_gendeg.core.train.engine import StepContext, collate, trained_keys
from comfyui_gendeg.core.train.gendeg.config import GenDegTrainConfig
from comfyui_gendeg.core.train.gendeg.data import build_gendeg_data
from comfyui_gendeg.core.train.gendeg.objective import dropout_masks
from comfyui_gendeg.core.train.gendeg.task import GenDegTask, train_gendeg
from PIL import Image
from safetensors.torch import load_file
from test_gendeg_fixtures import make_tiny_checkpoint

PHRASE = "in underwater conditions"
CAST = torch.tensor([0.0, 0.15, 0.25])  # the synthetic new type: a blue-green cast over a dimmed image


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny GenDeg (official layout) in models/gendeg and eight 'underwater' pairs in gt/ + lq/ (two captioned)."""
    root = tmp_path_factory.mktemp("gendeg_train")
    ckpt, _, _ = make_tiny_checkpoint(root / "models" / "gendeg", seed=3)
    g = torch.Generator().manual_seed(0)
    for i in range(8):
        clean = F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(24, 20), mode="bilinear")[0]
        save_image(root / "gt" / f"p{i}.png", clean)
        save_image(root / "lq" / f"p{i}.png", clean * (0.5 + 0.05 * i) + CAST[:, None, None])
    (root / "gt" / "p0.txt").write_text("a reef\n", encoding="utf-8")
    (root / "gt" / "p1.txt").write_text("a diver", encoding="utf-8")
    return root, ckpt


def config(root: Path, ckpt: Path, *overrides: str) -> GenDegTrainConfig:
    base = [f"model.base={ckpt}", f"data.folders.gt={root / 'gt'}", f"data.folders.lq={root / 'lq'}",
            "data.type=underwater", f"data.phrases={{underwater: ', {PHRASE}'}}", "data.size=16", "data.workers=0",
            "model.lora.rank=4", "model.lora.alpha=4", "train.batch_size=4", "train.val_every=0", "train.log_every=1",
            "validation.steps=2", "validation.resolution=0"]
    return load_config(None, base + list(overrides), schema=GenDegTrainConfig)


def task_and_net(root: Path, ckpt: Path, *overrides: str):
    cfg = config(root, ckpt, *overrides)
    data = build_gendeg_data(cfg.data, cfg.seed)
    task = GenDegTask(cfg, root / "models", data.summary)
    return cfg, data, task, task.build_network()


def encode(task: GenDegTask, net, prompts: list[str]) -> torch.Tensor:
    ids = task.tokenizer(prompts, truncation=True, max_length=77, padding="max_length", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return net.text_encoder(input_ids=ids).last_hidden_state


# --- data ------------------------------------------------------------------------------


def test_pairs_get_caption_plus_phrase_and_the_intensity_gendeg_measures(world):
    root, ckpt = world
    _, data, _, _ = task_and_net(root, ckpt)
    s = data.train[3]
    assert s["clean"].shape == s["degraded"].shape == (3, 16, 16)
    prompts = {data.train[k]["prompt"] for k in range(8)}
    assert prompts == {"a reef, in underwater conditions", "a diver, in underwater conditions",
                       "a photo of a scene, in underwater conditions"}
    assert data.summary["captions"] == {"files": 2, "fixed": 6}
    # μ/σ as the official edit_dataset.py: Pillow LANCZOS to 256x256 of the 8-bit files, |a/255 - b/255|
    pair = data.train.pairs[[p.name for p in data.train.pairs].index("p5")]
    a = np.asarray(Image.open(pair.gt).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)) / 255
    b = np.asarray(Image.open(pair.lq).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)) / 255
    diff = np.abs(a - b).flatten()
    k = next(k for k in range(16) if data.train.pairs[_item(data, k)].name == "p5")
    got = data.train[k]
    assert got["mu"] == pytest.approx(diff.mean(), abs=2e-4) and got["sigma"] == pytest.approx(diff.std(), abs=2e-4)
    assert torch.equal(got["one_hots"], C.intensity_one_hots(got["mu"], got["sigma"]))
    # squash = Pillow's Lanczos resize of the whole image; samples are a function of (seed, k); flips are left-right only
    want = torch.from_numpy(np.asarray(Image.open(pair.gt).convert("RGB").resize((16, 16), Image.Resampling.LANCZOS))).permute(2, 0, 1) / 255
    assert torch.equal(got["clean"], want) or torch.equal(got["clean"], want.flip(-1))
    assert torch.equal(data.train[k]["degraded"], got["degraded"])
    # presets of the new type: 20/50/80th percentiles of the measured pairs
    mus = sorted(float(measure_intensity(*(torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None] / 255
                                          for f in (p.gt, p.lq)))[0]) for p in data.train.pairs)
    levels = data.summary["types"]["underwater"]
    assert levels["phrase"] == PHRASE and levels["pairs"] == 8
    assert levels["medium"][0] == pytest.approx(np.percentile(mus, 50), abs=1e-4)


def _item(data, k: int) -> int:
    from comfyui_gendeg.core.train.data.datasets import epoch_item

    return epoch_item(data.train.seed, k, len(data.train))


def test_types_and_captions_are_checked_up_front(world, tmp_path):
    root, ckpt = world
    with pytest.raises(InputError, match="type 'underwater' has no phrase: add it to data.phrases"):
        build_gendeg_data(config(root, ckpt, "data.phrases={}").data, 0)
    with pytest.raises(InputError, match=r"6 pair\(s\) have no caption .*p2.txt"):
        build_gendeg_data(config(root, ckpt, "data.caption=files").data, 0)
    haze = build_gendeg_data(config(root, ckpt, "data.type=fog", "data.phrases={}", "data.caption=fixed").data, 0)
    assert haze.train[0]["prompt"] == "a photo of a scene, in hazy conditions"  # GenDeg's own phrase ('fog' too)
    # a pack dataset: types and captions from its metadata
    ds = tmp_path / "ds"
    (ds / "clean").mkdir(parents=True)
    (ds / "degraded").mkdir()
    lines = []
    for i, kind in enumerate(["underwater", "rain", "underwater"]):
        for sub, src in (("clean", "gt"), ("degraded", "lq")):
            (ds / sub / f"p{i}.png").write_bytes((root / src / f"p{i}.png").read_bytes())
        rec = {"clean": f"clean/p{i}.png", "degraded": f"degraded/p{i}.png", "type": kind, "pair_id": f"p{i}"}
        if i < 2:
            rec["caption"] = f"scene {'ab'[i]}"
        lines.append(json.dumps(rec))
    (ds / "metadata.jsonl").write_text("\n".join(lines), encoding="utf-8")
    pairs_cfg = config(root, ckpt, "data.source=pairs", f"data.pairs.root={ds}")
    got = build_gendeg_data(pairs_cfg.data, 0)
    assert sorted(p.prompt for p in got.train.pairs) == ["a photo of a scene, in underwater conditions",
                                                         "scene a, in underwater conditions", "scene b, in rainy conditions"]
    with pytest.raises(InputError, match="1 pair"):
        build_gendeg_data(config(root, ckpt, "data.source=pairs", f"data.pairs.root={ds}", "data.caption=metadata").data, 0)


# --- the objective -----------------------------------------------------------------------


def test_dropout_proportions_and_null_conditions_follow_the_official_scheme(world):
    root, ckpt = world
    u = torch.rand(400_000, generator=torch.Generator().manual_seed(1))
    text_null, image_zero = dropout_masks(u, 0.05)
    # ddpm_edit.get_input, verbatim in meaning: prompt_mask = r < 2u; input_mask = 1 - (r >= u)(r < 3u)
    assert torch.equal(text_null, u < 0.1)
    assert torch.equal(~image_zero, (1 - (u >= 0.05).float() * (u < 0.15).float()).bool())
    cases = {"text+intensity only": text_null & ~image_zero, "everything": text_null & image_zero,
             "image only": ~text_null & image_zero, "nothing": ~text_null & ~image_zero}
    tol = 5 * (0.05 * 0.95 / u.numel()) ** 0.5
    for name, mask in cases.items():
        want = 0.85 if name == "nothing" else 0.05
        assert abs(float(mask.float().mean()) - want) < tol, name

    # what the UNet gets: the empty prompt's embedding, null one-hots, a zero image latent
    _, data, task, net = task_and_net(root, ckpt)
    batch = collate([data.train[k] for k in range(96)])
    inp = task.inputs(net, batch, generator(7, 0))
    assert torch.equal(inp.text_null, dropout_masks(torch.rand(96, generator=generator(7, 0)))[0])
    assert 0 < int(inp.text_null.sum()) < 96 and 0 < int(inp.image_zero.sum()) < 96
    null_text, full_text = encode(task, net, [""]), encode(task, net, list(batch["prompt"]))
    mode = net.vae.encode(batch["clean"] * 2 - 1).latent_dist.mode()
    null = C.null_one_hots(1)[0]
    for i in range(96):
        if inp.text_null[i]:
            assert torch.allclose(inp.text[i], null_text[0], atol=1e-5) and torch.equal(inp.one_hots[i], null)
        else:
            assert torch.allclose(inp.text[i], full_text[i], atol=1e-5) and torch.equal(inp.one_hots[i], batch["one_hots"][i])
        if inp.image_zero[i]:
            assert not inp.image_latent[i].any()
        else:
            assert torch.allclose(inp.image_latent[i], mode[i], atol=1e-5)


def test_loss_equals_an_independent_computation(world):
    """ddpm_edit.py's training loss written out from diffusers' own pieces, same draws in the same order."""
    from diffusers import DDPMScheduler

    root, ckpt = world
    _, data, task, net = task_and_net(root, ckpt, "objective.uncond=0.3")  # every case occurs in 8 samples
    net.eval()
    batch = collate([data.train[k] for k in range(8)])
    ctx = StepContext(0, 0, generator(11, 0), lambda: torch.autocast("cpu", enabled=False))
    got = task.loss_terms(net, batch, ctx)["mse"]

    g, p, b = generator(11, 0), 0.3, 8
    with torch.no_grad():
        r = torch.rand(b, generator=g)
        prompt_mask = (r < 2 * p)[:, None, None]
        input_mask = 1 - ((r >= p).float() * (r < 3 * p).float())[:, None, None, None]
        z = 0.18215 * net.vae.encode(batch["degraded"] * 2 - 1).latent_dist.sample(generator=g)  # scaled posterior sample
        c_concat = input_mask * net.vae.encode(batch["clean"] * 2 - 1).latent_dist.mode()  # unscaled mode
        t = torch.randint(0, 1000, (b,), generator=g)
        noise = torch.randn(z.shape, generator=g)
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        x_noisy = sched.add_noise(z, noise, t)
        null_prompt, text = encode(task, net, [""]), encode(task, net, list(batch["prompt"]))
        null_stats = torch.zeros(b, 2, 129)
        null_stats[:, :, -1] = 1.0
        stats = net.stats_proj(batch["one_hots"]).transpose(1, 2)
        null_stats_proj = net.stats_proj(null_stats).transpose(1, 2)
        cross = net.cc_projection(torch.cat([torch.where(prompt_mask, null_prompt, text),
                                             torch.where(prompt_mask, null_stats_proj, stats)], dim=-1))
        out = net.unet(torch.cat([x_noisy, c_concat], 1), t, encoder_hidden_states=cross).sample
        want = ((out - noise) ** 2).mean([1, 2, 3]).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(got) > 0.1


# --- training: parameter groups, learning, export, resume ---------------------------------


def test_fine_tuning_trains_adapters_and_projections_at_ten_times_the_lr_and_lowers_the_loss(world, tmp_path):
    root, ckpt = world
    cfg, data, task, net = task_and_net(root, ckpt, f"out={tmp_path / 'run'}", "optim.lr=1e-2", "train.max_steps=20",
                                        "train.save_every=20", "train.ema_decay=0")
    keys = trained_keys(net)
    assert keys and all(".lora_" in k or k.startswith(("stats_proj.", "cc_projection.")) for k in keys)
    assert not any(p.requires_grad for p in [*net.vae.parameters(), *net.text_encoder.parameters()])
    batch = collate([data.train[k] for k in range(8)])

    def loss() -> float:  # the objective on fixed draws, no dropout
        with torch.no_grad():
            inputs = [task.inputs(net, batch, generator(123, s), uncond=0.0) for s in range(3)]
            return sum(float(((net(i.noisy, i.image_latent, i.t, i.text, i.one_hots) - i.noise) ** 2).mean()) for i in inputs) / 3

    net.eval()
    before = loss()
    result = train_gendeg(cfg, device="cpu", models_dir=root / "models", progress=False, data=data)
    state = torch.load(result.out_dir / "checkpoints" / "step_0000020.pt", weights_only=True)
    assert set(state["model"]) == set(keys)  # no frozen VAE / text encoder / UNet base in checkpoints
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([1e-2, 1e-1, 1e-1])  # UNet adapters, cc_projection, stats_proj
    net.load_state_dict(state["model"], strict=False)
    after = loss()
    assert after < 0.85 * before, (before, after)
    assert set(load_file(result.model_path)) == {re.sub(r"\.(lora_[AB])\.gendeg_lora\.", r".\1.", k) for k in keys}


def test_lora_and_full_exports_load_back_with_identical_outputs(world, tmp_path, monkeypatch):
    root, ckpt = world
    clean = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cond = [C.GenDegCondition("underwater", "a reef", 0.2, 0.1, phrase=PHRASE)]
    for mode in ("lora", "full"):
        cfg, _, task, net = task_and_net(root, ckpt, f"model.mode={mode}")
        torch.manual_seed(5)
        with torch.no_grad():  # as if trained: every trained tensor moved
            for k in trained_keys(net):
                net.get_parameter(k).add_(torch.randn_like(net.get_parameter(k)) * 0.05)
        sd = net.state_dict()
        path = task.export(tmp_path / f"{mode}.safetensors", {k: sd[k] for k in trained_keys(net)},
                           task.metadata())
        want = sample(task.view(net.eval(), torch.device("cpu")), clean, cond, steps=2, resolution=0).image
        if mode == "lora":
            tensors, meta = read_lora(path)
            assert meta["phrases"] == {"underwater": PHRASE} and meta["lora"]["rank"] == 4
            model = apply_lora(load_gendeg(ckpt, dtype="fp32"), path)
            base = sample(load_gendeg(ckpt, dtype="fp32"), clean, cond, steps=2, resolution=0).image
            off = sample(apply_lora(load_gendeg(ckpt, dtype="fp32"), path, strength=0.0), clean, cond, steps=2, resolution=0).image
            assert torch.equal(off, base) and not torch.equal(want, base)  # strength 0 is the base exactly
            with pytest.raises(WeightsError, match="is a GenDeg LoRA, not a whole model"):
                load_gendeg(path)
        else:
            model = load_gendeg(path, dtype="fp32")  # the pack's own layout, tokenizer copied beside it
            assert (path.parent / "tokenizer" / "vocab.json").is_file() and model.info["phrases"] == {"underwater": PHRASE}
        got = sample(model, clean, cond, steps=2, resolution=0).image
        assert torch.equal(got, want), mode

    # GenDeg Model Loader: lora_name lists only LoRAs (and ckpt_name none of them), applies it
    from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS, host

    models = tmp_path / "models"
    (models / "gendeg").mkdir(parents=True)
    for name in ("gendeg.ckpt", "tokenizer"):
        (models / "gendeg" / name).symlink_to(ckpt.parent / name)
    (models / "gendeg" / "uw.safetensors").write_bytes((tmp_path / "lora.safetensors").read_bytes())
    monkeypatch.setattr(host.SETTINGS, "models_dir", models)
    loader = NODE_CLASS_MAPPINGS["GenDegModelLoader"]
    spec = loader.INPUT_TYPES()
    assert spec["optional"]["lora_name"][0] == ["none", "uw.safetensors"]
    assert "uw.safetensors" not in spec["required"]["ckpt_name"][0]
    (model,) = loader().load("gendeg.ckpt", "ema", "fp32", lora_name="uw.safetensors")
    (plain,) = loader().load("gendeg.ckpt", "ema", "fp32")
    lora_out = sample(model, clean, cond, steps=2, resolution=0).image
    assert torch.equal(lora_out, sample(apply_lora(load_gendeg(ckpt, dtype="fp32"), tmp_path / "lora.safetensors"),
                                        clean, cond, steps=2, resolution=0).image)
    assert not torch.equal(lora_out, sample(plain, clean, cond, steps=2, resolution=0).image)


def test_resumed_run_ends_with_the_same_weights_and_validates_three_mu_levels(world, tmp_path):
    root, ckpt = world
    common = ("train.save_every=2", "data.val_count=1", "optim.lr=1e-3")
    full = config(root, ckpt, f"out={tmp_path / 'full'}", "train.max_steps=4", "train.val_every=2", *common)
    train_gendeg(full, device="cpu", models_dir=root / "models", progress=False)
    cut = config(root, ckpt, f"out={tmp_path / 'cut'}", "train.max_steps=2", *common)
    train_gendeg(cut, device="cpu", models_dir=root / "models", progress=False)
    more = config(root, ckpt, f"out={tmp_path / 'cut'}", "train.max_steps=4", *common)
    train_gendeg(more, device="cpu", models_dir=root / "models", progress=False, resume=True)
    want, got = load_file(tmp_path / "full" / "gendeg_finetune.safetensors"), load_file(tmp_path / "cut" / "gendeg_finetune.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4"]
    # validation: a fixed clean image at the three presets of the new type, achieved μ measured
    val = (tmp_path / "full" / "val.csv").read_text().splitlines()
    head = val[0].split(",")
    assert head[:4] == ["step", "mu_target_1", "mu_1", "sigma_1"] and "mu_abs_error" in head and "val_loss" in head
    assert [r.split(",")[0] for r in val[1:]] == ["2", "4"]
    assert (tmp_path / "full" / "val" / "step_0000004.png").is_file()
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    types = build_gendeg_data(full.data, 0).summary["types"]["underwater"]
    assert summary["val"]["mu_target_2"] == pytest.approx(types["medium"][0])


# --- command line and nodes ------------------------------------------------------------------


def test_cli_trains_validates_and_refuses_bad_configs_in_one_line(world, tmp_path, capsys):
    import yaml
    from comfyui_gendeg.cli import main

    root, ckpt = world
    cfg = config(root, ckpt, f"out={tmp_path / 'run'}", "train.max_steps=1", "train.save_every=1").to_dict()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["train", "gendeg", str(path), "--validate-only"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"]["types"]["underwater"]["phrase"] == PHRASE
    assert main(["train", "gendeg", str(path), "--device", "cpu", "--models-dir", str(root / "models")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 1 and Path(out["model"]).is_file() and out["mode"] == "lora"
    assert main(["train", "gendeg", "--schema"]) == 0
    assert "projection_lr_scale: 10.0" in capsys.readouterr().out
    bad = [(["--set", "data.type=''"], "data.type is required with folders"),
           (["--set", "data.phrases={}"], "has no phrase: add it to data.phrases"),
           (["--set", "model.base=nothere.ckpt", "--out", str(tmp_path / "x")], "nothere.ckpt"),
           (["--set", "objective.uncond=0.5"], "objective.uncond must be in 0..1/3"),
           (["--set", "model.lora.targets=[]"], "model.lora.targets")]
    for args, needle in bad:
        code = main(["train", "gendeg", str(path), "--device", "cpu", "--models-dir", str(root / "models"), *args])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_condition_node_selects_a_custom_type_by_its_phrase():
    from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["GenDegCondition"]()
    spec = NODE_CLASS_MAPPINGS["GenDegCondition"].INPUT_TYPES()["optional"]
    assert spec["custom_phrase"][1]["default"] == "" and spec["custom_type"][1]["default"] == ""
    (one,), prompt = node.condition("haze", "a reef", "custom", 0.2, 0.1, custom_phrase=", in underwater conditions",
                                    custom_type="Under Water")
    assert prompt == "a reef, in underwater conditions" and one.degradation == "under_water" and one.phrase == PHRASE
    sweep, _ = node.condition("haze", "a reef", "custom", 0.2, 0.1, mu_sweep="0.1,0.4", custom_phrase=PHRASE)
    assert [(c.mu, c.sigma) for c in sweep] == [(0.1, pytest.approx(0.05)), (0.4, pytest.approx(0.2))]
    assert {c.degradation for c in sweep} == {"custom"}
    with pytest.raises(InputError, match="has no intensity presets; set preset to custom"):
        node.condition("haze", "a reef", "medium", 0.2, 0.1, custom_phrase=PHRASE)
    (same,), text = node.condition("haze", "a reef", "heavy", 0.5, 0.3)  # without the new inputs: as before
    assert text == "a reef, in hazy conditions" and same.phrase == "" and (same.mu, same.sigma) == (0.168, 0.100)


def test_example_config_and_documented_schema():
    from comfyui_gendeg.core.train.schema import describe

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs" / "train" / "gendeg_lora.yaml", schema=GenDegTrainConfig)
    assert cfg.model.mode == "lora" and cfg.data.phrases == {"underwater": PHRASE} and cfg.optim.lr == 1e-4
    assert cfg.model.projection_lr_scale == 10.0 and cfg.objective.uncond == 0.05
    doc = (root / "docs" / "gendeg_training.md").read_text(encoding="utf-8")
    assert "\n".join(describe(GenDegTrainConfig)) in doc, "regenerate the schema block: gendeg train gendeg --schema"


def test_workflows_saved_before_the_new_inputs_still_validate():
    import copy

    from comfyui_gendeg.core.graph.executor import Executor
    from comfyui_gendeg.core.graph.formats import load_any
    from comfyui_gendeg.core.graph.object_info import object_info
    from comfyui_gendeg.nodes.standins import runner_registry

    classes, names, modules = runner_registry()
    doc = json.loads((Path(__file__).resolve().parent.parent / "workflows" / "gendeg_gendeg_sweep.json").read_text())
    for n in doc["nodes"]:  # as saved before lora_name / lora_strength / custom_phrase / custom_type existed
        if n["type"] == "GenDegModelLoader":
            n["widgets_values"] = n["widgets_values"][:4]
        elif n["type"] == "GenDegCondition":
            n["widgets_values"] = n["widgets_values"][:6]
    info = object_info(classes, names, modules)
    prompt, _ = load_any(doc, info)
    assert not Executor(classes).validate(copy.deepcopy(prompt), check_files=False)
    # the new widgets take their defaults, as the editor fills them when it opens such a file
    checked = 0
    for node in prompt.values():
        if node["class_type"] in ("GenDegModelLoader", "GenDegCondition"):
            spec = {**info[node["class_type"]]["input"]["required"], **info[node["class_type"]]["input"].get("optional", {})}
            for k in ("lora_name", "custom_phrase"):
                if k in spec:
                    want = spec[k][1].get("default", spec[k][0][0] if isinstance(spec[k][0], list) else None)
                    assert node["inputs"][k] == want
                    checked += 1
    assert checked >= 2


def test_gradient_checkpointing_gives_the_same_gradients(world):
    root, ckpt = world
    grads = []
    for flag in ("false", "true"):
        _, data, task, net = task_and_net(root, ckpt, f"model.gradient_checkpointing={flag}")
        batch = collate([data.train[k] for k in range(4)])
        ctx = StepContext(0, 0, generator(1, 0), lambda: torch.autocast("cpu", enabled=False))
        task.loss_terms(net, batch, ctx)["mse"].backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g is not None for g in grads[1].values())
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-7) for k in grads[0])


def test_ema_averages_only_its_keys_and_passes_the_others_through():
    from comfyui_gendeg.core.train.ema import EMA

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    ema = EMA(net, 0.5, warmup=False, keys=["0.weight", "0.bias"])
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, 0)
    out = ema.weights(net.state_dict())
    assert torch.allclose(out["0.weight"], w0 + 0.5) and torch.equal(out["1.weight"], net[1].weight)
    assert set(ema.state_dict()) == {"0.weight", "0.bias"}
