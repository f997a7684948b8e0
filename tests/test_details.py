"""Implementation details of chapter 7 and the fast CartPole: analytic checks."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos import PPO, PPOConfig
from ppo_lib.envs import SameStepCartPoleVec, VecEnv
from ppo_lib.normalization import NormalizedVecEnv, RunningMeanStd
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.train import evaluate, load_agent, save_agent, train


def test_running_mean_std_over_chunks_equals_the_whole():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 3))
    rms = RunningMeanStd((3,), epsilon=1e-12)
    for chunk in np.array_split(data, 17):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-9)
    assert rms.count == pytest.approx(1000)


def test_fast_cartpole_has_gymnasium_physics_and_same_step_reset():
    fast = SameStepCartPoleVec(3)
    fast.reset(seed=0)
    slow = gym.make("CartPole-v1").unwrapped
    slow.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        state = fast.state.T.copy()  # (3, 4)
        actions = rng.integers(0, 2, size=3)
        obs, reward, term, trunc, info = fast.step(actions)
        for i in range(3):
            slow.state, slow.steps_beyond_terminated = state[i].copy(), None
            s_obs, s_r, s_term, _, _ = slow.step(int(actions[i]))
            assert term[i] == s_term and reward[i] == s_r
            true_final = info["final_obs"][i] if term[i] or trunc[i] else obs[i]
            np.testing.assert_allclose(true_final, s_obs, rtol=1e-5, atol=1e-6)
            if term[i]:  # reset in the same step: a fresh start state
                assert np.all(np.abs(obs[i]) <= 0.05)


def test_fast_cartpole_truncates_at_its_time_limit():
    venv = VecEnv("CartPole-v1", num_envs=2, seed=0, max_episode_steps=7)
    assert venv.vectorized
    venv.reset()
    flags = [venv.step(np.zeros(2, dtype=np.int64)) for _ in range(7)]
    # pushing left for 7 steps does not topple the pole from a near-upright start
    assert not any(f.terminated.any() for f in flags)
    assert flags[-1].truncated.all() and not any(f.truncated.any() for f in flags[:-1])
    with pytest.raises(ValueError, match="no vectorised version"):
        VecEnv("Pendulum-v1", vectorized=True)


def test_normalized_env_normalises_obs_but_keeps_raw_episode_returns():
    venv = NormalizedVecEnv(VecEnv("CartPole-v1", num_envs=4, seed=0), normalize_obs=True, reward_gamma=0.99)
    obs = venv.reset()
    seen = [obs]
    rng = np.random.default_rng(0)
    for t in range(300):
        step = venv.step(rng.integers(0, 2, 4))
        seen.append(step.obs)
        if t > 100:  # scaled by the std of the discounted return, which soon exceeds 1
            assert np.all(step.reward < 1.0)
            np.testing.assert_allclose(step.reward, 1.0 / np.sqrt(venv.ret_rms.var + 1e-8))
    seen = np.concatenate(seen[50:])
    assert np.all(np.abs(seen.mean(0)) < 0.5) and np.all(np.abs(seen.std(0) - 1) < 0.5)
    assert all(float(r).is_integer() for r in venv.stats.returns)  # raw CartPole returns


def test_shared_network_shares_one_body():
    env = gym.make("CartPole-v1")
    ac = ActorCritic(env.observation_space, env.action_space, shared=True)
    body_actor, body_critic = ac.actor.logits[0], ac.critic[0]
    assert body_actor is body_critic
    n_separate = sum(p.numel() for p in ActorCritic(env.observation_space, env.action_space).parameters())
    n_shared = sum(p.numel() for p in ac.parameters())
    assert n_shared == n_separate - (4 * 64 + 64 + 64 * 64 + 64)  # one body fewer
    with pytest.raises(ValueError, match="shared=True"):
        ActorCritic(env.observation_space, env.action_space, shared=True, critic=False)


def test_orthogonal_init_can_be_switched_off():
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    head = ActorCritic(env.observation_space, env.action_space, ortho_init=False).actor.logits[-1]
    assert head.bias.abs().sum() > 0  # PyTorch's default init, not zeros
    torch.manual_seed(0)
    head = ActorCritic(env.observation_space, env.action_space).actor.logits[-1]
    assert head.bias.abs().sum() == 0


def test_truncation_as_termination_only_changes_truncated_steps():
    venv = VecEnv("CartPole-v1", num_envs=4, seed=0, max_episode_steps=10)
    agent = ActorCritic(venv.single_observation_space, venv.single_action_space)
    batch, _ = collect_rollout(venv, agent, 25, venv.reset())
    right, _ = rollout_advantages(batch, 0.99, 0.0)
    wrong, _ = rollout_advantages(batch, 0.99, 0.0, truncation_as_termination=True)
    trunc = batch.truncated
    assert trunc.any()
    assert torch.allclose(right[~trunc], wrong[~trunc])
    # lambda = 0: the difference is exactly gamma * V(final obs) at truncated steps
    assert torch.allclose((right - wrong)[trunc], 0.99 * batch.final_values[trunc], atol=1e-6)


def test_ppo_with_every_detail_switched_trains_and_evaluates_with_its_statistics(tmp_path):
    env = gym.make("Pendulum-v1")
    config = PPOConfig(num_envs=2, rollout_steps=64, minibatch_size=64, epochs=2, normalize_obs=True,
                       scale_rewards=True, shared_network=True, clip_value=True, ortho_init=False,
                       bootstrap_truncation=False)
    algo = PPO(env.observation_space, env.action_space, config)
    result = train(algo, "Pendulum-v1", 1024, progress=False)
    assert algo.policy.obs_rms is not None and algo.policy.obs_rms.count > 1000
    assert all(np.isfinite(v) for v in result.history.diagnostics["kl"])
    scores = evaluate(algo.policy, "Pendulum-v1", episodes=2)
    path = save_agent(tmp_path / "agent.pt", algo.policy, result.history)
    loaded, _ = load_agent(path)
    np.testing.assert_allclose(loaded.obs_rms.mean, algo.policy.obs_rms.mean)
    assert evaluate(loaded, "Pendulum-v1", episodes=2) == pytest.approx(scores)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=64), "hidden=64: must be a tuple"),
    (dict(hidden=(64, 0)), "hidden=\\(64, 0\\)"),
    (dict(variant="penalty", beta=0.0), "beta=0: with variant='penalty'"),
    (dict(entropy_coef=float("inf")), "entropy_coef=inf: must be finite"),
    (dict(epochs=2.5), "epochs=2.5: must be a whole number"),
])
def test_more_bad_configs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**kwargs)


def test_whole_number_types_are_accepted_and_normalised():
    c = PPOConfig(epochs=np.int64(3), minibatch_size=32.0, hidden=[32, 32])
    assert c.epochs == 3 and c.minibatch_size == 32 and isinstance(c.minibatch_size, int)
    assert c.hidden == (32, 32)


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_bad_time_limits_are_rejected(steps):
    with pytest.raises(ValueError, match="max_episode_steps"):
        VecEnv("CartPole-v1", 2, max_episode_steps=steps)


def test_ppo_on_a_batch_smaller_than_a_minibatch_says_so():
    env = gym.make("CartPole-v1")
    algo = PPO(env.observation_space, env.action_space, PPOConfig(num_envs=4, rollout_steps=32, minibatch_size=128))
    with pytest.raises(ValueError, match="fewer than minibatch_size=128"):
        train(algo, VecEnv("CartPole-v1", 1, seed=0), 64, progress=False)


def test_history_keeps_diagnostics_aligned_with_updates():
    from ppo_lib.train import History

    h = History()
    h.record_update(10, {"a": 1.0})
    h.record_update(20, {"skipped": 1.0})
    h.record_update(30, {"a": 3.0, "skipped": 0.0})
    assert h.diagnostics["a"][0] == 1.0 and np.isnan(h.diagnostics["a"][1]) and h.diagnostics["a"][2] == 3.0
    assert np.isnan(h.diagnostics["skipped"][0])
    assert all(len(v) == len(h.update_steps) for v in h.diagnostics.values())


def test_history_diagnostics_keep_the_order_they_first_appear_in_whatever_the_hash_seed():
    import subprocess
    import sys

    code = ("from ppo_lib.train import History; h = History(); "
            "h.record_update(1, {'policy_loss': 0.0, 'value_loss': 0.0, 'kl': 0.0}); "
            "h.record_update(2, {'entropy': 0.0, 'kl': 0.0, 'clip_fraction': 0.0, 'explained_variance': 0.0}); "
            "print(','.join(h.diagnostics))")
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in range(4)}
    assert orders == {"policy_loss,value_loss,kl,entropy,clip_fraction,explained_variance"}


def test_training_again_keeps_the_observation_statistics():
    env = gym.make("Pendulum-v1")
    algo = PPO(env.observation_space, env.action_space,
               PPOConfig(num_envs=2, rollout_steps=64, minibatch_size=64, epochs=1, normalize_obs=True))
    train(algo, "Pendulum-v1", 256, progress=False)
    rms, count = algo.policy.obs_rms, algo.policy.obs_rms.count
    train(algo, "Pendulum-v1", 256, progress=False)
    assert algo.policy.obs_rms is rms and rms.count > count
