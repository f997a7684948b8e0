"""Validation for the hyperparameter dataclasses of every algorithm.

A bad value is rejected when the config is built, with a message that names the
field, the value and what is allowed -- never a traceback from inside torch.
Configs decorated with :func:`validated` also reject an unknown field name (with
a did-you-mean: ``learning_rate`` -> ``lr``) and validate again whenever a field is
assigned after construction, so ``config.gamma = 1.5`` fails where it is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import warnings
from typing import Any

import numpy as np

#: The environment variable the exercise checkers read: "1" turns a failed or unfilled exercise
#: into an error. The notebook tests set it for solutions/, the autograder always.
STRICT_ENV = "PPO_COURSE_STRICT_CHECKS"


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False):
    """Return ``value`` (an int where ``integer``) if it is a real number in the range,
    else raise a ``TypeError`` / ``ValueError`` naming ``name``, the value and the range."""
    interval = _interval(low, high, low_open, high_open)
    allowed = ("a whole number" if integer else "a number") + " in " + interval
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: must be a number ({'a whole one, ' if integer else ''}in {interval}), "
                        f"not a {type(value).__name__}")
    if integer and not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"{name}={value!r}: must be {allowed}")
    if integer:
        value = int(value)  # 2.0 -> 2, so that range() and tensor shapes work
    if math.isinf(value) and (high is None or low is None) and not integer:
        raise ValueError(f"{name}={value!r}: must be finite, {allowed}")
    ok = not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name}={value!r}: must be in {_interval(low, high, low_open, high_open)}")
    return value


def check_range(obj: Any, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    value = getattr(obj, name)
    checked = check_number(name, value, low, high, low_open, high_open, integer)
    if integer and checked is not value:
        setattr(obj, name, checked)


def check_flag(obj: Any, name: str) -> None:
    """A switch must be True or False: ``"False"`` (a non-empty string) would read as True."""
    value = getattr(obj, name)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: must be True or False, not a {type(value).__name__}")
    if isinstance(value, np.bool_):
        setattr(obj, name, bool(value))


def check_seed(seed: Any, name: str = "seed") -> int:
    """Seeds: whole numbers in [0, 2**32 - 1] (what NumPy and Gymnasium accept)."""
    return check_number(name, seed, 0, 2**32 - 1, integer=True)


def check_hidden(obj: Any, name: str = "hidden") -> None:
    """Hidden layer sizes: a tuple (or list) of positive whole numbers, e.g. (64, 64)."""
    value = getattr(obj, name)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in value):
        raise ValueError(f"{name}={value!r}: must be a tuple of positive layer sizes, e.g. (64, 64)")
    if any(h > 100_000 for h in value):
        raise ValueError(f"{name}={value!r}: layer sizes must be at most 100000 (a layer that wide cannot be "
                         f"allocated on a laptop)")
    setattr(obj, name, tuple(int(h) for h in value))


def check_choice(obj: Any, name: str, choices: tuple) -> None:
    value = getattr(obj, name)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, choices))}")


def warn_ignored(obj: Any, names: tuple[str, ...], reason: str) -> None:
    """Warn about fields set away from their default that the chosen variant does not use."""
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    changed = [f"{n}={getattr(obj, n)!r}" for n in names if getattr(obj, n) != defaults[n]]
    if changed:
        warnings.warn(f"{', '.join(changed)}: ignored {reason}", UserWarning, stacklevel=caller_stack_level())


def caller_stack_level() -> int:
    """The stack level of the first frame outside ppo_lib (and dataclasses' generated code),
    so that a warning points at the learner's line."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(here) or frame.f_code.co_filename == "<string>"):
        frame, level = frame.f_back, level + 1
    return level


def unknown_field_message(cls: type, name: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    aliases = {"learning_rate": "lr", "n_steps": "rollout_steps", "n_envs": "num_envs", "n_epochs": "epochs",
               "batch_size": "minibatch_size", "clip_range": "clip_eps", "ent_coef": "entropy_coef",
               "vf_coef": "value_coef", "lam": "gae_lambda", "gae_lam": "gae_lambda", "net_arch": "hidden"}
    if name in aliases and aliases[name] in names:
        close = [aliases[name]]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{cls.__name__} has no field {name!r}.{hint} Valid fields: {', '.join(names)}"


def validated(cls: type) -> type:
    """Make a config dataclass reject unknown field names and re-validate on assignment.

    A class may declare ``RENAMED = {"old_name": "new_name"}``: for one release the old name
    still works (as a keyword, an attribute read or an assignment), with a ``FutureWarning``
    that gives the new one.
    """
    names = frozenset(f.name for f in dataclasses.fields(cls))
    renamed = dict(getattr(cls, "RENAMED", {}))
    init = cls.__init__

    def new_name(old: str) -> str:
        warnings.warn(f"{cls.__name__}: {old!r} is now {renamed[old]!r} (one name across the library); the old "
                      f"name goes in the next release", FutureWarning, stacklevel=caller_stack_level())
        return renamed[old]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for key in list(kwargs):
            if key in renamed and key not in names:
                new = new_name(key)
                if new in kwargs:
                    raise TypeError(f"{cls.__name__}: both {key!r} (the old name) and {new!r} given; pass {new!r}")
                kwargs[new] = kwargs.pop(key)
        for key in kwargs:
            if key not in names:
                raise TypeError(unknown_field_message(cls, key))
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}: at most {len(names)} positional values, got {len(args)}; "
                            f"pass fields by name, e.g. {cls.__name__}(gamma=0.99)")
        object.__setattr__(self, "_validating", True)
        try:
            init(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_validating", False)

    def __setattr__(self, name, value):
        if name in renamed and name not in names:
            name = new_name(name)
        if name not in names:
            raise AttributeError(unknown_field_message(cls, name))
        if self.__dict__.get("_validating", True):
            object.__setattr__(self, name, value)
            return
        old = getattr(self, name)
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_validating", True)
        try:
            self.__post_init__()
        except Exception:
            object.__setattr__(self, name, old)  # the config stays valid
            raise
        finally:
            object.__setattr__(self, "_validating", False)

    def __getattr__(self, name):  # only called when normal lookup fails
        if name in renamed:
            return getattr(self, new_name(name))
        raise AttributeError(unknown_field_message(cls, name))

    cls.__init__ = __init__
    cls.__setattr__ = __setattr__
    if renamed:
        cls.__getattr__ = __getattr__
    return cls


def check_config(config: Any, expected: type, algo: str) -> Any:
    """The config an algorithm was given: an instance of ``expected`` (or None for the defaults)."""
    if config is None:
        return expected()
    if isinstance(config, dict):
        raise TypeError(f"config: got a dict; {algo} expects a {expected.__name__}: "
                        f"pass {expected.__name__}(**your_dict)")
    if not isinstance(config, expected):
        raise TypeError(f"config: got a {type(config).__name__}; {algo} expects a {expected.__name__} "
                        f"(each algorithm has its own config class)")
    return config


def as_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
