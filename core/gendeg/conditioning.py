"""GenDeg conditioning: degradation type as text, intensity (μ, σ) as binned one-hots.

Facts of the official code (sudraj2002/GenDeg, ``edit_dataset.py``):

* The prompt is a scene caption followed by a fixed phrase per degradation type
  (``"<caption>, in hazy conditions"``, ...). Mixed types replace the phrase with
  ``"in rainy and hazy conditions"`` / ``"in snowy and hazy conditions"``.
* μ ∈ [0, 0.7] and σ ∈ [0, 0.4] are each binned into 128 equal bins
  (``numpy.digitize`` on ``linspace(lo, hi, 129)`` edges, minus one; values at or above the
  top edge fall in the last bin, negative values are an error) and one-hot encoded with
  length 129; index 128 is the "no intensity" (null) code used for guidance.
* The two one-hots are stacked to ``[B, 2, 129]`` (μ first, σ second).

A fine-tuned GenDeg (``gendeg train gendeg``) learns new types as new phrases (e.g.
``"in underwater conditions"``): a :class:`GenDegCondition` with a ``phrase`` names any type.

Intensity presets (light / medium / heavy) are the 20th / 50th / 80th percentiles of the
official per-type intensity histograms shipped in the GenDeg repository (``data/<type>/
Mu_*.json`` and ``Sigma_*.json``, pooled over the datasets of that type; ORD counts as
rain+haze and CSD as snow+haze, as in the official data loader).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import InputError
from ..presets import GENDEG_PRESETS, LEVELS

MU_RANGE = (0.0, 0.7)
SIGMA_RANGE = (0.0, 0.4)
NUM_BINS = 128
NULL_INDEX = NUM_BINS  # the 129th entry: "no intensity"
ONE_HOT_LEN = NUM_BINS + 1

#: Degradation type -> the phrase appended to the caption (official wording).
TYPE_PHRASES: dict[str, str] = {
    "haze": "in hazy conditions",
    "rain": "in rainy conditions",
    "snow": "in snowy conditions",
    "motion_blur": "in blurry conditions",
    "low_light": "in low-light conditions",
    "raindrop": "with raindrops in it",
    "rain+haze": "in rainy and hazy conditions",
    "snow+haze": "in snowy and hazy conditions",
}
GENDEG_TYPES: tuple[str, ...] = tuple(TYPE_PHRASES)

_ALIASES = {
    "motion": "motion_blur",
    "motion blur": "motion_blur",
    "blur": "motion_blur",
    "low-light": "low_light",
    "low light": "low_light",
    "lowlight": "low_light",
    "raindrops": "raindrop",
    "rain_haze": "rain+haze",
    "snow_haze": "snow+haze",
    "rain and haze": "rain+haze",
    "snow and haze": "snow+haze",
    "fog": "haze",
}

DEFAULT_CAPTION = "a photo of a scene"

#: type -> preset -> (μ, σ): 20th / 50th / 80th percentiles of the official histograms
#: (the table both engines share lives in :mod:`..presets`).
PRESETS: dict[str, dict[str, tuple[float, float]]] = GENDEG_PRESETS
PRESET_NAMES = LEVELS


def normalize_type(name: str) -> str:
    """Canonical GenDeg type name (accepts the official spellings such as ``motion``, ``low-light``)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TYPE_PHRASES:
        raise InputError(f"unknown GenDeg degradation type {name!r}; choose one of {', '.join(GENDEG_TYPES)}")
    return key


def build_prompt(degradation: str, caption: str = DEFAULT_CAPTION) -> str:
    """``"<caption>, <phrase>"`` as in the official training prompts (trailing punctuation trimmed)."""
    return compose_prompt(caption, TYPE_PHRASES[normalize_type(degradation)])


def clean_phrase(phrase: str) -> str:
    """A type phrase as the prompt uses it: ``", in underwater conditions"`` -> ``"in underwater conditions"``."""
    return " ".join(str(phrase or "").split()).lstrip(",;: ").strip()


def compose_prompt(caption: str, phrase: str) -> str:
    """``"<caption>, <phrase>"``; an empty caption becomes :data:`DEFAULT_CAPTION`."""
    cap = (caption or "").strip().rstrip(",.;: ") or DEFAULT_CAPTION
    return f"{cap}, {clean_phrase(phrase)}"


def custom_type_name(name: str) -> str:
    """A new type's name as recorded (lower case, spaces and hyphens as ``_``); refuses an empty name."""
    key = "_".join(str(name or "").strip().lower().replace("-", " ").split())
    if not key:
        raise InputError("a custom degradation type needs a name (e.g. underwater)")
    return key


def bin_index(value: float, lo: float, hi: float, num_bins: int = NUM_BINS) -> int:
    """Official binning: ``digitize(value, linspace(lo, hi, num_bins+1)) - 1``, top clamped.

    Raises :class:`InputError` below ``lo`` (the official code raises too) and for NaN.
    """
    v = float(value)
    if math.isnan(v):
        raise InputError("intensity value is NaN")
    if v < lo:
        raise InputError(f"intensity value {v:.4g} is below the range [{lo}, {hi}]; it must be >= {lo}")
    edges = np.linspace(lo, hi, num_bins + 1)
    idx = int(np.digitize(v, edges, right=False)) - 1
    return min(idx, num_bins - 1)


def one_hot(index: int | None, length: int = ONE_HOT_LEN) -> torch.Tensor:
    """Float one-hot of ``length``; ``None`` gives the null code (last index)."""
    out = torch.zeros(length, dtype=torch.float32)
    out[NULL_INDEX if index is None else index] = 1.0
    return out


