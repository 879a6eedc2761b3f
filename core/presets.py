"""Intensity presets ``light`` / ``medium`` / ``heavy``: GenDeg (μ, σ) per degradation type.

One table for both engines, so "medium snow" asks the GenDeg model (``core.gendeg``) and the
weight-free synthesizer (``core.synth``) for the same amount. The values are the 20th, 50th
and 80th percentiles of the μ histograms GenDeg publishes for its training sets
(``data/<type>/Mu_*.json`` of the official repository, pooled per type as GenDeg's loader
does), each with the σ typical at that μ. μ and σ are in 0..1 units (mean and standard
deviation of |clean − degraded|, see :mod:`.intensity`).

This module depends on nothing: the synthesizer imports it without importing the model package.
"""

from __future__ import annotations

#: The preset names, weakest first.
LEVELS: tuple[str, ...] = ("light", "medium", "heavy")

#: type -> level -> (μ, σ).
GENDEG_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "haze": {"light": (0.066, 0.041), "medium": (0.109, 0.069), "heavy": (0.168, 0.104)},
    "rain": {"light": (0.029, 0.032), "medium": (0.049, 0.050), "heavy": (0.091, 0.081)},
    "snow": {"light": (0.017, 0.044), "medium": (0.049, 0.066), "heavy": (0.095, 0.091)},
    "motion_blur": {"light": (0.016, 0.025), "medium": (0.029, 0.045), "heavy": (0.045, 0.063)},
    "low_light": {"light": (0.121, 0.107), "medium": (0.197, 0.145), "heavy": (0.246, 0.183)},
    "raindrop": {"light": (0.023, 0.067), "medium": (0.031, 0.086), "heavy": (0.064, 0.101)},
    "rain+haze": {"light": (0.133, 0.090), "medium": (0.177, 0.109), "heavy": (0.233, 0.131)},
    "snow+haze": {"light": (0.118, 0.090), "medium": (0.159, 0.107), "heavy": (0.206, 0.127)},
}
