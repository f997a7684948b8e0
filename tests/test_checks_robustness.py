"""Robustness of the chapter 8-9 checkers themselves, whatever a learner hands them: odd
return values, tuples holding tensors with a graph, unfilled exercises and crashes are
reported in the checker's words (never a traceback), and the chapter goes on with the
reference."""

import numpy as np
import pytest
import torch

from ppo_lib.checks.beyond_ppo import BEYOND_PPO_EXERCISES
from ppo_lib.checks.rlhf import RLHF_EXERCISES

EXERCISES = [*RLHF_EXERCISES, *BEYOND_PPO_EXERCISES]

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
