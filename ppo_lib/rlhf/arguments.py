"""The argument checks every entry point of ``ppo_lib.rlhf`` shares, so that a careless call fails
where it is written, with a message that names the argument, its value and what is allowed
(the RL core's standard, :mod:`ppo_lib.config`):

- :func:`count` and :func:`real`: numbers (NumPy's too), NaN and inf refused, a float that is not
  a whole number refused where a count is expected (never truncated);
- :func:`flag`: ``True`` or ``False`` (NumPy's too), never a string read as true;
- :func:`plain_numbers`: a config's NumPy numbers as Python numbers (cache keys, ``repr``);
- :func:`require_module`: a model where a model is expected, with a hint when a result object
  (``PretrainResult``, ``RewardModelResult``, a fine-tuning result) was passed instead;
- :func:`require_finite`: rewards, scores and losses must be finite: a NaN is an error at once,
  before it reaches an update (the trainers keep the run so far, :mod:`ppo_lib.runs`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ppo_lib.config import check_number


class NotFiniteError(FloatingPointError, ValueError):
    """A NaN or an infinity where a finite number is needed (a reward, a score, a loss). It is a
    ``FloatingPointError`` (what a diverged run raises) and a ``ValueError`` (a bad value passed in)."""


def count(name: str, value, low: int = 1, high: int | None = None) -> int:
    """A whole number in ``[low, high]`` as a Python int (``np.int64(4)`` and ``4.0`` are 4;
    ``2.5``, ``True``, ``nan`` and ``"4"`` are errors naming ``name``)."""
    return check_number(name, value, low, high, integer=True)


def real(name: str, value, low: float | None = None, high: float | None = None, low_open: bool = False,
         high_open: bool = False) -> float:
    """A finite number in the range as a Python float (NumPy's floats too); NaN is an error."""
    return float(check_number(name, value, low, high, low_open, high_open))


def flag(name: str, value) -> bool:
    """``True`` or ``False`` (NumPy's too); a string such as ``"False"`` would read as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: must be True or False, not a {type(value).__name__}")
    return bool(value)


def plain_numbers(config) -> None:
    """Replace a config's NumPy scalars (``np.float32(0.1)``, ``np.int64(4)``) by Python numbers, so that
    the config prints, compares and keys a cache as if the number had been typed."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, np.generic):
            object.__setattr__(config, f.name, value.item())


def _what_it_holds(value) -> str:
    """A hint for a result object passed where its model is expected."""
    held = [a for a in ("model", "policy") if isinstance(getattr(value, a, None), nn.Module)]
    if held:
        return f"; pass its model, `{type(value).__name__.lower()}.{held[0]}`, e.g. `sft.model` or `reward.model`"
    return ""


def require_module(name: str, value, expected: type | tuple[type, ...] = nn.Module, what: str = "a model") -> None:
    """``value`` must be a torch module (of ``expected``); a result object gets a hint to pass its ``.model``
    or ``.policy``."""
    if isinstance(value, expected):
        return
    kind = type(value).__name__
    if isinstance(value, nn.Module):  # a module, but the wrong one (a reward model as the policy...)
        raise TypeError(f"{name}=<{kind}>: expected {what}, got a {kind}; check the order of the arguments")
    raise TypeError(f"{name}=<{kind}>: expected {what} (a torch module), got a {kind}{_what_it_holds(value)}")


def require_finite(values: torch.Tensor, name: str, hint: str = "") -> None:
    """Every element of ``values`` finite, or a :class:`NotFiniteError` naming ``name``, the first bad
    value and where it is (a NaN reward passed on would turn every weight into NaN)."""
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = (~torch.isfinite(values)).nonzero()[0].tolist()
        first = values[tuple(bad)].item()
        where = f" at index {tuple(bad) if len(bad) > 1 else bad[0]}" if bad else ""
        raise NotFiniteError(f"{name}: {first}{where}, of {int((~torch.isfinite(values)).sum())} values that "
                                 f"are not finite; every value must be a finite number{hint}")
