"""The exercise-checker mechanism shared by every chapter.

A learner writes a function in a notebook and hands it to a checker::

    discounted_return = check_discounted_return(discounted_return)

The checker runs the function on crafted cases, compares with the library's
reference, and prints feedback the way a teaching assistant would: which case,
what was expected, what came back, and -- when the answer matches a known
mistake -- what that mistake is. It returns the function the notebook should
go on with: the learner's when it passes, otherwise the reference, so that a
notebook with an unfilled or wrong exercise still runs top to bottom.

Set ``PPO_COURSE_STRICT_CHECKS=1`` (the notebook tests do, for solutions/) or
pass ``strict=True`` to turn a failed or unfilled exercise into an error.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import traceback
from typing import Any, Callable, Sequence

import numpy as np

STRICT_ENV = "PPO_COURSE_STRICT_CHECKS"


class ExerciseError(AssertionError):
    """Raised in strict mode when an exercise is unfilled or wrong."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One input to an exercise: positional arguments and a readable description."""

    args: tuple
    describe: str
    kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Mistake:
    """A usual mistake: an implementation of it and what to tell the learner."""

    name: str
    impl: Callable
    feedback: str


@dataclasses.dataclass
class CheckResult:
    exercise: str
    status: str  # "passed" | "unfilled" | "wrong" | "error"
    message: str
    fn: Callable

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed


def _to_array(x: Any) -> np.ndarray | None:
    """Numbers, lists, numpy arrays and torch tensors as a float array, or None."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        raw = np.asarray(x)
        if raw.dtype.kind in "USV":  # strings would otherwise convert silently: "42" -> 42.0
            return None
        return np.asarray(x, dtype=np.float64)
    except Exception:  # e.g. a tuple holding a tensor that requires grad: numpy raises RuntimeError
        return None


def _fmt(x: Any) -> str:
    arr = _to_array(x)
    if arr is None:
        return repr(x)
    if arr.ndim == 0:
        return f"{float(arr):.6g}"
    return np.array2string(arr, precision=4, separator=", ", threshold=20)


def compare(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """None when ``got`` matches ``expected``; otherwise what differs, in words.

    A dict ``expected`` (from an exercise's ``run``) is compared key by key.
    """
    if isinstance(expected, dict):
        for key, exp in expected.items():
            if isinstance(got, dict) and key not in got:
                return (f"{key}: not available: your function returned a plain number or a tensor without a "
                        f"graph (e.g. via .item(), float() or .detach()), so autograd cannot differentiate it; "
                        f"return a torch tensor computed from the inputs")
            problem = compare(exp, got.get(key) if isinstance(got, dict) else None, rtol, atol)
            if problem is not None:
                return f"{key}: {problem}"
        return None
    if got is None:
        return "your function returned None: did you forget the `return` statement?"
    exp = _to_array(expected)
    arr = _to_array(got)
    if arr is None:
        return f"expected a number or an array, got a {type(got).__name__}: {got!r}"
    if exp.ndim == 0:
        if arr.size != 1:
            return f"expected a single number, got an array of shape {arr.shape}: {_fmt(arr)}"
        value = float(arr.reshape(()))
        if math.isnan(value) and math.isnan(float(exp)):
            return None
        if math.isnan(value):
            return f"expected {_fmt(exp)}, got nan"
        if not math.isclose(value, float(exp), rel_tol=rtol, abs_tol=atol):
            return f"expected {_fmt(exp)}, got {_fmt(value)}"
        return None
    if arr.shape != exp.shape:
        return f"expected an array of shape {exp.shape}, got shape {arr.shape}: {_fmt(arr)}"
    bad = ~np.isclose(arr, exp, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = idx[0] if len(idx) == 1 else idx
        return (f"expected {_fmt(exp)}, got {_fmt(arr)}; "
                f"the first difference is at index {where}: expected {exp[idx]:.6g}, got {arr[idx]:.6g}")
    return None


def _same_input(before: Any, after: Any) -> bool:
    a, b = _to_array(before), _to_array(after)
    if a is None or b is None:
        return True
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _learner_frame(exc: BaseException) -> traceback.FrameSummary:
    """The deepest frame of the traceback in the learner's own code (not in a library)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename and "/ppo_lib/checks/" not in f.filename
           and "/lib/python" not in f.filename]
    return own[-1] if own else frames[-1]


