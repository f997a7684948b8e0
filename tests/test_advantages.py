"""Returns, TD errors and GAE (ppo_lib.advantages) against hand-computed cases and
against slow, explicit per-episode references written with plain Python loops.

Conventions under test (flags at t describe what happened *after* action a_t):
- terminated[t]: nothing follows, the next value is 0;
- truncated[t]: a time limit; the next value is final_values[t] = V(true last obs);
- otherwise the next value is values[t+1], or last_value after the last step;
- either flag cuts the GAE trace (and the reward-to-go sum) at t;
- terminated and truncated both set (Gymnasium can report both): termination wins.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppo_lib.advantages import (
    bootstrap_values,
    complete_episode_mask,
    gae,
    reward_to_go,
    td_errors,
)

TOL = dict(rtol=1e-4, atol=1e-4)  # the library computes in float32, the references in float64


def np_(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------
# Slow, explicit references: one episode at a time, no backward recursion.
# --------------------------------------------------------------------------


def ref_next_value(t, i, values, last_value, terminated, truncated, final_values):
    if terminated[t, i]:
        return 0.0
    if truncated[t, i]:
        return float(final_values[t, i])
    if t == values.shape[0] - 1:
        return float(last_value[i])
    return float(values[t + 1, i])


def ref_episode_end(t, i, dones):
    """The last step of t's episode inside the batch (a done, or the batch's last step)."""
    T = dones.shape[0]
    k = t
    while not dones[k, i] and k < T - 1:
        k += 1
    return k


def ref_gae(rewards, values, last_value, terminated, truncated, final_values, gamma, lam):
    """A_t = sum over the rest of t's episode (within the batch) of (gamma*lam)^l * delta_{t+l}."""
    T, N = rewards.shape
    dones = terminated | truncated
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            end = ref_episode_end(t, i, dones)
            total = 0.0
            for k in range(t, end + 1):
                nv = ref_next_value(k, i, values, last_value, terminated, truncated, final_values)
                delta = rewards[k, i] + gamma * nv - values[k, i]
                total += (gamma * lam) ** (k - t) * delta  # Python: 0.0 ** 0 == 1
            out[t, i] = total
    return out


def ref_mc_advantage(rewards, values, last_value, terminated, truncated, final_values, gamma):
    """Bootstrapped Monte-Carlo advantage: the discounted rewards to the episode's end in
    the batch, plus gamma^(steps) times what follows the end (0 / final value / last
    value), minus V(s_t)."""
    T, N = rewards.shape
    dones = terminated | truncated
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            end = ref_episode_end(t, i, dones)
            G = sum(gamma ** (k - t) * rewards[k, i] for k in range(t, end + 1))
            G += gamma ** (end - t + 1) * ref_next_value(end, i, values, last_value, terminated,
                                                         truncated, final_values)
            out[t, i] = G - values[t, i]
    return out


def ref_reward_to_go(rewards, dones, gamma):
    T, N = rewards.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            end = ref_episode_end(t, i, dones)
            out[t, i] = sum(gamma ** (k - t) * rewards[k, i] for k in range(t, end + 1))
    return out


def ref_complete_mask(dones):
    T, N = dones.shape
    return np.array([[bool(dones[t:, i].any()) for i in range(N)] for t in range(T)])


# --------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_exact_constant_value_function_gives_zero_advantages(lam):
    # r = 1 forever, gamma = 0.9: the true value is 1 / (1 - 0.9) = 10 everywhere.
    # With V = 10, every TD error is 1 + 0.9 * 10 - 10 = 0, so GAE is 0 for any lambda,
    # also across a truncation bootstrapped from V(final) = 10.
    T, N = 6, 2
    values = np.full((T, N), 10.0)
    truncated = np.zeros((T, N), bool)
    truncated[2, 1] = True
    final_values = np.where(truncated, 10.0, 0.0)
    nv = bootstrap_values(values, [10.0, 10.0], np.zeros((T, N), bool), truncated, final_values)
    adv = gae(np.ones((T, N)), values, nv, truncated, 0.9, lam)
    np.testing.assert_allclose(np_(adv), 0.0, atol=1e-5)


