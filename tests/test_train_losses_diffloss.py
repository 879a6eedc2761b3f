"""DiffLoss: gradients reach the restorer through the frozen prior, values equal the formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from comfyui_gendeg.core.errors import InputError, MissingWeightError
from comfyui_gendeg.core.train.losses import LossBatch, LossContext, build_loss
from comfyui_gendeg.core.train.losses.diffloss import DiffLoss, DiffLossOptions
from comfyui_gendeg.core.train.priors import PRIOR_ID, TINY, save_prior
from spandrel.architectures.NAFNet import NAFNet
from test_train_prior import reference_forward, tiny_prior


def tiny_nafnet(seed: int = 0) -> NAFNet:
    """A tiny NAFNet (spandrel's architecture) with its zero-initialised block scales opened."""
    torch.manual_seed(seed)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.2)
    return net


def images(b: int = 2, side: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, side, side, generator=g)
    lq = (0.6 * gt + 0.4 * 0.8 + 0.05 * torch.randn(b, 3, side, side, generator=g)).clamp(0, 1)
    return gt, lq


def abar_table() -> list[float]:
    prod, out = 1.0, []
    for i in range(1000):
        prod *= 1.0 - (1e-4 + i * (0.02 - 1e-4) / 999)
        out.append(prod)
    return out


def expected_terms(prior, out, gt, seed, opts: DiffLossOptions, pad_to: int | None = None) -> tuple[float, float]:
    """γ·MSE(ε̂) and γλ·MSE(h) computed independently: same draws, closed-form noising, functional network."""
    g = torch.Generator().manual_seed(seed)
    b = out.shape[0]
    if opts.fraction < 1:
        idx = torch.randperm(b, generator=g)[: max(1, math.ceil(opts.fraction * b))]
        out, gt = out[idx], gt[idx]
    t = torch.randint(opts.t_min, opts.t_max + 1, (out.shape[0],), generator=g)
    x_out, x_gt = out * 2 - 1, gt * 2 - 1
    if pad_to is not None:
        p = pad_to - out.shape[-1]
        x_out, x_gt = F.pad(x_out, (0, p, 0, p), mode="reflect"), F.pad(x_gt, (0, p, 0, p), mode="reflect")
    noise = torch.randn(x_out.shape, generator=g)
    abar = abar_table()
    a = torch.tensor([abar[i] for i in t.tolist()]).view(-1, 1, 1, 1)
    sd = prior.state_dict()
    e_o, h_o = reference_forward(sd, TINY, a.sqrt() * x_out + (1 - a).sqrt() * noise, t)
    e_g, h_g = reference_forward(sd, TINY, a.sqrt() * x_gt + (1 - a).sqrt() * noise, t)
    nat = (e_o[:, :3] - e_g[:, :3]).pow(2).mean().item()
    sem = (h_o - h_g).pow(2).mean().item()
    return opts.gamma * nat, opts.gamma * opts.lambda_sem * sem


@pytest.mark.parametrize("checkpointing", [True, False])
def test_diffloss_terms_alone_train_every_restorer_parameter_and_not_the_prior(checkpointing):
    net = tiny_nafnet()
    prior = tiny_prior()
    loss = DiffLoss(prior, DiffLossOptions(checkpointing=checkpointing))
    gt, lq = images()
    out = net(lq)
    terms = loss(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator().manual_seed(0)))
    assert set(terms) == {"diffloss_nat", "diffloss_sem"}
    assert all(v.item() > 0 for v in terms.values())
    sum(terms.values()).backward()
    params = list(net.named_parameters())
    assert params
    for name, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    assert all(p.grad is None for p in prior.parameters())
    assert list(loss.parameters()) == [] and loss.state_dict() == {}  # the prior stays out of optimizer and checkpoint


