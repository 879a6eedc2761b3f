"""GenDeg core: conditioning, checkpoint conversion, sampler, structure correction (tiny models, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError, WeightsError
from comfyui_gendeg.core.gendeg import conditioning as C
from comfyui_gendeg.core.gendeg import convert
from comfyui_gendeg.core.gendeg import model as M
from comfyui_gendeg.core.gendeg import sampler as S
from comfyui_gendeg.core.gendeg import structure as ST
from comfyui_gendeg.core.intensity import measure_intensity
from test_gendeg_fixtures import (
    make_tiny_checkpoint,
    official_state_dict,
    save_lightning_ckpt,
    tiny_diffusers_parts,
    tiny_original_config,
    tiny_tokenizer_files,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gendeg")
    path, parts, ema = make_tiny_checkpoint(folder)
    return path, parts, ema


@pytest.fixture(scope="module")
def tiny_model(tiny):
    path, _, _ = tiny
    return M.load_gendeg(path, dtype="fp32")


# --- conditioning -------------------------------------------------------------------------


def _independent_bin(v: float, lo: float, hi: float) -> int:
    return min(int(np.floor((v - lo) / ((hi - lo) / 128))), 127)


def test_bins_match_an_independent_computation():
    rng = np.random.default_rng(0)
    for lo, hi in (C.MU_RANGE, C.SIGMA_RANGE):
        width = (hi - lo) / 128
        for v in rng.uniform(lo, hi * 1.3, 300):
            frac = (v - lo) / width
            if abs(frac - round(frac)) < 1e-6:  # exactly on an edge: float rounding decides
                continue
            assert C.bin_index(v, lo, hi) == _independent_bin(v, lo, hi)
        assert C.bin_index(lo, lo, hi) == 0
        assert C.bin_index(hi, lo, hi) == 127  # the top edge falls in the last bin
        assert C.bin_index(5.0, lo, hi) == 127
        with pytest.raises(InputError):
            C.bin_index(-0.01, lo, hi)
    # known values: mu bin width 0.7/128 = 0.00546875; sigma 0.4/128 = 0.003125
    assert C.bin_index(0.1, *C.MU_RANGE) == 18
    assert C.bin_index(0.05, *C.SIGMA_RANGE) == 16


def test_condition_vectors_and_null_code():
    cond = C.make_condition("haze", "a street", mu=0.1, sigma=0.05)
    oh = cond.one_hots()
    assert oh.shape == (2, 129)
    assert oh.sum(1).tolist() == [1.0, 1.0]
    assert int(oh[0].argmax()) == 18 and int(oh[1].argmax()) == 16
    null = C.null_one_hots(3)
    assert null.shape == (3, 2, 129)
    assert torch.all(null[:, :, 128] == 1) and null.sum() == 6
    with pytest.raises(InputError):
        C.make_condition("haze", mu=-0.1, sigma=0.1)


def test_prompts_use_the_official_phrases():
    expect = {
        "haze": "a car, in hazy conditions",
        "rain": "a car, in rainy conditions",
        "snow": "a car, in snowy conditions",
        "motion_blur": "a car, in blurry conditions",
        "low_light": "a car, in low-light conditions",
        "raindrop": "a car, with raindrops in it",
        "rain+haze": "a car, in rainy and hazy conditions",
        "snow+haze": "a car, in snowy and hazy conditions",
    }
    for t, p in expect.items():
        assert C.build_prompt(t, "a car.") == p
    assert C.normalize_type("motion") == "motion_blur" and C.normalize_type("low-light") == "low_light"
    assert C.build_prompt("haze", "  ") == f"{C.DEFAULT_CAPTION}, in hazy conditions"
    with pytest.raises(InputError, match="unknown GenDeg degradation type"):
        C.normalize_type("tornado")


def test_presets_are_ordered_and_in_range():
    for t in C.GENDEG_TYPES:
        mus = [C.PRESETS[t][p][0] for p in C.PRESET_NAMES]
        sig = [C.PRESETS[t][p][1] for p in C.PRESET_NAMES]
        # σ is the median of GenDeg's real σ at each μ (tests/test_realism.py): ordered wherever the real
        # data is; raindrop's heaviest real images (μ ≈ 0.064) have a lower σ than its medium ones
        assert mus == sorted(mus) and (sig == sorted(sig) or t == "raindrop")
        assert 0 < mus[0] and mus[-1] < C.MU_RANGE[1] and sig[-1] < C.SIGMA_RANGE[1]
    c = C.make_condition("low_light", preset="heavy")
    assert (c.mu, c.sigma) == C.PRESETS["low_light"]["heavy"]
    sweep = C.condition_sweep(["haze", "rain"], "x", [0.05, 0.1, 0.2])
    assert len(sweep) == 6 and [s.mu for s in sweep[:3]] == [0.05, 0.1, 0.2]


# --- conversion -----------------------------------------------------------------------------


def test_conversion_preserves_every_tensor(tiny, tmp_path):
    path, parts, ema = tiny
    unet, vae, text, stats_proj, cc = parts
    w = convert.read_checkpoint(path, ema=True)
    assert w.ema and set(w.unet) == set(ema)
    assert all(torch.equal(w.unet[k], v) for k, v in ema.items())
    raw = convert.read_checkpoint(path, ema=False)
    assert not raw.ema and all(torch.equal(raw.unet[k], v + 0.05) for k, v in ema.items())
    assert set(w.vae) == set(vae.state_dict())
    assert all(torch.equal(w.vae[k], v) for k, v in vae.state_dict().items())
    tsd = text.state_dict()
    assert all(torch.equal(w.text_encoder["text_model." + k.removeprefix("text_model.")], v) for k, v in tsd.items())
    assert torch.equal(w.projections["stats_proj.weight"], stats_proj.weight)
    assert torch.equal(w.projections["cc_projection.weight"], cc.weight)
    # converted once, cached next to the checkpoint, read back identically
    cached = convert.converted_path_for(path, True)
    assert cached.is_file() and convert.converted_path_for(path, False).is_file()
    again = convert.read_checkpoint(path, ema=True)
    assert again.info["source_format"] == "gendeg-safetensors"
    assert all(torch.equal(again.unet[k], w.unet[k]) for k in w.unet)
    assert again.unet_config == w.unet_config and again.text_config == w.text_config
    direct = convert.read_checkpoint(cached, ema=True)  # the converted file on its own
    assert all(torch.equal(direct.unet[k], w.unet[k]) for k in w.unet)
    with pytest.raises(WeightsError, match="holds the EMA UNet"):
        convert.read_checkpoint(cached, ema=False)


def test_unet_matches_diffusers_single_file_loading(tiny, tiny_model):
    from diffusers import UNet2DConditionModel

    path, _, _ = tiny
    sd_path = path.with_name("plain_ldm.safetensors")
    if not sd_path.exists():  # diffusers' loader reads the same tensors from a plain safetensors file
        from comfyui_gendeg.core.weights import LIGHTNING_GLOBALS, load_pickle
        from safetensors.torch import save_file

        obj = load_pickle(path, LIGHTNING_GLOBALS)  # the Lightning extras come back as inert placeholders
        assert type(obj["callbacks"]["ModelCheckpoint"]).__name__.startswith("Inert")
        save_file({k: v.contiguous() for k, v in obj["state_dict"].items()}, str(sd_path))
    ref = UNet2DConditionModel.from_single_file(str(sd_path), original_config=tiny_original_config(), extract_ema=True)
    torch.manual_seed(0)
    x, t, ctx = torch.randn(2, 8, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        a = tiny_model.unet(x, t, encoder_hidden_states=ctx).sample
        b = ref(x, t, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    raw = M.load_gendeg(path, ema=False, dtype="fp32")
    ref_raw = UNet2DConditionModel.from_single_file(str(sd_path), original_config=tiny_original_config())
    with torch.no_grad():
        torch.testing.assert_close(raw.unet(x, t, encoder_hidden_states=ctx).sample,
                                   ref_raw(x, t, encoder_hidden_states=ctx).sample, rtol=0, atol=1e-6)
        assert not torch.allclose(a, raw.unet(x, t, encoder_hidden_states=ctx).sample)


def test_wrong_family_and_missing_keys_give_clear_errors(tmp_path):
    parts = tiny_diffusers_parts(1)
    sd, _ = official_state_dict(parts)
    four = dict(sd)
    four["model.diffusion_model.input_blocks.0.0.weight"] = sd["model.diffusion_model.input_blocks.0.0.weight"][:, :4]
    with pytest.raises(WeightsError, match="4 input channels.*plain Stable Diffusion"):
        convert.convert_official(four)
    no_proj = {k: v for k, v in sd.items() if not k.startswith("stats_proj")}
    with pytest.raises(WeightsError, match="InstructPix2Pix"):
        convert.convert_official(no_proj)
    with pytest.raises(WeightsError, match="NAFNet"):
        convert.convert_official({"intro.weight": torch.zeros(64, 6, 3, 3), "encoders.0.0.beta": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "first_stage_model.decoder.conv_out.bias"}
    w = convert.convert_official(missing)
    with pytest.raises(WeightsError, match="VAE.*missing"):
        M.build_model(w, None, dtype="fp32")
    bad = save_lightning_ckpt({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}, tmp_path / "bad.ckpt")
    with pytest.raises(WeightsError, match="no VAE"):
        M.load_gendeg(bad)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.ckpt"):
        M.load_gendeg(tmp_path / "junk.ckpt")


def test_missing_tokenizer_names_where_to_put_it(tmp_path):
    parts = tiny_diffusers_parts(2)
    sd, _ = official_state_dict(parts)
    path = save_lightning_ckpt(sd, tmp_path / "g.ckpt")
    with pytest.raises(WeightsError, match="vocab.json.*models/gendeg/clip"):
        M.load_gendeg(path)
    tiny_tokenizer_files(tmp_path / "clip" / "clip-vit-large-patch14")
    model = M.load_gendeg(path, tokenizer_dirs=[tmp_path / "clip"], dtype="fp32")
    assert model.info["tokenizer"].endswith("clip-vit-large-patch14")


def test_diffusers_folder_round_trip(tiny_model, tmp_path):
    folder = M.save_diffusers_folder(tiny_model, tmp_path / "gendeg-diffusers")
    again = M.load_gendeg(folder, dtype="fp32")
    x = torch.rand(1, 3, 24, 24)
    cond = [C.make_condition("snow", "a tree")]
    a = S.sample(tiny_model, x, cond, steps=2, resolution=0, seed=3)
    b = S.sample(again, x, cond, steps=2, resolution=0, seed=3)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-5)


# --- sampler ---------------------------------------------------------------------------------


def test_euler_sigmas_match_kdiffusion_compvis_schedule():
    sched = S.make_scheduler("euler_a")
    S.set_timesteps(sched, 100, torch.device("cpu"))
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    log_sig = np.log(np.sqrt((1 - ac) / ac))
    t = np.linspace(999, 0, 100)
    expect = np.exp(np.interp(t, np.arange(1000), log_sig))
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), expect, rtol=5e-5)  # float32 buffers, as the official model
    assert float(sched.sigmas[-1]) == 0.0
    np.testing.assert_allclose(sched.timesteps.numpy(), t, atol=1e-3)
    assert abs(float(sched.sigmas[0]) - 14.6146) < 1e-3 and abs(expect[-1] - 0.029168) < 1e-5
    for name in S.SCHEDULERS:
        s = S.make_scheduler(name)
        assert s.config.beta_schedule == "scaled_linear" and s.config.prediction_type == "epsilon"
    with pytest.raises(InputError):
        S.make_scheduler("heun9")


def test_guidance_formula_and_three_branches(tiny_model, monkeypatch):
    recorded = {}
    real_unet = tiny_model.unet

    class StubUNet(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states, return_dict=False):  # noqa: ANN001
            recorded.setdefault("inputs", []).append((x.clone(), encoder_hidden_states.clone()))
            n = x.shape[0] // 3
            e = torch.cat([torch.full((n, 4, *x.shape[-2:]), v) for v in (1.0, 2.0, 5.0)])
            return (e,)

    def fake_step(sched, noise_pred, t, latents, gens, ancestral):  # noqa: ANN001
        recorded.setdefault("noise", []).append(noise_pred.clone())
        return latents

    monkeypatch.setattr(tiny_model, "unet", StubUNet())
    monkeypatch.setattr(S, "_step", fake_step)
    try:
        x = torch.rand(2, 3, 16, 16)
        cond = C.make_condition("rain", "a bus", mu=0.2, sigma=0.1)
        S.sample(tiny_model, x, [cond], steps=2, resolution=0, seed=0, text_guidance=7.5, image_guidance=1.5)
    finally:
        tiny_model.unet = real_unet
    inp, ctx = recorded["inputs"][0]
    assert inp.shape[0] == 6 and inp.shape[1] == 8  # 2 images x 3 branches, noisy ‖ clean latent
    img_lat = S.encode_clean(tiny_model, x, False)
    torch.testing.assert_close(inp[:2, 4:], img_lat)
    torch.testing.assert_close(inp[2:4, 4:], img_lat)
    assert torch.all(inp[4:, 4:] == 0)
    assert torch.equal(inp[:2, :4], inp[2:4, :4]) and torch.equal(inp[:2, :4], inp[4:, :4])
    full = tiny_model.context(tiny_model.encode_text([cond.prompt] * 2), C.stack_one_hots([cond, cond]))
    null = tiny_model.context(tiny_model.encode_text([""]), C.null_one_hots(1))
    torch.testing.assert_close(ctx[:2], full)
    torch.testing.assert_close(ctx[2:4], null.expand(2, -1, -1))
    torch.testing.assert_close(ctx[4:], null.expand(2, -1, -1))
    expect = 5.0 + 7.5 * (1.0 - 2.0) + 1.5 * (2.0 - 5.0)
    assert torch.allclose(recorded["noise"][0], torch.full_like(recorded["noise"][0], expect))
    assert len(recorded["noise"]) == 2


def test_euler_ancestral_loop_equals_kdiffusion_algorithm(tiny_model, monkeypatch):
    """The whole loop against an independent k-diffusion-style Euler ancestral (CompVisDenoiser, eta 1)."""
    real_unet = tiny_model.unet

    def stub_eps(x, t, ctx):  # noqa: ANN001 - a smooth function of every input
        return 0.3 * x[:, :4] + 0.2 * x[:, 4:] + 1e-4 * t + ctx.mean(dim=(1, 2))[:, None, None, None]

    class StubUNet(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states, return_dict=False):  # noqa: ANN001
            return (stub_eps(x, float(t), encoder_hidden_states),)

    captured = {}

    def fake_decode(model, z, tiled):  # noqa: ANN001
        captured["z"] = z.clone()
        return torch.zeros(z.shape[0], 3, z.shape[2] * 2, z.shape[3] * 2)

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = C.make_condition("haze", "a lake", mu=0.2, sigma=0.1)
    steps, seed, st, si = 5, 9, 7.5, 1.5
    monkeypatch.setattr(tiny_model, "unet", StubUNet())
    monkeypatch.setattr(S, "decode_latent", fake_decode)
    try:
        S.sample(tiny_model, x, [cond], steps=steps, resolution=0, seed=seed, text_guidance=st, image_guidance=si)
        img = S.encode_clean(tiny_model, x, False)
        ctx = torch.cat([tiny_model.context(tiny_model.encode_text([cond.prompt]), C.stack_one_hots([cond])),
                         tiny_model.context(tiny_model.encode_text([""]), C.null_one_hots(1)).expand(2, -1, -1)])
    finally:
        tiny_model.unet = real_unet
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    log_sig = np.log(np.sqrt((1 - ac) / ac))
    ts = np.linspace(999, 0, steps)
    sig = np.append(np.exp(np.interp(ts, np.arange(1000), log_sig)), 0.0)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(img.shape[1:], generator=g)[None].double() * sig[0]
    lat = torch.cat([img, img, torch.zeros_like(img)]).double()
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        inp = torch.cat([torch.cat([z] * 3) / np.sqrt(s * s + 1), lat], 1)
        e_full, e_img, e_none = stub_eps(inp, ts[i], ctx.double()).chunk(3)
        eps = e_none + st * (e_full - e_img) + si * (e_img - e_none)
        denoised = z - eps * s
        s_up = min(s_next, np.sqrt(s_next**2 * (s * s - s_next**2) / (s * s)))
        s_down = np.sqrt(s_next**2 - s_up**2)
        z = z + (z - denoised) / s * (s_down - s)
        if s_next > 0:
            z = z + torch.randn(img.shape[1:], generator=g)[None].double() * s_up
    torch.testing.assert_close(captured["z"].double(), z, rtol=2e-4, atol=2e-4)


def test_context_is_the_official_fusion(tiny_model):
    oh = C.stack_one_hots([C.make_condition("haze", mu=0.3, sigma=0.2)])
    text = torch.randn(1, 77, 32)
    sp, cc = tiny_model.stats_proj, tiny_model.cc_projection
    stats = oh @ sp.weight.T + sp.bias  # [1, 2, 77]
    fused = torch.cat([text, stats.transpose(1, 2)], -1) @ cc.weight.T + cc.bias
    torch.testing.assert_close(tiny_model.context(text, oh), fused)


def test_working_size_keeps_aspect_and_multiples():
    h, w = S.working_size(480, 640, 512)
    assert h % 8 == 0 and w % 8 == 0
    assert abs(w / h - 640 / 480) < 0.02 and abs(h * w - 512 * 512) / (512 * 512) < 0.03
    assert S.working_size(512, 512, 512) == (512, 512)
    assert S.working_size(37, 53, 0) == (40, 56)
    hh, ww = S.working_size(3, 2000, 512)
    assert hh >= 8 and hh % 8 == 0 and ww % 8 == 0


def test_sample_sizes_seeds_batches_and_intensity(tiny_model):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 37, 53)
    conds = [C.make_condition("haze", "a house", preset="heavy"), C.make_condition("rain")]
    calls = []
    r1 = S.sample(tiny_model, x, conds, steps=3, resolution=16, seed=7, batch_size=4,
                  progress=lambda i, n: calls.append((i, n)))
    assert r1.image.shape == (4, 3, 37, 53)  # image-major: 2 images x 2 conditions, input size
    assert r1.source_index == [0, 0, 1, 1] and [c.degradation for c in r1.conditions] == ["haze", "rain"] * 2
    assert calls[-1] == (3, 3) and len(calls) == 3
    r2 = S.sample(tiny_model, x, conds, steps=3, resolution=16, seed=7, batch_size=1)
    torch.testing.assert_close(r1.image, r2.image, rtol=0, atol=1e-4)  # batch size does not change results
    r3 = S.sample(tiny_model, x, conds, steps=3, resolution=16, seed=8, batch_size=4)
    assert (r3.image - r1.image).abs().max() > 1e-3
    mu, sigma = measure_intensity(x[[0, 0, 1, 1]], r1.image)
    torch.testing.assert_close(r1.mu, mu)
    torch.testing.assert_close(r1.sigma, sigma)


@pytest.mark.parametrize("name", S.SCHEDULERS)
def test_every_scheduler_samples_deterministically(tiny_model, name):
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    cond = [C.make_condition("raindrop", "a window")]
    a = S.sample(tiny_model, x, cond, steps=2, resolution=0, seed=4, scheduler=name)
    b = S.sample(tiny_model, x, cond, steps=2, resolution=0, seed=4, scheduler=name)
    assert a.image.shape == (1, 3, 16, 24) and torch.isfinite(a.image).all()
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)


def test_tiled_vae_and_interrupt(tiny_model):
    x = torch.rand(1, 3, 40, 48)  # larger than the tiny VAE's 32 px tile
    r = S.sample(tiny_model, x, [C.make_condition("snow")], steps=1, resolution=0, seed=0, vae_tiling="on")
    assert tiny_model.vae.use_tiling
    assert r.image.shape == (1, 3, 40, 48) and torch.isfinite(r.image).all()
    lat = S.encode_clean(tiny_model, x, True)
    assert lat.shape == (1, 4, 20, 24)

    class Stop(Exception):
        pass

    def progress(i, n):  # noqa: ANN001
        raise Stop

    with pytest.raises(Stop):
        S.sample(tiny_model, x[..., :16, :16], [C.make_condition("snow")], steps=3, resolution=0, progress=progress)


def test_bad_images_are_refused(tiny_model):
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        S.sample(tiny_model, x, [C.make_condition("haze")], steps=1)
    with pytest.raises(InputError, match="3 channels"):
        S.sample(tiny_model, torch.rand(1, 4, 16, 16), [C.make_condition("haze")], steps=1)
    with pytest.raises(InputError, match="condition"):
        S.sample(tiny_model, torch.rand(1, 3, 16, 16), [], steps=1)


# --- structure correction ------------------------------------------------------------------


def _tiny_nafnet() -> ST.StructureNAFNet:
    torch.manual_seed(0)
    return ST.StructureNAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])


def test_structure_net_loads_official_layout_and_adds_to_generated(tmp_path):
    net = _tiny_nafnet()
    keys = set(net.state_dict())
    for k in ("intro.weight", "ending.weight", "encoders.0.0.conv1.weight", "encoders.0.0.sca.1.weight",
              "encoders.0.0.norm1.weight", "encoders.0.0.beta", "downs.0.weight", "middle_blks.0.gamma",
              "ups.0.0.weight", "decoders.1.0.conv5.bias"):
        assert k in keys
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "nafnet_sd.ckpt")
    loaded = ST.load_structure_model(tmp_path / "nafnet_sd.ckpt")
    assert ST.config_from_state_dict(net.state_dict())["enc_blk_nums"] == [1, 1]
    clean, gen = torch.rand(1, 3, 20, 27), torch.rand(1, 3, 20, 27)
    out = ST.correct_structure(loaded, clean, gen)
    assert out.shape == (1, 3, 20, 27)
    # with a zero ending convolution the network adds nothing: output == generated
    with torch.no_grad():
        loaded.ending.weight.zero_()
        loaded.ending.bias.zero_()
    torch.testing.assert_close(ST.correct_structure(loaded, clean, gen), gen, atol=1e-6, rtol=0)
    # LayerNorm2d is a per-pixel layer norm over channels
    ln = ST.LayerNorm2d(8)
    z = torch.randn(2, 8, 3, 3)
    ref = torch.nn.functional.layer_norm(z.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(z), ref, atol=1e-5, rtol=1e-5)
    bad = {k: v for k, v in net.state_dict().items()}
    bad["intro.weight"] = bad["intro.weight"][:, :3]
    torch.save({"state_dict": bad}, tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="6 \\(clean \\+ generated\\)"):
        ST.load_structure_model(tmp_path / "plain.pth")


def test_official_structure_config_size():
    net = ST.StructureNAFNet(**ST.OFFICIAL_CONFIG)
    n = sum(p.numel() for p in net.parameters())
    assert 115.9e6 < n < 116.1e6  # NAFNet width 64, enc [2,2,4,8], middle 12 (the SIDD size: 116.0 M)


def test_structure_correction_tiles_on_the_network_grid_and_refuses_tiny_tiles():
    net = _tiny_nafnet().eval()
    clean, gen = torch.rand(1, 3, 100, 90), torch.rand(1, 3, 100, 90)
    out = ST.correct_structure(net, clean, gen, tile=64)
    assert out.shape == (1, 3, 100, 90) and torch.isfinite(out).all()
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.zero_()
    torch.testing.assert_close(ST.correct_structure(net, clean, gen, tile=64), gen, atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="at least 64"):
        ST.correct_structure(net, clean, gen, tile=16)
