"""The guided-diffusion prior of DiffLoss: official layout, forward, schedule, frozen autograd, loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import MissingWeightError, WeightsError
from comfyui_gendeg.core.train.priors import (
    GUIDED_DIFFUSION_256_UNCOND,
    PRIOR_ID,
    TINY,
    GuidedDiffusionUNet,
    alphas_cumprod,
    linear_betas,
    load_prior,
    parameter_count,
    q_sample,
    read_prior,
    resolve_prior,
    save_prior,
)
from comfyui_gendeg.core.train.priors.guided_diffusion import expected_shapes, timestep_embedding


def tiny_prior(seed: int = 0, std: float = 0.1) -> GuidedDiffusionUNet:
    """The tiny same-layout prior with every weight random (the official zero-initialised convs too)."""
    torch.manual_seed(seed)
    net = GuidedDiffusionUNet(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, std)
    return net.requires_grad_(False).eval()


def reference_forward(sd: dict, cfg, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A functional re-statement of the official UNetModel.forward, read off the state dict
    (einsum attention with the legacy head split, GroupNorm(32), scale-shift norm, ResBlock up/down)."""

    def gn(h, p):
        return F.group_norm(h, 32, sd[p + ".weight"], sd[p + ".bias"])

    def conv(h, p, **kw):
        return F.conv2d(h, sd[p + ".weight"], sd[p + ".bias"], **kw)

    def lin(h, p):
        return F.linear(h, sd[p + ".weight"], sd[p + ".bias"])

    half = cfg.model_channels // 2
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / half) for i in range(half)])
    args = t.float()[:, None] * freqs[None]
    emb = lin(F.silu(lin(torch.cat([args.cos(), args.sin()], dim=1), "time_embed.0")), "time_embed.2")

    def res(h, p, up=False, down=False):
        a = F.silu(gn(h, p + ".in_layers.0"))
        if up:
            a, h = F.interpolate(a, scale_factor=2.0, mode="nearest"), F.interpolate(h, scale_factor=2.0, mode="nearest")
        if down:
            a, h = F.avg_pool2d(a, 2), F.avg_pool2d(h, 2)
        a = conv(a, p + ".in_layers.2", padding=1)
        scale, shift = lin(F.silu(emb), p + ".emb_layers.1")[..., None, None].chunk(2, dim=1)
        a = conv(F.silu(gn(a, p + ".out_layers.0") * (1 + scale) + shift), p + ".out_layers.3", padding=1)
        skip = conv(h, p + ".skip_connection") if p + ".skip_connection.weight" in sd else h
        return skip + a

    def attn(h, p):
        b, c, hh, ww = h.shape
        heads = c // cfg.num_head_channels
        ch = c // heads
        xs = h.reshape(b, c, -1)
        qkv = F.conv1d(gn(xs, p + ".norm"), sd[p + ".qkv.weight"], sd[p + ".qkv.bias"])
        q, k, v = qkv.reshape(b * heads, 3 * ch, -1).split(ch, dim=1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return (xs + F.conv1d(a, sd[p + ".proj_out.weight"], sd[p + ".proj_out.bias"])).reshape(b, c, hh, ww)

    h = conv(x, "input_blocks.0.0", padding=1)
    skips, i, ds = [h], 1, 1
    last = len(cfg.channel_mult) - 1
    for level in range(len(cfg.channel_mult)):
        for _ in range(cfg.num_res_blocks):
            h = res(h, f"input_blocks.{i}.0")
            if ds in cfg.attention_ds:
                h = attn(h, f"input_blocks.{i}.1")
            skips.append(h)
            i += 1
        if level != last:
            h = res(h, f"input_blocks.{i}.0", down=True)
            skips.append(h)
            i, ds = i + 1, ds * 2
    h = res(attn(res(h, "middle_block.0"), "middle_block.1"), "middle_block.2")
    mid, i = h, 0
    for level in reversed(range(len(cfg.channel_mult))):
        for r in range(cfg.num_res_blocks + 1):
            h = res(torch.cat([h, skips.pop()], dim=1), f"output_blocks.{i}.0")
            j = 1
            if ds in cfg.attention_ds:
                h, j = attn(h, f"output_blocks.{i}.{j}"), j + 1
            if level and r == cfg.num_res_blocks:
                h, ds = res(h, f"output_blocks.{i}.{j}", up=True), ds // 2
            i += 1
    return conv(F.silu(gn(h, "out.0")), "out.2", padding=1), mid


# --- layout -------------------------------------------------------------------------------


def test_full_config_has_the_official_parameter_count_and_key_layout():
    """552.8 M parameters and the official names/shapes, counted on the meta device (nothing allocated)."""
    n = parameter_count(GUIDED_DIFFUSION_256_UNCOND)
    assert n == 552_814_086 and round(n / 1e6, 1) == 552.8
    shapes = expected_shapes(GUIDED_DIFFUSION_256_UNCOND)
    assert len(shapes) == 566
    assert list(shapes)[:2] == ["time_embed.0.weight", "time_embed.0.bias"]
    assert {k.split(".")[0] for k in shapes} == {"time_embed", "input_blocks", "middle_block", "output_blocks", "out"}
    expect = {
        "time_embed.0.weight": (1024, 256),
        "time_embed.2.weight": (1024, 1024),
        "input_blocks.0.0.weight": (256, 3, 3, 3),
        "input_blocks.3.0.in_layers.2.weight": (256, 256, 3, 3),  # first down-sampling ResBlock
        "input_blocks.7.0.skip_connection.weight": (512, 256, 1, 1),  # channel_mult 1 -> 2
        "input_blocks.10.1.qkv.weight": (1536, 512, 1),  # attention at ds 8 (32x32 at 256²)
        "input_blocks.13.1.qkv.weight": (3072, 1024, 1),  # ds 16
        "input_blocks.16.1.proj_out.weight": (1024, 1024, 1),  # ds 32
        "middle_block.0.emb_layers.1.weight": (2048, 1024),  # scale-shift norm: 2·out channels
        "middle_block.1.qkv.weight": (3072, 1024, 1),
        "output_blocks.0.0.in_layers.0.weight": (2048,),  # concat with the skip
        "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3),  # up-sampling ResBlock
        "output_blocks.17.0.skip_connection.weight": (256, 512, 1, 1),
        "out.0.weight": (256,),
        "out.2.weight": (6, 256, 3, 3),  # learn_sigma: ε̂ (3) + variance (3)
    }
    for k, s in expect.items():
        assert shapes[k] == s, k
    assert sum(1 for k in shapes if k.endswith("qkv.weight")) == 6 + 1 + 9
    assert max(int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")) == 17
    assert max(int(k.split(".")[1]) for k in shapes if k.startswith("output_blocks.")) == 17
    assert not any("label_emb" in k for k in shapes)


def test_h_space_is_1024x8x8_at_256():
    with torch.device("meta"):
        net = GuidedDiffusionUNet(GUIDED_DIFFUSION_256_UNCOND)
        out, h = net(torch.empty(2, 3, 256, 256), torch.zeros(2, dtype=torch.long))
    assert tuple(out.shape) == (2, 6, 256, 256)
    assert tuple(h.shape) == (2, 1024, 8, 8)


# --- formulas -----------------------------------------------------------------------------


def test_timestep_embedding_is_the_closed_form():
    t = torch.tensor([0, 1, 17, 999])
    dim = 32
    e = timestep_embedding(t, dim)
    for r, tv in enumerate(t.tolist()):
        for i in range(dim // 2):
            f = 10000.0 ** (-i / (dim // 2))
            assert e[r, i].item() == pytest.approx(math.cos(tv * f), abs=1e-5)
            assert e[r, dim // 2 + i].item() == pytest.approx(math.sin(tv * f), abs=1e-5)


def test_linear_schedule_and_q_sample_are_the_closed_form():
    betas = linear_betas()
    assert betas.shape == (1000,) and betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert (betas[1] - betas[0]).item() == pytest.approx((0.02 - 1e-4) / 999)
    prod, abar_py = 1.0, []
    for i in range(1000):
        prod *= 1.0 - (1e-4 + i * (0.02 - 1e-4) / 999)
        abar_py.append(prod)
    abar = alphas_cumprod()
    assert abar[0].item() == pytest.approx(0.9999, rel=1e-12)
    assert abar[999].item() == pytest.approx(abar_py[999], rel=1e-9)
    assert abar[999].item() == pytest.approx(4.036e-5, rel=1e-3)  # √ᾱ_T ≈ 0.00635: nearly pure noise
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    xt = q_sample(x0, t, noise)
    for b, tv in enumerate(t.tolist()):
        want = math.sqrt(abar_py[tv]) * x0[b] + math.sqrt(1 - abar_py[tv]) * noise[b]
        assert torch.allclose(xt[b], want, atol=1e-6)


# --- network ------------------------------------------------------------------------------


def test_tiny_forward_equals_a_functional_restatement_of_the_official_network():
    net = tiny_prior()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([5, 900])
    with torch.no_grad():
        out, h = net(x, t)
        want_out, want_h = reference_forward(net.state_dict(), TINY, x, t)
    assert out.shape == (2, 6, 32, 32) and h.shape == (2, 64, 8, 8)
    assert torch.allclose(h, want_h, atol=1e-4), (h - want_h).abs().max()
    assert torch.allclose(out, want_out, atol=1e-4), (out - want_out).abs().max()
    # convolutional: a 64x32 input works too (h-space 16x8)
    with torch.no_grad():
        out2, h2 = net(torch.randn(1, 3, 64, 32, generator=g), t[:1])
    assert out2.shape == (1, 6, 64, 32) and h2.shape == (1, 64, 16, 8)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 3, 30, 32), t[:1])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_frozen_prior_passes_gradients_to_its_input_only(checkpointing):
    """The official checkpoint function fails with frozen parameters; ours does not."""
    net = tiny_prior()
    net.checkpointing = checkpointing
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out, h = net(x, torch.tensor([10, 600]))
    (out[:, :3].pow(2).mean() + h.pow(2).mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    ref = tiny_prior()
    x2 = x.detach().clone().requires_grad_(True)
    out2, h2 = ref(x2, torch.tensor([10, 600]))
    (out2[:, :3].pow(2).mean() + h2.pow(2).mean()).backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_bf16_prior_is_close_to_fp32():
    net = tiny_prior()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([100])
    with torch.no_grad():
        a, ha = net(x, t)
        b, hb = net.to(torch.bfloat16)(x, t)
    assert b.dtype == torch.bfloat16
    assert (a - b.float()).abs().max() < 0.05 * a.abs().max() + 0.02
    assert (ha - hb.float()).abs().max() < 0.05 * ha.abs().max() + 0.02


# --- loading ------------------------------------------------------------------------------


def test_official_pickle_is_checked_converted_once_and_loaded_frozen(tmp_path):
    net = tiny_prior()
    pt = tmp_path / "tiny_uncond.pt"
    torch.save(net.state_dict(), pt)
    loaded = load_prior(pt, TINY)
    st = tmp_path / "tiny_uncond.safetensors"
    assert st.is_file()  # converted once, with the architecture in its metadata
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    pt.unlink()
    again = load_prior(st)  # no config needed: read from the metadata
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([3])
    with torch.no_grad():
        assert torch.equal(net(x, t)[0], again(x, t)[0])


def test_wrong_files_are_refused_with_a_clear_message(tmp_path):
    sd = tiny_prior().state_dict()
    bad = tmp_path / "class_cond.pt"
    torch.save({**sd, "label_emb.weight": torch.zeros(1000, 128)}, bad)
    with pytest.raises(WeightsError, match="class-conditional.*256x256_diffusion_uncond"):
        read_prior(bad, TINY)
    other = tmp_path / "vgg.pt"
    torch.save({"features.0.weight": torch.zeros(2, 3, 3, 3)}, other)
    with pytest.raises(WeightsError, match="not a guided-diffusion UNet"):
        read_prior(other, TINY)
    tiny = tmp_path / "tiny.pt"
    torch.save(sd, tiny)
    with pytest.raises(WeightsError, match="another size"):
        read_prior(tiny, GUIDED_DIFFUSION_256_UNCOND)  # the default: the file must be the 256 model
    trunc = tmp_path / "trunc.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("out.")}, trunc)
    with pytest.raises(WeightsError, match="lacks 4 tensors"):
        read_prior(trunc, TINY)
    assert not list(tmp_path.glob("*.safetensors"))  # nothing converted from a refused file


def test_missing_prior_names_the_file_folder_and_fetch_command(tmp_path):
    with pytest.raises(MissingWeightError) as exc:
        resolve_prior(PRIOR_ID, tmp_path / "models")
    msg = str(exc.value)
    assert "256x256_diffusion_uncond.pt" in msg and "restore" in msg
    assert f"gendeg weights fetch {PRIOR_ID}" in msg


def test_resolve_prefers_the_converted_file(tmp_path):
    folder = tmp_path / "models" / "restore" / "diffloss"
    folder.mkdir(parents=True)
    save_prior(tiny_prior().state_dict(), folder / "256x256_diffusion_uncond.safetensors", TINY)
    path = resolve_prior(PRIOR_ID, tmp_path / "models")
    assert path.name == "256x256_diffusion_uncond.safetensors"
    assert load_prior(path).config == TINY


def test_manifest_entry_describes_the_same_network():
    from comfyui_gendeg.core.weights import get_entry

    entry = get_entry(PRIOR_ID)
    cfg = GUIDED_DIFFUSION_256_UNCOND
    c = entry.config
    assert entry.kind == "restore" and entry.files[0].path == "diffloss/256x256_diffusion_uncond.pt"
    assert entry.files[0].urls == ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",)
    assert c["parameters"] == parameter_count(cfg)
    assert tuple(c["channel_mult"]) == cfg.channel_mult and c["num_channels"] == cfg.model_channels
    assert tuple(sorted(c["image_size"] // r for r in c["attention_resolutions"])) == cfg.attention_ds
    assert c["num_head_channels"] == cfg.num_head_channels and c["num_res_blocks"] == cfg.num_res_blocks
    assert c["learn_sigma"] and cfg.out_channels == 6 and not c["class_cond"]


def test_resolve_by_file_name_or_absolute_path(tmp_path):
    models = tmp_path / "models"
    (models / "restore").mkdir(parents=True)
    pt = models / "restore" / "my_prior.pt"
    torch.save(tiny_prior().state_dict(), pt)
    assert resolve_prior("my_prior.pt", models) == pt
    assert resolve_prior(str(pt), models) == pt
    load_prior(pt, TINY)  # converts once
    assert resolve_prior("my_prior.pt", models).name == "my_prior.safetensors"
    assert resolve_prior(str(pt), models).name == "my_prior.safetensors"
