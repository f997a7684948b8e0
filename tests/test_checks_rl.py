"""The checkers of chapters 1-3 against a catalogue of usual mistakes.

Each wrong implementation is written here independently of the checker's own
diagnosis list; each must be flagged with a message naming the failing case
(and, where the mistake is a known one, the hint). Correct implementations, in
NumPy and in torch, loop-based and vectorised, must pass.
"""

import numpy as np
import pytest
import torch

from ppo_lib.teaching.checks import (ALL_EXERCISES, check_bootstrap_values, check_gae, check_normalize_advantages,
                            check_reward_to_go, check_reinforce_loss, check_td_errors)
from tests.catalogue import assert_accepted, assert_flagged, ids


# ----------------------------------------------------------------- reward-to-go
def rtg_correct(rewards, dones, gamma):
    out = np.zeros_like(np.asarray(rewards, dtype=float))
    running = np.zeros_like(out[0])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running * (1 - dones[t])
        out[t] = running
    return out


def rtg_torch(rewards, dones, gamma):
    r, d = torch.as_tensor(rewards), torch.as_tensor(dones)
    out, running = torch.zeros_like(r), torch.zeros_like(r[0])
    for t in reversed(range(len(r))):
        running = r[t] + gamma * running * (~d[t])
        out[t] = running
    return out


def rtg_no_done_mask(rewards, dones, gamma):
    out, running = np.zeros_like(rewards, dtype=float), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def rtg_off_by_one(rewards, dones, gamma):
    out, running = np.zeros_like(rewards, dtype=float), np.zeros_like(np.asarray(rewards[0], float))
    for t in reversed(range(len(rewards))):
        out[t] = running * (1 - dones[t])
        running = rewards[t] + gamma * running * (1 - dones[t])
    return out


def rtg_scalar(rewards, dones, gamma):
    return float(np.sum(rewards))


def rtg_raises(rewards, dones, gamma):
    return rewards[len(rewards)]


def rtg_wrong_axis(rewards, dones, gamma):
    r, d = np.atleast_2d(np.asarray(rewards, float).T), np.atleast_2d(np.asarray(dones).T)
    return rtg_correct(r, d, gamma).T.reshape(np.shape(rewards))


# ----------------------------------------------------------------- TD errors
def td_correct(rewards, values, next_values, gamma):
    return rewards + gamma * next_values - values


def td_wrong_sign(rewards, values, next_values, gamma):
    return values - rewards - gamma * next_values


def td_off_by_one(rewards, values, next_values, gamma):
    return rewards + gamma * np.roll(values, -1, axis=0) - values


def td_wrong_shape(rewards, values, next_values, gamma):
    return (rewards + gamma * next_values - values).sum()


# ----------------------------------------------------------------- bootstrap values
def bv_correct(values, last_value, terminated, truncated, final_values):
    nxt = np.concatenate([values[1:], np.reshape(last_value, (1,) + values.shape[1:])])
    nxt = np.where(truncated, final_values, nxt)
    return np.where(terminated, 0.0, nxt)


def bv_through_termination(values, last_value, terminated, truncated, final_values):
    nxt = np.concatenate([values[1:], np.reshape(last_value, (1,) + values.shape[1:])])
    return np.where(truncated, final_values, nxt)


def bv_truncation_is_termination(values, last_value, terminated, truncated, final_values):
    nxt = np.concatenate([values[1:], np.reshape(last_value, (1,) + values.shape[1:])])
    return np.where(terminated | truncated, 0.0, nxt)


def bv_reset_obs(values, last_value, terminated, truncated, final_values):
    nxt = np.concatenate([values[1:], np.reshape(last_value, (1,) + values.shape[1:])])
    return np.where(terminated, 0.0, nxt)


def bv_off_by_one(values, last_value, terminated, truncated, final_values):
    return np.where(terminated, 0.0, np.where(truncated, final_values, values))


def bv_wrong_shape(values, last_value, terminated, truncated, final_values):
    return bv_correct(values, last_value, terminated, truncated, final_values)[:-1]


