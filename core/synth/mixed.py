"""Mixed weather: haze with rain streaks or snow in front of it (GenDeg's ``rain+haze`` and ``snow+haze``).

Composition in the physical order: the scene is first attenuated and veiled by the
atmosphere, ``I_h = J·t + A·(1 − t)`` with ``t = exp(−β·d)`` (:mod:`.haze`, same depth input,
proxy and airlight), then the rain streaks or snow flakes, which fall between the camera
and the distant haze, are composited over the hazy scene without attenuation, with their
own light veil (:mod:`.rain`, :mod:`.snow`). One strength in 0..1 drives both parts (haze
``β = strength·beta_max``, the rain/snow at ``strength``), so μ still grows monotonically
with it and the intensity calibration searches that single number.

Expert parameters: the union of the haze parameters (``beta_max``, ``airlight``,
``airlight_min``, ``airlight_max``, ``depth_near_is_bright``) and those of the rain or snow
(same names and defaults as the single types; the names do not overlap). Random draws
(airlight, then the rain/snow fields) come from one generator in a fixed order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import haze, rain, snow
from .base import Degradation

HAZE_KEYS = tuple(haze.PARAMS)


def _compose(front: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def fn(x: torch.Tensor, strength: torch.Tensor, generator: torch.Generator, *,
           depth: torch.Tensor | None = None, **params: Any) -> torch.Tensor:
        """Hazy scene ``[B,3,H,W]`` 0..1 with the front layer composited over it; ``strength`` ``[B]`` in 0..1."""
        hp = {k: v for k, v in params.items() if k in HAZE_KEYS}
        fp = {k: v for k, v in params.items() if k not in HAZE_KEYS}
        hazy = haze.haze(x, strength, generator, depth=depth, **hp)
        return front(hazy, strength, generator, out=hazy, **fp)  # large images: composited in place

    return fn


def rain_haze(x: torch.Tensor, strength: torch.Tensor, generator: torch.Generator, **params: Any) -> torch.Tensor:
    """Haze, then rain streaks in front (see module doc)."""
    return _compose(rain.rain)(x, strength, generator, **params)


def snow_haze(x: torch.Tensor, strength: torch.Tensor, generator: torch.Generator, **params: Any) -> torch.Tensor:
    """Haze, then snow in front (see module doc)."""
    return _compose(snow.snow)(x, strength, generator, **params)


RAIN_HAZE = Degradation("rain+haze", rain_haze, {**haze.PARAMS, **rain.PARAMS}, __doc__ or "", uses_depth=True, passes=2,
                        sigma_param="opacity", sigma_range=rain.SIGMA_RANGE)
SNOW_HAZE = Degradation("snow+haze", snow_haze, {**haze.PARAMS, **snow.PARAMS}, __doc__ or "", uses_depth=True, passes=2,
                        sigma_param="opacity", sigma_range=snow.SIGMA_RANGE)
DEGRADATIONS = (RAIN_HAZE, SNOW_HAZE)
