"""Validation for the hyperparameter dataclasses of every algorithm.

A bad value is rejected when the config is built, with a message that names the
field, the value and what is allowed -- never a traceback from inside torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any


def check_range(obj: Any, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: must be a number")
    if integer and not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"{name}={value!r}: must be a whole number")
        setattr(obj, name, int(value))  # 2.0 -> 2, so that range() and tensor shapes work
        value = int(value)
    if math.isinf(value) and (high is None or low is None) and not integer:
        raise ValueError(f"{name}={value!r}: must be finite")
    ok = not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name}={value!r}: must be in {interval}")


def check_hidden(obj: Any, name: str = "hidden") -> None:
    """Hidden layer sizes: a tuple (or list) of positive whole numbers, e.g. (64, 64)."""
    value = getattr(obj, name)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in value):
        raise ValueError(f"{name}={value!r}: must be a tuple of positive layer sizes, e.g. (64, 64)")
    setattr(obj, name, tuple(int(h) for h in value))


def check_choice(obj: Any, name: str, choices: tuple) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, choices))}")


def as_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
