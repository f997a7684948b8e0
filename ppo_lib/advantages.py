"""Returns and advantages: discounted returns, reward-to-go, TD errors, GAE.

Chapter 0 starts with the discounted return of one episode.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def discounted_return(rewards: Sequence[float], gamma: float) -> float:
    r"""The discounted return of a reward sequence,
    :math:`G_0 = \sum_{t=0}^{T-1} \gamma^t r_t` (0 for an empty sequence).

    ``rewards``: shape ``(T,)``; ``gamma`` in ``[0, 1]``.
    """
    _check_rates(gamma)
    try:
        r = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"rewards={rewards!r}: expected a 1-D sequence of numbers") from None
    if r.ndim != 1:
        raise ValueError(f"rewards: expected a 1-D sequence, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rewards: non-finite value {r[~np.isfinite(r)][0]} at index "
                         f"{int(np.flatnonzero(~np.isfinite(r))[0])}; allowed: finite numbers")
    return float(np.sum(r * gamma ** np.arange(len(r))))


def discount_weights(gamma: float, horizon: int) -> np.ndarray:
    r"""The weights :math:`\gamma^t` for ``t = 0 .. horizon-1``."""
    from ppo_lib.config import check_number

    _check_rates(gamma)
    horizon = check_number("horizon", horizon, 0, integer=True)  # 2.5 steps is no horizon
    return gamma ** np.arange(horizon, dtype=np.float64)


# --------------------------------------------------------------------------
# Batches: arrays of shape (T,) or (T, N), time on axis 0.
# --------------------------------------------------------------------------
#
# Flags at index t describe what happened *after* action a_t:
#   terminated[t]: the episode truly ended; nothing follows, V(s_{t+1}) := 0.
#   truncated[t]:  a time limit cut it; the future was still there, so we
#                  bootstrap from V of the true final observation (final_values[t]).
# Either one ends the episode, so sums over the future stop there (the trace is cut).


def _t(x, dtype=torch.float32, name: str = "input") -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}={x!r}: expected an array of numbers (a list, NumPy array or tensor)") from None


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        from ppo_lib.losses import NonFiniteError

        idx = torch.nonzero(~torch.isfinite(x))[0].tolist()
        raise NonFiniteError(f"{name}: non-finite value {x[tuple(idx)].item()} at index {idx}; "
                             f"allowed: finite numbers")


def _check_shape(name: str, x: torch.Tensor, shape: tuple, like: str = "rewards") -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: shape {tuple(x.shape)} does not match {like} {tuple(shape)}")


def _check_rates(gamma: float, lam: float | None = None) -> None:
    from ppo_lib.config import check_number

    check_number("gamma", gamma, 0, 1)
    if lam is not None:
        check_number("lam", lam, 0, 1)


def reward_to_go(rewards, dones, gamma: float) -> torch.Tensor:
    r"""Discounted reward-to-go :math:`G_t = r_t + \gamma (1 - d_t) G_{t+1}`,
    with :math:`G_T = 0` after the last step of the batch.

    ``dones[t]`` marks the last step of an episode (terminated or truncated).
    Without a critic there is nothing to bootstrap from, so the return of an
    episode still running at the end of the batch is incomplete: see
    :func:`complete_episode_mask`.
    """
    _check_rates(gamma)
    r, d = _t(rewards, name="rewards"), _t(dones, torch.bool, "dones")
    if r.shape != d.shape:
        raise ValueError(f"rewards {tuple(r.shape)} and dones {tuple(d.shape)} must have the same shape")
    _check_finite("rewards", r)
    out = torch.zeros_like(r)
    future = torch.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        future = r[t] + gamma * (~d[t]) * future
        out[t] = future
    return out


def complete_episode_mask(dones) -> torch.Tensor:
    """True at step t if its episode ends within the batch (some done at t' >= t)."""
    d = _t(dones, torch.bool)
    # reverse cumulative "any": flip, cumulative max, flip back
    return torch.flip(torch.cummax(torch.flip(d.int(), [0]), dim=0).values, [0]).bool()


def bootstrap_values(values, last_value, terminated, truncated, final_values) -> torch.Tensor:
    r"""The value of what follows each step, :math:`V_{next}[t]`:

    - ``0`` if the episode terminated after step t;
    - ``final_values[t]`` (V of the true final observation) if it was truncated;
    - otherwise ``V(s_{t+1})``: ``values[t+1]``, or ``last_value`` for the last step.
    """
    v, last = _t(values, name="values"), _t(last_value, name="last_value")
    term, trunc = _t(terminated, torch.bool, "terminated"), _t(truncated, torch.bool, "truncated")
    final = _t(final_values, name="final_values")
    for name, x in (("values", v), ("last_value", last), ("final_values", final)):
        _check_finite(name, x)
    _check_shape("last_value", last, v.shape[1:], "one step of values")
    for name, x in (("terminated", term), ("truncated", trunc), ("final_values", final)):
        _check_shape(name, x, v.shape, "values")
    nxt = torch.cat([v[1:], last.reshape((1, *v.shape[1:]))], dim=0)
    nxt = torch.where(trunc, final, nxt)
    return torch.where(term, torch.zeros_like(nxt), nxt)


def td_errors(rewards, values, next_values, gamma: float) -> torch.Tensor:
    r"""TD errors :math:`\delta_t = r_t + \gamma V_{next}[t] - V(s_t)`.

    ``next_values`` already encodes termination and truncation
    (:func:`bootstrap_values`).
    """
    _check_rates(gamma)
    r, v, nv = _t(rewards, name="rewards"), _t(values, name="values"), _t(next_values, name="next_values")
    _check_finite("rewards", r)
    _check_finite("values", v)
    _check_finite("next_values", nv)
    _check_shape("values", v, r.shape)
    _check_shape("next_values", nv, r.shape)
    return r + gamma * nv - v


def gae(rewards, values, next_values, dones, gamma: float, lam: float) -> torch.Tensor:
    r"""Generalized Advantage Estimation (Schulman et al., 2016):

    .. math:: \hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l},
              \quad \delta_t = r_t + \gamma V_{next}[t] - V(s_t),

    computed backwards as :math:`\hat A_t = \delta_t + \gamma\lambda (1 - d_t) \hat A_{t+1}`,
    where ``dones`` :math:`d_t` (terminated or truncated) cut the sum at the end of
    an episode. ``lam=0`` gives the TD error, ``lam=1`` the Monte-Carlo advantage
    (discounted reward-to-go, bootstrapped at the end of the batch, minus V).
    """
    _check_rates(gamma, lam)
    delta = td_errors(rewards, values, next_values, gamma)
    d = _t(dones, torch.bool, "dones")
    if d.shape != delta.shape:
        raise ValueError(f"dones {tuple(d.shape)} and rewards {tuple(delta.shape)} must have the same shape")
    adv = torch.zeros_like(delta)
    running = torch.zeros_like(delta[0])
    for t in reversed(range(delta.shape[0])):
        running = delta[t] + gamma * lam * (~d[t]) * running
        adv[t] = running
    return adv


def rollout_advantages(rollout, gamma: float, lam: float,
                       truncation_as_termination: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and value targets (advantages + values) for a :class:`Rollout`.

    ``truncation_as_termination=True`` reproduces the common bug (no bootstrap at a
    time limit); it exists only for the ablation of chapter 7.
    """
    terminated = rollout.terminated | rollout.truncated if truncation_as_termination else rollout.terminated
    next_values = bootstrap_values(rollout.values, rollout.last_value, terminated,
                                   rollout.truncated, rollout.final_values)
    adv = gae(rollout.rewards, rollout.values, next_values, rollout.dones, gamma, lam)
    return adv, adv + rollout.values