def test_constant_value_function_without_dones_is_a_geometric_sum_of_one_td_error():
    # V = c everywhere, r = 1, no dones: delta = 1 + gamma c - c for every t, and
    # A_t = delta * (1 - (gamma lam)^(T - t)) / (1 - gamma lam).
    T, c, gamma, lam = 5, 2.0, 0.9, 0.8
    delta = 1 + gamma * c - c  # 0.8
    nv = bootstrap_values(np.full(T, c), c, np.zeros(T, bool), np.zeros(T, bool), np.zeros(T))
    np.testing.assert_allclose(np_(nv), c)
    adv = np_(gae(np.ones(T), np.full(T, c), nv, np.zeros(T, bool), gamma, lam))
    gl = gamma * lam
    expected = [delta * (1 - gl ** (T - t)) / (1 - gl) for t in range(T)]
    np.testing.assert_allclose(adv, expected, **TOL)
    assert adv.shape == (T,)


@pytest.mark.parametrize("gamma,lam,expected", [
    (0.5, 1.0, [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]),
    (0.5, 0.5, [0.25**4, 0.25**3, 0.25**2, 0.25, 1.0]),
    (0.5, 0.0, [0.0, 0.0, 0.0, 0.0, 1.0]),
    (1.0, 1.0, [1.0] * 5),
])
def test_reward_only_at_the_last_step(gamma, lam, expected):
    # V = 0, reward 1 only at t = 4, where the episode terminates: delta_t = r_t, so
    # A_t = (gamma lam)^(4 - t).
    T = 5
    rewards = np.array([0, 0, 0, 0, 1.0])
    terminated = np.array([0, 0, 0, 0, 1], bool)
    nv = bootstrap_values(np.zeros(T), 123.0, terminated, np.zeros(T, bool), np.zeros(T))
    np.testing.assert_allclose(np_(nv), 0.0)  # the last_value of 123 is never used: terminated
    adv = gae(rewards, np.zeros(T), nv, terminated, gamma, lam)
    np.testing.assert_allclose(np_(adv), expected, **TOL)


def _mid_batch_case():
    """T=4, N=3, r=1, V=1, last_value=1, gamma=lam=0.5.
    env 0 terminates after t=1, env 1 is truncated after t=1 with V(final)=7,
    env 2 runs on. final_values holds garbage (100) wherever not truncated: it must be ignored.
    """
    T, N = 4, 3
    rewards = np.ones((T, N))
    values = np.ones((T, N))
    last_value = np.ones(N)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[1, 0] = True
    truncated[1, 1] = True
    final_values = np.full((T, N), 100.0)
    final_values[1, 1] = 7.0
    return rewards, values, last_value, terminated, truncated, final_values


def test_termination_and_truncation_in_the_middle_of_a_batch():
    rewards, values, last_value, terminated, truncated, final_values = _mid_batch_case()
    nv = np_(bootstrap_values(values, last_value, terminated, truncated, final_values))
    np.testing.assert_allclose(nv, [[1, 1, 1],
                                    [0, 7, 1],   # terminated -> 0; truncated -> V(final) = 7
                                    [1, 1, 1],
                                    [1, 1, 1]])  # last step: last_value
    delta = np_(td_errors(rewards, values, nv, 0.5))  # 1 + 0.5 nv - 1
    np.testing.assert_allclose(delta, [[0.5, 0.5, 0.5],
                                       [0.0, 3.5, 0.5],
                                       [0.5, 0.5, 0.5],
                                       [0.5, 0.5, 0.5]])
    adv = np_(gae(rewards, values, nv, terminated | truncated, 0.5, 0.5))
    # gamma * lam = 0.25; backwards: A3 = .5, A2 = .5 + .25 * .5 = .625,
    # env 0: A1 = 0 (cut: no .25 * .625), A0 = .5 + .25 * 0 = .5
    # env 1: A1 = 3.5 (cut), A0 = .5 + .25 * 3.5 = 1.375
    # env 2: A1 = .5 + .25 * .625 = .65625, A0 = .5 + .25 * .65625 = .6640625
    np.testing.assert_allclose(adv, [[0.5, 1.375, 0.6640625],
                                     [0.0, 3.5, 0.65625],
                                     [0.625, 0.625, 0.625],
                                     [0.5, 0.5, 0.5]], **TOL)


def test_terminated_and_truncated_at_the_same_step_does_not_bootstrap():
    nv = bootstrap_values([1.0, 1.0], 5.0, [True, False], [True, False], [9.0, 0.0])
    np.testing.assert_allclose(np_(nv), [0.0, 5.0])