class Exercise:
    """An exercise: a reference implementation, cases, and a catalogue of mistakes.

    Calling the exercise with the learner's function checks it and returns the
    function to go on with.
    """

    def __init__(self, name: str, reference: Callable, cases: Sequence[Case],
                 mistakes: Sequence[Mistake] = (), reference_name: str | None = None,
                 compare: Callable[[Any, Any], str | None] = compare,
                 run: Callable[..., Any] | None = None):
        if not cases:
            raise ValueError(f"exercise {name!r}: needs at least one case")
        self.name = name
        self.reference = reference
        self.cases = tuple(cases)
        self.mistakes = tuple(mistakes)
        self.reference_name = reference_name or f"{reference.__module__}.{reference.__qualname__}"
        self.compare = compare
        # run(fn, *args, **kwargs) -> what is compared; the default is the result of
        # fn(*args). An exercise on a loss can return the value and its gradients.
        self.run = run or (lambda fn, *args, **kwargs: fn(*args, **kwargs))

    # -- running ------------------------------------------------------------
    def _diagnose(self, case: Case, got: Any) -> str | None:
        for mistake in self.mistakes:
            try:
                out = self.run(mistake.impl, *copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            except Exception:
                continue
            if self.compare(out, got) is None:
                return mistake.feedback
        return None

    def evaluate(self, fn: Callable) -> CheckResult:
        """Check ``fn`` on every case; never raises."""
        fallback = (f"The notebook goes on with the library's reference version "
                    f"(`{self.reference_name}`), so you can read on.")
        if not callable(fn):
            return CheckResult(self.name, "error",
                               f"✗ {self.name}: expected a function, got {type(fn).__name__}.\n{fallback}",
                               self.reference)
        for i, case in enumerate(self.cases, start=1):
            args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
            try:
                got = self.run(fn, *args, **kwargs)
            except NotImplementedError:
                return CheckResult(self.name, "unfilled", (
                    f"○ {self.name}: not filled in yet. Replace `raise NotImplementedError()` "
                    f"with your code and run the cell again.\n{fallback}"), self.reference)
            except Exception as exc:  # the learner's bug, reported, never re-raised
                frame = _learner_frame(exc)
                code = (frame.line or "").strip()
                where = f" (line {frame.lineno}: `{code}`)" if code else f" (line {frame.lineno})"
                return CheckResult(self.name, "error", (
                    f"✗ {self.name}: case {i} of {len(self.cases)} raised an error.\n"
                    f"  Case: {case.describe}\n"
                    f"  {type(exc).__name__}: {exc}{where}\n"
                    f"{fallback}"), self.reference)
            expected = self.run(self.reference, *copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            problem = self.compare(expected, got)
            input_changed = False
            if problem is None:
                changed = [k for k, (a, b) in enumerate(zip(case.args, args)) if not _same_input(a, b)]
                if changed:
                    input_changed = True
                    problem = (f"the answer is right, but your function changed its input "
                               f"(argument {changed[0] + 1}); work on a copy instead")
            if problem is not None:
                # a right answer that modified its input matches no "wrong answer" mistake
                hint = None if input_changed else self._diagnose(case, got)
                lines = [f"✗ {self.name}: not right yet (case {i} of {len(self.cases)}).",
                         f"  Case: {case.describe}", f"  {problem}"]
                if hint:
                    lines.append(f"  Hint: {hint}")
                lines.append(fallback)
                return CheckResult(self.name, "wrong", "\n".join(lines), self.reference)
        return CheckResult(self.name, "passed",
                           f"✓ {self.name}: all {len(self.cases)} cases pass. Well done: "
                           f"the notebook now uses your function.", fn)

    def __call__(self, fn: Callable, strict: bool | None = None) -> Callable:
        """Check ``fn``, print the feedback, and return the function to use."""
        result = self.evaluate(fn)
        if strict is None:
            strict = os.environ.get(STRICT_ENV, "") == "1"
        if strict and not result.passed:
            raise ExerciseError(result.message)
        print(result.message)
        return result.fn

    check = __call__

    def __repr__(self) -> str:
        return f"Exercise({self.name!r}, {len(self.cases)} cases, {len(self.mistakes)} known mistakes)"