def intensity_one_hots(mu: float | None, sigma: float | None) -> torch.Tensor:
    """``[2, 129]`` (μ row, σ row) for one image; ``None`` for both gives the null code."""
    if (mu is None) != (sigma is None):
        raise InputError("give both μ and σ, or neither (the null intensity)")
    if mu is None:
        return torch.stack([one_hot(None), one_hot(None)])
    return torch.stack([one_hot(bin_index(mu, *MU_RANGE)), one_hot(bin_index(sigma, *SIGMA_RANGE))])


def null_one_hots(batch: int) -> torch.Tensor:
    """``[batch, 2, 129]`` null intensity codes (what the official sampler uses for guidance)."""
    return intensity_one_hots(None, None)[None].repeat(batch, 1, 1)


@dataclass(frozen=True)
class GenDegCondition:
    """One GenDeg condition: degradation type, scene caption and requested intensity (μ, σ in 0..1).

    ``phrase`` (optional) replaces the type's official phrase: a type learnt by fine-tuning
    (``degradation`` is then any name, e.g. ``underwater``). ``source_dataset`` (optional) names
    the real dataset the intensity was drawn from (a ``gendeg_sampling`` plan), for the metadata.
    """

    degradation: str
    caption: str = DEFAULT_CAPTION
    mu: float = 0.109
    sigma: float = 0.069
    preset: str = "custom"
    phrase: str = ""
    source_dataset: str = ""

    def __post_init__(self) -> None:
        phrase = clean_phrase(self.phrase)
        object.__setattr__(self, "phrase", phrase)
        kind = custom_type_name(self.degradation) if phrase else normalize_type(self.degradation)
        object.__setattr__(self, "degradation", kind)
        for name, value, (lo, _hi) in (("mu", self.mu, MU_RANGE), ("sigma", self.sigma, SIGMA_RANGE)):
            if not isinstance(value, (int, float)) or math.isnan(float(value)):
                raise InputError(f"{name} must be a number, got {value!r}")
            if float(value) < lo:
                raise InputError(f"{name}={value} is below {lo}; GenDeg intensities are >= 0")

    @property
    def prompt(self) -> str:
        return compose_prompt(self.caption, self.phrase) if self.phrase else build_prompt(self.degradation, self.caption)

    def one_hots(self) -> torch.Tensor:
        """``[2, 129]`` binned one-hots of (μ, σ)."""
        return intensity_one_hots(self.mu, self.sigma)

    def to_dict(self) -> dict:
        return {**asdict(self), "prompt": self.prompt}


def make_condition(
    degradation: str,
    caption: str = DEFAULT_CAPTION,
    *,
    mu: float | None = None,
    sigma: float | None = None,
    preset: str = "custom",
    phrase: str = "",
) -> GenDegCondition:
    """A condition from explicit (μ, σ) or from a preset name (light / medium / heavy).

    With a custom ``phrase`` (a fine-tuned type) there are no presets: give μ and σ.
    """
    if clean_phrase(phrase):
        name = custom_type_name(degradation)
        if preset != "custom":
            raise InputError(f"the custom type {name!r} has no intensity presets; set preset to custom and give mu and "
                             "sigma (the fine-tuning run's summary.json lists light/medium/heavy for its types)")
        if mu is None or sigma is None:
            raise InputError(f"the custom type {name!r} needs mu and sigma")
        return GenDegCondition(name, caption, float(mu), float(sigma), preset, phrase)
    deg = normalize_type(degradation)
    if preset != "custom":
        if preset not in PRESET_NAMES:
            raise InputError(f"unknown intensity preset {preset!r}; choose custom, {', '.join(PRESET_NAMES)}")
        mu, sigma = PRESETS[deg][preset]
    if mu is None or sigma is None:
        mu_d, sigma_d = PRESETS[deg]["medium"]
        mu = mu_d if mu is None else mu
        sigma = sigma_d if sigma is None else sigma
    return GenDegCondition(deg, caption, float(mu), float(sigma), preset)


def condition_sweep(
    degradations: Sequence[str],
    caption: str,
    mus: Sequence[float],
    sigmas: Sequence[float] | None = None,
    *,
    phrase: str = "",
    reference: tuple[float, float] | None = None,
) -> list[GenDegCondition]:
    """Every (type, μ[, σ]) combination; ``sigmas=None`` pairs each μ with the σ of the
    nearest preset of that type scaled by μ/μ_preset (σ roughly grows with μ in the data).

    A custom ``phrase`` (a fine-tuned type, no presets) scales σ from ``reference`` = (μ, σ)
    instead: σ = σ_ref·μ/μ_ref.
    """
    custom = bool(clean_phrase(phrase))
    if custom and sigmas is None and reference is None:
        raise InputError("a sweep of a custom type needs sigma values or a reference (mu, sigma) to scale sigma from")
    out = []
    for deg in degradations:
        d = custom_type_name(deg) if custom else normalize_type(deg)
        for i, mu in enumerate(mus):
            if sigmas is not None:
                sig_list = [sigmas[i]] if len(sigmas) == len(mus) else list(sigmas)
            else:
                m_med, s_med = reference if custom and reference is not None else PRESETS[d]["medium"]
                sig_list = [min(SIGMA_RANGE[1], s_med * float(mu) / m_med) if m_med > 0 else s_med]
            for s in sig_list:
                out.append(GenDegCondition(d, caption, float(mu), float(s), phrase=phrase))
    return out


def stack_one_hots(conds: Sequence[GenDegCondition]) -> torch.Tensor:
    """``[B, 2, 129]`` for a list of conditions."""
    return torch.stack([c.one_hots() for c in conds])
