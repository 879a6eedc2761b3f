"""DriftRec's SDEs against independent computations (scipy ODE solutions and quadrature), and the sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.restore.driftrec import langevin_step, sample, time_grid
from comfyui_gendeg.core.restore.driftrec_sde import OUVE, CosVE, make_sde
from scipy.integrate import quad, solve_ivp

TIMES = [0.0, 0.01, 0.03, 0.25, 0.5, 0.8, 1.0]


def _variance_ode(a, g):
    """Var(t) of dx = a(t)(y - x) dt + g(t) dw from 0, by solving dP/dt = -2 a P + g^2 (scipy, tight tolerances)."""
    sol = solve_ivp(lambda t, p: -2 * a(t) * p + g(t) ** 2, (0.0, 1.0), [0.0], t_eval=TIMES, rtol=1e-11, atol=1e-14,
                    method="DOP853")
    return sol.y[0]


def test_ouve_closed_forms_solve_the_forward_sde():
    sde = OUVE(1.0, 0.01, 1.0)
    t = torch.tensor(TIMES, dtype=torch.float64)
    # g(t) as the issue writes it
    g_expected = 0.01 * 100.0 ** t * math.sqrt(2 * (1.0 + math.log(100.0)))
    torch.testing.assert_close(sde.diffusion(t), g_expected)
    # the std is the solution of the variance ODE with that g (independent numerical solution)
    var = _variance_ode(lambda s: 1.0, lambda s: float(sde.diffusion(s)[0]))
    np.testing.assert_allclose(sde.std(t).numpy() ** 2, var, rtol=1e-7, atol=1e-12)
    # and the closed form of the issue
    closed = torch.sqrt(0.01**2 * (100.0 ** (2 * t) - torch.exp(-2 * t)))
    torch.testing.assert_close(sde.std(t), closed)
    # mean: dm/dt = gamma (y - m) from m(0) = x0
    x0, y = torch.full((1, 1, 2, 2), 0.8), torch.full((1, 1, 2, 2), 0.2)
    for tt in TIMES:
        m = solve_ivp(lambda s, m: 1.0 * (0.2 - m), (0, max(tt, 1e-12)), [0.8], rtol=1e-12, atol=1e-14).y[0, -1]
        assert float(sde.mean(x0, y, tt)[0, 0, 0, 0]) == pytest.approx(m, abs=1e-6)


def test_ouve_with_other_parameters():
    sde = OUVE(2.0, 0.01, 0.3)  # the official argparse defaults
    var = _variance_ode(lambda s: 2.0, lambda s: float(sde.diffusion(s)[0]))
    np.testing.assert_allclose(sde.std(torch.tensor(TIMES)).numpy() ** 2, var, rtol=1e-7, atol=1e-12)


def test_cosve_matches_the_official_quadrature_and_ends_at_sigma_max():
    gamma, smin, smax = 1.0, 0.01, 1.0
    sde = CosVE(gamma, smin, smax)
    assert float(sde.std(1.0)[0]) == pytest.approx(smax, rel=1e-10)
    # the official construction: normfac from scipy.quad, var(t) = normfac^2 e^{-2 Gamma(t)} quad(0..t)
    def integrand(k):
        return math.exp(2 * gamma * (k - math.sin(math.pi * k) / math.pi)) * (smax / smin) ** (2 * k) * smin**2

    normfac = smax / math.sqrt(math.exp(-2 * gamma) * quad(integrand, 0, 1)[0])
    assert sde.normfac == pytest.approx(normfac, rel=1e-9)
    for t in TIMES:
        big = gamma * (t - math.sin(math.pi * t) / math.pi)
        var = normfac**2 * math.exp(-2 * big) * quad(integrand, 0, t)[0]
        assert float(sde.std(t)[0]) ** 2 == pytest.approx(var, rel=1e-8, abs=1e-14)
    # and it solves the variance ODE with its own stiffness and diffusion
    var = _variance_ode(lambda s: float(sde.stiffness(s)[0]), lambda s: float(sde.diffusion(s)[0]))
    np.testing.assert_allclose(sde.std(torch.tensor(TIMES)).numpy() ** 2, var, rtol=1e-6, atol=1e-12)
    # mean share: exp(-gamma (t - sin(pi t)/pi))
    assert float(sde.interp(0.5)[0]) == pytest.approx(math.exp(-(0.5 - 1 / math.pi)))


def test_prior_is_y_plus_std1_noise_and_reverse_drift():
    sde = make_sde("ouve")
    y = torch.rand(2, 3, 4, 4)
    z = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(sde.prior(y, z), y + float(sde.std(1.0)[0]) * z)
    x, score = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    g2 = (0.01 * 100.0 ** t * math.sqrt(2 * (1 + math.log(100)))) ** 2
    expected = (y - x) - g2.float().reshape(2, 1, 1, 1) * score
    torch.testing.assert_close(sde.reverse_drift(x, y, t, score), expected)
    torch.testing.assert_close(sde.reverse_drift(x, y, t, score, probability_flow=True),
                               (y - x) - 0.5 * g2.float().reshape(2, 1, 1, 1) * score)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(InputError, match="sigma_min < sigma_max"):
        OUVE(1.0, 1.0, 0.5)
    with pytest.raises(InputError, match="unknown DriftRec SDE 't2ve'"):
        make_sde("t2ve")
    with pytest.raises(InputError, match="t_end"):
        time_grid(10, t_end=1.5)


# --- the sampler with an oracle score ------------------------------------------------------


def _oracle(sde, m0: float, s0: float):
    """Exact score of p_t when x0 ~ N(m0, s0^2) per pixel: Gaussian with the forward marginal's mean and variance."""

    def score(x, y, t):
        k = sde.interp(t).to(x).reshape(-1, 1, 1, 1)
        mean = k * m0 + (1 - k) * y
        var = (k * s0) ** 2 + sde.std(t).to(x).reshape(-1, 1, 1, 1) ** 2
        return -(x - mean) / var

    return score


