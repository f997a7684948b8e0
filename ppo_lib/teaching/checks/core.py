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

import contextlib
import copy
import dataclasses
import io
import math
import os
import traceback
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from ppo_lib.config import STRICT_ENV


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


@dataclasses.dataclass(frozen=True)
class InputChanged:
    """What a ``run`` hook hands on when the learner's function changed an input tensor in place."""

    name: str


def tracked(x: Any, dtype: Any = None) -> tuple:
    """A leaf tensor that tracks gradients, and the copy of it to hand to the learner's function.

    An in-place change of the copy is allowed by autograd and seen (the leaf keeps the values), and the
    gradient w.r.t. the leaf is the gradient w.r.t. the input."""
    import torch

    leaf = torch.as_tensor(x, dtype=dtype).detach().clone().requires_grad_(True)
    return leaf, leaf.clone()


def one_number(loss: Any) -> Any:
    """A loss tensor holding one number, as the 0-d tensor it stands for (others unchanged).

    For the exercises whose text asks for "a tensor holding one number" (not "a scalar"): shape (1,) is one,
    and the next cells' ``backward()``, ``torch.autograd.grad`` and ``.item()`` work on it. The reshape keeps
    the graph."""
    if hasattr(loss, "reshape") and hasattr(loss, "numel") and hasattr(loss, "ndim") and loss.numel() == 1 \
            and loss.ndim > 0:
        return loss.reshape(())
    return loss


def changed(given: Any, original: Any) -> bool:
    """True when tensor ``given`` no longer holds the values of ``original`` (an in-place change)."""
    return tuple(given.shape) != tuple(original.shape) or not bool((given.detach() == original.detach()).all())


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


def format_value(x: Any) -> str:
    arr = _to_array(x)
    if arr is None:
        return repr(x)
    if arr.ndim == 0:
        return f"{float(arr):.6g}"
    return np.array2string(arr, precision=4, separator=", ", threshold=20)


def _type_name(x: Any) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def show_value(x: Any) -> str:
    """``format_value``, safe for anything a learner may return (a tuple holding tensors that track gradients)."""
    if isinstance(x, (tuple, list)) and any(hasattr(v, "detach") for v in x):
        inner = ", ".join(f"a tensor of shape {tuple(v.shape)}" if hasattr(v, "shape") else show_value(v) for v in x[:5])
        inner += ", ..." if len(x) > 5 else ""
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    try:
        return format_value(x)
    except Exception:
        text = repr(x)
        return text if len(text) <= 200 else text[:200] + "..."


def describe_returned(got: Any) -> str:
    """'a numpy.ndarray of shape (1,)', 'a tuple of 2 items', 'a float'..."""
    if isinstance(got, (tuple, list)):
        return f"a {_type_name(got)} of {len(got)} item{'s' if len(got) != 1 else ''}"
    shape = getattr(got, "shape", None)
    if shape is not None:
        return f"a {_type_name(got)} of shape {tuple(shape)}"
    return f"a {_type_name(got)}"


