"""Validation for the hyperparameter dataclasses of every algorithm.

A bad value is rejected when the config is built, with a message that names the
field, the value and what is allowed -- never a traceback from inside torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def check_range(obj: Any, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: must be a number")
    if integer and value != int(value):
        raise ValueError(f"{name}={value!r}: must be a whole number")
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


def check_choice(obj: Any, name: str, choices: tuple) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, choices))}")


def as_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
