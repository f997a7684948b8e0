"""Algorithms (ppo_lib.algos), their configs (ppo_lib.config) and the training loop,
History, saving and loading (ppo_lib.train)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_lib.advantages import complete_episode_mask, reward_to_go, rollout_advantages
from ppo_lib.algos import A2C, REINFORCE, A2CConfig, ReinforceConfig
from ppo_lib.envs import VecEnv
from ppo_lib.losses import normalize
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.train import History, TrainingDiverged, evaluate, load_agent, save_agent, train

CARTPOLE = gym.make("CartPole-v1")
PENDULUM = gym.make("Pendulum-v1")


def a2c(env=CARTPOLE, seed=0, **kw):
    return A2C(env.observation_space, env.action_space, A2CConfig(**kw), seed=seed)


def reinforce(env=CARTPOLE, seed=0, **kw):
    return REINFORCE(env.observation_space, env.action_space, ReinforceConfig(**kw), seed=seed)


# --------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------

UNIT = r"\[0, 1\]"
LR = r"\(0, 1\]"
NONNEG = r"\[0, inf\)"
POS_INT = r"\[1, inf\)"

BAD_VALUES = [
    ("gamma", 1.5, UNIT), ("gamma", -0.01, UNIT), ("gamma", math.nan, UNIT),
    ("lr", 0, LR), ("lr", -1e-3, LR), ("lr", 2.0, LR),
    ("rollout_steps", 0, POS_INT), ("num_envs", 0, POS_INT), ("num_envs", -3, POS_INT),
    ("value_coef", -0.5, NONNEG), ("max_grad_norm", -1.0, NONNEG),
]
A2C_ONLY = [("gae_lambda", -0.1, UNIT), ("gae_lambda", 1.1, UNIT), ("entropy_coef", -0.01, NONNEG)]


@pytest.mark.parametrize("cls,field,value,interval",
                         [(A2CConfig, *b) for b in BAD_VALUES + A2C_ONLY] +
                         [(ReinforceConfig, *b) for b in BAD_VALUES])
def test_configs_reject_out_of_range_values_naming_field_value_and_range(cls, field, value, interval):
    with pytest.raises(ValueError, match=rf"^{field}={value!r}: must be in {interval}$"):
        cls(**{field: value})


@pytest.mark.parametrize("cls", [A2CConfig, ReinforceConfig])
def test_configs_reject_non_numbers_and_fractional_counts(cls):
    with pytest.raises(ValueError, match=r"rollout_steps=2.5: must be a whole number"):
        cls(rollout_steps=2.5)
    with pytest.raises(TypeError, match=r"gamma='0.9': must be a number"):
        cls(gamma="0.9")
    with pytest.raises(TypeError, match=r"num_envs=True: must be a number"):
        cls(num_envs=True)


def test_configs_accept_the_edges_of_their_ranges():
    A2CConfig(gamma=0.0, gae_lambda=0.0, lr=1.0, rollout_steps=1, num_envs=1, value_coef=0.0,
              entropy_coef=0.0, max_grad_norm=0.0)
    A2CConfig(gamma=1.0, gae_lambda=1.0)
    ReinforceConfig(gamma=1.0, lr=1.0, rollout_steps=1, num_envs=1, max_grad_norm=0.0)


# --------------------------------------------------------------------------
# Learning tests: CartPole-v1, seed 0, mean return over 20 episodes >= 195
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [reinforce, a2c], ids=["REINFORCE", "A2C"])
def test_solves_cartpole_within_100k_steps(make):
    algo = make()
    result = train(algo, "CartPole-v1", 100_000, seed=0, progress=False, stop_at=195)
    h = result.history
    reached = h.first_step_reaching(195)
    assert reached is not None and reached <= 100_000, (
        f"best mean return {max(h.smoothed_returns(20), default=0):.1f}")
    # stop_at stops the run right after the update in which the threshold was reached
    assert h.total_steps - reached < algo.rollout_steps * algo.config.num_envs
    assert not h.interrupted


# --------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------


def test_train_bookkeeping_matches_the_env():
    algo = a2c()  # T = 5, N = 8: 40 env steps per update
    venv = VecEnv("CartPole-v1", num_envs=8, seed=0)
    result = train(algo, venv, 1001, seed=0, progress=False)
    h = result.history
    assert result.agent is algo.policy and result.algo is algo
    assert h.total_steps == 1040 and algo.n_updates == 26   # the last update completes its rollout
    assert h.update_steps == list(range(40, 1041, 40))
    assert h.episode_returns == venv.stats.returns and h.episode_lengths == venv.stats.lengths
    assert h.episode_returns == [float(n) for n in h.episode_lengths]  # CartPole: reward 1 per step
    assert h.episode_steps == venv.stats.steps
    assert all(0 < s <= h.total_steps for s in h.episode_steps)
    assert {"policy_loss", "value_loss", "entropy", "grad_norm"} <= set(h.diagnostics)
    assert all(len(v) == 26 for v in h.diagnostics.values())
    assert not h.interrupted and h.wall_time > 0


def test_keyboard_interrupt_returns_the_agent_and_the_history_so_far():
    algo = a2c()
    venv = VecEnv("CartPole-v1", num_envs=8, seed=0)
    seen = []

    def callback(history):
        seen.append(len(history.update_steps))
        if len(seen) == 10:
            raise KeyboardInterrupt  # what JupyterLab's stop button does

    result = train(algo, venv, 100_000, progress=False, callback=callback)
    h = result.history
    assert h.interrupted is True  # the flag lives on the History of the TrainResult
    assert seen == list(range(1, 11))
    assert len(h.update_steps) == 10 and h.total_steps == 400
    assert len(h.episode_returns) >= 5
    assert h.episode_returns == venv.stats.returns and h.episode_lengths == venv.stats.lengths
    assert result.agent is algo.policy


def test_non_finite_diagnostic_raises_training_diverged_naming_the_update(monkeypatch):
    algo = a2c()
    original = algo.update

    def update(rollout):
        info = original(rollout)
        if algo.n_updates == 3:
            info["policy_loss"] = math.nan
        return info

    monkeypatch.setattr(algo, "update", update)
    with pytest.raises(TrainingDiverged, match=r"^update 3 at env step 120: non-finite \['policy_loss'\]"):
        train(algo, "CartPole-v1", 10_000, progress=False)
    assert issubclass(TrainingDiverged, FloatingPointError)


def test_a_huge_learning_rate_raises_training_diverged():
    algo = a2c()
    for group in algo.optimizer.param_groups:  # beyond what A2CConfig allows
        group["lr"] = 1e30
    with pytest.raises(TrainingDiverged, match=r"^update \d+ at env step \d+: non-finite"):
        train(algo, "CartPole-v1", 10_000, progress=False)


def test_a_huge_learning_rate_raises_training_diverged_for_a_gaussian_policy():
    algo = a2c(PENDULUM)
    for group in algo.optimizer.param_groups:
        group["lr"] = 1e30
    with pytest.raises(TrainingDiverged, match=r"update \d+"):
        train(algo, "Pendulum-v1", 10_000, progress=False)


def test_train_rejects_an_env_whose_spaces_do_not_match():
    with pytest.raises(ValueError, match=r"built for observation space Box.*action space Discrete\(2\).*"
                                         r"environment Pendulum-v1 has Box"):
        train(a2c(), "Pendulum-v1", 100, progress=False)
    three_obs = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    algo = A2C(three_obs, gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="environment CartPole-v1 has Box"):
        train(algo, "CartPole-v1", 100, progress=False)
    algo = A2C(CARTPOLE.observation_space, gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match=r"action space Discrete\(3\)"):
        train(algo, "CartPole-v1", 100, progress=False)


def test_train_rejects_a_non_positive_step_budget():
    with pytest.raises(ValueError, match="total_steps=0"):
        train(a2c(), "CartPole-v1", 0, progress=False)


@pytest.mark.parametrize("make", [lambda seed: a2c(seed=seed),
                                  lambda seed: reinforce(seed=seed, rollout_steps=100)],
                         ids=["A2C", "REINFORCE"])
def test_same_seed_same_training_history(make):
    def run(seed):
        return train(make(seed), "CartPole-v1", 2000, seed=seed, progress=False).history

    a, b, c = run(0), run(0), run(1)
    assert len(a.episode_returns) > 10
    assert a.episode_returns == b.episode_returns
    assert a.episode_steps == b.episode_steps
    assert a.diagnostics == b.diagnostics
    assert a.episode_returns != c.episode_returns


def test_train_seeds_everything_itself():
    """What ran between building the algorithm and training (other cells of a notebook
    drawing random numbers) does not change a run: train(seed=...) fixes it."""
    def run(draws):
        algo = a2c(seed=0)
        torch.rand(draws), np.random.rand(draws)
        return train(algo, "CartPole-v1", 1000, seed=0, progress=False).history

    a, b = run(1), run(7)
    assert a.episode_returns == b.episode_returns and a.diagnostics == b.diagnostics


def test_episode_steps_count_from_the_start_of_training():
    venv = VecEnv("CartPole-v1", num_envs=8, seed=0)
    venv.reset()
    for _ in range(3):  # 24 env steps before training (no CartPole episode ends that fast)
        venv.step(np.zeros(8, np.int64))
    assert venv.total_steps == 24 and venv.stats.steps == []
    h = train(a2c(), venv, 400, progress=False).history
    assert h.total_steps == 400 and h.update_steps[-1] == 400
    assert h.episode_steps == [s - 24 for s in venv.stats.steps]
    assert all(0 < s <= 400 for s in h.episode_steps)


def test_training_twice_on_the_same_vecenv_records_only_new_episodes():
    venv = VecEnv("CartPole-v1", num_envs=8, seed=0)
    algo = a2c()
    first = train(algo, venv, 400, progress=False).history
    second = train(algo, venv, 400, progress=False).history
    assert len(first.episode_returns) + len(second.episode_returns) == len(venv.stats.returns)
    assert all(0 < s <= second.total_steps for s in second.episode_steps)


def test_evaluate_runs_whole_episodes():
    torch.manual_seed(0)
    policy = ActorCritic(CARTPOLE.observation_space, CARTPOLE.action_space)
    returns = evaluate(policy, "CartPole-v1", episodes=3, seed=5)
    assert len(returns) == 3 and all(r >= 1 and r == int(r) for r in returns)
    assert evaluate(policy, "CartPole-v1", episodes=3, seed=5) == returns  # greedy: deterministic


# --------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------


def test_history_smoothing_and_first_step_reaching_by_hand():
    h = History(episode_returns=[1.0, 2.0, 3.0, 4.0, 5.0], episode_steps=[10, 20, 30, 40, 50])
    np.testing.assert_allclose(h.smoothed_returns(3), [1.0, 1.5, 2.0, 3.0, 4.0])
    assert h.first_step_reaching(3.0, window=3) == 40
    assert h.first_step_reaching(1.5, window=3) == 30  # not 20: the window must be full first
    assert h.first_step_reaching(4.5, window=3) is None
    assert h.first_step_reaching(1.0, window=6) is None  # fewer episodes than the window
    assert History().first_step_reaching(0.0) is None
    assert History.from_dict(h.to_dict()) == h


# --------------------------------------------------------------------------
# Updates: the losses are wired to the right advantages
# --------------------------------------------------------------------------


def _counter_rollout(policy, T, limit=4, N=3):
    from tests.test_envs_rollout import counter_env

    venv = VecEnv(counter_env, num_envs=N, seed=0, max_episode_steps=limit)
    torch.manual_seed(0)
    rollout, _ = collect_rollout(venv, policy, T, venv.reset())
    return rollout


def test_a2c_update_uses_gae_targets_with_truncation_bootstrap():
    from tests.test_envs_rollout import CounterEnv

    env = CounterEnv()
    algo = A2C(env.observation_space, env.action_space, A2CConfig(gamma=0.9, gae_lambda=0.8, entropy_coef=0.01))
    rollout = _counter_rollout(algo.policy, T=12)
    assert rollout.truncated.any() and rollout.terminated.any()
    adv, targets = rollout_advantages(rollout, 0.9, 0.8)
    with torch.no_grad():
        logp, ent, values = algo.policy.evaluate(rollout.obs, rollout.actions)
    before = [p.detach().clone() for p in algo.policy.parameters()]
    info = algo.update(rollout)
    assert info["policy_loss"] == pytest.approx(-(logp * adv).mean().item(), rel=1e-5, abs=1e-6)
    assert info["value_loss"] == pytest.approx(0.5 * (values - targets).pow(2).mean().item(), rel=1e-5)
    assert info["entropy"] == pytest.approx(ent.mean().item(), rel=1e-5)
    assert algo.n_updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))


def test_reinforce_update_uses_only_complete_episodes():
    from tests.test_envs_rollout import CounterEnv

    env = CounterEnv()
    algo = REINFORCE(env.observation_space, env.action_space, ReinforceConfig(gamma=0.9))
    # T = 2 < the shortest episode (3 steps): nothing completes, the update is skipped
    rollout = _counter_rollout(algo.policy, T=2, limit=10)
    before = [p.detach().clone() for p in algo.policy.parameters()]
    with pytest.warns(RuntimeWarning, match="skipped an update"):
        assert algo.update(rollout) == {"skipped": 1.0, "used_steps": 0.0}
    assert all(torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))
    assert algo.n_updates == 0
    # a longer batch: the loss uses exactly the steps of finished episodes
    rollout = _counter_rollout(algo.policy, T=15)
    mask = complete_episode_mask(rollout.dones)
    assert 0 < mask.sum() < mask.numel()
    G = reward_to_go(rollout.rewards, rollout.dones, 0.9)[mask]
    with torch.no_grad():
        logp, _, _ = algo.policy.evaluate(rollout.obs[mask], rollout.actions[mask])
    info = algo.update(rollout)
    assert info["used_steps"] == mask.sum().item() and info["skipped"] == 0.0
    assert info["policy_loss"] == pytest.approx(-(logp * normalize(G)).mean().item(), rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------


def _perturbed_policy(obs_space, act_space, hidden, critic=True):
    torch.manual_seed(0)
    policy = ActorCritic(obs_space, act_space, hidden=hidden, critic=critic)
    with torch.no_grad():  # move every weight away from a fresh initialisation
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("obs_space,act_space,hidden,critic", [
    (CARTPOLE.observation_space, CARTPOLE.action_space, (64, 64), True),
    (PENDULUM.observation_space, PENDULUM.action_space, (32, 16), True),
    (gym.spaces.Box(-1.0, 1.0, (5,), np.float32), gym.spaces.Box(-1.0, 2.0, (3,), np.float32), (8,), True),
    (CARTPOLE.observation_space, CARTPOLE.action_space, (16,), False),
], ids=["discrete", "continuous", "continuous-3d", "no-critic"])
def test_save_load_round_trip(tmp_path, obs_space, act_space, hidden, critic):
    policy = _perturbed_policy(obs_space, act_space, hidden, critic)
    history = History(episode_returns=[1.0, 2.5], episode_lengths=[1, 3], episode_steps=[4, 8],
                      update_steps=[8], diagnostics={"policy_loss": [0.25]}, total_steps=8, interrupted=True)
    path = save_agent(tmp_path / "sub" / "agent.pt", policy, history)
    assert path.exists()
    raw = torch.load(path, weights_only=True)  # only tensors and plain containers: no code runs
    assert set(raw) == {"meta", "state_dict", "history"}

    loaded, loaded_history = load_agent(path)
    assert loaded_history == history
    assert loaded.action_space == act_space
    assert loaded.observation_space.shape == obs_space.shape
    assert loaded.continuous == policy.continuous and (loaded.critic is None) == (not critic)
    sd, lsd = policy.state_dict(), loaded.state_dict()
    assert sd.keys() == lsd.keys() and all(torch.equal(sd[k], lsd[k]) for k in sd)

    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(64)]).clip(-5, 5), dtype=torch.float32)
    torch.manual_seed(123)
    a1, lp1, v1 = policy.act(obs)
    torch.manual_seed(123)
    a2, lp2, v2 = loaded.act(obs)
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2) and torch.equal(v1, v2)
    assert torch.equal(policy.greedy(obs), loaded.greedy(obs))
    np.testing.assert_array_equal(policy.env_actions(a1), loaded.env_actions(a2))


def test_a_loaded_agent_can_be_trained_on_its_env_again(tmp_path):
    algo = a2c(PENDULUM)
    path = save_agent(tmp_path / "agent.pt", algo.policy)
    policy, history = load_agent(path)
    assert history is None
    venv = VecEnv("Pendulum-v1", num_envs=2)
    assert venv.single_action_space == policy.action_space  # what train() compares
    algo.policy = policy
    algo.optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    assert train(algo, venv, 20, progress=False).history.total_steps == 20


# --------------------------------------------------------------------------
# The shared losses the two algorithms use
# --------------------------------------------------------------------------


def test_normalize_never_divides_by_the_std_of_one_element():
    assert torch.equal(normalize(torch.tensor([5.0])), torch.tensor([0.0]))
    assert normalize(torch.tensor([])).numel() == 0
    x = normalize(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert x.mean().item() == pytest.approx(0.0, abs=1e-6) and x.std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.isfinite(normalize(torch.tensor([2.0, 2.0]))).all()  # zero std: eps, not nan


def test_losses_detach_their_weights_and_targets_and_check_shapes():
    from ppo_lib.losses import policy_gradient_loss, value_loss

    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    w = torch.tensor([3.0, -1.0], requires_grad=True)
    loss = policy_gradient_loss(logp, w)
    assert loss.item() == pytest.approx(-(-3.0 + 2.0) / 2)
    loss.backward()
    assert torch.equal(logp.grad, torch.tensor([-1.5, 0.5])) and w.grad is None
    v = torch.tensor([1.0, 3.0], requires_grad=True)
    y = torch.tensor([0.0, 0.0], requires_grad=True)
    vl = value_loss(v, y)
    assert vl.item() == pytest.approx(0.5 * (1 + 9) / 2)
    vl.backward()
    assert torch.equal(v.grad, torch.tensor([0.5, 1.5])) and y.grad is None
    with pytest.raises(ValueError, match="differ in shape"):
        policy_gradient_loss(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="differ in shape"):
        value_loss(torch.zeros(3), torch.zeros(1, 3))
