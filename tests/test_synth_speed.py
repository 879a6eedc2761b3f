"""The synthesizer's fast renderers against independent computations of the same model.

Low light computes its powers as exp/log (with floors off the slow paths), rain and snow draw
their sparse seeds as a Bernoulli process by geometric gaps and stamp the streak/flake kernels
instead of an FFT: outputs equal the closed form, or the FFT rendering of the same seeds, up to
rounding; the seed process has the per-pixel Bernoulli statistics of the old uniform field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfyui_gendeg.core.synth import make_generator, synthesize
from comfyui_gendeg.core.synth.base import random_field
from comfyui_gendeg.core.synth.low_light import light_falloff
from helpers import scene


def test_low_light_uneven_closed_form_with_black_pixels():
    x = scene(2, 40, 56)
    x[:, :, :4] = 0.0  # black rows: log 0 is floored, the result stays 0 there (up to 1e-6)
    s, stops, gamma, fo = torch.tensor([0.3, 0.8]), 5.0, 2.2, 0.7
    y = synthesize(x, "low_light", s, seed=3, params={"noise": False, "stops_max": stops, "gamma": gamma, "falloff": fo})
    g = make_generator(3, "cpu")  # the draws of low_light, in its order: read-noise z, noise field, light position
    torch.randn((2,), generator=g)
    random_field(tuple(x.shape), g, x.device, normal=True)
    rho = light_falloff(2, 40, 56, g, x.device)
    drop = F.interpolate(rho, size=(40, 56), mode="bilinear", align_corners=False).double()
    stops_map = (s.double() * stops).view(-1, 1, 1, 1) * ((1 - fo) + fo * drop)
    expected = (x.double() ** gamma * 2.0 ** (-stops_map)) ** (1 / gamma)
    assert torch.allclose(y.double(), expected, atol=2e-6)
    assert float(y[:, :, :4].abs().max()) < 1e-6
