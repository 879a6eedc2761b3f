"""Argument types shared by the sub-commands (the leading underscore keeps it from being a command)."""

from __future__ import annotations

import argparse

from ..core.checks import finite_float as _finite_float
from ..core.errors import InputError


def finite_float(text: str) -> float:
    """``type=`` for float flags: refuses NaN and infinities (they pass every range check unnoticed)."""
    try:
        return _finite_float(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
