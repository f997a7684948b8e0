"""Misuse of the RL library, tried as a learner would, the way Stable-Baselines3 checks its arguments.

Three classes, as in the issue:

- ``LOST``: nothing the learner had is lost -- the error carries the run so far, or
  the file on disk is untouched;
- ``SILENT``: nothing hangs or is silently wrong -- a clear error or a warning instead;
- ``MESSAGE``: every error names the argument, its value and what is allowed.

Each case asserts the exception (or warning) type and the phrases its message must hold.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_lib.advantages import discount_weights, discounted_return, gae
from ppo_lib.algos import A2C, A2CConfig, PPO, PPOConfig, REINFORCE, ReinforceConfig
from ppo_lib.envs import VecEnv
from ppo_lib.losses import approx_kl, clipped_surrogate, clipped_value_loss, kl_penalty_surrogate, value_loss
from ppo_lib.normalization import NormalizedVecEnv, RunningMeanStd
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.train import History, TrainingDiverged, TrainResult, evaluate, load_agent, save_agent, train

BOX2 = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
CARTPOLE_OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
SMALL = dict(rollout_steps=8, num_envs=2, minibatch_size=8, epochs=1)


class ToyEnv(gym.Env):
    """A 2-D observation, two actions, episodes of 5 steps; ``fault`` breaks it on purpose."""

    observation_space = BOX2
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fault: str | None = None, fault_at: int = 0, reward: float = 1.0, length: int = 5):
        self.fault, self.fault_at, self.reward, self.length = fault, fault_at, reward, length
        self.t = self.calls = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.calls += 1
        obs = np.array([self.t, 1.0], np.float32)
        broken = self.calls > self.fault_at
        if broken and self.fault == "raise":
            raise RuntimeError("the custom env broke")
        if broken and self.fault == "nan":
            obs[0] = np.nan
        if broken and self.fault == "shape":
            obs = np.zeros(3, np.float32)
        if broken and self.fault == "gym4":
            return obs, self.reward, self.t >= self.length, {}
        return obs, self.reward, self.t >= self.length, False, {}


def toy(**kw) -> Callable[[], gym.Env]:
    def make():
        return ToyEnv(**kw)
    return make


def ppo_for_toy(**kw) -> PPO:
    return PPO(BOX2, gym.spaces.Discrete(2), PPOConfig(**{**SMALL, **kw}))


@dataclasses.dataclass
class Case:
    kind: str                        # LOST, SILENT or MESSAGE
    name: str
    run: Callable[[], object]
    exc: type
    phrases: tuple[str, ...]         # each must appear in the message

    def __str__(self):
        return self.name


def _raises(case: Case) -> str:
    with pytest.raises(case.exc) as info:
        case.run()
    msg = str(info.value)
    for phrase in case.phrases:
        assert phrase in msg, f"{case.name}: {phrase!r} not in {msg!r}"
    assert "weights_only" not in msg
    return msg


# --------------------------------------------------------------------------
# Nothing hangs, nothing is silently wrong (clear errors)
# --------------------------------------------------------------------------

def _callback_returning_a_list():
    train(ppo_for_toy(), toy(), 64, progress=False, callback=lambda h: [])


def _evaluate_where_no_episode_ends():
    algo = PPO(CARTPOLE_OBS, gym.spaces.Discrete(2), PPOConfig(**SMALL))
    evaluate(algo.policy, "CartPole-v1", episodes=2, max_steps=3)


def _reinforce_that_cannot_finish_an_episode():
    algo = REINFORCE(BOX2, gym.spaces.Discrete(2), ReinforceConfig(rollout_steps=3, num_envs=1))
    train(algo, toy(length=10), 3, progress=False)


def _rms_single_obs_then_nan():
    rms = RunningMeanStd((3,))
    rms.update(np.array([1.0, 2.0, 3.0]))  # one observation, not three scalars
    assert rms.mean.shape == (3,) and np.allclose(rms.mean, [1, 2, 3], atol=1e-3)
    before = (rms.mean.copy(), rms.var.copy(), rms.count)
    try:
        rms.update(np.array([[1.0, np.nan, 0.0]]))
    finally:  # the NaN never got in
        assert np.array_equal(rms.mean, before[0]) and np.array_equal(rms.var, before[1]) and rms.count == before[2]


def _discrete_with_start():
    class StartEnv(ToyEnv):
        action_space = gym.spaces.Discrete(3, start=-1)
        seen: list = []

        def step(self, action):
            assert self.action_space.contains(np.int64(action)), f"invalid action {action}"
            StartEnv.seen.append(int(action))
            return super().step(0)

    algo = PPO(BOX2, StartEnv.action_space, PPOConfig(**SMALL))
    train(algo, StartEnv, 64, progress=False)
    assert set(StartEnv.seen) <= {-1, 0, 1} and -1 in StartEnv.seen
    raise LookupError("all actions were in Discrete(3, start=-1)")  # reaching here is the pass


SILENT_CASES = [
    Case("SILENT", "total_steps smaller than one rollout",
         lambda: train(PPO(BOX2, gym.spaces.Discrete(2), PPOConfig(rollout_steps=10**6, minibatch_size=8)),
                       toy(), 100, progress=False),
         ValueError, ("total_steps=100", "rollout_steps=1000000", "total_steps >= 1000000")),
    Case("SILENT", "a flag given as a string", lambda: PPOConfig(normalize_obs="False"),
         TypeError, ("normalize_obs='False'", "True or False")),
    Case("SILENT", "total_steps=nan", lambda: train(ppo_for_toy(), toy(), float("nan"), progress=False),
         ValueError, ("total_steps=nan", "whole number", "[1, inf)")),
    Case("SILENT", "total_steps=True", lambda: train(ppo_for_toy(), toy(), True, progress=False),
         TypeError, ("total_steps=True", "[1, inf)")),
    Case("SILENT", "Discrete(n, start=-1) actions stay valid", _discrete_with_start,
         LookupError, ("start=-1",)),
    Case("SILENT", "MultiDiscrete actions", lambda: PPO(BOX2, gym.spaces.MultiDiscrete([2, 3])),
         TypeError, ("action_space", "MultiDiscrete", "Discrete(n) or a 1-D Box")),
    Case("SILENT", "Dict observations",
         lambda: PPO(gym.spaces.Dict({"a": BOX2}), gym.spaces.Discrete(2)),
         TypeError, ("observation_space", "Dict", "1-D Box", "FlattenObservation")),
    Case("SILENT", "image observations",
         lambda: PPO(gym.spaces.Box(0, 255, (84, 84, 3), np.uint8), gym.spaces.Discrete(2)),
         TypeError, ("observation_space", "image", "(84, 84, 3)", "1-D Box")),
    Case("SILENT", "a callback returning a list", _callback_returning_a_list,
         TypeError, ("callback returned []", "True to stop, False or None")),
    Case("SILENT", "evaluate where no episode ends", _evaluate_where_no_episode_ends,
         RuntimeError, ("max_steps=3", "no episode")),
    Case("SILENT", "REINFORCE that skips every update", _reinforce_that_cannot_finish_an_episode,
         RuntimeWarning, ("skipped an update", "rollout_steps=3")),
    Case("SILENT", "NaN values into GAE",
         lambda: gae([1.0, 1.0], [0.0, float("nan")], [0.0, 0.0], [False, False], 0.99, 0.95),
         ValueError, ("values", "nan", "finite")),
    Case("SILENT", "NaN into the value loss",
         lambda: value_loss(torch.tensor([1.0, float("nan")]), torch.zeros(2)),
         ValueError, ("values", "nan", "finite")),
    Case("SILENT", "NaN into the KL penalty",
         lambda: kl_penalty_surrogate(torch.ones(2), torch.ones(2), torch.tensor([0.0, float("inf")]), 1.0),
         ValueError, ("kl", "inf", "finite")),
    Case("SILENT", "an empty tensor into a loss", lambda: value_loss(torch.zeros(0), torch.zeros(0)),
         ValueError, ("values", "empty", "at least one element")),
    Case("SILENT", "a negative clip range in the value loss",
         lambda: clipped_value_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), -0.2),
         ValueError, ("clip_eps=-0.2", "[0, inf)")),
    Case("SILENT", "approx_kl with (4,) against (4, 1)", lambda: approx_kl(torch.zeros(4), torch.zeros(4, 1)),
         ValueError, ("logp_old (4,)", "logp_new (4, 1)", "same shape")),
    Case("SILENT", "NaN observation into RunningMeanStd (single obs read as one)", _rms_single_obs_then_nan,
         ValueError, ("batch", "nan", "finite")),
    Case("SILENT", "reward_gamma > 1",
         lambda: NormalizedVecEnv(VecEnv(toy()), reward_gamma=1.5), ValueError, ("reward_gamma=1.5", "[0, 1]")),
    Case("SILENT", "a fractional horizon", lambda: discount_weights(0.9, 2.5),
         ValueError, ("horizon=2.5", "whole number", "[0, inf)")),
    Case("SILENT", "gamma_widget outside its slider", lambda: __import__("ppo_lib.teaching.widgets").teaching.widgets.gamma_widget(1.5),
         ValueError, ("gamma=1.5", "[0, 1]")),
    Case("SILENT", "clip_widget outside its slider", lambda: __import__("ppo_lib.teaching.widgets").teaching.widgets.clip_widget(0.9),
         ValueError, ("eps=0.9", "[0.05, 0.5]")),
]


def _ignored_setting_warns():
    with pytest.warns(UserWarning, match=r"beta=0\.5.*ignored with variant='clip'"):
        PPOConfig(beta=0.5)
    with pytest.warns(UserWarning, match=r"value_coef=1\.0.*baseline=False"):
        ReinforceConfig(value_coef=1.0)
    with warnings.catch_warnings():  # the defaults and the chapters' presets stay quiet
        warnings.simplefilter("error")
        PPOConfig()
        PPOConfig(variant="penalty", beta=3.0)
        ReinforceConfig(baseline=True, value_coef=1.0)


# --------------------------------------------------------------------------
# Every error names the argument, its value and what is allowed
# --------------------------------------------------------------------------

def _config_changed_after_construction():
    config = PPOConfig(**SMALL)
    try:
        config.gamma = 1.5
    finally:
        assert config.gamma == 0.99  # the config stays valid


def _hidden_changed_after_the_algorithm_was_built():
    algo = ppo_for_toy()
    algo.config.hidden = (8,)
    train(algo, toy(), 64, progress=False)


def _policy_on_other_spaces():
    algo = PPO(CARTPOLE_OBS, gym.spaces.Discrete(2), PPOConfig(**SMALL))
    evaluate(algo.policy, "Pendulum-v1", episodes=1)


def _checkpoint_metadata_mismatch(tmp):
    algo = ppo_for_toy()
    path = save_agent(tmp / "agent.pt", algo.policy)
    data = torch.load(path, weights_only=True)
    data["meta"]["hidden"] = [32]
    del data["meta"]["checksum"]
    torch.save(data, path)
    load_agent(path)


def _unwritable_path(tmp):
    (tmp / "a_file").write_text("x")
    save_agent(tmp / "a_file" / "agent.pt", ppo_for_toy().policy)


def _trained(tmp=None) -> TrainResult:
    return train(ppo_for_toy(), toy(), 16, progress=False)


def _diverging_rewards():
    train(PPO(BOX2, gym.spaces.Discrete(2), PPOConfig(**SMALL)), toy(reward=1e30), 400, progress=False)


MESSAGE_CASES = [
    Case("MESSAGE", "invalid seed for train", lambda: train(ppo_for_toy(), toy(), 16, seed=-1, progress=False),
         ValueError, ("seed=-1", "[0, 4.29497e+09]")),
    Case("MESSAGE", "invalid seed for an algorithm", lambda: PPO(BOX2, gym.spaces.Discrete(2), seed="0"),
         TypeError, ("seed='0'", "whole one")),
    Case("MESSAGE", "a layer size that cannot be allocated", lambda: PPOConfig(hidden=(10**9,)),
         ValueError, ("hidden=(1000000000,)", "at most 100000")),
    Case("MESSAGE", "a rollout that cannot be allocated",
         lambda: collect_rollout(VecEnv(toy()), ppo_for_toy().policy, 10**13, np.zeros((1, 2), np.float32)),
         MemoryError, ("rollout_steps=10000000000000", "num_envs=1", "lower rollout_steps")),
    Case("MESSAGE", "a config field changed after construction", _config_changed_after_construction,
         ValueError, ("gamma=1.5", "[0, 1]")),
    Case("MESSAGE", "hidden changed after the algorithm was built", _hidden_changed_after_the_algorithm_was_built,
         ValueError, ("hidden: (64, 64) -> (8,)", "build a new PPO")),
    Case("MESSAGE", "a custom env with NaN observations",
         lambda: train(ppo_for_toy(), toy(fault="nan", fault_at=3), 64, progress=False),
         ValueError, ("make", "non-finite observation", "finite numbers")),
    Case("MESSAGE", "a custom env with wrongly shaped observations",
         lambda: train(ppo_for_toy(), toy(fault="shape"), 64, progress=False),
         ValueError, ("shape (3,)", "has shape (2,)", "must agree")),
    Case("MESSAGE", "a custom env with the old gym 4-tuple step",
         lambda: train(ppo_for_toy(), toy(fault="gym4"), 64, progress=False),
         TypeError, ("4 values", "old gym API", "(obs, reward, terminated, truncated, info)")),
    Case("MESSAGE", "a factory returning something else", lambda: VecEnv(lambda: "CartPole-v1").reset(),
         TypeError, ("returned 'CartPole-v1'", "gymnasium.Env")),
    Case("MESSAGE", "an env object instead of a factory", lambda: VecEnv(ToyEnv()),
         TypeError, ("environment object", "lambda: MyEnv()")),
    Case("MESSAGE", "a policy acting on observations of the wrong size",
         lambda: ActorCritic(CARTPOLE_OBS, gym.spaces.Discrete(2)).act(np.zeros(3, np.float32)),
         ValueError, ("ActorCritic.act", "shape (3,)", "(batch, 4)")),
    Case("MESSAGE", "a policy given text as observations",
         lambda: ActorCritic(CARTPOLE_OBS, gym.spaces.Discrete(2)).greedy("obs"),
         TypeError, ("ActorCritic.greedy", "obs='obs'", "(batch, 4)")),
    Case("MESSAGE", "a policy evaluated on an env with other spaces", _policy_on_other_spaces,
         ValueError, ("policy", "Discrete(2)", "Pendulum-v1")),
    Case("MESSAGE", "the wrong number of actions for a VecEnv",
         lambda: (lambda v: (v.reset(), v.step(np.array([0, 1, 0]))))(VecEnv(toy(), num_envs=2)),
         ValueError, ("actions: 3 given", "num_envs=2")),
    Case("MESSAGE", "an unknown config field", lambda: PPOConfig(learning_rate=1e-3),
         TypeError, ("'learning_rate'", "Did you mean 'lr'", "Valid fields")),
    Case("MESSAGE", "an unknown field set after construction",
         lambda: setattr(A2CConfig(), "gama", 0.9), AttributeError, ("'gama'", "Did you mean 'gamma'")),
    Case("MESSAGE", "a wrong config class", lambda: PPO(BOX2, gym.spaces.Discrete(2), A2CConfig()),
         TypeError, ("A2CConfig", "expects a PPOConfig")),
    Case("MESSAGE", "a dict as config", lambda: A2C(BOX2, gym.spaces.Discrete(2), {"lr": 1e-3}),
         TypeError, ("dict", "A2CConfig(**your_dict)")),
    Case("MESSAGE", "swapped spaces", lambda: PPO(gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (3,))),
         TypeError, ("swap", "observation_space, action_space")),
    Case("MESSAGE", "an env id where a space belongs", lambda: PPO("CartPole-v1", gym.spaces.Discrete(2)),
         TypeError, ("observation_space='CartPole-v1'", "env.observation_space")),
    Case("MESSAGE", "TrainingDiverged names the likely setting", _diverging_rewards,
         TrainingDiverged, ("non-finite", "rewards are very large", "scale_rewards=True")),
    Case("MESSAGE", "a finite reward beyond float32",
         lambda: train(ppo_for_toy(), toy(reward=1e39), 64, progress=False),
         ValueError, ("1e+39", "float32", "scale")),
    Case("MESSAGE", "a string where a number belongs", lambda: PPOConfig(lr="3e-4"),
         TypeError, ("lr='3e-4'", "must be a number", "(0, 1]")),
    Case("MESSAGE", "window=0", lambda: History(episode_returns=[1.0]).smoothed_returns(window=0),
         ValueError, ("window=0", "[1, inf)")),
    Case("MESSAGE", "evaluate(episodes=0)", lambda: evaluate(_trained().agent, "CartPole-v1", episodes=0),
         ValueError, ("episodes=0", "[1, 100000]")),
    Case("MESSAGE", "a TrainResult where a policy belongs", lambda: evaluate(_trained(), "CartPole-v1"),
         TypeError, ("TrainResult", "pass `result.agent`")),
    Case("MESSAGE", "an algorithm where a policy belongs", lambda: evaluate(ppo_for_toy(), "CartPole-v1"),
         TypeError, ("PPO", "`algo.policy`")),
    Case("MESSAGE", "integer tensors into a loss", lambda: value_loss(torch.tensor([1, 2]), torch.tensor([1, 2])),
         TypeError, ("values", "torch.int64", "floating-point")),
    Case("MESSAGE", "a NumPy array into a loss",
         lambda: clipped_surrogate(np.ones(3), np.ones(3), 0.2), TypeError, ("ratio", "torch.Tensor")),
    Case("MESSAGE", "a string as gamma", lambda: discounted_return([1.0, 2.0], "0.9"),
         TypeError, ("gamma='0.9'", "[0, 1]")),
    Case("MESSAGE", "an invalid seed for a VecEnv", lambda: VecEnv(toy(), seed=2**40),
         ValueError, ("seed=1099511627776", "[0, 4.29497e+09]")),
    Case("MESSAGE", "a string as a VecEnv flag", lambda: VecEnv("CartPole-v1", vectorized="no"),
         TypeError, ("vectorized='no'", "None, True or False")),
    Case("MESSAGE", "a fractional count in a config", lambda: A2CConfig(rollout_steps=2.5),
         ValueError, ("rollout_steps=2.5", "whole number", "[1, inf)")),
    Case("MESSAGE", "an env id where run_episode wants an env",
         lambda: __import__("ppo_lib.teaching.animation").teaching.animation.run_episode("CartPole-v1"),
         TypeError, ("env='CartPole-v1'", "gymnasium.make('CartPole-v1')")),
    Case("MESSAGE", "a TrainResult as run_episode's policy",
         lambda: __import__("ppo_lib.teaching.animation").teaching.animation.run_episode(gym.make("CartPole-v1"), _trained()),
         TypeError, ("TrainResult", "result.agent", "obs -> action")),
    Case("MESSAGE", "a random walk with a probability above 1",
         lambda: __import__("ppo_lib.teaching.toy_problems").teaching.toy_problems.RandomWalk(p_right=1.5),
         ValueError, ("p_right=1.5", "[0, 1]")),
    Case("MESSAGE", "a History from a dict with unknown keys", lambda: History.from_dict({"returns": [1.0]}),
         ValueError, ("'returns'", "episode_returns")),
    Case("MESSAGE", "train given something that is not an algorithm",
         lambda: train(PPOConfig(), "CartPole-v1", 1000, progress=False),
         TypeError, ("algo", "PPO(env.observation_space, env.action_space)")),
    Case("MESSAGE", "an observation batch of the wrong size for a rollout",
         lambda: collect_rollout(VecEnv(toy(), num_envs=2), ppo_for_toy().policy, 4, np.zeros(2, np.float32)),
         ValueError, ("obs: shape (2,)", "(2, ...)", "num_envs=2")),
    Case("MESSAGE", "a widget value outside its options",
         lambda: __import__("ppo_lib.teaching.widgets").teaching.widgets.lambda_widget(lambda e: None, [0.5, 0.9], error=0.3),
         ValueError, ("error=0.3", "0.0, 0.25, 0.5, 0.75, 1.0")),
]

def _generate_with_a_pretrain_result():
    from ppo_lib.rlhf.model import GPT, GPTConfig, generate
    from ppo_lib.rlhf.pretrain import PretrainConfig, PretrainResult

    sft = PretrainResult(GPT(GPTConfig()), [], 0.0, False, PretrainConfig())
    generate(sft, "the food was")


def _train_ppo_with_a_dict():
    from ppo_lib.rlhf.ppo import train_ppo

    train_ppo(None, None, {"beta": 0.1})


RLHF_CASES = [
    Case("MESSAGE", "an unknown RLHF config field",
         lambda: __import__("ppo_lib.rlhf.ppo").rlhf.ppo.TokenPPOConfig(kl_coef=0.1),
         TypeError, ("'kl_coef'", "Valid fields", "beta")),
    Case("MESSAGE", "an RLHF config field changed to a bad value",
         lambda: setattr(__import__("ppo_lib.rlhf.grpo").rlhf.grpo.GRPOConfig(), "beta", -1.0),
         ValueError, ("beta=-1.0", "[0, inf)")),
    Case("MESSAGE", "a dict as train_ppo's config", _train_ppo_with_a_dict,
         TypeError, ("dict", "TokenPPOConfig(**your_dict)")),
    Case("MESSAGE", "a PretrainResult where generate wants a model", _generate_with_a_pretrain_result,
         TypeError, ("PretrainResult", "pass `result.model`")),
]
MESSAGE_CASES += RLHF_CASES

PATH_CASES = [
    Case("MESSAGE", "a checkpoint whose metadata does not match its weights", _checkpoint_metadata_mismatch,
         ValueError, ("agent.pt", "metadata does not match its weights")),
    Case("MESSAGE", "an unwritable save path", _unwritable_path, OSError, ("a_file", "save_agent", "writable")),
    Case("MESSAGE", "a directory as save path", lambda tmp: save_agent(tmp, ppo_for_toy().policy),
         IsADirectoryError, ("is a directory", "agent.pt")),
    Case("MESSAGE", "load_agent on a file that is not a checkpoint",
         lambda tmp: (tmp / "notes.txt").write_text("hello") and load_agent(tmp / "notes.txt"),
         ValueError, ("notes.txt", "not a ppo_lib checkpoint")),
]


@pytest.mark.parametrize("case", SILENT_CASES + MESSAGE_CASES, ids=str)
def test_misuse_gets_a_clear_error(case):
    if issubclass(case.exc, Warning):
        with pytest.warns(case.exc) as record:
            case.run()
        msg = " ".join(str(w.message) for w in record if issubclass(w.category, case.exc))
        for phrase in case.phrases:
            assert phrase in msg, f"{case.name}: {phrase!r} not in {msg!r}"
        return
    _raises(case)


@pytest.mark.parametrize("case", PATH_CASES, ids=str)
def test_misuse_of_paths_gets_a_clear_error(case, tmp_path):
    _raises(dataclasses.replace(case, run=lambda: case.run(tmp_path)))


def test_settings_the_variant_ignores_warn():
    _ignored_setting_warns()


# --------------------------------------------------------------------------
# Nothing is lost
# --------------------------------------------------------------------------

def _assert_partial(exc: BaseException, min_updates: int) -> TrainResult:
    result = exc.partial_result
    assert isinstance(result, TrainResult) and isinstance(result.agent, ActorCritic)
    assert len(result.history.update_steps) >= min_updates
    assert result.history.total_steps > 0 and result.history.episode_returns
    assert "partial_result" in "".join(getattr(exc, "__notes__", []))
    return result


def test_an_error_in_a_custom_env_keeps_every_finished_update():
    algo = ppo_for_toy()
    with pytest.raises(RuntimeError, match="the custom env broke") as info:
        train(algo, toy(fault="raise", fault_at=40), 400, progress=False)
    result = _assert_partial(info.value, 4)  # 2 envs x 40 steps = 80 steps = 5 rollouts of 16
    assert result.agent is algo.policy and len(result.history.update_steps) == 5


def test_an_error_in_a_callback_keeps_every_finished_update():
    def callback(history):
        if len(history.update_steps) == 3:
            raise KeyError("my callback broke")

    with pytest.raises(KeyError) as info:
        train(ppo_for_toy(), toy(), 400, progress=False, callback=callback)
    assert len(_assert_partial(info.value, 3).history.update_steps) == 3


def test_a_diverged_run_keeps_every_finished_update():
    with pytest.raises(TrainingDiverged) as info:
        _diverging_rewards()
    assert isinstance(info.value.partial_result, TrainResult)


def test_an_interrupted_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    result = _trained()
    path = save_agent(tmp_path / "agent.pt", result.agent, result.history)
    before = path.read_bytes()

    def interrupted(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_agent(path, result.agent, result.history)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt"]  # no temp file left behind
    policy, history = load_agent(path)
    assert history.update_steps == result.history.update_steps


def test_save_agent_refuses_to_overwrite_a_file_that_is_not_a_checkpoint(tmp_path):
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match=r"notes\.pt.*not a ppo_lib checkpoint.*another path"):
        save_agent(notes, ppo_for_toy().policy)
    assert notes.read_text() == "my notes"
    # its own checkpoints are replaced as before
    path = save_agent(tmp_path / "agent.pt", ppo_for_toy().policy)
    save_agent(path, ppo_for_toy().policy)


def test_a_corrupted_checkpoint_fails_to_load_with_a_clear_message(tmp_path):
    result = _trained()
    path = save_agent(tmp_path / "agent.pt", result.agent, result.history)
    data = bytearray(path.read_bytes())
    # flip bytes inside the weights' storage (the middle of the archive), not its zip structure
    i = data.find(b"data/0") + 200
    data[i:i + 8] = bytes(b ^ 0xFF for b in data[i:i + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as info:
        load_agent(path)
    msg = str(info.value)
    assert "agent.pt" in msg and ("corrupted" in msg or "not a ppo_lib checkpoint" in msg)
    assert "weights_only" not in msg
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a ppo_lib checkpoint"):
        load_agent(path)


def test_a_home_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = _trained()
    path = save_agent("~/agents/agent.pt", result.agent, result.history)
    assert path == tmp_path / "agents" / "agent.pt" and path.exists()
    assert not Path("~").exists()
    policy, history = load_agent("~/agents/agent.pt")
    assert history.update_steps == result.history.update_steps


def test_a_checkpoint_round_trips_a_discrete_start(tmp_path):
    space = gym.spaces.Discrete(3, start=-1)
    policy = ActorCritic(BOX2, space)
    loaded, _ = load_agent(save_agent(tmp_path / "a.pt", policy))
    assert loaded.action_space == space
    assert set(loaded.env_actions(torch.tensor([0, 1, 2])).tolist()) == {-1, 0, 1}


def test_a_policy_takes_the_env_s_numpy_observations_as_they_come():
    # what env.reset() returns (float64 from a list, float32 from gymnasium) acts like the same tensor
    policy = ActorCritic(CARTPOLE_OBS, gym.spaces.Discrete(2))
    obs = np.array([[0.1, -0.2, 0.03, 0.4], [0.0, 0.5, -0.1, 0.2]])
    as_tensor = torch.as_tensor(obs, dtype=torch.float32)
    assert torch.equal(policy.greedy(obs), policy.greedy(as_tensor))
    assert torch.equal(policy.value(obs.tolist()), policy.value(as_tensor))
    logp, entropy, values = policy.evaluate(obs, torch.tensor([0, 1]))
    assert torch.equal(logp, policy.evaluate(as_tensor, torch.tensor([0, 1]))[0])
    torch.manual_seed(0)
    a1 = policy.act(obs[0])
    torch.manual_seed(0)
    assert all(torch.equal(x, y) for x, y in zip(a1, policy.act(as_tensor[0])))