def test_bootstrap_values_cases():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    F = np.zeros((3, 2), bool)
    # nothing ends: shift by one, last_value at the end
    np.testing.assert_allclose(np_(bootstrap_values(values, [7.0, 8.0], F, F, np.zeros((3, 2)))),
                               [[3, 4], [5, 6], [7, 8]])
    # the last step truncated / terminated: final value / 0 instead of last_value
    term, trunc = F.copy(), F.copy()
    term[2, 0] = True
    trunc[2, 1] = True
    fv = np.array([[50, 50], [50, 50], [50, -3.0]])
    np.testing.assert_allclose(np_(bootstrap_values(values, [7.0, 8.0], term, trunc, fv)),
                               [[3, 4], [5, 6], [0, -3]])
    # torch inputs work the same
    out = bootstrap_values(torch.tensor(values), torch.tensor([7.0, 8.0]), torch.tensor(term),
                           torch.tensor(trunc), torch.tensor(fv))
    np.testing.assert_allclose(np_(out), [[3, 4], [5, 6], [0, -3]])


def test_td_errors_by_hand():
    d = np_(td_errors([1.0, 2.0], [0.5, 1.0], [3.0, 0.0], 0.9))
    np.testing.assert_allclose(d, [1 + 0.9 * 3 - 0.5, 2 + 0 - 1.0], **TOL)


def test_reward_to_go_with_dones_by_hand():
    # rewards 1 2 3 4, the episode ends after t=1, gamma = 0.5:
    # G3 = 4, G2 = 3 + .5 * 4 = 5, G1 = 2 (cut), G0 = 1 + .5 * 2 = 2
    G = np_(reward_to_go([1.0, 2.0, 3.0, 4.0], [False, True, False, False], 0.5))
    np.testing.assert_allclose(G, [2.0, 2.0, 5.0, 4.0], **TOL)
    # (T, N): two columns with different cuts
    rewards = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    dones = np.array([[True, False], [False, False], [False, True]])
    G = np_(reward_to_go(rewards, dones, 1.0))
    np.testing.assert_allclose(G, [[1, 3], [2, 2], [1, 1]], **TOL)


def test_complete_episode_mask_by_hand():
    dones = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    mask = np_(complete_episode_mask(dones))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(np_(complete_episode_mask([False, True, False])), [True, True, False])


# --------------------------------------------------------------------------
# Property tests against the slow references
# --------------------------------------------------------------------------

unit = st.floats(0.0, 1.0, allow_nan=False)
rates = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.99]), unit)


