"""The training loop shared by every chapter, its History, and saving agents.

``train`` alternates ``collect_rollout`` and ``algo.update`` until a number of
environment steps, shows a progress bar (tqdm.auto: a widget in notebooks),
and stops cleanly on KeyboardInterrupt (the "stop" button in JupyterLab):
the agent and the history so far are returned, never lost. Any other error
(inside a custom env's ``step``, a callback, an update) is re-raised with the
run so far attached as ``error.partial_result``: a :class:`TrainResult` holding
the agent and the History of every finished update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ppo_lib.config import check_number, check_seed
from ppo_lib.envs import VecEnv
from ppo_lib.policies import ActorCritic
from ppo_lib.runs import callback_says_stop, check_callback, keep_run
from ppo_lib.rollout import collect_rollout


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: on the CPU the same seed gives the same numbers."""
    seed = check_seed(seed)
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

    def __len__(self) -> int:
        """Finished updates."""
        return len(self.update_steps)

    def record_update(self, step: int, info: dict[str, float]) -> None:
        """Every diagnostics list stays aligned with ``update_steps``: a key missing
        from one update (e.g. a skipped REINFORCE batch) gets NaN there."""
        n = len(self.update_steps)
        self.update_steps.append(step)
        for key in [*self.diagnostics, *(k for k in info if k not in self.diagnostics)]:  # a stable order
            values = self.diagnostics.setdefault(key, [float("nan")] * n)
            values.append(float(info.get(key, float("nan"))))

    def smoothed_returns(self, window: int = 20) -> np.ndarray:
        """Mean of the last ``window`` episode returns, at every episode end."""
        window = check_number("window", window, 1, integer=True)
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
        threshold = check_number("threshold", threshold)
        window = check_number("window", window, 1, integer=True)
        s = self.smoothed_returns(window)
        for k in range(window - 1, len(s)):
            if s[k] >= threshold:
                return self.episode_steps[k]
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        if not isinstance(d, dict):
            raise TypeError(f"History.from_dict: expected a dict (from History.to_dict()), got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"History.from_dict: unknown keys {unknown}; allowed: {names}")
        return cls(**d)


@dataclasses.dataclass
class TrainResult:
    agent: ActorCritic
    history: History
    algo: object = None

    @property
    def interrupted(self) -> bool:
        return self.history.interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:  # the flag lives on the History
        self.history.interrupted = value


class TrainingDiverged(FloatingPointError):
    """An update produced a NaN or infinite loss or gradient. Like every error
    raised inside :func:`train`, it carries the run so far as ``partial_result``."""


def as_policy(obj, name: str = "policy") -> ActorCritic:
    """The policy, or a clear error for what is often passed instead."""
    if isinstance(obj, ActorCritic):
        return obj
    if isinstance(obj, TrainResult):
        raise TypeError(f"{name}: got a TrainResult; pass `result.agent` (the trained policy)")
    if hasattr(obj, "policy") and isinstance(getattr(obj, "policy"), ActorCritic):
        raise TypeError(f"{name}: got the algorithm {type(obj).__name__}; pass `algo.policy` "
                        f"(or `result.agent` from train)")
    raise TypeError(f"{name}: expected an ActorCritic policy (e.g. `result.agent`), got a {type(obj).__name__}")


def _likely_cause(algo, rollout) -> str:
    """The setting that most likely made an update diverge, from what the run shows."""
    c = algo.config
    rewards = rollout.rewards if rollout is not None else None
    obs = rollout.obs if rollout is not None else None
    if rewards is not None and rewards.numel() and float(rewards.abs().max()) > 1e4:
        return (f"the rewards are very large (max |r| = {float(rewards.abs().max()):.3g}): scale them down"
                + (" or set scale_rewards=True" if hasattr(c, "scale_rewards") else ""))
    if obs is not None and obs.numel() and float(obs.abs().max()) > 1e4:
        return (f"the observations are very large (max |obs| = {float(obs.abs().max()):.3g}): "
                + ("set normalize_obs=True" if hasattr(c, "normalize_obs") else "scale them down"))
    lr_now = algo.optimizer.param_groups[0]["lr"] if hasattr(algo, "optimizer") else getattr(c, "lr", None)
    if lr_now is not None and lr_now > 1e-2:
        return f"the learning rate is high (lr={lr_now:g}): lower it, e.g. to 3e-4"
    if getattr(c, "max_grad_norm", None) == 0:
        return "gradient clipping is off (max_grad_norm=0): set max_grad_norm=0.5"
    if getattr(c, "variant", None) == "none":
        return "variant='none' has no trust region: try variant='clip'"
    return f"lower the learning rate (lr={lr_now:g}) or check the rewards"


def train(algo, env, total_steps: int, seed: int = 0, progress: bool = True,
          stop_at: float | None = None, window: int = 20,
          callback: Callable[[History], bool | None] | None = None) -> TrainResult:
    """Train ``algo`` for ``total_steps`` env steps (all envs together).

    ``env``: a Gymnasium id, an env factory, or a :class:`VecEnv`; an id or a
    factory gets ``algo.config.num_envs`` copies seeded from ``seed``.
    ``stop_at``: stop early once the mean of the last ``window`` returns reaches it.
    ``callback(history)``: called after every update; it returns True to stop, or
    False / None to go on.

    Ctrl+C returns the result so far (``result.interrupted`` is True). Any other
    error is re-raised with the result so far, agent and History of every finished
    update, attached as ``error.partial_result``. (One contract for every loop of the
    library: :mod:`ppo_lib.runs`.)
    """
    if not hasattr(algo, "update") or not hasattr(algo, "policy") or not hasattr(algo, "config"):
        raise TypeError(f"algo: expected an algorithm such as PPO(env.observation_space, env.action_space), "
                        f"got a {type(algo).__name__}")
    total_steps = check_number("total_steps", total_steps, 1, integer=True)
    seed = check_seed(seed)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress={progress!r}: must be True or False")
    if stop_at is not None:
        stop_at = check_number("stop_at", stop_at)
    window = check_number("window", window, 1, integer=True)
    callback = check_callback(callback)
    if hasattr(algo, "check_config_unchanged"):
        algo.check_config_unchanged()
    given_venv = hasattr(env, "step") and hasattr(env, "stats")
    num_envs = env.num_envs if given_venv else algo.config.num_envs
    one_rollout = algo.rollout_steps * num_envs
    if total_steps < one_rollout:
        raise ValueError(f"total_steps={total_steps}: smaller than one rollout (rollout_steps={algo.rollout_steps} "
                         f"x num_envs={num_envs} = {one_rollout} env steps), which training always runs in "
                         f"full; allowed: total_steps >= {one_rollout}, or a smaller rollout_steps")
    venv = env if given_venv else VecEnv(env, algo.config.num_envs, seed=seed)
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
    start = venv.total_steps
    first_episode = len(venv.stats.returns)  # a reused VecEnv carries episodes of earlier runs
    result = TrainResult(policy, history, algo)
    rollout = None

    def finish():
        if bar is not None:
            bar.close()
        _sync_episodes(history, venv, start, first_episode)
        history.total_steps = venv.total_steps - start
        history.wall_time = time.perf_counter() - t0

    with keep_run(result, finish,
                  on_interrupt=lambda: f"Interrupted at env step {venv.total_steps - start}: returning the agent and "
                                       f"the history so far.",
                  finished=lambda: len(history.update_steps)):
        obs = venv.reset()
        while venv.total_steps - start < total_steps:
            if hasattr(algo, "set_progress"):  # learning-rate / clip annealing
                algo.set_progress((venv.total_steps - start) / total_steps)
            rollout, obs = collect_rollout(venv, policy, algo.rollout_steps, obs)
            try:
                info = algo.update(rollout)
            except FloatingPointError as exc:  # a NaN met inside the maths functions
                if isinstance(exc, TrainingDiverged):
                    raise
                raise TrainingDiverged(f"update {algo.n_updates + 1} at env step {venv.total_steps}: {exc}. Likely "
                                       f"cause: {_likely_cause(algo, rollout)}") from exc
            # explained variance is legitimately undefined (nan) when the targets are constant
            bad = {k: v for k, v in info.items() if not math.isfinite(v) and k != "explained_variance"}
            if bad:
                raise TrainingDiverged(
                    f"update {algo.n_updates} at env step {venv.total_steps}: non-finite {sorted(bad)}; "
                    f"diagnostics: {info}. Likely cause: {_likely_cause(algo, rollout)}")
            history.record_update(venv.total_steps - start, info)
            _sync_episodes(history, venv, start, first_episode)
            if bar is not None:
                bar.update(venv.total_steps - start - bar.n)
                if history.episode_returns:
                    bar.set_postfix(mean_return=f"{np.mean(history.episode_returns[-window:]):.1f}", refresh=False)
            if callback_says_stop(callback, history):
                break
            if stop_at is not None and history.first_step_reaching(stop_at, window) is not None:
                break
    return result


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
    each), with the greedy (``greedy=True``: deterministic) or the sampled policy.

    Episodes still running after ``max_steps`` steps are left out, with a warning;
    if none ends, a ``RuntimeError`` says so (never a silent empty list)."""
    policy = as_policy(policy)
    episodes = check_number("episodes", episodes, 1, 100_000, integer=True)
    seed = check_seed(seed)
    max_steps = check_number("max_steps", max_steps, 1, integer=True)
    if not isinstance(greedy, (bool, np.bool_)):
        raise TypeError(f"greedy={greedy!r}: must be True or False")
    venv = VecEnv(env_id, num_envs=episodes, seed=seed)
    if venv.single_action_space != policy.action_space or \
            venv.single_observation_space.shape != policy.observation_space.shape:
        venv.close()
        raise ValueError(f"policy: built for observation space {policy.observation_space} and action space "
                         f"{policy.action_space}, but the environment {venv.name} has "
                         f"{venv.single_observation_space} and {venv.single_action_space}; evaluate it on the "
                         f"kind of env it was trained on")
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
    done = [r for r in returns if r is not None]
    if not done:
        raise RuntimeError(f"evaluate: no episode of {venv.name} ended within max_steps={max_steps} steps; "
                           f"raise max_steps (or give the env a time limit)")
    if len(done) < episodes:
        warnings.warn(f"evaluate: only {len(done)} of episodes={episodes} ended within max_steps={max_steps} "
                      f"steps; the others are left out", RuntimeWarning, stacklevel=2)
    return done


CHECKPOINT_FORMAT = "ppo_lib.agent/1"


def _checksum(meta: dict, state_dict: dict, history: dict | None) -> str:
    """SHA-256 over everything a checkpoint holds: a flipped byte anywhere fails to load."""
    h = hashlib.sha256()
    h.update(repr(({k: v for k, v in meta.items() if k != "checksum"}, history)).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _path(path, name: str = "path") -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}={path!r}: expected a file path (str or pathlib.Path), got a {type(path).__name__}")
    if str(path) == "" or "\0" in str(path):
        raise ValueError(f"{name}={str(path)!r}: not a possible file path; expected one such as 'agent.pt'")
    return Path(path).expanduser()


def _read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, or a ValueError saying it is not one / is corrupted."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise IsADirectoryError(f"path={str(path)!r}: is a directory, not a checkpoint file") from None
    except Exception as exc:  # pickle errors, bad zip archives: never torch's advice to allow code
        raise ValueError(f"path={str(path)!r}: not a ppo_lib checkpoint, or a corrupted one (it cannot be read as "
                         f"one: {type(exc).__name__}). Load files written by save_agent()") from None
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict) or "state_dict" not in data:
        raise ValueError(f"path={str(path)!r}: not a ppo_lib checkpoint (a file written by save_agent() holds "
                         f"'meta' and 'state_dict')")
    return data


def save_agent(path: str | Path, policy: ActorCritic, history: History | None = None) -> Path:
    """Save weights, the spaces needed to rebuild the policy, the history, and a checksum.

    ``~`` is expanded. The file is written next to its destination and moved into
    place in one step (``os.replace``), so an interrupted save never leaves a
    truncated checkpoint. An existing file is replaced only if it is a ppo_lib
    checkpoint: anything else there raises ``FileExistsError``."""
    policy = as_policy(policy)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history: expected a History (e.g. `result.history`) or None, got a "
                        f"{type(history).__name__}")
    path = _path(path)
    space = policy.action_space
    meta = {
        "obs_dim": int(policy.observation_space.shape[0]),
        "obs_low": policy.observation_space.low.tolist(), "obs_high": policy.observation_space.high.tolist(),
        "continuous": policy.continuous,
        "n_actions": None if policy.continuous else int(space.n),
        "act_start": None if policy.continuous else int(space.start),
        "act_low": space.low.tolist() if policy.continuous else None,
        "act_high": space.high.tolist() if policy.continuous else None,
        "hidden": list(policy.hidden),
        "critic": policy.critic is not None,
        "shared": policy.shared,
        "obs_rms": policy.obs_rms.state_dict() if policy.obs_rms is not None else None,
    }
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r}: is a directory; give a file name, "
                                f"e.g. {str(path / 'agent.pt')!r}")
    if path.exists():
        try:
            _read_checkpoint(path)
        except (ValueError, OSError):
            raise FileExistsError(f"path={str(path)!r}: a file that is not a ppo_lib checkpoint is already there; "
                                  f"save_agent only replaces its own checkpoints. Choose another path or move "
                                  f"that file") from None
    state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    hist = history.to_dict() if history else None
    meta["format"] = CHECKPOINT_FORMAT
    meta["checksum"] = _checksum(meta, state, hist)
    payload = {"meta": meta, "state_dict": state, "history": hist}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise type(exc)(exc.errno, f"save_agent: cannot write to the folder of path={str(path)!r} "
                                   f"({exc.strerror}); choose a writable location") from None
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # an interrupted save leaves the old checkpoint untouched
        raise
    return path


def load_agent(path: str | Path) -> tuple[ActorCritic, History | None]:
    """Load an agent saved by :func:`save_agent` (``weights_only=True``: no code runs).

    A file that is not a checkpoint, or whose bytes changed since it was saved
    (checksum), raises a ``ValueError`` that says so."""
    import gymnasium as gym

    path = _path(path)
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r}: no such file")
    data = _read_checkpoint(path)
    checksum = data["meta"].get("checksum")  # checkpoints from before the checksum load as they did
    if checksum is not None and checksum != _checksum(data["meta"], data["state_dict"], data.get("history")):
        raise ValueError(f"path={str(path)!r}: the checkpoint is corrupted (its checksum does not match its "
                         f"contents); save the agent again")
    m = data["meta"]
    try:
        obs_space = gym.spaces.Box(np.array(m["obs_low"], np.float32), np.array(m["obs_high"], np.float32))
        if m["continuous"]:
            act_space = gym.spaces.Box(np.array(m["act_low"], np.float32), np.array(m["act_high"], np.float32))
        else:
            act_space = gym.spaces.Discrete(m["n_actions"], start=m.get("act_start") or 0)
        policy = ActorCritic(obs_space, act_space, hidden=tuple(m["hidden"]), critic=m["critic"],
                             shared=m.get("shared", False))
        policy.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"path={str(path)!r}: the checkpoint's metadata does not match its weights "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if m.get("obs_rms"):
        from ppo_lib.normalization import RunningMeanStd

        policy.obs_rms = RunningMeanStd(obs_space.shape)
        policy.obs_rms.load_state_dict(m["obs_rms"])
    history = History.from_dict(data["history"]) if data["history"] else None
    return policy, history
