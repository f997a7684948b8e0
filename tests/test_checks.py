"""The exercise checkers, run against a catalogue of usual mistakes.

Every wrong implementation below must be flagged, with a message that names the
failing case; the correct ones (loop, NumPy, torch) must pass.
"""

import numpy as np
import pytest
import torch

from ppo_lib.advantages import discounted_return as reference
from ppo_lib.teaching.checks import Case, Exercise, ExerciseError, check_discounted_return, compare


def unfilled(rewards, gamma):
    raise NotImplementedError()


def undiscounted(rewards, gamma):
    return sum(rewards)


def off_by_one(rewards, gamma):
    return sum(gamma ** (t + 1) * r for t, r in enumerate(rewards))


def reversed_weights(rewards, gamma):
    n = len(rewards)
    return sum(gamma ** (n - 1 - t) * r for t, r in enumerate(rewards))


def not_summed(rewards, gamma):
    return [gamma**t * r for t, r in enumerate(rewards)]


def gamma_times_t(rewards, gamma):
    return sum(gamma * t * r for t, r in enumerate(rewards))


def averaged(rewards, gamma):
    return float(np.mean([gamma**t * r for t, r in enumerate(rewards)])) if len(rewards) else 0.0


def reward_to_go_vector(rewards, gamma):
    out, g = [], 0.0
    for r in reversed(rewards):
        g = r + gamma * g
        out.append(g)
    return out[::-1]


def only_first(rewards, gamma):
    return rewards[0]


def forgets_return(rewards, gamma):
    sum(gamma**t * r for t, r in enumerate(rewards))


def returns_nan(rewards, gamma):
    return float("nan")


def returns_string(rewards, gamma):
    return "42"


def mutates_input(rewards, gamma):
    total = 0.0
    for t in range(len(rewards)):
        rewards[t] = gamma**t * rewards[t]
        total += rewards[t]
    return total


def empty_list_crashes(rewards, gamma):
    return rewards[0] + sum(gamma**t * r for t, r in enumerate(rewards[1:], start=1))


def crashes_on_gamma_zero(rewards, gamma):
    return sum(r / gamma ** -t for t, r in enumerate(rewards)) if gamma else 1 / gamma


# (implementation, status, words the message must contain)
CATALOGUE = [
    (undiscounted, "wrong", "plain sum"),
    (off_by_one, "wrong", "one step too much"),
    (reversed_weights, "wrong", "backwards"),
    (not_summed, "wrong", "add them up"),
    (gamma_times_t, "wrong", "gamma**t"),
    (averaged, "wrong", "averaged"),
    (reward_to_go_vector, "wrong", "expected a single number"),
    (only_first, "wrong", "only the first reward"),
    (forgets_return, "wrong", "returned None"),
    (returns_nan, "wrong", "got nan"),
    (returns_string, "wrong", "got a str"),
    (mutates_input, "wrong", "changed its input"),
    (empty_list_crashes, "error", "IndexError"),
    (crashes_on_gamma_zero, "error", "ZeroDivisionError"),
]


@pytest.mark.parametrize("impl, status, words", CATALOGUE, ids=[c[0].__name__ for c in CATALOGUE])
def test_checker_flags_every_usual_mistake_specifically(impl, status, words):
    result = check_discounted_return.evaluate(impl)
    assert not result.passed
    assert result.status == status
    assert words in result.message
    assert "Case:" in result.message, "the message must say on which input it failed"
    assert result.fn is reference, "a wrong answer must fall back to the reference"


def correct_loop(rewards, gamma):
    total = 0.0
    for t, r in enumerate(rewards):
        total += gamma**t * r
    return total


def correct_numpy(rewards, gamma):
    r = np.asarray(rewards, dtype=float)
    return (r * gamma ** np.arange(len(r))).sum()


def correct_torch(rewards, gamma):
    r = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
    return (r * gamma ** torch.arange(len(r), dtype=torch.float64)).sum()


def correct_backwards(rewards, gamma):
    g = 0.0
    for r in reversed(list(rewards)):
        g = r + gamma * g
    return g


@pytest.mark.parametrize("impl", [correct_loop, correct_numpy, correct_torch, correct_backwards])
def test_checker_accepts_correct_implementations(impl):
    result = check_discounted_return.evaluate(impl)
    assert result.passed, result.message
    assert result.fn is impl


def test_unfilled_exercise_says_so_and_hands_back_the_reference(capsys):
    fn = check_discounted_return(unfilled)
    assert fn is reference
    out = capsys.readouterr().out
    assert "not filled in yet" in out and "reference version" in out


def test_strict_mode_raises_for_unfilled_and_wrong(monkeypatch):
    with pytest.raises(ExerciseError, match="not filled in"):
        check_discounted_return(unfilled, strict=True)
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseError, match="plain sum"):
        check_discounted_return(undiscounted)
    assert check_discounted_return(correct_loop) is correct_loop


def test_not_a_function_is_reported():
    result = check_discounted_return.evaluate(3.0)
    assert result.status == "error" and "expected a function" in result.message


def test_every_known_mistake_is_caught_by_some_case():
    # The cases must tell each catalogued mistake apart from the reference.
    for mistake in check_discounted_return.mistakes:
        result = check_discounted_return.evaluate(mistake.impl)
        assert not result.passed, f"no case catches the mistake {mistake.name!r}"
        assert mistake.feedback in result.message


@pytest.mark.parametrize("expected, got, words", [
    (1.0, 1.0 + 1e-9, None),
    (1.0, np.float32(1.0), None),
    (1.0, torch.tensor(1.0), None),
    ([1.0, 2.0], torch.tensor([1.0, 2.0]), None),
    (1.0, 2.0, "expected 1, got 2"),
    ([1.0, 2.0], [1.0, 2.5], "index 1"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], "shape (2,), got shape (3,)"),
    ([[1.0, 2.0]], [[1.0, 3.0]], "index (0, 1)"),
    (1.0, [1.0, 2.0], "single number"),
    (1.0, None, "returned None"),
])
def test_compare(expected, got, words):
    problem = compare(expected, got)
    if words is None:
        assert problem is None
    else:
        assert words in problem


def test_an_exercise_needs_cases():
    with pytest.raises(ValueError, match="at least one case"):
        Exercise("x", reference=lambda: 0, cases=[])
    ex = Exercise("double", reference=lambda x: 2 * x, cases=[Case((3,), "x=3")])
    assert "1 cases" in repr(ex)
