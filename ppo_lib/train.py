"""The training loop shared by every chapter, its History, and saving agents.

``train`` alternates ``collect_rollout`` and ``algo.update`` until a number of
environment steps, shows a progress bar (tqdm.auto: a widget in notebooks),
and stops cleanly on KeyboardInterrupt (the "stop" button in JupyterLab):
the agent and the history so far are returned, never lost.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ppo_lib.envs import VecEnv
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: on the CPU the same seed gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclasses.dataclass
class History:
    episode_returns: list[float] = dataclasses.field(default_factory=list)  # raw rewards
    episode_lengths: list[int] = dataclasses.field(default_factory=list)
    episode_steps: list[int] = dataclasses.field(default_factory=list)      # env step at episode end
    update_steps: list[int] = dataclasses.field(default_factory=list)       # env step after each update
    diagnostics: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0
    total_steps: int = 0
    interrupted: bool = False

    def record_update(self, step: int, info: dict[str, float]) -> None:
        """Every diagnostics list stays aligned with ``update_steps``: a key missing
        from one update (e.g. a skipped REINFORCE batch) gets NaN there."""
        n = len(self.update_steps)
        self.update_steps.append(step)
        for key in set(self.diagnostics) | set(info):
            values = self.diagnostics.setdefault(key, [float("nan")] * n)
            values.append(float(info.get(key, float("nan"))))

    def smoothed_returns(self, window: int = 20) -> np.ndarray:
        """Mean of the last ``window`` episode returns, at every episode end."""
        r = np.asarray(self.episode_returns, dtype=float)
        if len(r) == 0:
            return r
        c = np.cumsum(np.insert(r, 0, 0.0))
        idx = np.arange(1, len(r) + 1)
        lo = np.maximum(0, idx - window)
        return (c[idx] - c[lo]) / (idx - lo)

    def first_step_reaching(self, threshold: float, window: int = 20) -> int | None:
        """The env step at which the mean of the last ``window`` returns first
        reaches ``threshold`` (only once ``window`` episodes exist), or None."""
        s = self.smoothed_returns(window)
        for k in range(window - 1, len(s)):
            if s[k] >= threshold:
                return self.episode_steps[k]
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)


@dataclasses.dataclass
class TrainResult:
    agent: ActorCritic
    history: History
    algo: object = None

    @property
    def interrupted(self) -> bool:
        return self.history.interrupted


class TrainingDiverged(FloatingPointError):
    """An update produced a NaN or infinite loss or gradient."""


def train(algo, env, total_steps: int, seed: int = 0, progress: bool = True,
          stop_at: float | None = None, window: int = 20,
          callback: Callable[[History], bool | None] | None = None) -> TrainResult:
    """Train ``algo`` for ``total_steps`` env steps (all envs together).

    ``env``: a Gymnasium id, an env factory, or a :class:`VecEnv`; an id or a
    factory gets ``algo.config.num_envs`` copies seeded from ``seed``.
    ``stop_at``: stop early once the mean of the last ``window`` returns reaches it.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}: must be >= 1")
    venv = env if hasattr(env, "step") and hasattr(env, "stats") else VecEnv(env, algo.config.num_envs, seed=seed)
    if hasattr(algo, "wrap_env"):  # e.g. observation normalisation, reward scaling
        venv = algo.wrap_env(venv)
    policy = algo.policy
    if venv.single_action_space != policy.action_space or venv.single_observation_space.shape != \
            policy.observation_space.shape:
        raise ValueError(f"the algorithm was built for observation space {policy.observation_space} and "
                         f"action space {policy.action_space}, but the environment {venv.name} has "
                         f"{venv.single_observation_space} and {venv.single_action_space}")
    seed_everything(seed)
    history = History()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        # mininterval and refresh=False below: at most ~2 redraws a second. Every redraw of a
        # notebook progress bar is a widget message; thousands of them per cell can overflow
        # the kernel's output queue (messages are dropped, and nbval then times out).
        bar = tqdm(total=total_steps, unit="step", desc=type(algo).__name__, leave=False, mininterval=0.5)
    obs = venv.reset()
    start = venv.total_steps
    first_episode = len(venv.stats.returns)  # a reused VecEnv carries episodes of earlier runs
    try:
        while venv.total_steps - start < total_steps:
            if hasattr(algo, "set_progress"):  # learning-rate / clip annealing
                algo.set_progress((venv.total_steps - start) / total_steps)
            rollout, obs = collect_rollout(venv, policy, algo.rollout_steps, obs)
            info = algo.update(rollout)
            # explained variance is legitimately undefined (nan) when the targets are constant
            bad = {k: v for k, v in info.items() if not math.isfinite(v) and k != "explained_variance"}
            if bad:
                raise TrainingDiverged(
                    f"update {algo.n_updates} at env step {venv.total_steps}: non-finite {sorted(bad)}; "
                    f"diagnostics: {info}. Lower the learning rate or check the rewards.")
            history.record_update(venv.total_steps - start, info)
            _sync_episodes(history, venv, start, first_episode)
            if bar is not None:
                bar.update(venv.total_steps - start - bar.n)
                if history.episode_returns:
                    bar.set_postfix(mean_return=f"{np.mean(history.episode_returns[-window:]):.1f}", refresh=False)
            if callback is not None and callback(history):  # a callback returns True to stop
                break
            if stop_at is not None and history.first_step_reaching(stop_at, window) is not None:
                break
    except KeyboardInterrupt:
        history.interrupted = True
        print(f"Interrupted at env step {venv.total_steps - start}: returning the agent and the history so far.")
    finally:
        if bar is not None:
            bar.close()
        _sync_episodes(history, venv, start, first_episode)
        history.total_steps = venv.total_steps - start
        history.wall_time = time.perf_counter() - t0
    return TrainResult(policy, history, algo)