# ----------------------------------------------------------------- GAE
def gae_correct(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    adv, running = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        running = delta[t] + gamma * lam * (1.0 - dones[t]) * running
        adv[t] = running
    return adv


def gae_torch(rewards, values, next_values, dones, gamma, lam):
    r, v, nv = (torch.as_tensor(x, dtype=torch.float64) for x in (rewards, values, next_values))
    d = torch.as_tensor(dones, dtype=torch.float64)
    delta = r + gamma * nv - v
    adv, running = torch.zeros_like(delta), torch.zeros_like(delta[0])
    for t in range(len(delta) - 1, -1, -1):
        running = delta[t] + gamma * lam * (1 - d[t]) * running
        adv[t] = running
    return adv


def gae_missing_done_mask(rewards, values, next_values, dones, gamma, lam):
    return gae_correct(rewards, values, next_values, np.zeros_like(dones), gamma, lam)


def gae_wrong_sign(rewards, values, next_values, dones, gamma, lam):
    return -gae_correct(rewards, values, next_values, dones, gamma, lam)


def gae_wrong_axis(rewards, values, next_values, dones, gamma, lam):
    # loops over axis -1 (environments) instead of axis 0 (time)
    delta = rewards + gamma * next_values - values
    adv = np.zeros_like(delta)
    running = np.zeros_like(delta[..., 0])
    for t in reversed(range(delta.shape[-1])):
        running = delta[..., t] + gamma * lam * (1.0 - dones[..., t]) * running
        adv[..., t] = running
    return adv


def gae_off_by_one(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    adv, running = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        adv[t] = running
        running = delta[t] + gamma * lam * (1.0 - dones[t]) * running
    return adv


def gae_cut_late(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    adv, running = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        cut = dones[t - 1] if t > 0 else np.zeros_like(dones[0])
        running = delta[t] + gamma * lam * (1.0 - cut) * running
        adv[t] = running
    return adv


def gae_raises(rewards, values, next_values, dones, gamma, lam):
    raise ValueError("oops")


# ----------------------------------------------------------------- normalisation
def norm_correct_sample(a):
    return (a - a.mean()) / (a.std(ddof=1) + 1e-8) if len(a) > 1 else a - a.mean()


def norm_correct_population(a):
    return (a - a.mean()) / (a.std() + 1e-8)


def norm_divides_single(a):
    return (a - a.mean()) / a.std(ddof=1)


# ----------------------------------------------------------------- REINFORCE loss
def loss_correct(logprobs, weights):
    return -(logprobs * weights.detach()).mean()


def loss_wrong_sign(logprobs, weights):
    return (logprobs * weights.detach()).mean()


def loss_no_detach(logprobs, weights):
    return -(logprobs * weights).mean()


def loss_not_scalar(logprobs, weights):
    return -(logprobs * weights.detach())


def loss_numpy(logprobs, weights):
    return -float(np.mean(logprobs.detach().numpy() * weights.detach().numpy()))


CATALOGUE = [
    (check_reward_to_go, rtg_no_done_mask, "leak across episodes"),
    (check_reward_to_go, rtg_off_by_one, "must include the reward r_t"),
    (check_reward_to_go, rtg_scalar, "expected an array"),
    (check_reward_to_go, rtg_raises, "IndexError"),
    (check_reward_to_go, rtg_wrong_axis, "Case:"),
    (check_td_errors, td_wrong_sign, "sign is flipped"),
    (check_td_errors, td_off_by_one, "next_values[t], not values[t+1]"),
    (check_td_errors, td_wrong_shape, "expected an array"),
    (check_bootstrap_values, bv_through_termination, "after a termination"),
    (check_bootstrap_values, bv_truncation_is_termination, "a truncation is not an end"),
    (check_bootstrap_values, bv_reset_obs, "next* episode's first observation"),
    (check_bootstrap_values, bv_off_by_one, "not values[t]"),
    (check_bootstrap_values, bv_wrong_shape, "shape"),
    (check_gae, gae_missing_done_mask, "across the end of an episode"),
    (check_gae, gae_wrong_sign, "Case:"),
    (check_gae, gae_wrong_axis, "time runs along axis 0"),
    (check_gae, gae_off_by_one, "Case:"),
    (check_gae, gae_cut_late, "Case:"),
    (check_gae, gae_raises, "ValueError: oops"),
    (check_normalize_advantages, norm_divides_single, "with one element"),
    (check_reinforce_loss, loss_wrong_sign, "sign is flipped"),
    (check_reinforce_loss, loss_no_detach, "detach them"),
    (check_reinforce_loss, loss_not_scalar, "single number"),
    (check_reinforce_loss, loss_numpy, "gradient w.r.t. logprobs"),
]


@pytest.mark.parametrize("exercise, impl, words", CATALOGUE, ids=ids(CATALOGUE))
def test_checker_flags_the_mistake_specifically(exercise, impl, words):
    assert_flagged(exercise, impl, words)


CORRECT = [
    (check_reward_to_go, rtg_correct), (check_reward_to_go, rtg_torch),
    (check_td_errors, td_correct),
    (check_bootstrap_values, bv_correct),
    (check_gae, gae_correct), (check_gae, gae_torch),
    (check_normalize_advantages, norm_correct_sample), (check_normalize_advantages, norm_correct_population),
    (check_reinforce_loss, loss_correct),
]


@pytest.mark.parametrize("exercise, impl", CORRECT, ids=ids(CORRECT))
def test_checker_accepts_correct_implementations(exercise, impl):
    assert_accepted(exercise, impl)


@pytest.mark.parametrize("exercise", ALL_EXERCISES, ids=lambda e: e.name)
def test_every_catalogued_mistake_is_caught_with_its_hint(exercise):
    assert exercise.evaluate(exercise.reference).passed
    for mistake in exercise.mistakes:
        result = exercise.evaluate(mistake.impl)
        assert not result.passed, f"{exercise.name}: no case catches {mistake.name!r}"
        assert mistake.feedback in result.message, f"{exercise.name}/{mistake.name}: {result.message}"


@pytest.mark.parametrize("exercise", ALL_EXERCISES, ids=lambda e: e.name)
def test_unfilled_exercise_falls_back_to_the_reference(exercise):
    def unfilled(*args):
        raise NotImplementedError()

    result = exercise.evaluate(unfilled)
    assert result.status == "unfilled" and result.fn is exercise.reference
