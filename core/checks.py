"""Checks of plain values given by people (command-line flags, node inputs, config keys)."""

from __future__ import annotations

import math
from typing import Any

from .errors import InputError


def finite_float(value: Any, name: str | None = None) -> float:
    """``value`` as a float; NaN, ±infinity and non-numbers raise :class:`InputError` (naming ``name`` if given).

    NaN slips through every ``min``/``max`` comparison (all are false), so a NaN tolerance or
    strength would otherwise run and silently give a wrong result.
    """
    where = f"{name}: " if name else ""
    if isinstance(value, bool):
        raise InputError(f"{where}expected a number, got {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InputError(f"{where}expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{where}{value!r} is not a finite number; give an ordinary number (no NaN or infinity)")
    return number
