"""Collect T steps from N environments into one batch.

Shapes: every per-step tensor is ``(T, N)`` (observations and actions add their
own trailing dimensions). Index ``[t, i]`` is step t of environment i.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ppo_lib.envs import VecEnv
from ppo_lib.policies import ActorCritic


@dataclasses.dataclass
class Rollout:
    obs: torch.Tensor           # (T, N, obs_dim)  s_t
    actions: torch.Tensor       # (T, N[, act_dim]) raw sampled a_t (never clipped)
    logprobs: torch.Tensor      # (T, N) log pi_old(a_t | s_t)
    values: torch.Tensor        # (T, N) V(s_t)
    rewards: torch.Tensor       # (T, N) r_t (raw)
    terminated: torch.Tensor    # (T, N) bool: the episode truly ended after a_t
    truncated: torch.Tensor     # (T, N) bool: a time limit cut it after a_t
    final_values: torch.Tensor  # (T, N) V(true final obs) where truncated, else 0
    last_value: torch.Tensor    # (N,) V(s_T), the obs after the batch

    @property
    def T(self) -> int:
        return self.rewards.shape[0]

    @property
    def N(self) -> int:
        return self.rewards.shape[1]

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated


def collect_rollout(venv: VecEnv, policy: ActorCritic, T: int, obs: np.ndarray) -> tuple[Rollout, np.ndarray]:
    """Step ``venv`` T times from ``obs`` with ``policy``; return the batch and the next obs.

    Storage is allocated once, before the loop (outside inference mode: the update
    later differentiates through computations on these tensors); the loop itself
    runs under ``torch.inference_mode`` and does one batched forward pass per step
    for all N environments.
    """
    if T < 1:
        raise ValueError(f"T={T}: the rollout length must be >= 1")
    N = venv.num_envs
    space = policy.action_space
    if np.ndim(obs) != 1 + len(policy.observation_space.shape) or np.shape(obs)[0] != N:
        raise ValueError(f"obs: shape {np.shape(obs)}; allowed: ({N}, ...), one observation per env "
                         f"(num_envs={N}), as returned by venv.reset()")
    try:
        buf_obs = torch.zeros((T, N, *np.shape(obs)[1:]))
        buf_act = torch.zeros((T, N, *space.shape)) if policy.continuous else torch.zeros((T, N), dtype=torch.long)
        buf_logp, buf_val, buf_rew, buf_final = (torch.zeros((T, N)) for _ in range(4))
    except (RuntimeError, MemoryError):
        size = T * N * (int(np.prod(np.shape(obs)[1:])) + 8) * 4
        raise MemoryError(f"rollout_steps={T} x num_envs={N}: a rollout of {T * N:,} steps needs about "
                          f"{size / 2**30:.1f} GiB, more than this machine can allocate; lower rollout_steps "
                          f"or num_envs") from None
    buf_term = torch.zeros((T, N), dtype=torch.bool)
    buf_trunc = torch.zeros((T, N), dtype=torch.bool)
    last_value = torch.zeros(N)
    with torch.inference_mode():
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        for t in range(T):
            actions, logp, value = policy.act(obs_t)
            step = venv.step(policy.env_actions(actions))
            buf_obs[t], buf_act[t], buf_logp[t], buf_val[t] = obs_t, actions, logp, value
            buf_rew[t] = torch.as_tensor(step.reward, dtype=torch.float32)
            buf_term[t] = torch.as_tensor(step.terminated)
            buf_trunc[t] = torch.as_tensor(step.truncated)
            if step.truncated.any():
                # Bootstrap a time limit from the true final observation, not from the
                # reset observation that autoreset put in step.obs.
                idx = np.flatnonzero(step.truncated)
                final = torch.as_tensor(step.final_obs[idx], dtype=torch.float32)
                buf_final[t, idx] = policy.value(final)
            obs_t = torch.as_tensor(step.obs, dtype=torch.float32)
        last_value[:] = policy.value(obs_t)
    rollout = Rollout(buf_obs, buf_act, buf_logp, buf_val, buf_rew, buf_term, buf_trunc, buf_final, last_value)
    return rollout, np.asarray(step.obs)