def compare(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """None when ``got`` matches ``expected``; otherwise what differs, in words.

    A dict ``expected`` (from an exercise's ``run``) is compared key by key. Where one number is
    expected, one number must come back (a 0-d tensor or array will do; an array of shape (1,) breaks
    the next cell's f-string and is not one number).
    """
    if isinstance(got, InputChanged):
        return (f"your function changed its input `{got.name}` in place (with +=, *=, an indexed assignment or "
                f"a method ending in _): work on a copy, the caller still needs it")
    if isinstance(expected, InputChanged):
        return "a changed input is not this answer"
    if isinstance(expected, dict):
        for key, exp in expected.items():
            if isinstance(got, dict) and key not in got:
                if "gradient" in key:
                    return (f"{key}: not available: your function returned a plain number or a tensor without a "
                            f"graph (e.g. via .item(), float(), .detach(), NumPy or torch.no_grad()), so autograd "
                            f"cannot differentiate it; return a torch tensor computed from the inputs")
                return f"{key}: missing from what your function returned"
            problem = compare(exp, got.get(key) if isinstance(got, dict) else None, rtol, atol)
            if problem is not None:
                return f"{key}: {problem}"
        return None
    if got is None:
        return "your function returned None: did you forget the `return` statement?"
    exp = _to_array(expected)
    arr = _to_array(got)
    if arr is None or (isinstance(got, (tuple, list)) and any(hasattr(v, "detach") for v in got)):
        what = "a single number" if exp is not None and exp.ndim == 0 else "a number or an array"
        why = " (return the one value, not a tuple or list)" if isinstance(got, (tuple, list)) else ""
        return f"expected {what}, got {describe_returned(got)}{why}: {show_value(got)}"
    if exp.ndim == 0:
        if arr.ndim != 0:
            return (f"expected a single number, got {describe_returned(got)}: {format_value(arr)}"
                    + (" (the exercise asks for a single number, 0-d: use .mean() or .sum() without keepdim, "
                       "or index it, e.g. x[0])"
                       if arr.size == 1 else ""))
        value = float(arr.reshape(()))
        if math.isnan(value) and math.isnan(float(exp)):
            return None
        if math.isnan(value):
            return f"expected {format_value(exp)}, got nan"
        if not math.isclose(value, float(exp), rel_tol=rtol, abs_tol=atol):
            return f"expected {format_value(exp)}, got {format_value(value)}"
        return None
    if arr.shape != exp.shape:
        return f"expected an array of shape {exp.shape}, got shape {arr.shape}: {format_value(arr)}"
    bad = ~np.isclose(arr, exp, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = idx[0] if len(idx) == 1 else idx
        return (f"expected {format_value(exp)}, got {format_value(arr)}; "
                f"the first difference is at index {where}: expected {exp[idx]:.6g}, got {arr[idx]:.6g}")
    return None


def same_input(before: Any, after: Any) -> bool:
    a, b = _to_array(before), _to_array(after)
    if a is None or b is None:
        return True
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def learner_frame(exc: BaseException) -> traceback.FrameSummary:
    """The deepest frame of the traceback in the learner's own code (not in a library)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename and "/ppo_lib/checks/" not in f.filename
           and "/lib/python" not in f.filename]
    return own[-1] if own else frames[-1]


def _argument_name(fn: Callable, index: int) -> str:
    """'argument 2, `values`' (the learner's own parameter name where it can be read)."""
    try:
        import inspect

        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return f"argument {index + 1}, `{names[index]}`"
    except Exception:
        return f"argument {index + 1}"


def is_placeholder(fn: Callable, exc: BaseException) -> bool:
    """True for the untouched exercise cell: ``raise NotImplementedError()`` raised by ``fn`` itself, whose
    body holds nothing else (comments, a docstring or ``pass`` aside). A NotImplementedError raised after
    some work, or only for some inputs, is a bug in the learner's code, reported as an error."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or frames[-1].filename != code.co_filename or frames[-1].name != code.co_name:
        return False
    try:
        import ast
        import inspect
        import textwrap

        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except Exception:  # no source (exec, a lambda in a string): the traceback check above must do
        return True
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs or funcs[0].name != code.co_name:  # a source file changed since import: trust the traceback
        return True
    for stmt in funcs[0].body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Raise):
            return True
        return False
    return False


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
    def _outputs(self, fn: Callable) -> list:
        """fn's output on every case (an exception instance where it raised); None if it changed an input."""
        outs = []
        for case in self.cases:
            args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
            try:
                outs.append(self.run(fn, *args, **kwargs))
            except Exception as exc:
                outs.append(exc)
                continue
            if isinstance(outs[-1], InputChanged) or any(not same_input(a, b) for a, b in zip(case.args, args)):
                return None
        return outs

    def _diagnose(self, fn: Callable) -> str | None:
        """The feedback of the known mistake whose output matches the learner's on *every* case (those
        where the learner's function raised aside), or None: a hint that fits one case only may name
        another mistake."""
        # the learner saw its function's warnings and prints once already
        with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return self._diagnose_quietly(fn)

    def _diagnose_quietly(self, fn: Callable) -> str | None:
        mine = self._outputs(fn)
        if mine is None:
            return None
        for mistake in self.mistakes:
            theirs = self._outputs(mistake.impl)
            if theirs is None:
                continue
            if all(isinstance(b, Exception) or (not isinstance(a, Exception) and self._matches(a, b))
                   for a, b in zip(theirs, mine)):
                return mistake.feedback
        return None

    def _matches(self, mistake_out: Any, got: Any) -> bool:
        try:
            return self.compare(mistake_out, got) is None
        except Exception:
            return False

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
            except Exception as exc:  # the learner's bug, reported, never re-raised
                if i == 1 and isinstance(exc, NotImplementedError) and is_placeholder(fn, exc):
                    return CheckResult(self.name, "unfilled", (
                        f"○ {self.name}: not filled in yet. Replace `raise NotImplementedError()` "
                        f"with your code and run the cell again.\n{fallback}"), self.reference)
                frame = learner_frame(exc)
                code = (frame.line or "").strip()
                where = f" (line {frame.lineno}: `{code}`)" if code else f" (line {frame.lineno})"
                extra = ("\n  (your function raises NotImplementedError for this input: finish it, or remove "
                         "the `raise` line)" if isinstance(exc, NotImplementedError) else "")
                return CheckResult(self.name, "error", (
                    f"✗ {self.name}: case {i} of {len(self.cases)} raised an error.\n"
                    f"  Case: {case.describe}\n"
                    f"  {type(exc).__name__}: {exc}{where}{extra}\n"
                    f"{fallback}"), self.reference)
            expected = self.run(self.reference, *copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            try:
                problem = self.compare(expected, got)
            except Exception as exc:  # an odd return value: said in words, never a checker traceback
                problem = (f"could not read what your function returned ({describe_returned(got)}: "
                           f"{show_value(got)}): {type(exc).__name__}: {exc}")
            input_changed = isinstance(got, InputChanged)
            if problem is None:
                modified = [k for k, (a, b) in enumerate(zip(case.args, args)) if not same_input(a, b)]
                if modified:
                    input_changed = True
                    problem = (f"the answer is right, but your function changed its input "
                               f"({_argument_name(fn, modified[0])}); work on a copy instead")
            if problem is not None:
                # a right answer that modified its input matches no "wrong answer" mistake
                if input_changed:
                    hint = None
                else:  # only a mistake that matches on every case is named: one case alone may fit several
                    hint = self._diagnose(fn)
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


class GuessCheck:
    """A checker of a *guess*: data the learner's function returns (a bug's name, a cause per
    run), not a function run on cases. Chapter 7's bug hunt and chapter 10's diagnosis.

    ``check(guess, *context)`` is the checking function: it prints its reply (right, or why the
    evidence does not fit) and returns True when the guess is right. ``guess_function`` names the
    exercise's function: the learner defines it, and its value, called with no arguments, is the
    guess (None while it still raises NotImplementedError). ``context`` computes the check's other
    arguments from the library and its results files, never from the notebook, so that a grader
    can check a guess in its own process: ``ppo_lib.course.isolated`` carries the guess out of
    the sandbox as data and calls :meth:`evaluate` on it, with ``context()``.

    Called like the plain function (``check_x(guess, *context)``), it prints the reply and
    returns True or False; in strict mode (``strict=True`` or ``PPO_COURSE_STRICT_CHECKS=1``, as
    when a notebook is graded) a guess that is not right raises :class:`ExerciseError`.
    """

    def __init__(self, check: Callable[..., bool], guess_function: str, name: str,
                 context: Callable[[], tuple] = tuple):
        if not callable(check):
            raise TypeError(f"check={check!r}: expected a function (guess, *context) -> bool")
        if not (isinstance(guess_function, str) and guess_function.isidentifier()):
            raise ValueError(f"guess_function={guess_function!r}: expected the name of the learner's function")
        self.check, self.guess_function, self.name, self.context = check, guess_function, name, context
        self.__doc__ = check.__doc__
        self.__wrapped__ = check

    def evaluate(self, guess, *context) -> CheckResult:
        """The verdict on ``guess`` without printing it: ``passed``, ``unfilled`` (no guess),
        ``wrong``, or ``error`` (the check could not read the guess)."""
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                right = self.check(guess, *context)
        except Exception as exc:  # an odd guess (e.g. unhashable): said in words, never a traceback
            text = out.getvalue()
            return CheckResult(self.name, "error", f"{text}✗ {self.name}: your guess could not be read "
                               f"({type(guess).__name__}): {type(exc).__name__}: {exc}", guess)
        text = out.getvalue().rstrip("\n")
        if right is True:
            return CheckResult(self.name, "passed", text, guess)
        unfilled = guess is None or (isinstance(guess, (str, dict, list, tuple)) and len(guess) == 0)
        return CheckResult(self.name, "unfilled" if unfilled else "wrong", text, guess)

    def __call__(self, guess, *context, strict: bool | None = None) -> bool:
        """Check ``guess``, print the reply, and return whether it is right."""
        result = self.evaluate(guess, *context)
        if strict is None:
            strict = os.environ.get(STRICT_ENV, "") == "1"
        if strict and not result.passed:
            raise ExerciseError(result.message)
        print(result.message)
        return result.passed

    def __repr__(self) -> str:
        return f"GuessCheck({self.name!r}, guess_function={self.guess_function!r})"
