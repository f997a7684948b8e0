"""The checkers of chapter 10 (RLVR): every mistake of the catalogues is flagged with its hint,
correct but unusual implementations pass, and wrong ones written here are rejected."""

import math

import numpy as np
import pytest

from ppo_lib.teaching.checks.rlvr import RLVR_EXERCISES, check_aggregate_loss, check_pass_at_k
from tests.catalogue import assert_accepted, assert_flagged


@pytest.mark.parametrize("exercise", RLVR_EXERCISES, ids=lambda e: e.name)
def test_the_reference_passes(exercise):
    assert_accepted(exercise, exercise.reference)


@pytest.mark.parametrize("exercise, mistake", [(e, m) for e in RLVR_EXERCISES for m in e.mistakes],
                         ids=lambda x: getattr(x, "name", ""))
def test_every_catalogued_mistake_is_flagged_with_its_hint(exercise, mistake):
    assert_flagged(exercise, mistake.impl, mistake.feedback)


def pass_at_k_comb(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_numpy_chen(n, c, k):
    # the paper's numpy code, as printed
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


def pass_at_k_logs(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - c + 1) - math.lgamma(n - c - k + 1) - math.lgamma(n + 1)
                          + math.lgamma(n - k + 1))


@pytest.mark.parametrize("impl", [pass_at_k_comb, pass_at_k_numpy_chen, pass_at_k_logs])
def test_correct_pass_at_k_variants_pass(impl):
    assert_accepted(check_pass_at_k, impl)


def pass_at_k_off_by_a_little(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k) + 1e-6


def test_wrong_pass_at_k_is_rejected():
    result = check_pass_at_k.evaluate(pass_at_k_off_by_a_little)
    assert not result.passed and "Case:" in result.message
    assert not check_pass_at_k.evaluate(lambda n, c, k: "0.3").passed
    assert not check_pass_at_k.evaluate(lambda n, c, k: True).passed


def aggregate_with_weights(x, m, kind):
    B, L = m.shape
    if kind == "grpo":
        w = m / (B * m.sum(1, keepdim=True))
    elif kind == "dr_grpo":
        w = m / (B * L)
    else:
        w = m / m.sum()
    return (w * x).sum()


def aggregate_loop(x, m, kind):
    B, L = m.shape
    total = x.new_zeros(())
    for i in range(B):
        n_i = int(m[i].sum())
        s = x[i, :n_i].sum()
        total = total + (s / n_i / B if kind == "grpo" else s / (B * L) if kind == "dr_grpo" else s / m.sum())
    return total


@pytest.mark.parametrize("impl", [aggregate_with_weights, aggregate_loop])
def test_correct_aggregations_pass(impl):
    assert_accepted(check_aggregate_loss, impl)


def test_wrong_aggregations_are_rejected_and_unfilled_is_said():
    assert not check_aggregate_loss.evaluate(lambda x, m, k: (x * m).sum()).passed
    assert not check_aggregate_loss.evaluate(lambda x, m, k: float((x * m).sum().detach() / m.sum())).passed

    def placeholder(x, m, k):
        raise NotImplementedError()
    assert check_aggregate_loss.evaluate(placeholder).status == "unfilled"

    def in_place(x, m, k):
        x.mul_(m)
        return aggregate_with_weights(x, m, k)
    assert "in place" in check_aggregate_loss.evaluate(in_place).message
