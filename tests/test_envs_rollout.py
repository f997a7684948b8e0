"""Vector envs (ppo_lib.envs), policies (ppo_lib.policies) and rollouts (ppo_lib.rollout).

The custom environments below make every quantity predictable: the observation
counts the steps of the episode, so the true final observation of an episode and
the reset observation that SAME_STEP autoreset puts in its place can be told apart.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from ppo_lib.advantages import bootstrap_values, gae, rollout_advantages
from ppo_lib.envs import VecEnv
from ppo_lib.losses import value_loss
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout

RESET_OBS = np.array([0.0, 0.0], np.float32)


class CounterEnv(gym.Env):
    """obs = [steps taken in this episode, 1] (the reset obs is [0, 0]).

    The episode terminates after ``length`` steps, drawn per episode from the env's
    seeded generator in [3, 8]. Reward = step index + 0.5 * action, so returns
    depend on the actions taken.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.length = int(self.np_random.integers(3, 9))
        return RESET_OBS.copy(), {}

    def step(self, action):
        self.t += 1
        reward = float(self.t) + 0.5 * int(action)
        return np.array([self.t, 1.0], np.float32), reward, self.t >= self.length, False, {}


def counter_env():
    return CounterEnv()


class ConstantRewardEnv(gym.Env):
    """One state, reward 1 at every step, never terminates (a TimeLimit cuts it)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


class NanRewardEnv(gym.Env):
    """Returns a NaN reward at its third step (step index 2)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), (math.nan if self.t == 3 else 1.0), False, False, {}


def nan_reward_env():
    return NanRewardEnv()