@st.composite
def batches(draw):
    T = draw(st.integers(1, 20))
    N = draw(st.integers(1, 4))
    real = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
    rewards = draw(hnp.arrays(np.float64, (T, N), elements=real))
    values = draw(hnp.arrays(np.float64, (T, N), elements=real))
    last_value = draw(hnp.arrays(np.float64, (N,), elements=real))
    final_values = draw(hnp.arrays(np.float64, (T, N), elements=real))
    # sparse-ish flags, so that both long episodes and frequent ends are drawn
    p = draw(st.sampled_from([0.0, 0.1, 0.3, 0.7]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    terminated = rng.random((T, N)) < p
    truncated = rng.random((T, N)) < p
    return rewards, values, last_value, terminated, truncated, final_values


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _library_gae(b, gamma, lam):
    rewards, values, last_value, terminated, truncated, final_values = b
    nv = bootstrap_values(values, last_value, terminated, truncated, final_values)
    return nv, gae(rewards, values, nv, terminated | truncated, gamma, lam)


@PROPERTY
@given(b=batches(), gamma=rates, lam=rates)
def test_gae_matches_the_slow_per_episode_reference(b, gamma, lam):
    _, adv = _library_gae(b, gamma, lam)
    np.testing.assert_allclose(np_(adv), ref_gae(*b, gamma, lam), **TOL)


@PROPERTY
@given(b=batches(), gamma=rates)
def test_gae_lambda_0_is_the_td_error(b, gamma):
    rewards, values, last_value, terminated, truncated, final_values = b
    nv, adv = _library_gae(b, gamma, 0.0)
    ref_nv = np.array([[ref_next_value(t, i, values, last_value, terminated, truncated, final_values)
                        for i in range(values.shape[1])] for t in range(values.shape[0])])
    np.testing.assert_allclose(np_(nv), ref_nv, **TOL)
    np.testing.assert_allclose(np_(adv), np_(td_errors(rewards, values, nv, gamma)), **TOL)
    np.testing.assert_allclose(np_(adv), rewards + gamma * ref_nv - values, **TOL)


@PROPERTY
@given(b=batches(), gamma=rates)
def test_gae_lambda_1_is_the_bootstrapped_monte_carlo_advantage(b, gamma):
    _, adv = _library_gae(b, gamma, 1.0)
    np.testing.assert_allclose(np_(adv), ref_mc_advantage(*b, gamma), **TOL)


@PROPERTY
@given(b=batches(), gamma=rates)
def test_reward_to_go_and_complete_mask_match_references(b, gamma):
    rewards, _, _, terminated, truncated, _ = b
    dones = terminated | truncated
    np.testing.assert_allclose(np_(reward_to_go(rewards, dones, gamma)),
                               ref_reward_to_go(rewards, dones, gamma), **TOL)
    np.testing.assert_array_equal(np_(complete_episode_mask(dones)), ref_complete_mask(dones))
    # reward-to-go is GAE(lambda=1) with V = 0 and nothing bootstrapped
    zeros = np.zeros_like(rewards)
    adv = gae(rewards, zeros, zeros, dones, gamma, 1.0)
    np.testing.assert_allclose(np_(adv), np_(reward_to_go(rewards, dones, gamma)), **TOL)


def test_the_references_themselves_on_the_hand_case():
    """The slow references agree with the hand-computed mid-batch case (so a property
    test cannot pass because library and reference share a mistake)."""
    b = _mid_batch_case()
    np.testing.assert_allclose(ref_gae(*b, 0.5, 0.5), [[0.5, 1.375, 0.6640625],
                                                       [0.0, 3.5, 0.65625],
                                                       [0.625, 0.625, 0.625],
                                                       [0.5, 0.5, 0.5]])
    # MC: env 1 from t=0: 1 + .5 * (1 + .5 * 7) - 1 = 2.25
    assert ref_mc_advantage(*b, 0.5)[0, 1] == pytest.approx(2.25)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def _ok_gae_args(T=3, N=2):
    z = np.zeros((T, N))
    return dict(rewards=np.ones((T, N)), values=z, next_values=z, dones=np.zeros((T, N), bool))


@pytest.mark.parametrize("gamma", [1.5, -0.1, math.nan])
def test_gamma_out_of_range_is_rejected_by_name(gamma):
    with pytest.raises(ValueError, match=r"gamma=.*\[0, 1\]"):
        gae(**_ok_gae_args(), gamma=gamma, lam=0.9)
    with pytest.raises(ValueError, match=r"gamma="):
        td_errors(np.ones(3), np.zeros(3), np.zeros(3), gamma)
    with pytest.raises(ValueError, match=r"gamma="):
        reward_to_go(np.ones(3), np.zeros(3, bool), gamma)


@pytest.mark.parametrize("lam", [1.01, -0.1, math.nan])
def test_lambda_out_of_range_is_rejected_by_name(lam):
    with pytest.raises(ValueError, match=r"lam=.*\[0, 1\]"):
        gae(**_ok_gae_args(), gamma=0.9, lam=lam)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_rewards_are_rejected_by_name(bad):
    r = np.ones((3, 2))
    r[1, 1] = bad
    args = _ok_gae_args()
    args["rewards"] = r
    with pytest.raises(ValueError, match=r"rewards: non-finite value .* at index \[1, 1\]"):
        gae(**args, gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match="rewards"):
        reward_to_go(r, np.zeros((3, 2), bool), 0.9)
    with pytest.raises(ValueError, match="rewards"):
        td_errors(r, np.zeros((3, 2)), np.zeros((3, 2)), 0.9)


def test_mismatched_dones_shapes_raise_value_error():
    args = _ok_gae_args()
    args["dones"] = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match="dones"):
        gae(**args, gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match="dones"):
        reward_to_go(np.ones((3, 2)), np.zeros((2, 3), bool), 0.9)


T_, N_ = 4, 3


@pytest.mark.parametrize("case", ["gae values (T,1)", "td_errors next_values (N,)",
                                  "bootstrap terminated (N,)", "bootstrap last_value (N-1,)"])
def test_mismatched_value_shapes_raise_value_error(case):
    r = np.ones((T_, N_))
    z = np.zeros((T_, N_))
    F = np.zeros((T_, N_), bool)
    calls = {
        "gae values (T,1)": lambda: gae(r, np.zeros((T_, 1)), z, F, 0.9, 0.9),
        "td_errors next_values (N,)": lambda: td_errors(r, z, np.zeros(N_), 0.9),
        "bootstrap terminated (N,)": lambda: bootstrap_values(z, np.zeros(N_), np.zeros(N_, bool), F, z),
        "bootstrap last_value (N-1,)": lambda: bootstrap_values(z, np.zeros(N_ - 1), F, F, z),
    }
    try:
        calls[case]()
    except ValueError:
        return
    raise AssertionError(f"{case}: accepted without a ValueError")
