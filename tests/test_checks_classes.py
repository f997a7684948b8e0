"""One mistake of each class of checker failure found by the first held-out audit of the
checkers (tests/test_checks_audit.py), so they stay caught.

The wider audit (many implementations per exercise, each confirmed on random inputs) is
tests/test_checks_audit.py; this file names the classes one by one.
"""

import numpy as np
import pytest
import torch

from ppo_lib.teaching.checks import (check_adaptive_kl_beta, check_bootstrap_values, check_clipped_surrogate,
                            check_clipped_value_loss, check_conjugate_gradient, check_discounted_return,
                            check_fisher_vector_product, check_gae, check_normalize_advantages,
                            check_probability_ratio, check_reinforce_loss, check_running_mean_std)
from tests.catalogue import assert_accepted, assert_flagged


def _gae_loop(rewards, values, next_values, dones, gamma, lam, keep=lambda d: 1.0 - d):
    delta = rewards + gamma * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + gamma * lam * keep(dones[t]) * carry
        out[t] = carry
    return out


# ------------------------------------------------ cases too narrow to tell mistakes apart

def gae_last_row_done_halves(rewards, values, next_values, dones, gamma, lam):
    out = _gae_loop(rewards, values, next_values, np.asarray(dones, float), gamma, lam)
    out[-1] = out[-1] * (1 - 0.5 * np.asarray(dones[-1], float))  # wrong only when an episode ends on the last row
    return out


def beta_edge_outside_the_band(beta, kl, kl_target):
    # the text puts a KL exactly at 1.5 x target inside the band
    return beta * 2 if kl >= 1.5 * kl_target else (beta / 2 if kl < kl_target / 1.5 else beta)


def beta_band_too_wide(beta, kl, kl_target):
    return beta * 2 if kl > 1.6 * kl_target else (beta / 2 if kl < kl_target / 1.6 else beta)


def value_clip_relative_to_old(values, old_values, targets, eps):
    clipped = torch.clamp(values, old_values * (1 - eps), old_values * (1 + eps))  # same as the right one when old = 1
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


