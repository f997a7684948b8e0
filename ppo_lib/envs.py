"""Vector environments with explicit autoreset, and episode statistics.

Every algorithm of the course steps N copies of an environment at once. This
module is the one place that deals with Gymnasium 1.x's vector autoreset.

We choose ``AutoresetMode.SAME_STEP``: when sub-environment i ends its episode
at a step, that same step returns the *reset* observation of the next episode
in ``obs[i]``, and the true final observation in ``infos["final_obs"][i]``.
:meth:`VecEnv.step` hands both back separately, so the rollout never stores a
reset observation as if it followed the final action (the bug behind CleanRL
issue 198 and SB3 issue 633, where a time-limit truncation was treated like a
termination, or bootstrapped from the wrong observation).

Episode returns and lengths are recorded here, on the raw rewards, before any
reward scaling an algorithm may do.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode

EnvSpec = str | Callable[[], gym.Env]


@dataclasses.dataclass
class StepResult:
    obs: np.ndarray         # (N, *obs_shape): what the agent sees next (a reset obs where done)
    reward: np.ndarray      # (N,) raw rewards
    terminated: np.ndarray  # (N,) bool: a true end, V(final) = 0
    truncated: np.ndarray   # (N,) bool: cut by a time limit, bootstrap from V(final_obs)
    final_obs: np.ndarray   # (N, *obs_shape): the true last obs where done, else a copy of obs


class EpisodeStats:
    """Returns and lengths of finished episodes, with the env step they ended at."""

    def __init__(self, num_envs: int):
        self._ret = np.zeros(num_envs)
        self._len = np.zeros(num_envs, dtype=np.int64)
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.steps: list[int] = []  # total env steps (all envs) when each episode ended

    def abandon_running(self) -> None:
        """Forget the partial sums of the episodes in progress (after a reset)."""
        self._ret[:] = 0.0
        self._len[:] = 0

    def update(self, reward: np.ndarray, done: np.ndarray, total_steps: int) -> None:
        self._ret += reward
        self._len += 1
        for i in np.flatnonzero(done):
            self.returns.append(float(self._ret[i]))
            self.lengths.append(int(self._len[i]))
            self.steps.append(int(total_steps))
            self._ret[i] = 0.0
            self._len[i] = 0


class SameStepCartPoleVec(CartPoleVectorEnv):
    """Gymnasium's NumPy-vectorised CartPole (all N copies in a few array operations,
    no Python loop over envs), switched from its NEXT_STEP autoreset to SAME_STEP.

    The physics is the parent's ``step``, untouched: we only stop it from resetting
    on the *next* call (``prev_done`` is cleared), and reset finished copies
    ourselves, returning their true final observations in ``infos["final_obs"]``.
    """

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def step(self, action):
        self.prev_done[:] = False  # the parent must not reset anything: we already did
        obs, reward, terminated, truncated, _ = super().step(action)
        self.prev_done[:] = False
        done = terminated | truncated
        infos = {}
        if done.any():
            infos = {"final_obs": obs.copy(), "_final_obs": done.copy()}
            self.state[:, done] = self.np_random.uniform(low=self.low, high=self.high, size=(4, int(done.sum())))
            self.steps[done] = 0
            obs = self.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, infos


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class CheckedEnv(gym.Wrapper):
    """Wraps an env made by a learner's factory: the usual mistakes of a custom env
    (the old gym API, observations of the wrong shape, NaN) get an error that says
    which env and what is allowed, not a traceback from inside the vector env.
    Attributes of the learner's env stay reachable through the wrapper."""

    def __init__(self, env: gym.Env, name: str):
        super().__init__(env)
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("_") or attr == "env":
            raise AttributeError(attr)
        return getattr(self.env, attr)

    def _check_obs(self, obs, where: str) -> None:
        space = self.observation_space
        if isinstance(space, gym.spaces.Box) and np.shape(obs) != space.shape:
            raise ValueError(f"env {self._name}: {where} returned an observation of shape {np.shape(obs)}, but its "
                             f"observation_space {space} has shape {space.shape}: they must agree")
        if isinstance(space, gym.spaces.Box):
            arr = np.asarray(obs)
            if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
                raise ValueError(f"env {self._name}: {where} returned a non-finite observation {arr.tolist()}; "
                                 f"observations must be finite numbers")

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"env {self._name}: reset() returned {type(out).__name__}"
                            f"{f' of {len(out)} values' if isinstance(out, tuple) else ''}; a Gymnasium env's "
                            f"reset(seed=None, options=None) must return (obs, info) -- an old gym env returns "
                            f"obs only")
        self._check_obs(out[0], "reset()")
        return out

    def step(self, action):
        out = self.env.step(action)
        if not (isinstance(out, tuple) and len(out) == 5):
            n = len(out) if isinstance(out, tuple) else None
            old = " (obs, reward, done, info): the old gym API" if n == 4 else ""
            raise TypeError(f"env {self._name}: step() returned {n if n is not None else type(out).__name__} "
                            f"values{old}; a Gymnasium env's step must return 5 values: "
                            f"(obs, reward, terminated, truncated, info)")
        self._check_obs(out[0], "step()")
        return out


#: Environments that have a fast NumPy-vectorised version (used when ``vectorized`` is not False).
VECTORISED = {"CartPole-v1": lambda n, max_steps: SameStepCartPoleVec(
    n, max_episode_steps=500 if max_steps is None else max_steps)}


