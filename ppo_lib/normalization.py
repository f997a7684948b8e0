"""Running statistics for observation normalisation and reward scaling.

Both are applied on the environment side (a wrapper around :class:`VecEnv`), so
the rollout stores exactly what the policy saw, and the probability ratio is 1
at the start of every PPO update. Episode statistics stay on the raw rewards.
"""

from __future__ import annotations

import numpy as np

from ppo_lib.envs import StepResult, VecEnv


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape: tuple = (), epsilon: float = 1e-4):
        from ppo_lib.config import check_number

        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (int(shape),)
        if not isinstance(shape, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise TypeError(f"shape={shape!r}: expected a tuple of sizes, e.g. (4,) or ()")
        check_number("epsilon", epsilon, 0, low_open=True)
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = epsilon  # a tiny prior count: the first batch dominates at once

    def update(self, batch: np.ndarray) -> None:
        """Add a batch of samples, shape ``(B, *shape)``; one sample of ``shape`` is a batch of one."""
        try:
            batch = np.asarray(batch, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"batch: expected an array of numbers of shape (B, *{self.mean.shape}), "
                            f"got a {type(batch).__name__}") from None
        if batch.shape == self.mean.shape:
            batch = batch[None]  # a single observation, not a batch of scalars
        if batch.ndim != self.mean.ndim + 1 or batch.shape[1:] != self.mean.shape:
            raise ValueError(f"batch: shape {batch.shape}; allowed: (B, *{self.mean.shape}) -- a batch of samples "
                             f"of shape {self.mean.shape} -- or one sample of shape {self.mean.shape}")
        if batch.shape[0] == 0:
            return  # nothing to learn from an empty batch
        if not np.all(np.isfinite(batch)):
            # one NaN would poison the statistics for good: refuse it before it gets in
            raise ValueError(f"batch: non-finite value {batch[~np.isfinite(batch)][0]} at index "
                             f"{np.argwhere(~np.isfinite(batch))[0].tolist()}; the running statistics accept "
                             f"finite numbers only")
        b_mean, b_var, b_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: np.ndarray, clip: float = 10.0) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -clip, clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = np.asarray(d["mean"]), np.asarray(d["var"]), float(d["count"])


class NormalizedVecEnv:
    """``VecEnv`` with normalised observations and/or rewards scaled by the running
    std of the discounted return (not of the reward: the return is what the critic
    has to fit). ``training=False`` freezes the statistics (evaluation)."""

    def __init__(self, venv: VecEnv, normalize_obs: bool = True, reward_gamma: float | None = None,
                 clip: float = 10.0):
        from ppo_lib.config import check_number

        if not isinstance(normalize_obs, (bool, np.bool_)):
            raise TypeError(f"normalize_obs={normalize_obs!r}: must be True or False")
        if reward_gamma is not None:
            check_number("reward_gamma", reward_gamma, 0, 1)  # > 1: the discounted return grows without bound
        check_number("clip", clip, 0, low_open=True)
        self.venv, self.clip = venv, clip
        self.obs_rms = RunningMeanStd(venv.single_observation_space.shape) if normalize_obs else None
        self.ret_rms = RunningMeanStd(()) if reward_gamma is not None else None
        self.gamma = reward_gamma
        self._returns = np.zeros(venv.num_envs)
        self.training = True

    def __getattr__(self, name):  # num_envs, spaces, stats (raw rewards), total_steps, name, close
        return getattr(self.venv, name)

    def _obs(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if self.obs_rms is None:
            return obs
        if update and self.training:
            self.obs_rms.update(obs)
        return self.obs_rms.normalize(obs, self.clip)

    def reset(self) -> np.ndarray:
        self._returns[:] = 0.0
        return self._obs(self.venv.reset(), update=True)

    def step(self, actions) -> StepResult:
        step = self.venv.step(actions)
        reward = step.reward
        if self.ret_rms is not None:
            self._returns = self._returns * self.gamma + reward
            if self.training:
                self.ret_rms.update(self._returns)
            reward = np.clip(reward / np.sqrt(self.ret_rms.var + 1e-8), -self.clip, self.clip)
            self._returns[step.terminated | step.truncated] = 0.0
        # the final obs is normalised with the same statistics as the obs it stands for
        obs = self._obs(step.obs, update=True)
        final_obs = self._obs(step.final_obs, update=False)
        return StepResult(obs, reward, step.terminated, step.truncated, final_obs)