def _sync_episodes(history: History, venv: VecEnv, start: int, first_episode: int) -> None:
    s = venv.stats
    n = first_episode + len(history.episode_returns)
    # episodes finished since the last sync (stats may carry episodes from before `start`)
    for r, l, st in zip(s.returns[n:], s.lengths[n:], s.steps[n:]):
        history.episode_returns.append(r)
        history.episode_lengths.append(l)
        history.episode_steps.append(st - start)


@torch.no_grad()
def evaluate(policy: ActorCritic, env_id: str, episodes: int = 10, seed: int = 10_000,
             greedy: bool = True, max_steps: int = 100_000) -> list[float]:
    """Returns of ``episodes`` full episodes, all run side by side (one env copy
    each), with the greedy (``greedy=True``: deterministic) or the sampled policy."""
    venv = VecEnv(env_id, num_envs=episodes, seed=seed)
    obs = venv.reset()
    returns: list[float | None] = [None] * episodes
    running = np.zeros(episodes)
    rms = getattr(policy, "obs_rms", None)  # the training statistics, frozen
    for _ in range(max_steps):
        o = torch.as_tensor(rms.normalize(obs) if rms is not None else obs, dtype=torch.float32)
        actions = policy.greedy(o) if greedy else policy.act(o)[0]
        step = venv.step(policy.env_actions(actions))
        running += step.reward
        for i in np.flatnonzero(step.terminated | step.truncated):
            if returns[i] is None:
                returns[i] = float(running[i])
        running[step.terminated | step.truncated] = 0.0
        if all(r is not None for r in returns):
            break
        obs = step.obs
    venv.close()
    return [r for r in returns if r is not None]


def save_agent(path: str | Path, policy: ActorCritic, history: History | None = None) -> Path:
    """Save weights, the spaces needed to rebuild the policy, and the history."""
    space = policy.action_space
    meta = {
        "obs_dim": int(policy.observation_space.shape[0]),
        "obs_low": policy.observation_space.low.tolist(), "obs_high": policy.observation_space.high.tolist(),
        "continuous": policy.continuous,
        "n_actions": None if policy.continuous else int(space.n),
        "act_low": space.low.tolist() if policy.continuous else None,
        "act_high": space.high.tolist() if policy.continuous else None,
        "hidden": list(policy.hidden),
        "critic": policy.critic is not None,
        "shared": policy.shared,
        "obs_rms": policy.obs_rms.state_dict() if policy.obs_rms is not None else None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": policy.state_dict(),
                "history": history.to_dict() if history else None}, path)
    return path


def load_agent(path: str | Path) -> tuple[ActorCritic, History | None]:
    """Load an agent saved by :func:`save_agent` (``weights_only=True``: no code runs)."""
    import gymnasium as gym

    data = torch.load(Path(path), weights_only=True)
    m = data["meta"]
    obs_space = gym.spaces.Box(np.array(m["obs_low"], np.float32), np.array(m["obs_high"], np.float32))
    if m["continuous"]:
        act_space = gym.spaces.Box(np.array(m["act_low"], np.float32), np.array(m["act_high"], np.float32))
    else:
        act_space = gym.spaces.Discrete(m["n_actions"])
    policy = ActorCritic(obs_space, act_space, hidden=tuple(m["hidden"]), critic=m["critic"],
                         shared=m.get("shared", False))
    policy.load_state_dict(data["state_dict"])
    if m.get("obs_rms"):
        from ppo_lib.normalization import RunningMeanStd

        policy.obs_rms = RunningMeanStd(obs_space.shape)
        policy.obs_rms.load_state_dict(m["obs_rms"])
    history = History.from_dict(data["history"]) if data["history"] else None
    return policy, history