class ActionRecorderEnv(gym.Env):
    """Records the actions it receives; its action space is [-1, 1]^2."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.received.append(np.array(action, copy=True))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), 0.0, False, False, {}


def _random_actions(rng, venv):
    return rng.integers(0, 2, venv.num_envs)


# --------------------------------------------------------------------------
# envs.py: SAME_STEP autoreset, flags, statistics
# --------------------------------------------------------------------------


def test_same_step_autoreset_final_obs_flags_and_episode_stats():
    N, limit = 3, 5
    venv = VecEnv(counter_env, num_envs=N, seed=0, max_episode_steps=limit)
    obs = venv.reset()
    np.testing.assert_array_equal(obs, np.tile(RESET_OBS, (N, 1)))
    rng = np.random.default_rng(0)
    count = np.zeros(N, int)
    ret = np.zeros(N)
    returns, lengths, steps = [], [], []
    seen = {"terminated only": 0, "truncated only": 0, "both": 0}
    for k in range(80):
        lengths_now = [venv.envs.envs[i].unwrapped.length for i in range(N)]  # before autoreset redraws
        actions = _random_actions(rng, venv)
        step = venv.step(actions)
        count += 1
        ret += count + 0.5 * actions
        np.testing.assert_array_equal(step.reward, count + 0.5 * actions)
        for i in range(N):
            true_last = np.array([count[i], 1.0], np.float32)
            term_expected = count[i] >= lengths_now[i]
            trunc_expected = count[i] >= limit
            assert step.terminated[i] == term_expected, (k, i)
            assert step.truncated[i] == trunc_expected, (k, i)
            np.testing.assert_array_equal(step.final_obs[i], true_last)  # never the reset obs
            if term_expected or trunc_expected:
                np.testing.assert_array_equal(step.obs[i], RESET_OBS)     # the next episode's first obs
                seen["both" if term_expected and trunc_expected else
                     "terminated only" if term_expected else "truncated only"] += 1
                returns.append(ret[i])
                lengths.append(int(count[i]))
                steps.append((k + 1) * N)
                count[i], ret[i] = 0, 0.0
            else:
                np.testing.assert_array_equal(step.obs[i], true_last)
        assert step.terminated.dtype == bool and step.truncated.dtype == bool
    assert all(v > 0 for v in seen.values()), seen
    assert venv.total_steps == 80 * N
    # episodes end in env order within a step, as they were appended above
    np.testing.assert_allclose(venv.stats.returns, returns)
    assert venv.stats.lengths == lengths
    assert venv.stats.steps == steps


def test_cartpole_falling_pole_is_terminated_and_a_time_limit_is_truncated():
    # A random policy drops the pole in ~20 steps: terminated, never truncated (limit 500).
    venv = VecEnv("CartPole-v1", num_envs=4, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    n_term = 0
    for _ in range(150):
        step = venv.step(_random_actions(rng, venv))
        assert not step.truncated.any()
        for i in np.flatnonzero(step.terminated):
            n_term += 1
            x, _, theta, _ = step.final_obs[i]
            assert abs(x) > 2.4 or abs(theta) > 12 * 2 * math.pi / 360  # the true, fallen state
            assert np.all(np.abs(step.obs[i]) <= 0.05)                   # a fresh reset state
    assert n_term >= 10
    # A 5-step limit truncates every episode at steps 5, 10, ...; the pole never falls that fast.
    venv = VecEnv("CartPole-v1", num_envs=4, seed=0, max_episode_steps=5)
    venv.reset()
    for k in range(20):
        step = venv.step(_random_actions(rng, venv))
        assert not step.terminated.any()
        assert step.truncated.all() == ((k + 1) % 5 == 0) and step.truncated.any() == step.truncated.all()
        if step.truncated.any():
            assert not np.array_equal(step.final_obs, step.obs)
    assert venv.stats.lengths == [5] * 16
    assert venv.stats.returns == [5.0] * 16


def test_non_finite_reward_names_the_env_and_the_step():
    venv = VecEnv(nan_reward_env, num_envs=1, seed=0)
    venv.reset()
    venv.step(np.array([0]))
    venv.step(np.array([0]))
    with pytest.raises(ValueError, match=r"nan_reward_env.*non-finite reward.*env step 2"):
        venv.step(np.array([0]))
    # ... and the same error surfaces through collect_rollout
    venv = VecEnv(nan_reward_env, num_envs=2, seed=0)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space)
    with pytest.raises(ValueError, match=r"nan_reward_env: env\(s\) \[0, 1\].*env step 4"):
        collect_rollout(venv, policy, 5, venv.reset())


@pytest.mark.parametrize("env_id", ["NoSuchEnv-v0", "CartPole-v99", "not an id!!"])
def test_unknown_env_id_is_a_clear_value_error(env_id):
    with pytest.raises(ValueError, match=rf"env='{env_id}': not a registered Gymnasium environment"):
        VecEnv(env_id)


@pytest.mark.parametrize("n", [0, -1, 2.5, "2"])
def test_bad_num_envs_is_rejected(n):
    with pytest.raises(ValueError, match=rf"num_envs={n!r}: must be an integer >= 1"):
        VecEnv("CartPole-v1", num_envs=n)


def test_env_that_is_neither_an_id_nor_a_factory_is_a_type_error():
    with pytest.raises(TypeError, match="expected a Gymnasium id or a function"):
        VecEnv(42)


def test_reset_starts_fresh_episode_statistics():
    venv = VecEnv(counter_env, num_envs=1, seed=0, max_episode_steps=3)
    venv.reset()
    venv.step(np.array([0]))  # one step of an episode that the reset abandons
    venv.reset()
    for _ in range(3):
        venv.step(np.array([0]))
    assert venv.stats.lengths == [3]
    assert venv.stats.returns == [1.0 + 2.0 + 3.0]


# --------------------------------------------------------------------------
# rollout.py
# --------------------------------------------------------------------------


def test_rollout_stores_the_step_before_autoreset_and_bootstraps_from_the_true_final_obs():
    N, T, limit = 3, 40, 5
    venv = VecEnv(counter_env, num_envs=N, seed=1, max_episode_steps=limit)
    torch.manual_seed(0)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space)
    v_final = policy.value(torch.tensor([[limit, 1.0]])).item()
    v_reset = policy.value(torch.as_tensor(RESET_OBS)[None]).item()
    assert abs(v_final - v_reset) > 1e-3  # so that using the wrong observation would show
    obs0 = venv.reset()
    rollout, next_obs = collect_rollout(venv, policy, T, obs0)

    assert rollout.obs.shape == (T, N, 2) and rollout.actions.shape == (T, N)
    for name in ("logprobs", "values", "rewards", "terminated", "truncated", "final_values"):
        assert getattr(rollout, name).shape == (T, N), name
    assert rollout.T == T and rollout.N == N
    assert rollout.last_value.shape == (N,)
    assert torch.equal(rollout.dones, rollout.terminated | rollout.truncated)

    obs_seq = torch.cat([rollout.obs, torch.as_tensor(next_obs)[None]])  # (T + 1, N, 2)
    n_trunc = 0
    for t in range(T):
        for i in range(N):
            counter = obs_seq[t, i, 0].item()
            if rollout.dones[t, i]:
                # s_{t+1} stored is the reset obs; the episode lasted counter + 1 steps
                assert obs_seq[t + 1, i].tolist() == RESET_OBS.tolist()
                assert rollout.truncated[t, i] == (counter + 1 >= limit)
            else:
                assert obs_seq[t + 1, i].tolist() == [counter + 1, 1.0]
            assert rollout.rewards[t, i] == counter + 1 + 0.5 * rollout.actions[t, i]
            if rollout.truncated[t, i]:
                n_trunc += 1
                assert rollout.final_values[t, i].item() == pytest.approx(v_final, abs=1e-6)
            else:
                assert rollout.final_values[t, i].item() == 0.0
    assert n_trunc >= 3 and rollout.terminated.any()

    # values, log-probs and the last value are the policy's own on the stored data
    logp, _, values = policy.evaluate(rollout.obs, rollout.actions)
    torch.testing.assert_close(rollout.logprobs, logp.detach())
    torch.testing.assert_close(rollout.values, values.detach())
    torch.testing.assert_close(rollout.last_value, policy.value(torch.as_tensor(next_obs)).detach())


def test_rollout_rejects_a_non_positive_length():
    venv = VecEnv("CartPole-v1", num_envs=1)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space)
    with pytest.raises(ValueError, match="T=0"):
        collect_rollout(venv, policy, 0, venv.reset())


def _seeded_rollout(env_id, seed, T=50, N=3):
    venv = VecEnv(env_id, num_envs=N, seed=seed)
    torch.manual_seed(seed)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space)
    obs = venv.reset()
    rollout, _ = collect_rollout(venv, policy, T, obs)
    return rollout


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_same_rollout_different_seed_different_rollout(env_id):
    a, b, c = _seeded_rollout(env_id, 7), _seeded_rollout(env_id, 7), _seeded_rollout(env_id, 8)
    for name in ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "final_values"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.obs, c.obs)
    assert not torch.equal(a.logprobs, c.logprobs)


# --------------------------------------------------------------------------
# The infinite-horizon check (DESIGN.md): constant reward 1 with a time limit
# --------------------------------------------------------------------------

GAMMA, LIMIT = 0.9, 20


def _fit_constant_critic(lam: float, truncation_as_termination: bool, iterations: int = 60) -> float:
    """Fitted value iteration with the library's rollout and targets.

    The observation never changes, so the least-squares fit of V to the targets is
    their mean; one SGD step with lr=1 on the critic's output bias reaches it
    exactly (d/db of 0.5 * mean((V - y)^2) is V - mean(y)).
    """
    venv = VecEnv(ConstantRewardEnv, num_envs=2, seed=0, max_episode_steps=LIMIT)
    torch.manual_seed(0)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space, hidden=(8,))
    opt = torch.optim.SGD([policy.critic[-1].bias], lr=1.0)
    obs = venv.reset()
    for _ in range(iterations):
        rollout, obs = collect_rollout(venv, policy, 2 * LIMIT, obs)
        assert rollout.truncated.sum() == 2 * 2 and not rollout.terminated.any()
        if truncation_as_termination:  # the CleanRL / Spinning Up mistake
            nv = bootstrap_values(rollout.values, rollout.last_value, rollout.dones,
                                  torch.zeros_like(rollout.truncated), rollout.final_values)
            targets = gae(rollout.rewards, rollout.values, nv, rollout.dones, GAMMA, lam) + rollout.values
        else:
            _, targets = rollout_advantages(rollout, GAMMA, lam)
        loss = value_loss(policy.value(rollout.obs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.value(torch.zeros(1, 1)).item()


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_infinite_horizon_value_with_a_time_limit(lam):
    infinite = 1 / (1 - GAMMA)  # 10
    v = _fit_constant_critic(lam, truncation_as_termination=False)
    assert v == pytest.approx(infinite, rel=0.01)

    # Treating the time limit as a termination learns a finite-horizon value instead:
    v_bug = _fit_constant_critic(lam, truncation_as_termination=True)
    assert v_bug < 0.9 * infinite
    if lam == 0.0:    # V = 1 + gamma * (19/20) * V
        assert v_bug == pytest.approx(1 / (1 - GAMMA * (LIMIT - 1) / LIMIT), rel=0.01)
    if lam == 1.0:    # the mean over start times of the discounted sum to the limit
        finite_sums = [(1 - GAMMA**h) / (1 - GAMMA) for h in range(1, LIMIT + 1)]
        assert v_bug == pytest.approx(np.mean(finite_sums), rel=0.01)


# --------------------------------------------------------------------------
# policies.py
# --------------------------------------------------------------------------

BOX4 = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def test_categorical_head():
    torch.manual_seed(0)
    p = ActorCritic(BOX4, gym.spaces.Discrete(3))
    assert not p.continuous
    # scale the last layer up so the policy is far from uniform (the checks are sharper)
    with torch.no_grad():
        p.actor.logits[-1].weight.mul_(300.0)
    obs = torch.randn(256, 4)
    actions, logp, values = p.act(obs)
    assert actions.shape == (256,) and actions.dtype == torch.int64
    logits = p.actor.logits(obs).detach()
    log_softmax = torch.log_softmax(logits, -1)
    torch.testing.assert_close(logp, log_softmax[torch.arange(256), actions])
    torch.testing.assert_close(values, p.critic(obs).squeeze(-1).detach())
    lp2, ent, v2 = p.evaluate(obs, actions)
    torch.testing.assert_close(lp2.detach(), logp)
    torch.testing.assert_close(ent.detach(), -(log_softmax.exp() * log_softmax).sum(-1))
    assert lp2.requires_grad and v2.requires_grad
    env_a = p.env_actions(actions)
    assert env_a.dtype == np.int64 and env_a.tolist() == actions.tolist()
    assert torch.equal(p.greedy(obs), logits.argmax(-1))


def test_gaussian_head_sums_log_prob_and_entropy_over_action_dims():
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    act_space = gym.spaces.Box(np.array([-1.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    torch.manual_seed(0)
    p = ActorCritic(obs_space, act_space)
    assert p.continuous
    with torch.no_grad():
        p.actor.log_std.copy_(torch.tensor([-0.5, 1.5]))
    obs = torch.randn(500, 3)
    torch.manual_seed(1)
    actions, logp, _ = p.act(obs)
    assert actions.shape == (500, 2) and logp.shape == (500,)
    mu = p.actor.mean(obs).detach()
    sigma = torch.tensor([math.exp(-0.5), math.exp(1.5)])
    by_hand = (-0.5 * ((actions - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(logp, by_hand)
    torch.testing.assert_close(logp, Normal(mu, sigma).log_prob(actions).sum(-1))
    lp2, ent, _ = p.evaluate(obs, actions)
    torch.testing.assert_close(lp2.detach(), logp)
    ent_by_hand = (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(sigma)).sum()
    assert ent.shape == (500,)
    torch.testing.assert_close(ent.detach(), ent_by_hand.expand(500))
    # log_std is learned: the log-prob has a gradient with respect to it
    lp2.sum().backward()
    assert p.actor.log_std.grad is not None and torch.all(p.actor.log_std.grad != 0)

    # raw actions are kept, unclipped (sigma = e^1.5 ~ 4.5 takes many outside the bounds) ...
    assert (actions[:, 1].abs() > 2).any() and (actions[:, 0].abs() > 1).any()
    env_a = p.env_actions(actions)
    np.testing.assert_array_equal(env_a, np.clip(actions.numpy(), act_space.low, act_space.high))
    assert np.all(env_a >= act_space.low) and np.all(env_a <= act_space.high)
    # ... and the clipped copy is not what the log-prob was computed on
    clipped_lp = Normal(mu, sigma).log_prob(torch.as_tensor(env_a)).sum(-1)
    assert not torch.allclose(clipped_lp, logp)
    torch.testing.assert_close(p.greedy(obs), mu)


def test_rollout_keeps_raw_gaussian_actions_and_sends_clipped_ones():
    venv = VecEnv(ActionRecorderEnv, num_envs=2, seed=0)
    torch.manual_seed(0)
    policy = ActorCritic(venv.single_observation_space, venv.single_action_space)
    with torch.no_grad():
        policy.actor.log_std.fill_(1.0)  # sigma ~ 2.7 on [-1, 1]
    rollout, _ = collect_rollout(venv, policy, 30, venv.reset())
    assert rollout.actions.shape == (30, 2, 2) and rollout.actions.dtype == torch.float32
    assert (rollout.actions.abs() > 1).any()  # stored raw
    received = np.stack([np.stack(venv.envs.envs[i].received) for i in range(2)], axis=1)  # (T, N, 2)
    np.testing.assert_array_equal(received, np.clip(rollout.actions.numpy(), -1.0, 1.0))
    logp, _, _ = policy.evaluate(rollout.obs, rollout.actions)
    torch.testing.assert_close(rollout.logprobs, logp.detach())


def _assert_orthogonal(W: torch.Tensor, gain: float):
    out_dim, in_dim = W.shape
    gram = W @ W.T if out_dim <= in_dim else W.T @ W
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(out_dim, in_dim)), atol=1e-5 * max(gain**2, 1e-2),
                               rtol=1e-4)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)])
def test_orthogonal_initialisation_gains(action_space):
    torch.manual_seed(0)
    p = ActorCritic(BOX4, action_space, hidden=(64, 32))
    actor_net = p.actor.mean if p.continuous else p.actor.logits
    for net, out_gain in ((actor_net, 0.01), (p.critic, 1.0)):
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        assert [tuple(m.weight.shape) for m in linears] == [(64, 4), (32, 64), (linears[-1].out_features, 32)]
        _assert_orthogonal(linears[0].weight.detach(), math.sqrt(2))  # 64 x 4: orthonormal columns * sqrt 2
        _assert_orthogonal(linears[1].weight.detach(), math.sqrt(2))
        _assert_orthogonal(linears[2].weight.detach(), out_gain)
        for m in linears:
            assert torch.count_nonzero(m.bias) == 0
    # the actor's last layer is tiny: a nearly uniform first policy; the critic's is not
    assert actor_net[-1].weight.abs().max() < 0.01
    assert p.critic[-1].weight.norm().item() == pytest.approx(1.0, abs=1e-5)
    if p.continuous:
        assert torch.count_nonzero(p.actor.log_std) == 0


@pytest.mark.parametrize("obs_space,act_space,match", [
    (BOX4, gym.spaces.MultiDiscrete([2, 3]), r"action space MultiDiscrete\(\[2 3\]\)"),
    (BOX4, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), r"action space Box\(.*\(2, 2\)"),
    (gym.spaces.Box(0.0, 1.0, (2, 3), np.float32), gym.spaces.Discrete(2), r"observation space Box\(.*\(2, 3\)"),
    (gym.spaces.Discrete(5), gym.spaces.Discrete(2), r"observation space Discrete\(5\)"),
])
def test_unsupported_spaces_raise_type_error_naming_the_space(obs_space, act_space, match):
    with pytest.raises(TypeError, match=match):
        ActorCritic(obs_space, act_space)


def test_actor_without_critic_has_zero_values():
    p = ActorCritic(BOX4, gym.spaces.Discrete(2), critic=False)
    assert p.critic is None
    obs = torch.randn(5, 4)
    assert torch.equal(p.value(obs), torch.zeros(5))
    assert torch.equal(p.act(obs)[2], torch.zeros(5))