class VecEnv:
    """N seeded copies of an environment, stepped together, with explicit autoreset.

    ``env``: a Gymnasium id (``"CartPole-v1"``) or a factory returning an ``Env``.
    ``vectorized``: for ids in :data:`VECTORISED` (CartPole-v1), step all copies
    with NumPy arrays instead of N separate envs -- same dynamics, much faster.
    Default: True for those ids.
    """

    def __init__(self, env: EnvSpec, num_envs: int = 1, seed: int = 0, max_episode_steps: int | None = None,
                 vectorized: bool | None = None):
        from ppo_lib.config import check_seed

        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}: must be an integer >= 1")
        if num_envs > 100_000:
            raise ValueError(f"num_envs={num_envs!r}: must be an integer >= 1 and at most 100000 (each copy is a "
                             f"whole environment)")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or
                                              not isinstance(max_episode_steps, (int, np.integer))
                                              or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps={max_episode_steps!r}: must be None or an integer >= 1")
        if vectorized is not None and not isinstance(vectorized, (bool, np.bool_)):
            raise TypeError(f"vectorized={vectorized!r}: must be None, True or False")
        seed = check_seed(seed)
        self.vectorized = bool(vectorized if vectorized is not None else env in VECTORISED) \
            if isinstance(env, str) else False
        if self.vectorized and env not in VECTORISED:
            raise ValueError(f"vectorized=True: no vectorised version of {env!r}; available: {sorted(VECTORISED)}")
        if self.vectorized:
            self.name = env
            self.envs = VECTORISED[env](int(num_envs), max_episode_steps)
        elif isinstance(env, str):
            env_id = env
            try:
                gym.spec(env_id)
            except gym.error.Error as exc:
                raise ValueError(f"env={env_id!r}: not a registered Gymnasium environment ({exc})") from None
            kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
            factory = lambda: gym.make(env_id, **kwargs)  # noqa: E731
            self.name = env_id
        elif isinstance(env, gym.Env) or hasattr(env, "single_action_space"):
            raise TypeError(f"env={env!r}: got an environment object; expected a Gymnasium id (e.g. "
                            f"'CartPole-v1') or a function that makes a new env (e.g. lambda: MyEnv()), "
                            f"since each of the num_envs copies needs its own")
        elif callable(env):
            name = getattr(env, "__name__", "custom env")
            self.name = name

            def factory(make=env, name=name):
                made = make()
                if not isinstance(made, gym.Env):
                    raise TypeError(f"env: the factory {name} returned {made!r} (a {type(made).__name__}); it must "
                                    f"return a new gymnasium.Env, e.g. lambda: gym.make('CartPole-v1')")
                made = CheckedEnv(made, name)
                return made if max_episode_steps is None else gym.wrappers.TimeLimit(made, max_episode_steps)
        else:
            raise TypeError(f"env={env!r}: expected a Gymnasium id or a function returning an Env "
                            f"(e.g. 'CartPole-v1' or lambda: MyEnv())")
        if not self.vectorized:
            self.envs = gym.vector.SyncVectorEnv([factory] * int(num_envs), autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = int(num_envs)
        self.seed = seed
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.total_steps = 0
        self.stats = EpisodeStats(self.num_envs)

    def reset(self) -> np.ndarray:
        """Reset all copies; copy i gets seed ``seed + i`` (so a seed fixes every episode)."""
        if self.vectorized:  # one generator for all copies, seeded once
            obs, _ = self.envs.reset(seed=self.seed)
        else:
            obs, _ = self.envs.reset(seed=[self.seed + i for i in range(self.num_envs)])
        self.single_action_space.seed(self.seed)
        self.stats.abandon_running()  # steps before a reset belong to no episode
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        n = np.shape(actions)[0] if np.ndim(actions) else None
        if n != self.num_envs:
            raise ValueError(f"actions: {n if n is not None else 'a single value'} given, but this VecEnv has "
                             f"num_envs={self.num_envs}: pass one action per env (shape ({self.num_envs}, ...))")
        obs, reward, terminated, truncated, infos = self.envs.step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        if not np.all(np.isfinite(reward)):
            bad = np.flatnonzero(~np.isfinite(reward))
            raise ValueError(f"{self.name}: env(s) {bad.tolist()} returned a non-finite reward "
                             f"{reward[bad].tolist()} at env step {self.total_steps}")
        if np.any(np.abs(reward) > _FLOAT32_MAX):
            bad = np.flatnonzero(np.abs(reward) > _FLOAT32_MAX)
            raise ValueError(f"{self.name}: env(s) {bad.tolist()} returned the reward {reward[bad].tolist()} at env "
                             f"step {self.total_steps}: finite, but beyond float32's range "
                             f"(|r| <= {_FLOAT32_MAX:.3g}), "
                             f"where training computes; scale the env's rewards down")
        if np.asarray(obs).dtype.kind == "f" and not np.all(np.isfinite(obs)):
            bad = np.flatnonzero(~np.isfinite(np.asarray(obs).reshape(self.num_envs, -1)).all(axis=1))
            raise ValueError(f"{self.name}: env(s) {bad.tolist()} returned a non-finite observation at env step "
                             f"{self.total_steps}: observations must be finite numbers")
        done = terminated | truncated
        final_obs = np.array(obs, copy=True)
        if done.any():
            # SAME_STEP autoreset: obs[i] is already the next episode's first obs.
            for i in np.flatnonzero(done):
                final_obs[i] = infos["final_obs"][i]
        self.total_steps += self.num_envs
        self.stats.update(reward, done, self.total_steps)
        return StepResult(obs, reward, terminated.astype(bool), truncated.astype(bool), final_obs)

    def close(self) -> None:
        self.envs.close()
