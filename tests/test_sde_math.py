"""The mean-reverting SDE against independent closed forms (numpy), known values and toy problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.restore.sde import IRSDE, theta_schedule


def np_cosine_thetas(T: int, s: float = 0.008) -> np.ndarray:
    # improved-DDPM alphas_cumprod over T+2 intervals; theta = 1 - abar[1..T+1]
    n = T + 2
    f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * np.pi / 2) ** 2
    return 1.0 - f[1:-1] / f[0]


def np_schedule(thetas: np.ndarray, lam: float, eps: float):
    big = np.concatenate([[0.0], np.cumsum(thetas[1:])])  # Theta_t = sum_{k=1..t} theta_k
    dt = -np.log(eps) / big[-1]
    sigma_bar = lam * np.sqrt(1 - np.exp(-2 * big * dt))
    return big, dt, sigma_bar


def test_known_dt_of_the_official_cosine_schedule():
    sde = IRSDE.create(max_sigma=10, T=100, schedule="cosine", eps=0.005)
    assert sde.dt == pytest.approx(0.10409, abs=5e-6)
    assert math.exp(-float(sde.thetas_cumsum[-1]) * sde.dt) == pytest.approx(0.005, rel=1e-12)
    assert sde.lam == pytest.approx(10 / 255)


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_cosine_schedule_matches_closed_form(T):
    sde = IRSDE.create(max_sigma=50, T=T, schedule="cosine", eps=0.005)
    th = np_cosine_thetas(T)
    assert sde.thetas.shape == (T + 1,)
    np.testing.assert_allclose(sde.thetas.numpy(), th, rtol=1e-12, atol=1e-15)
    big, dt, sbar = np_schedule(th, 50 / 255, 0.005)
    np.testing.assert_allclose(sde.thetas_cumsum.numpy(), big, rtol=1e-12, atol=1e-15)
    assert sde.dt == pytest.approx(dt, rel=1e-12)
    np.testing.assert_allclose(sde.sigma_bars.numpy(), sbar, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(sde.sigmas.numpy(), np.sqrt(2 * (50 / 255) ** 2 * th), rtol=1e-12)
    # stationary end: sigma_bar_T = lambda sqrt(1 - eps^2)
    assert float(sde.sigma_bars[-1]) == pytest.approx(50 / 255 * math.sqrt(1 - 0.005**2), rel=1e-10)
    assert float(sde.sigma_bars[0]) == 0.0


def test_linear_and_constant_schedules():
    T = 100
    lin = theta_schedule("linear", T).numpy()
    scale = 1000 / (T + 1)
    np.testing.assert_allclose(lin, np.linspace(scale * 1e-4, scale * 0.02, T + 1), rtol=1e-12)
    const = IRSDE.create(30, T, "constant", 0.01)
    assert const.dt == pytest.approx(-math.log(0.01) / T, rel=1e-12)  # Theta_T = T for theta = 1
    assert const.lam == pytest.approx(30 / 255)


def test_max_sigma_units_and_bad_settings():
    assert IRSDE.create(0.2, 10).lam == pytest.approx(0.2)  # below 1: already divided by 255 (official rule)
    with pytest.raises(InputError, match="schedule"):
        IRSDE.create(10, 100, "quadratic")
    with pytest.raises(InputError, match="eps"):
        IRSDE.create(10, 100, "cosine", eps=1.5)
    with pytest.raises(InputError, match="max_sigma"):
        IRSDE.create(-3, 100)


def _official_posterior(sde: IRSDE, t: int) -> tuple[float, float, float]:
    # the official one-step formulas, written out with numpy
    th = sde.thetas.numpy()
    big = sde.thetas_cumsum.numpy()
    A, B, C = np.exp(-th[t] * sde.dt), np.exp(-big[t] * sde.dt), np.exp(-big[t - 1] * sde.dt)
    c_t = A * (1 - C**2) / (1 - B**2)
    c_0 = C * (1 - A**2) / (1 - B**2)
    A2, B2, C2 = A**2, B**2, C**2
    var = (1 - A2) * (1 - C2) / (1 - B2)
    std = np.exp(0.5 * np.log(max(var, 1e-20 * sde.dt))) * sde.lam
    return c_t, c_0, std


@pytest.mark.parametrize("t", [1, 2, 37, 99, 100])
def test_posterior_step_mean_and_std_match_closed_form(t):
    sde = IRSDE.create(10, 100)
    g = torch.Generator().manual_seed(0)
    xt, x0, mu = (torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    c_t, c_0, std = _official_posterior(sde, t)
    mean = sde.posterior_mean(xt, x0, mu, t)
    torch.testing.assert_close(mean, c_t * (xt - mu) + c_0 * (x0 - mu) + mu, rtol=1e-12, atol=1e-12)
    assert sde.posterior_std(t) == pytest.approx(std, rel=1e-10)


@pytest.mark.parametrize(("t", "s"), [(100, 60), (50, 0), (10, 9), (80, 1)])
def test_multi_step_posterior_is_gaussian_conditioning(t, s):
    """Fewer steps: q(x_s | x_t, x0) from Bayes' rule on the OU transition, computed independently."""
    sde = IRSDE.create(50, 100)
    lam2 = sde.lam**2
    big = sde.thetas_cumsum.numpy()
    e_s = np.exp(-big[s] * sde.dt)  # x_s | x0 : mean mu + e_s (x0 - mu), var lam2 (1 - e_s^2)
    a = np.exp(-(big[t] - big[s]) * sde.dt)  # x_t | x_s: mean mu + a (x_s - mu), var lam2 (1 - a^2)
    v_s, v_ts = lam2 * (1 - e_s**2), lam2 * (1 - a**2)
    # posterior precision and mean (in deviations from mu): standard Gaussian product
    if v_s == 0:
        post_var, w_t, w_0 = 0.0, 0.0, e_s
    else:
        post_var = 1 / (1 / v_s + a * a / v_ts)
        w_t, w_0 = post_var * a / v_ts, post_var * e_s / v_s
    c_t, c_0, std = sde.posterior_coefficients(t, s)
    assert c_t == pytest.approx(w_t, rel=1e-9, abs=1e-12)
    assert c_0 == pytest.approx(w_0, rel=1e-9, abs=1e-12)
    assert std == pytest.approx(math.sqrt(max(post_var, 1e-20 * sde.dt * lam2)), rel=1e-6, abs=1e-9)