@pytest.mark.parametrize("name", ["ouve", "cosve"])
@pytest.mark.parametrize("sampler", ["euler_maruyama", "probability_flow"])
def test_sampler_with_oracle_score_recovers_the_clean_distribution(name, sampler):
    sde = make_sde(name)
    m0, s0 = 0.7, 0.05
    y = torch.full((2, 3, 64, 64), 0.3)  # the "JPEG": far from the clean mean
    g = torch.Generator().manual_seed(0)
    out = sample(sde, _oracle(sde, m0, s0), y, steps=100, sampler=sampler, generator=g)
    # the marginal at the last visited time t_end = 0.03 (the sampler returns that step's mean)
    k = float(sde.interp(0.03)[0])
    expected_mean = k * m0 + (1 - k) * 0.3
    assert float(out.mean()) == pytest.approx(expected_mean, abs=0.01)
    assert abs(float(out.mean()) - m0) < 0.03 and abs(float(out.mean()) - 0.3) > 0.35
    assert float(out.std()) == pytest.approx(k * s0, rel=0.25)


def test_sampler_follows_the_official_step_rule():
    """dt = 1/N on a grid from 1 to t_end, returning the last x_mean: checked step by step with zero noise."""
    sde = make_sde("ouve")
    y = torch.full((1, 1, 2, 2), 0.5)
    x1 = torch.full((1, 1, 2, 2), 0.9)
    seen = []

    def score(x, y_, t):
        seen.append(float(t[0]))
        return torch.full_like(x, -1.0)

    out = sample(sde, score, y, steps=4, t_end=0.1, sampler="probability_flow", x_start=x1)
    assert seen == pytest.approx([1.0, 0.7, 0.4, 0.1])
    x = 0.9
    for t in [1.0, 0.7, 0.4, 0.1]:
        g2 = float(sde.diffusion(t)[0]) ** 2
        x = x - ((0.5 - x) - 0.5 * g2 * -1.0) / 4
    assert float(out[0, 0, 0, 0]) == pytest.approx(x, rel=1e-6)


def test_langevin_step_size_is_the_official_formula():
    x, score, noise = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 0.5)
    new, mean = langevin_step(x, score, noise, snr=0.15)
    step = 2 * (0.15 * 1.0 / 4.0) ** 2  # ||noise|| = 1, ||score|| = 4
    torch.testing.assert_close(mean, x + step * score)
    torch.testing.assert_close(new, mean + math.sqrt(2 * step) * noise)


def test_same_seed_same_samples_and_progress_per_step():
    sde = make_sde("ouve")
    y = torch.rand(1, 3, 8, 8)
    calls = []
    a = sample(sde, _oracle(sde, 0.5, 0.1), y, steps=5, corrector="langevin", generator=torch.Generator().manual_seed(3),
               progress=lambda i, n: calls.append((i, n)))
    b = sample(sde, _oracle(sde, 0.5, 0.1), y, steps=5, corrector="langevin", generator=torch.Generator().manual_seed(3))
    c = sample(sde, _oracle(sde, 0.5, 0.1), y, steps=5, corrector="langevin", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert calls == [(i, 5) for i in range(6)]
