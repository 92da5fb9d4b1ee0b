"""Checks of a request's values, each refusal one line naming the field (``"num: must be a positive
integer, got 0"``), never a command-line flag: the CLI puts its flag in the field's place.

Used by the typed requests and specs of the workflows (dataset recipes, evaluations) when they are made,
so that a Python caller meets the same checks as the command line.
"""

from __future__ import annotations

import math
import numbers

from msgnet.errors import UsageError

_WHOLE_WORDS = {0: "a non-negative integer", 1: "a positive integer"}


def is_whole(value: object) -> bool:
    """An integer, and not a bool (``True`` is an ``int`` to Python, never a count to a user)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_count(name: str, value: object, least: int = 1) -> None:
    """``value`` is a whole number of at least ``least`` (1: positive; 0: a seed, "0: all")."""
    if not is_whole(value) or value < least:  # type: ignore[operator]
        what = _WHOLE_WORDS.get(least, f"a whole number >= {least}")
        raise UsageError(f"{name}: must be {what}, got {value!r}")


def check_seed(name: str, value: object) -> None:
    check_count(name, value, least=0)


def check_fraction(name: str, value: object, zero_allowed: bool) -> None:
    """A share of the images: in [0, 1) with ``zero_allowed``, else in (0, 1); NaN and bools refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0.0 <= value < 1.0 if zero_allowed else 0.0 < value < 1.0):  # type: ignore[operator]
        raise UsageError(f"{name}: must be in {'[0, 1)' if zero_allowed else '(0, 1)'}, got {value!r}")


def check_split_fractions(val_fraction: object, test_fraction: object, val_zero_allowed: bool = False) -> None:
    """Validation and test shares, each a fraction, together leaving images for training."""
    check_fraction("val_fraction", val_fraction, val_zero_allowed)
    check_fraction("test_fraction", test_fraction, True)
    if val_fraction + test_fraction >= 1.0:  # type: ignore[operator]
        raise UsageError(f"val_fraction, test_fraction: together they must be below 1 to leave images for "
                         f"training, got {val_fraction} + {test_fraction}")


def check_name(name: str, value: object, optional: bool = False) -> None:
    """A non-empty string (a split's name, a variant); None too where ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name}: must be a non-empty name, got {value!r}")
