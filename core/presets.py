"""Intensity presets ``light`` / ``medium`` / ``heavy``: GenDeg (μ, σ) per degradation type.

One table for both engines, so "medium snow" asks the GenDeg model (``core.gendeg``) and the
weight-free synthesizer (``core.synth``) for the same amount. The μ values are the 20th, 50th
and 80th percentiles of the μ histograms GenDeg publishes for its training sets
(``data/<type>/Mu_*.json`` of the official repository, pooled per type as GenDeg's loader
does), each with the σ typical at that μ: for GenDeg's six single types the median of the real
σ in that μ's bin (:func:`.realism.typical_sigma`, rounded to 3 decimals; ``tests/test_realism.py``
checks it); the mixed types keep theirs (their datasets, ORD and CSD, are pooled into rain's and
snow's joint histograms, which cannot be split). μ and σ are in 0..1 units (mean and standard
deviation of |clean − degraded|, see :mod:`.intensity`).

This module depends on nothing: the synthesizer imports it without importing the model package.
"""

from __future__ import annotations

#: The preset names, weakest first.
LEVELS: tuple[str, ...] = ("light", "medium", "heavy")

#: type -> level -> (μ, σ).
GENDEG_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "haze": {"light": (0.066, 0.044), "medium": (0.109, 0.067), "heavy": (0.168, 0.100)},
    "rain": {"light": (0.029, 0.033), "medium": (0.049, 0.043), "heavy": (0.091, 0.077)},
    "snow": {"light": (0.017, 0.042), "medium": (0.049, 0.063), "heavy": (0.095, 0.090)},
    "motion_blur": {"light": (0.016, 0.023), "medium": (0.029, 0.047), "heavy": (0.045, 0.064)},
    "low_light": {"light": (0.121, 0.132), "medium": (0.197, 0.167), "heavy": (0.246, 0.180)},
    "raindrop": {"light": (0.023, 0.089), "medium": (0.031, 0.102), "heavy": (0.064, 0.080)},
    "rain+haze": {"light": (0.133, 0.090), "medium": (0.177, 0.109), "heavy": (0.233, 0.131)},
    "snow+haze": {"light": (0.118, 0.090), "medium": (0.159, 0.107), "heavy": (0.206, 0.127)},
}