def cg_without_early_stop(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        p, rr = r + rr_new / rr * p, rr_new
    return x


def surrogate_eps_hard_coded(ratio, advantages, eps):
    return torch.min(ratio * advantages, torch.clamp(ratio, 0.8, 1.2) * advantages).mean()


@pytest.mark.parametrize("exercise, impl", [
    (check_gae, gae_last_row_done_halves), (check_adaptive_kl_beta, beta_band_too_wide),
    (check_adaptive_kl_beta, beta_edge_outside_the_band),
    (check_clipped_value_loss, value_clip_relative_to_old), (check_conjugate_gradient, cg_without_early_stop),
    (check_clipped_surrogate, surrogate_eps_hard_coded),
], ids=lambda x: getattr(x, "__name__", getattr(x, "name", "")))
def test_cases_near_every_boundary_with_parameters_varied(exercise, impl):
    assert_flagged(exercise, impl, "Case:")


# ------------------------------------------------ gradients checked where the chapter needs them

def ratio_under_no_grad(logp_new, logp_old):
    with torch.no_grad():
        return torch.exp(logp_new - logp_old)


def ratio_through_numpy(logp_new, logp_old):
    return torch.from_numpy(np.exp(logp_new.detach().numpy() - logp_old.detach().numpy()))


@pytest.mark.parametrize("impl", [ratio_under_no_grad, ratio_through_numpy])
def test_a_ratio_without_gradient_fails(impl):
    assert_flagged(check_probability_ratio, impl, "no gradient reaches logp_new")


# ------------------------------------------------ state between calls

def fvp_into_grad(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    (torch.cat([g.reshape(-1) for g in grads]) @ v).backward()  # .grad accumulates over calls
    return torch.cat([p.grad.reshape(-1) for p in params]).clone()


def test_a_product_that_accumulates_into_grad_fails_on_the_second_call():
    result = check_fisher_vector_product.evaluate(fvp_into_grad)
    assert not result.passed
    assert "second call" in result.message and ".backward() *adds*" in result.message


# ------------------------------------------------ return types

def return_in_a_length_one_array(rewards, gamma):
    r = np.asarray(rewards, float).reshape(1, -1)
    return r @ (gamma ** np.arange(r.shape[1]))


def beta_in_a_list_array(beta, kl, kl_target):
    return np.array([beta * 2 if kl > 1.5 * kl_target else (beta / 2 if kl < kl_target / 1.5 else beta)])


def loss_and_a_diagnostic(logprobs, weights):
    return -(logprobs * weights.detach()).mean(), logprobs.exp().mean()


def surrogate_and_clip_fraction(ratio, advantages, eps):
    obj = torch.min(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean()
    return obj, ((ratio - 1).abs() > eps).float().mean()


def stats_as_a_dict(mean, var, count, batch):
    return {"mean": batch.mean(0), "var": batch.var(0), "count": count + len(batch)}


def test_a_length_one_array_is_not_a_number():
    assert_flagged(check_discounted_return, return_in_a_length_one_array, "numpy.ndarray of shape (1,)")
    assert_flagged(check_adaptive_kl_beta, beta_in_a_list_array, "expected a single number")


@pytest.mark.parametrize("exercise, impl", [(check_reinforce_loss, loss_and_a_diagnostic),
                                            (check_clipped_surrogate, surrogate_and_clip_fraction)],
                         ids=["reinforce_loss", "clipped_surrogate"])
def test_a_tuple_from_a_loss_is_named_not_a_crash(exercise, impl):
    assert_flagged(exercise, impl, "got a tuple of 2 items (return the one value, not a tuple or list)")
    assert "Traceback" not in exercise.evaluate(impl).message


def test_statistics_in_the_wrong_container_are_named():
    assert_flagged(check_running_mean_std, stats_as_a_dict,
                   "expected a tuple (new_mean, new_var, new_count), got a dict")


class Unreadable:
    def __array__(self, *a, **k):
        raise RuntimeError("no")


def test_an_unreadable_return_value_is_reported_not_raised():
    assert_flagged(check_gae, lambda *a: Unreadable(), "Unreadable")


# ------------------------------------------------ input dtypes the chapters pass

def gae_tilde_dones(rewards, values, next_values, dones, gamma, lam):
    return _gae_loop(rewards, values, next_values, dones, gamma, lam, keep=lambda d: ~d)


def test_a_gae_that_only_works_on_bool_dones_fails():
    result = check_gae.evaluate(gae_tilde_dones)  # chapter 3 passes the done flags as floats
    assert not result.passed and "Case:" in result.message and "floats" in result.message


# ------------------------------------------------ no false rejections

def running_in_place(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    total = count + n
    var *= count
    var += batch.var(0) * n + delta**2 * count * n / total
    var /= total
    mean += delta * n / total
    return mean, var, total


def running_welford(mean, var, count, batch):
    m, m2, c = np.array(mean, float), np.array(var, float) * count, count
    for x in batch:
        c += 1
        d = x - m
        m = m + d / c
        m2 = m2 + d * (x - m)
    return m, m2 / c, c


def running_np_average(mean, var, count, batch):
    n = batch.shape[0]
    new_mean = np.average([mean, batch.mean(axis=0)], axis=0, weights=[count, n])
    m2 = var * count + batch.var(axis=0) * n + (batch.mean(axis=0) - mean) ** 2 * count * n / (count + n)
    return new_mean, m2 / (count + n), count + n


def value_loss_with_maximum(values, old_values, targets, eps):
    clipped = torch.clamp(values, old_values - eps, old_values + eps)
    return 0.5 * torch.maximum((values - targets) ** 2, (clipped - targets) ** 2).mean()


def value_loss_with_where(values, old_values, targets, eps):
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    a, b = (values - targets) ** 2, (clipped - targets) ** 2
    return torch.where(a > b, a, b).mean() / 2


@pytest.mark.parametrize("exercise, impl", [
    (check_running_mean_std, running_in_place), (check_running_mean_std, running_welford),
    (check_running_mean_std, running_np_average), (check_clipped_value_loss, value_loss_with_maximum),
    (check_clipped_value_loss, value_loss_with_where),
], ids=lambda x: getattr(x, "__name__", getattr(x, "name", "")))
def test_right_answers_in_unusual_forms_pass(exercise, impl):
    assert_accepted(exercise, impl)


# ------------------------------------------------ hints that name the right mistake, or none

def surrogate_clipped_above_only(ratio, advantages, eps):
    return torch.min(ratio * advantages, torch.clamp(ratio, max=1 + eps) * advantages).mean()


def bootstrap_right_but_in_place(values, last_value, terminated, truncated, final_values):
    values[:-1] = values[1:]
    values[-1] = last_value
    values[truncated] = final_values[truncated]
    values[terminated] = 0.0
    return values


def normalize_median(advantages):
    a = np.asarray(advantages, float)
    return (a - np.median(a)) / (a.std() + 1e-8) if a.size > 1 else a - a.mean()


def gae_only_1d(rewards, values, next_values, dones, gamma, lam):
    if np.ndim(rewards) == 2:
        raise NotImplementedError("2-D later")
    return _gae_loop(rewards, values, next_values, np.asarray(dones, float), gamma, lam)


def gae_placeholder(rewards, values, next_values, dones, gamma, lam):
    # YOUR CODE HERE
    raise NotImplementedError()


def test_one_sided_clipping_is_not_told_to_use_min():
    result = check_clipped_surrogate.evaluate(surrogate_clipped_above_only)
    assert not result.passed and "min, not max" not in result.message
    assert "never clipped at 1 - eps" in result.message


def test_a_right_answer_that_changed_its_input_gets_no_mistake_hint():
    result = check_bootstrap_values.evaluate(bootstrap_right_but_in_place)
    assert "changed its input" in result.message and "Hint:" not in result.message


def test_a_hint_needs_a_match_on_every_case():
    result = check_normalize_advantages.evaluate(normalize_median)
    assert not result.passed and "Hint:" not in result.message and "Case:" in result.message


def running_centres_batch_in_place(mean, var, count, batch):
    n = len(batch)
    b_mean = batch.mean(0)
    batch -= b_mean  # changes the caller's data
    b_var = (batch**2).mean(0)
    delta = b_mean - mean
    total = count + n
    return mean + delta * n / total, (var * count + b_var * n + delta**2 * count * n / total) / total, total


def test_a_right_update_that_changes_the_batch_is_caught():
    result = check_running_mean_std.evaluate(running_centres_batch_in_place)
    assert not result.passed and "changed its input `batch`" in result.message and "Hint:" not in result.message


def test_a_numpy_exercise_gets_no_autograd_hint():
    result = check_running_mean_std.evaluate(lambda m, v, c, b: (m, v))
    assert not result.passed and "autograd" not in result.message


def test_not_filled_in_only_for_the_placeholder():
    assert check_gae.evaluate(gae_placeholder).status == "unfilled"
    result = check_gae.evaluate(gae_only_1d)
    assert result.status == "error" and "NotImplementedError: 2-D later" in result.message
    assert "Case:" in result.message and "not filled in" not in result.message
