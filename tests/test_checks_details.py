"""The checkers of chapter 7 against independently written usual mistakes."""

import numpy as np
import pytest
import torch

from ppo_lib.teaching.checks import check_clipped_value_loss, check_running_mean_std
from tests.catalogue import assert_accepted, assert_flagged, ids


def rms_correct(mean, var, count, batch):
    n = len(batch)
    b_mean, b_var = batch.mean(0), batch.var(0)
    delta = b_mean - mean
    total = count + n
    new_mean = mean + delta * n / total
    m2 = var * count + b_var * n + delta**2 * count * n / total
    return new_mean, m2 / total, total


def rms_concat(mean, var, count, batch):
    # the mathematically equivalent "pretend we kept all the data" version
    n = len(batch)
    total = count + n
    new_mean = (mean * count + batch.sum(0)) / total
    ex2 = ((var + mean**2) * count + (batch**2).sum(0)) / total
    return new_mean, ex2 - new_mean**2, total


def rms_sample_var(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    total = count + n
    m2 = var * count + batch.var(0, ddof=1) * n + delta**2 * count * n / total
    return mean + delta * n / total, m2 / total, total


def rms_count_unchanged(mean, var, count, batch):
    m, v, _ = rms_correct(mean, var, count, batch)
    return m, v, count


def rms_std_instead_of_var(mean, var, count, batch):
    m, v, c = rms_correct(mean, var, count, batch)
    return m, np.sqrt(v), c


def vl_correct(values, old_values, targets, eps):
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    return 0.5 * torch.maximum((values - targets) ** 2, (clipped - targets) ** 2).mean()


def vl_plain(values, old_values, targets, eps):
    return 0.5 * ((values - targets) ** 2).mean()


def vl_clipped_only(values, old_values, targets, eps):
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    return 0.5 * ((clipped - targets) ** 2).mean()


def vl_detached(values, old_values, targets, eps):
    return vl_correct(values.detach(), old_values, targets, eps)


CATALOGUE = [
    (check_running_mean_std, rms_sample_var, "Case:"),
    (check_running_mean_std, rms_count_unchanged, "count"),
    (check_running_mean_std, rms_std_instead_of_var, "var"),
    (check_clipped_value_loss, vl_plain, "plain squared error"),
    (check_clipped_value_loss, vl_clipped_only, "Case:"),
    (check_clipped_value_loss, vl_detached, "gradient w.r.t. values"),
]


@pytest.mark.parametrize("exercise, impl, words", CATALOGUE, ids=ids(CATALOGUE))
def test_checker_flags_the_mistake(exercise, impl, words):
    assert_flagged(exercise, impl, words)


@pytest.mark.parametrize("exercise, impl", [(check_running_mean_std, rms_correct),
                                            (check_running_mean_std, rms_concat),
                                            (check_clipped_value_loss, vl_correct)])
def test_checker_accepts_correct_implementations(exercise, impl):
    assert_accepted(exercise, impl)
