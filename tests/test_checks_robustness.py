"""The chapter 8-9 checkers themselves: every catalogued mistake gets its own hint, and a hint
is given only to a function that matches its mistake on every case; and, whatever a learner hands them: odd
return values, tuples holding tensors with a graph, unfilled exercises and crashes are
reported in the checker's words (never a traceback), and the chapter goes on with the
reference."""

import copy

import numpy as np
import pytest
import torch

from ppo_lib.teaching.checks import ExerciseError
from ppo_lib.teaching.checks.core import same_input

from ppo_lib.teaching.checks.beyond_ppo import BEYOND_PPO_EXERCISES
from ppo_lib.teaching.checks.rlhf import RLHF_EXERCISES

EXERCISES = [*RLHF_EXERCISES, *BEYOND_PPO_EXERCISES]
CATALOGUE = [(ex, m) for ex in EXERCISES for m in ex.mistakes]


@pytest.mark.parametrize("exercise, mistake", CATALOGUE, ids=[f"{e.name}-{m.name}" for e, m in CATALOGUE])
def test_every_catalogued_mistake_is_flagged_with_its_own_hint(exercise, mistake):
    result = exercise.evaluate(mistake.impl)
    assert result.status == "wrong", result.message
    assert f"Hint: {mistake.feedback}" in result.message, result.message
    assert result.fn is exercise.reference


def _first_rejecting_case(exercise, impl):
    for case in exercise.cases:
        expected = exercise.run(exercise.reference, *copy.deepcopy(case.args))
        got = exercise.run(impl, *copy.deepcopy(case.args))
        if exercise.compare(expected, got) is not None:
            return case, got
    raise AssertionError("no case rejects it")


def _partly_wrong(exercise, mistake):
    """A function that makes ``mistake`` on the first case that rejects it and is right on every other."""
    case, _ = _first_rejecting_case(exercise, mistake.impl)

    def impl(*args, **kwargs):
        same = len(args) == len(case.args) and all(same_input(a, b) for a, b in zip(case.args, args)) and \
            kwargs.keys() == case.kwargs.keys() and all(same_input(case.kwargs[k], kwargs[k]) for k in kwargs)
        return (mistake.impl if same else exercise.reference)(*args, **kwargs)

    return impl


@pytest.mark.parametrize("exercise, mistake", CATALOGUE, ids=[f"{e.name}-{m.name}" for e, m in CATALOGUE])
def test_a_hint_names_only_a_mistake_that_fits_every_case(exercise, mistake):
    # wrong on one case only: it looks like `mistake` there, but a hint must fit all the cases,
    # so none is given unless some catalogued mistake really gives these answers everywhere
    impl = _partly_wrong(exercise, mistake)
    result = exercise.evaluate(impl)
    assert result.status == "wrong", result.message
    mine = exercise._outputs(impl)

    def fits_everywhere(other):
        return all(isinstance(a, Exception) or exercise.compare(b, a) is None
                   for a, b in zip(mine, exercise._outputs(other.impl)))

    for feedback in {m.feedback for m in exercise.mistakes if f"Hint: {m.feedback}" in result.message}:
        assert any(fits_everywhere(o) for o in exercise.mistakes if o.feedback == feedback), (
            f"the hint {feedback!r} was given to a function that matches its mistakes on some cases only")


def test_the_mistake_names_are_unique():
    for exercise in EXERCISES:
        names = [m.name for m in exercise.mistakes]
        assert len(names) == len(set(names)), exercise.name

ODD_RETURNS = [None, "text", object(), {}, [], {"loss": 1.0}, (1.0, 2.0), torch.zeros(0), float("nan"),
               torch.tensor(float("nan")), np.array(["a", "b"]), True]


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
@pytest.mark.parametrize("odd", range(len(ODD_RETURNS)))
def test_odd_return_values_are_reported_never_raised(exercise, odd):
    value = ODD_RETURNS[odd]
    result = exercise.evaluate(lambda *args: value)
    assert result.status in ("wrong", "error") and "Case:" in result.message
    assert "Traceback" not in result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_tuple_holding_tensors_that_track_gradients_is_reported(exercise):
    def returns_a_graph_tuple(*args):
        tracked = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
        x = tracked[0] * 1.0 if tracked else torch.ones(2, requires_grad=True) * 2
        return x, x

    result = exercise.evaluate(returns_a_graph_tuple)
    assert not result.passed and "tuple" in result.message and "Traceback" not in result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_unfilled_says_not_filled_and_goes_on_with_the_reference(exercise, capsys):
    def unfilled(*args):
        raise NotImplementedError()

    assert exercise(unfilled, strict=False) is exercise.reference
    assert "not filled in yet" in capsys.readouterr().out


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_crash_gives_the_checkers_message_without_a_traceback(exercise):
    def crashes(*args):
        return args[0][99]

    result = exercise.evaluate(crashes)
    assert result.status == "error" and result.fn is exercise.reference
    assert "case 1 of" in result.message and "Case:" in result.message
    assert "Error" in result.message and "Traceback" not in result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_strict_mode_raises(exercise, monkeypatch):
    def unfilled(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseError, match="not filled in"):
        exercise(unfilled, strict=True)
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseError, match="not right yet"):
        exercise(exercise.mistakes[0].impl)
    assert exercise(exercise.reference) is exercise.reference