@pytest.mark.parametrize(
    ("opts", "side", "pad_to"),
    [
        (DiffLossOptions(checkpointing=False), 32, None),
        (DiffLossOptions(t_min=500, t_max=500, gamma=0.5, lambda_sem=2.0), 32, None),
        (DiffLossOptions(fraction=0.5, checkpointing=False), 32, None),
        (DiffLossOptions(checkpointing=False), 30, 32),  # reflect-padded to a multiple of 4 (TINY)
    ],
    ids=["defaults", "fixed-t-weights", "fraction", "padded"],
)
def test_values_equal_an_independent_computation(opts, side, pad_to):
    prior = tiny_prior()
    gt, lq = images(b=4, side=side, seed=1)
    out = (0.8 * lq + 0.2 * gt).requires_grad_(True)
    terms = DiffLoss(prior, opts)(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator().manual_seed(7)))
    with torch.no_grad():
        nat, sem = expected_terms(prior, out.detach(), gt, 7, opts, pad_to)
    assert terms["diffloss_nat"].item() == pytest.approx(nat, rel=1e-4)
    assert terms["diffloss_sem"].item() == pytest.approx(sem, rel=1e-4)


def test_resize_fit_equals_running_on_the_resized_crop():
    prior = tiny_prior()
    gt, lq = images(b=2, side=48, seed=4)
    out = 0.7 * lq + 0.3 * gt

    def terms(o, g, fit):
        loss = DiffLoss(prior, DiffLossOptions(fit=fit, checkpointing=False))
        return loss(LossBatch(out=o, gt=g, lq=g, step=0, generator=torch.Generator().manual_seed(3)))

    def small(x):
        return F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)

    a = terms(out, gt, "resize")  # TINY's image_size is 32
    b = terms(small(out), small(gt), "pad")  # mapping to [-1, 1] commutes with the (linear) resize
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-4)


def test_same_generator_same_value_and_every_k_steps():
    prior = tiny_prior()
    gt, lq = images(seed=2)
    loss = DiffLoss(prior, DiffLossOptions(every=3, checkpointing=False))

    def run(step, seed=5):
        out = lq.clone().requires_grad_(True)
        terms = loss(LossBatch(out=out, gt=gt, lq=lq, step=step, generator=torch.Generator().manual_seed(seed)))
        total = sum(terms.values())
        total.backward()
        return total.item(), out.grad

    v0, g0 = run(0)
    assert v0 > 0 and g0.abs().sum() > 0
    assert run(3)[0] == v0  # a resumed run draws the same t and noise from the same seed
    v1, g1 = run(1)  # skipped step: zero, still connected to the output
    assert v1 == 0 and g1 is not None and g1.abs().sum() == 0


def test_build_through_registry_prior_dtype_and_frozen(tmp_path):
    models = tmp_path / "models"
    folder = models / "restore" / "diffloss"
    folder.mkdir(parents=True)
    save_prior(tiny_prior().state_dict(), folder / "256x256_diffusion_uncond.safetensors", TINY)
    ctx = LossContext(device=torch.device("cpu"), models_dir=models, mixed_precision="bf16")
    loss = build_loss("diffloss", {"checkpointing": False}, ctx)
    assert loss.prior.config == TINY and loss.prior.dtype == torch.float32  # auto: fp32 on CPU
    loss.train()
    assert not loss.prior.training and all(not p.requires_grad for p in loss.prior.parameters())
    bf = build_loss("diffloss", {"prior_dtype": "bf16"}, ctx)
    assert bf.prior.dtype == torch.bfloat16
    gt, lq = images(seed=3)
    out = lq.clone().requires_grad_(True)
    terms = bf(LossBatch(out=out, gt=gt, lq=lq, step=0, generator=torch.Generator().manual_seed(0)))
    sum(terms.values()).backward()
    assert terms["diffloss_nat"].dtype == torch.float32 and out.grad.abs().sum() > 0


def test_missing_prior_and_bad_options_are_clear_errors(tmp_path):
    ctx = LossContext(device=torch.device("cpu"), models_dir=tmp_path / "models")
    with pytest.raises(MissingWeightError, match=f"gendeg weights fetch {PRIOR_ID}"):
        build_loss("diffloss", {}, ctx)
    for bad, msg in [({"every": 0}, "every must be >= 1"), ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
                     ({"t_max": 1000}, "t_max <= 999"), ({"t_min": 600, "t_max": 500}, "t_min <= t_max"),
                     ({"gama": 1e-3}, "unknown key 'loss.diffloss.gama'.*valid keys: weight, gamma, lambda_sem"),
                     ({"every": "2"}, "every must be int"), ({"fit": "crop"}, "fit must be one of 'pad', 'resize'")]:
        with pytest.raises(InputError, match=msg):
            build_loss("diffloss", bad, ctx)