def test_timesteps_full_and_fewer():
    sde = IRSDE.create(10, 100)
    assert sde.timesteps() == list(range(100, 0, -1))
    assert sde.timesteps(100) == sde.timesteps(0) == sde.timesteps(None)
    few = sde.timesteps(10)
    assert len(few) == 10 and few[0] == 100 and few[-1] == 1
    assert all(a > b for a, b in zip(few, few[1:], strict=False))


@pytest.mark.parametrize("steps", [None, 7])
def test_posterior_sampling_with_an_oracle_network_recovers_x0_exactly(steps):
    sde = IRSDE.create(10, 100)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    mu = (x0 + 0.3 * torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)).clamp(0, 1)

    def oracle(x, m, t):
        return sde.true_noise(x, x0, m, t)

    out = sde.sample(oracle, mu, sampler="posterior", steps=steps, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-7)


def _gaussian_toy(sde: IRSDE, m0: float, s0: float, mu: float):
    """Exact noise predictor for data x0 ~ N(m0, s0^2) (per pixel) under the forward SDE."""

    def noise_fn(x, m, t):
        e = sde.decay(t)
        var = s0**2 * e**2 + sde.sigma_bar(t) ** 2
        mean = mu + (m0 - mu) * e
        score = -(x - mean) / var
        return -score * sde.sigma_bar(t)

    return noise_fn


def test_reverse_ode_converges_to_the_exact_flow_on_a_gaussian_toy():
    """The probability-flow ODE maps x_T to m0 + (x_T - mean_T) * s0 / std_T exactly; Euler converges to it."""
    m0, s0, mu0 = 0.3, 0.1, 0.7
    errors = []
    for T in (50, 200, 800):
        sde = IRSDE.create(50, T)
        xT = mu0 + torch.linspace(-0.3, 0.3, 101, dtype=torch.float64)[None, None, None]
        mu = torch.full_like(xT, mu0)
        out = sde.sample(_gaussian_toy(sde, m0, s0, mu0), mu, sampler="reverse_ode", x_T=xT)
        e_T = sde.decay(T)
        std_T = math.sqrt(s0**2 * e_T**2 + sde.sigma_bar(T) ** 2)
        exact = m0 + (xT - (mu0 + (m0 - mu0) * e_T)) * s0 / std_T
        errors.append(float((out - exact).abs().max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.01


def test_reverse_sde_samples_the_data_distribution_on_a_gaussian_toy():
    m0, s0, mu0 = 0.3, 0.1, 0.7
    sde = IRSDE.create(50, 100)
    g = torch.Generator().manual_seed(3)
    n = 40000
    e_T = sde.decay(100)
    std_T = math.sqrt(s0**2 * e_T**2 + sde.sigma_bar(100) ** 2)
    xT = mu0 + (m0 - mu0) * e_T + std_T * torch.randn(1, 1, 1, n, generator=g, dtype=torch.float64)
    mu = torch.full_like(xT, mu0)
    out = sde.sample(_gaussian_toy(sde, m0, s0, mu0), mu, sampler="reverse_sde", x_T=xT, generator=g)
    assert float(out.mean()) == pytest.approx(m0, abs=0.005)
    assert float(out.std()) == pytest.approx(s0, rel=0.06)


def test_samplers_are_reproducible_and_validate_names():
    sde = IRSDE.create(10, 20)
    mu = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))

    def net(x, m, t):
        return 0.1 * (x - m)

    runs = [sde.sample(net, mu, sampler="reverse_sde", generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    other = sde.sample(net, mu, sampler="reverse_sde", generator=torch.Generator().manual_seed(6))
    assert not torch.equal(runs[0], other)
    with pytest.raises(InputError, match="sampler"):
        sde.sample(net, mu, sampler="euler")


def test_score_and_x0_conversions_invert_the_marginal():
    sde = IRSDE.create(30, 100)
    g = torch.Generator().manual_seed(4)
    x0, mu = torch.rand(1, 3, 4, 4, generator=g), torch.rand(1, 3, 4, 4, generator=g)
    xt, noise = sde.forward_sample(x0, mu, 40, generator=g)
    torch.testing.assert_close(sde.x0_from_noise(xt, mu, noise, 40), x0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sde.score_from_noise(noise, 40), -(xt - sde.mu_bar(x0, mu, 40)) / sde.sigma_bar(40) ** 2)
