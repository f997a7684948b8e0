"""An audit of the chapters 0-7 checkers against learner implementations written apart from their catalogues.

For every exercise: realistic mistakes and correct-but-unusual solutions (loops, vectorised, NumPy,
float64, in-place on a copy, torch.minimum/maximum, Welford, np.average, bool and float done flags).
Each implementation's label ("ok" or "wrong") is first confirmed against the reference on random inputs
of the kinds the chapters pass (values, and gradients where the function feeds a loss; two calls on the
same objects where the chapter makes them); then the checker must agree with it:

- a wrong implementation is rejected (no false pass), a right one accepted (no false rejection);
- the checker never raises (no crash);
- a hint is shown only when it is the hint for that mistake (``hint`` words), never another one; a
  NumPy exercise never gets an autograd hint; "not filled in yet" only for the untouched placeholder.

``audit_counts()`` tallies the four columns (the project's change log quotes them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pytest
import torch

from ppo_lib import advantages as lib_adv
from ppo_lib import losses as lib_losses
from ppo_lib.advantages import discounted_return as ref_discounted_return
from ppo_lib.algos.ppo import adaptive_kl_beta as ref_adaptive_kl_beta
from ppo_lib.algos.trpo import conjugate_gradient as ref_cg
from ppo_lib.teaching.checks import (check_adaptive_kl_beta, check_bootstrap_values, check_clipped_surrogate,
                            check_clipped_value_loss, check_conjugate_gradient, check_discounted_return,
                            check_fisher_vector_product, check_gae, check_kl_penalty_objective,
                            check_normalize_advantages, check_probability_ratio, check_reinforce_loss,
                            check_reward_to_go, check_running_mean_std, check_td_errors)
from ppo_lib.normalization import RunningMeanStd

D = torch.float64
N_RANDOM = 40


@dataclasses.dataclass
class Impl:
    exercise: Any
    fn: Callable
    label: str  # "ok" | "wrong"
    hint: str | None = None  # words the hint must contain when one is shown; None: no hint may be shown

    @property
    def id(self) -> str:
        return f"{self.exercise.name}-{self.fn.__name__}"


IMPLS: list[Impl] = []


def ok(exercise):
    def deco(fn):
        IMPLS.append(Impl(exercise, fn, "ok"))
        return fn
    return deco


def wrong(exercise, hint=None):
    def deco(fn):
        IMPLS.append(Impl(exercise, fn, "wrong", hint))
        return fn
    return deco


def _close(a, b, rtol=1e-5, atol=1e-6) -> bool:
    try:
        a = np.asarray(a.detach().numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        b = np.asarray(b.detach().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    except Exception:
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))


# =========================================================== 0.1 discounted_return
E = check_discounted_return


def truth_discounted_return(fn, rng):
    n = int(rng.integers(0, 9))
    rewards = list(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)
    gamma = float(rng.choice([0.0, 0.5, 0.9, 0.99, 1.0, rng.random()]))
    before = np.array(rewards, float).copy()
    got = fn(rewards, gamma)
    if not np.array_equal(np.array(rewards, float), before):
        return False
    try:
        f"{got:.4f}"  # the next cell formats it
    except Exception:
        return False
    return np.ndim(got) == 0 and _close(got, ref_discounted_return(before, gamma))


@ok(E)
def dr_reversed_horner(rewards, gamma):
    g = 0.0
    for r in reversed(list(rewards)):
        g = r + gamma * g
    return g


@ok(E)
def dr_numpy_dot(rewards, gamma):
    r = np.asarray(rewards, dtype=np.float64)
    return float(r @ (gamma ** np.arange(len(r))))


@ok(E)
def dr_np_sum_0d(rewards, gamma):
    r = np.array(rewards, dtype=float)
    return np.sum(r * np.power(gamma, np.arange(r.size)))


@ok(E)
def dr_torch(rewards, gamma):
    r = torch.as_tensor(np.asarray(rewards, float))
    return float((r * gamma ** torch.arange(len(r), dtype=D)).sum())


@wrong(E, hint="sum")
def dr_undiscounted(rewards, gamma):
    return float(np.sum(rewards))


@wrong(E)
def dr_length1_array(rewards, gamma):
    r = np.asarray(rewards, float).reshape(1, -1)
    return r @ (gamma ** np.arange(r.shape[1]))  # shape (1,): breaks the next cell's f-string


@wrong(E, hint="one step too much")
def dr_starts_at_gamma(rewards, gamma):
    return sum(gamma ** (t + 1) * r for t, r in enumerate(rewards))


@wrong(E)
def dr_in_place(rewards, gamma):
    for t in range(len(rewards)):
        rewards[t] *= gamma**t
    return float(np.sum(rewards))


@wrong(E)
def dr_int_gamma_power(rewards, gamma):
    # forgets r_0 when gamma is 0: 0**0 via a float trick
    return float(sum(r * (gamma**t if gamma else float(t == 1)) for t, r in enumerate(rewards)))


@wrong(E)
def dr_skips_last(rewards, gamma):
    return sum(gamma**t * rewards[t] for t in range(len(rewards) - 1)) if len(rewards) > 1 else (
        float(rewards[0]) if len(rewards) else 0.0)


# =========================================================== 1.1 reward_to_go
E = check_reward_to_go


def _rand_flags(rng, shape, p=0.3):
    d = rng.random(shape) < p
    if rng.random() < 0.4:
        d[-1] = True  # an episode ending on the last row of the batch
    return d


def truth_reward_to_go(fn, rng):
    T = int(rng.integers(1, 8))
    shape = (T,) if rng.random() < 0.5 else (T, int(rng.integers(1, 4)))
    r, d = rng.normal(size=shape), _rand_flags(rng, shape)
    g = float(rng.choice([0.0, 0.5, 0.9, 0.99, 1.0]))
    r0, d0 = r.copy(), d.copy()
    got = fn(r, d, g)
    return np.array_equal(r, r0) and np.array_equal(d, d0) and _close(got, lib_adv.reward_to_go(r0, d0, g).numpy())


@ok(E)
def rtg_loop_not(rewards, dones, gamma):
    out = np.zeros(np.shape(rewards))
    running = np.zeros(np.shape(rewards)[1:])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * np.where(dones[t], 0.0, running)
        out[t] = running
    return out


@ok(E)
def rtg_tilde_bool(rewards, dones, gamma):
    out = np.array(rewards, dtype=np.float64, copy=True)
    for t in reversed(range(len(out) - 1)):
        out[t] += gamma * ~dones[t] * out[t + 1]
    return out


@ok(E)
def rtg_torch(rewards, dones, gamma):
    r, d = torch.as_tensor(rewards), torch.as_tensor(dones).double()
    out = torch.zeros_like(r)
    nxt = torch.zeros_like(r[0])
    for t in reversed(range(len(r))):
        nxt = r[t] + gamma * (1 - d[t]) * nxt
        out[t] = nxt
    return out.numpy()


@ok(E)
def rtg_float32(rewards, dones, gamma):
    out = np.zeros_like(rewards, dtype=np.float32)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * (1 - dones[t].astype(np.float32)) * running
        out[t] = running
    return out


@wrong(E, hint="leak")
def rtg_no_mask(rewards, dones, gamma):
    out, running = np.zeros_like(rewards), np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


@wrong(E)
def rtg_mask_next_row(rewards, dones, gamma):
    out, running = np.zeros_like(rewards), np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        cut = dones[t + 1] if t + 1 < len(rewards) else np.zeros_like(dones[0])
        running = rewards[t] + gamma * (1 - cut) * running
        out[t] = running
    return out


@wrong(E)
def rtg_ignores_last_done(rewards, dones, gamma):
    # the last row's flag is never read: fine unless an episode ends on the last row... and a 2nd to last
    out = np.array(rewards, float)
    for t in reversed(range(len(out) - 1)):
        out[t] += gamma * (1 - dones[t]) * out[t + 1] * (1 - dones[-1] * (t == len(out) - 2))
    return out


@wrong(E, hint="past")
def rtg_cumsum_forward(rewards, dones, gamma):
    r = np.asarray(rewards, float)
    return np.cumsum(r * gamma ** np.arange(len(r)).reshape((-1,) + (1,) * (r.ndim - 1)), axis=0)


@wrong(E)
def rtg_in_place(rewards, dones, gamma):
    for t in reversed(range(len(rewards) - 1)):
        rewards[t] = rewards[t] + gamma * (1 - dones[t]) * rewards[t + 1]
    return rewards


@wrong(E)
def rtg_gamma_pow_t(rewards, dones, gamma):
    out, running = np.zeros_like(rewards), np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = gamma**t * rewards[t] + (1 - dones[t]) * running
        out[t] = running
    return out


# =========================================================== 1.2 reinforce_loss
E = check_reinforce_loss


def _grads_of(fn, tensors, weights_for_out=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    if not isinstance(out, torch.Tensor) or out.dim() != 0:
        return None
    if not out.requires_grad:
        return out.detach(), [torch.zeros_like(x) for x in leaves]
    out.backward()
    return out.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]


def _same_value_and_grads(fn, ref, tensors, extra=()):
    a = _grads_of(lambda *t: fn(*t, *extra), tensors)
    b = _grads_of(lambda *t: ref(*t, *extra), tensors)
    if a is None:
        return False
    return _close(a[0], b[0]) and all(_close(x, y) for x, y in zip(a[1], b[1]))


def truth_reinforce_loss(fn, rng):
    B = int(rng.integers(1, 7))
    lp = torch.tensor(-rng.random(B) * 3, dtype=D)
    w = torch.tensor(rng.normal(size=B), dtype=D)
    return _same_value_and_grads(fn, lib_losses.policy_gradient_loss, [lp, w])


@ok(E)
def rl_sum_div(logprobs, weights):
    return -(logprobs * weights.detach()).sum() / len(logprobs)


@ok(E)
def rl_dot(logprobs, weights):
    return -torch.dot(logprobs, weights.detach()) / logprobs.numel()


@ok(E)
def rl_loop(logprobs, weights):
    total = 0
    for lp, w in zip(logprobs, weights):
        total = total - lp * w.item()
    return total / len(logprobs)


@ok(E)
def rl_no_grad_weights(logprobs, weights):
    with torch.no_grad():
        w = weights.clone()
    return torch.mean(-logprobs * w)


@wrong(E, hint="sign")
def rl_sign(logprobs, weights):
    return (logprobs * weights.detach()).mean()


@wrong(E)
def rl_item(logprobs, weights):
    return -(logprobs * weights.detach()).mean().item()


@wrong(E)
def rl_no_grad_everything(logprobs, weights):
    with torch.no_grad():
        return -(logprobs * weights).mean()


@wrong(E, hint="detach")
def rl_no_detach(logprobs, weights):
    return -(logprobs * weights).mean()


@wrong(E)
def rl_tuple(logprobs, weights):
    loss = -(logprobs * weights.detach()).mean()
    return loss, logprobs.detach()


@wrong(E, hint="mean")
def rl_sum(logprobs, weights):
    return -(logprobs * weights.detach()).sum()


@wrong(E)
def rl_keepdim(logprobs, weights):
    return -(logprobs * weights.detach()).mean(dim=0, keepdim=True)


# =========================================================== 2.1 td_errors
E = check_td_errors


def truth_td_errors(fn, rng):
    T = int(rng.integers(1, 6))
    shape = (T,) if rng.random() < 0.5 else (T, int(rng.integers(1, 4)))
    r, v, nv = (rng.normal(size=shape) for _ in range(3))
    g = float(rng.choice([0.0, 0.5, 0.99, 1.0]))
    return _close(fn(r, v, nv, g), lib_adv.td_errors(r, v, nv, g).numpy())


@ok(E)
def td_loop(rewards, values, next_values, gamma):
    out = np.empty_like(rewards, dtype=float)
    for t in range(len(rewards)):
        out[t] = rewards[t] + gamma * next_values[t] - values[t]
    return out


@ok(E)
def td_torch(rewards, values, next_values, gamma):
    r, v, nv = (torch.as_tensor(x) for x in (rewards, values, next_values))
    return (r + gamma * nv - v).numpy()


@ok(E)
def td_in_place_copy(rewards, values, next_values, gamma):
    out = np.array(next_values, dtype=np.float64)
    out *= gamma
    out += rewards
    out -= values
    return out


@ok(E)
def td_float32(rewards, values, next_values, gamma):
    return (rewards + gamma * next_values - values).astype(np.float32)


@wrong(E, hint="sign")
def td_sign(rewards, values, next_values, gamma):
    return values - rewards - gamma * next_values


@wrong(E, hint="next_values[t]")
def td_values_shift(rewards, values, next_values, gamma):
    nxt = np.concatenate([values[1:], next_values[-1:]])
    return rewards + gamma * nxt - values


@wrong(E, hint="discounted")
def td_no_gamma(rewards, values, next_values, gamma):
    return rewards + next_values - values


@wrong(E)
def td_gamma_on_values(rewards, values, next_values, gamma):
    return rewards + next_values - gamma * values


@wrong(E)
def td_in_place_rewards(rewards, values, next_values, gamma):
    rewards += gamma * next_values - values
    return rewards


@wrong(E)
def td_gamma_squared(rewards, values, next_values, gamma):
    return rewards + gamma**2 * next_values - values


# =========================================================== 2.2 bootstrap_values
E = check_bootstrap_values


def truth_bootstrap_values(fn, rng):
    T = int(rng.integers(1, 6))
    N = int(rng.integers(1, 4)) if rng.random() < 0.5 else None
    shape = (T,) if N is None else (T, N)
    v = rng.normal(size=shape)
    last = rng.normal(size=() if N is None else (N,))
    te, tr = rng.random(shape) < 0.3, rng.random(shape) < 0.3
    if rng.random() < 0.5:
        tr[-1] = True
    fv = np.where(tr, rng.normal(size=shape), 0.0)
    args = (v, last, te, tr, fv)
    copies = [np.copy(a) for a in args]
    got = fn(*args)
    same = all(np.array_equal(a, c) for a, c in zip(args, copies))
    return same and _close(got, lib_adv.bootstrap_values(*copies).numpy())


@ok(E)
def bv_loop(values, last_value, terminated, truncated, final_values):
    out = np.zeros(np.shape(values))
    T = len(values)
    for t in range(T):
        nxt = values[t + 1] if t + 1 < T else last_value
        nxt = np.where(truncated[t], final_values[t], nxt)
        out[t] = np.where(terminated[t], 0.0, nxt)
    return out


@ok(E)
def bv_masks(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.asarray(last_value, float)[None]], axis=0)
    te, tr = np.asarray(terminated, float), np.asarray(truncated, float)
    return (1 - te) * (tr * final_values + (1 - tr) * nxt)


@ok(E)
def bv_torch(values, last_value, terminated, truncated, final_values):
    v = torch.as_tensor(values, dtype=D)
    nxt = torch.cat([v[1:], torch.as_tensor(last_value, dtype=D).reshape(1, *v.shape[1:])])
    nxt = torch.where(torch.as_tensor(truncated), torch.as_tensor(final_values, dtype=D), nxt)
    return torch.where(torch.as_tensor(terminated), torch.zeros_like(nxt), nxt).numpy()


@ok(E)
def bv_copy_then_assign(values, last_value, terminated, truncated, final_values):
    out = np.roll(np.array(values, dtype=float), -1, axis=0)
    out[-1] = last_value
    out[truncated] = np.asarray(final_values)[truncated]
    out[terminated] = 0.0
    return out


@wrong(E, hint="truncation is not an end")
def bv_trunc_zero(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.reshape(last_value, (1,) + v.shape[1:])])
    return np.where(np.asarray(terminated) | np.asarray(truncated), 0.0, nxt)


@wrong(E)
def bv_last_row_last_value(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.reshape(last_value, (1,) + v.shape[1:])])
    nxt = np.where(terminated, 0.0, np.where(truncated, final_values, nxt))
    nxt[-1] = np.where(terminated[-1], 0.0, last_value)  # forgets a truncation on the last row
    return nxt


@wrong(E, hint="termination wins")
def bv_trunc_wins(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.reshape(last_value, (1,) + v.shape[1:])])
    return np.where(truncated, final_values, np.where(terminated, 0.0, nxt))


@wrong(E, hint="last_value")
def bv_no_last(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.zeros_like(v[:1])])
    return np.where(terminated, 0.0, np.where(truncated, final_values, nxt))


@wrong(E)
def bv_terminated_final(values, last_value, terminated, truncated, final_values):
    v = np.asarray(values, float)
    nxt = np.concatenate([v[1:], np.reshape(last_value, (1,) + v.shape[1:])])
    return np.where(terminated | truncated, final_values, nxt)


@wrong(E)
def bv_in_place(values, last_value, terminated, truncated, final_values):
    values[:-1] = values[1:]
    values[-1] = last_value
    values[truncated] = final_values[truncated]
    values[terminated] = 0.0
    return values


# =========================================================== 3.1 gae
E = check_gae


def truth_gae(fn, rng):
    T = int(rng.integers(1, 7))
    shape = (T,) if rng.random() < 0.4 else (T, int(rng.integers(1, 4)))
    r, v, nv = (rng.normal(size=shape) for _ in range(3))
    d = _rand_flags(rng, shape)
    if rng.random() < 0.6:
        d = d.astype(np.float64)  # as chapter 3 passes them
    g = float(rng.choice([0.5, 0.9, 0.99, 1.0]))
    lam = float(rng.choice([0.0, 0.5, 0.8, 0.95, 1.0]))
    args = (r, v, nv, d, g, lam)
    copies = [np.copy(a) for a in args[:4]]
    got = fn(*args)
    same = all(np.array_equal(a, c) for a, c in zip(args, copies))
    return same and _close(got, lib_adv.gae(*copies, g, lam).numpy(), atol=1e-5)


@ok(E)
def gae_where(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out = np.zeros_like(delta)
    carry = 0.0
    for t in range(len(delta) - 1, -1, -1):
        carry = delta[t] + gamma * lam * np.where(dones[t], 0.0, carry)
        out[t] = carry
    return out


@ok(E)
def gae_not_astype(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    keep = np.logical_not(np.asarray(dones, dtype=bool)).astype(float)
    out = delta.astype(float)
    for t in reversed(range(len(out) - 1)):
        out[t] = out[t] + gamma * lam * keep[t] * out[t + 1]
    return out


@ok(E)
def gae_matrix(rewards, values, next_values, dones, gamma, lam):
    delta = np.asarray(rewards + gamma * next_values - values, float)
    T = len(delta)
    keep = 1.0 - np.asarray(dones, float)
    flat = delta.reshape(T, -1)
    k = keep.reshape(T, -1)
    out = np.zeros_like(flat)
    for j in range(flat.shape[1]):
        W = np.zeros((T, T))
        for t in range(T):
            w = 1.0
            for s in range(t, T):
                W[t, s] = w
                w *= gamma * lam * k[s, j]
        out[:, j] = W @ flat[:, j]
    return out.reshape(delta.shape)


@ok(E)
def gae_torch(rewards, values, next_values, dones, gamma, lam):
    r, v, nv = (torch.as_tensor(x, dtype=D) for x in (rewards, values, next_values))
    d = torch.as_tensor(dones).to(D)
    delta = r + gamma * nv - v
    adv, last = torch.zeros_like(delta), torch.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        last = delta[t] + gamma * lam * (1 - d[t]) * last
        adv[t] = last
    return adv.numpy()


@wrong(E)
def gae_tilde(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + gamma * lam * ~dones[t] * carry  # fine on bool flags; chapter 3 passes floats
        out[t] = carry
    return out


@wrong(E, hint="across the end")
def gae_no_cut(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + gamma * lam * carry
        out[t] = carry
    return out


@wrong(E)
def gae_cut_next_row(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    d = np.asarray(dones, float)
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        cut = d[t - 1] if t > 0 else np.zeros_like(d[0])
        carry = delta[t] + gamma * lam * (1 - cut) * carry
        out[t] = carry
    return out


@wrong(E, hint="not by lam alone")
def gae_lam_only(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + lam * (1 - np.asarray(dones[t], float)) * carry
        out[t] = carry
    return out


@wrong(E, hint="do not multiply it by (1 - dones)")
def gae_masks_bootstrap(rewards, values, next_values, dones, gamma, lam):
    d = np.asarray(dones, float)
    delta = rewards + gamma * (1 - d) * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + gamma * lam * (1 - d[t]) * carry
        out[t] = carry
    return out


@wrong(E)
def gae_last_row_skipped(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out = np.zeros_like(delta)
    out[-1] = delta[-1]
    for t in reversed(range(len(delta) - 1)):
        out[t] = delta[t] + gamma * lam * (1 - np.asarray(dones[t], float)) * out[t + 1]
    out[-1] *= 1 - np.asarray(dones[-1], float) * 0.5  # fiddles with the last row when it is done
    return out


@wrong(E)
def gae_lam_pow(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values - values
    out, carry = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        carry = delta[t] + gamma * lam**2 * (1 - np.asarray(dones[t], float)) * carry
        out[t] = carry
    return out


# =========================================================== 3.2 normalize_advantages
E = check_normalize_advantages


def truth_normalize_advantages(fn, rng):
    n = int(rng.integers(1, 9))
    a = rng.normal(size=n) * rng.choice([0.1, 1.0, 5.0]) + rng.normal()
    if rng.random() < 0.25:  # a constant minibatch (issue 19: the text now says zeros, not nan)
        a = np.full(n, float(rng.normal()))
    a0 = a.copy()
    got = fn(a)
    if not np.array_equal(a, a0):
        return False
    ref = lib_losses.normalize(torch.as_tensor(a0)).numpy()
    alt = ref * np.sqrt(n / (n - 1)) if n > 1 else ref
    return _close(got, ref, 1e-4, 1e-5) or _close(got, alt, 1e-4, 1e-5)


@wrong(E, hint="std is 0")
def na_population(advantages):
    # labelled right until issue 19: no eps, so a constant minibatch gives nan; the text now asks for zeros
    a = np.asarray(advantages, float)
    return (a - a.mean()) / a.std() if a.size > 1 else a - a.mean()


@ok(E)
def na_population_with_eps(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / (a.std() + 1e-8) if a.size > 1 else a - a.mean()


@ok(E)
def na_torch(advantages):
    return lib_losses.normalize(torch.as_tensor(advantages)).numpy()


@ok(E)
def na_manual(advantages):
    n = len(advantages)
    m = sum(advantages) / n
    if n == 1:
        return np.array([0.0])
    s = (sum((x - m) ** 2 for x in advantages) / (n - 1)) ** 0.5
    return np.array([(x - m) / (s + 1e-8) for x in advantages])


@ok(E)
def na_copy_in_place(advantages):
    a = advantages.copy()
    a -= a.mean()
    if a.size > 1:
        a /= a.std(ddof=1) + 1e-8
    return a


@wrong(E, hint="mean first")
def na_not_centred(advantages):
    a = np.asarray(advantages, float)
    return a / (a.std() + 1e-8) if a.size > 1 else a - a.mean()


@wrong(E, hint="not the variance")
def na_variance(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / (a.var() + 1e-8) if a.size > 1 else a - a.mean()


@wrong(E)
def na_one_element_returned(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / (a.std() + 1e-8) if a.size > 1 else a


@wrong(E)
def na_in_place(advantages):
    advantages -= advantages.mean()
    if advantages.size > 1:
        advantages /= advantages.std()
    return advantages


@wrong(E)
def na_range(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / (a.max() - a.min() + 1e-8)


@wrong(E)
def na_median(advantages):
    a = np.asarray(advantages, float)
    return (a - np.median(a)) / (a.std() + 1e-8) if a.size > 1 else a - a.mean()


# =========================================================== 4.1 conjugate_gradient
E = check_conjugate_gradient


def truth_conjugate_gradient(fn, rng):
    n = int(rng.integers(1, 6))
    m = torch.tensor(rng.normal(size=(n, n)), dtype=D)
    A = m @ m.T + n * torch.eye(n, dtype=D)
    b = torch.zeros(n, dtype=D) if rng.random() < 0.15 else torch.tensor(rng.normal(size=n), dtype=D)
    iters = int(rng.integers(0, n + 4))
    b0 = b.clone()
    got = fn(lambda v: A @ v, b, iters)
    return torch.equal(b, b0) and _close(got, ref_cg(lambda v: A @ v, b0, iters), 1e-6, 1e-8)


@ok(E)
def cg_in_place_clone(Avp, b, iters):
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / torch.dot(p, Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = torch.dot(r, r)
        p = r + rr_new / rr * p
        rr = rr_new
    return x


@ok(E)
def cg_while(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, k = r.clone(), 0
    while k < iters and (r @ r) >= 1e-10:
        Ap = Avp(p)
        alpha = (r @ r) / (p @ Ap)
        x = x + alpha * p
        r_new = r - alpha * Ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        k += 1
    return x


@ok(E)
def cg_numpy(Avp, b, iters):
    bn = b.numpy()
    x, r = np.zeros_like(bn), bn.copy()
    p, rr = r.copy(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(torch.as_tensor(p)).numpy()
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        p, rr = r + rr_new / rr * p, rr_new
    return torch.as_tensor(x)


@ok(E)
def cg_item(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p = r.clone()
    for _ in range(iters):
        rr = float(r @ r)
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / float(p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        p = r + float(r @ r) / rr * p
    return x


@wrong(E, hint="r.r < 1e-10")
def cg_no_early_stop(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


@wrong(E)
def cg_mutates_b(Avp, b, iters):
    x, r = torch.zeros_like(b), b
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


@wrong(E, hint="steepest descent")
def cg_steepest(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    for _ in range(iters):
        if r @ r < 1e-10:
            break
        Ar = Avp(r)
        alpha = (r @ r) / (r @ Ar)
        x = x + alpha * r
        r = r - alpha * Ar
    return x


@wrong(E)
def cg_one_less(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(max(iters - 1, 0)):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


@ok(E)
def cg_alpha_rAp(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (r @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


@wrong(E)
def cg_direction_from_old_residual(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r_old = r
        r = r - alpha * Ap
        rr_new = r @ r
        p = r_old + rr_new / rr * p
        rr = rr_new
    return x


@wrong(E)
def cg_x_along_residual(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * r
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


# =========================================================== 4.2 fisher_vector_product
E = check_fisher_vector_product


def truth_fisher_vector_product(fn, rng):
    shapes = [(int(rng.integers(1, 4)),), (int(rng.integers(1, 3)), 2)][: int(rng.integers(1, 3))]
    n = sum(int(np.prod(s)) for s in shapes)
    m = torch.tensor(rng.normal(size=(n, n)), dtype=D)
    H = m @ m.T + torch.eye(n, dtype=D)
    params = [torch.tensor(rng.normal(size=s), dtype=D, requires_grad=True) for s in shapes]

    def kl(ps):
        theta = torch.cat([p.reshape(-1) for p in ps])
        return 0.5 * theta @ H @ theta + (theta**3).sum() * 0.1  # not quadratic: F depends on theta

    def ref(v):
        g = torch.autograd.grad(kl(params), params, create_graph=True)
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(torch.cat([x.reshape(-1) for x in g]) @ v,
                                                                   params)])

    for _ in range(2):  # the chapter calls it once per unit vector on the same parameters
        v = torch.tensor(rng.normal(size=n), dtype=D)
        got = fn(kl, params, v)
        if not isinstance(got, torch.Tensor) or not _close(got, ref(v), 1e-6, 1e-8):
            return False
    return True


@ok(E)
def fvp_zero_grad(mean_kl, params, v):
    for p in params:
        p.grad = None
    kl = mean_kl(params)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    flat = torch.cat([g.flatten() for g in grads])
    (flat * v).sum().backward()
    out = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return out


@ok(E)
def fvp_split(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    total, i = 0, 0
    for g in grads:
        total = total + (g.reshape(-1) * v[i:i + g.numel()]).sum()
        i += g.numel()
    hv = torch.autograd.grad(total, params)
    return torch.cat([h.contiguous().view(-1) for h in hv]).detach()


@ok(E)
def fvp_retain(mean_kl, params, v):
    kl = mean_kl(params)
    grads = torch.autograd.grad(kl, params, create_graph=True, retain_graph=True)
    gv = torch.dot(torch.cat([g.reshape(-1) for g in grads]), v)
    return torch.cat([h.reshape(-1) for h in torch.autograd.grad(gv, params, retain_graph=True)])


@ok(E)
def fvp_functorch_free(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    hv = torch.autograd.grad(flat, params, grad_outputs=v)
    return torch.cat([h.reshape(-1) for h in hv])


@wrong(E, hint="adds")
def fvp_accumulates(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    (torch.cat([g.reshape(-1) for g in grads]) @ v).backward()
    return torch.cat([p.grad.reshape(-1) for p in params]).clone()  # .grad adds up over calls


@wrong(E, hint="differentiate")
def fvp_gradient(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params)
    return torch.cat([g.reshape(-1) for g in grads])


@wrong(E)
def fvp_not_flat(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    return torch.autograd.grad(torch.cat([g.reshape(-1) for g in grads]) @ v, params)


@wrong(E)
def fvp_first_param_only(mean_kl, params, v):
    g = torch.autograd.grad(mean_kl(params), params[0], create_graph=True)[0].reshape(-1)
    n = g.numel()
    hv = torch.autograd.grad(g @ v[:n], params, allow_unused=True)
    return torch.cat([h.reshape(-1) for h in hv])


@wrong(E, hint="element-wise")
def fvp_grad_times_v(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params)
    return torch.cat([g.reshape(-1) for g in grads]) * v


@wrong(E)
def fvp_squared_grad(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params)
    g = torch.cat([x.reshape(-1) for x in grads])
    return g * (g @ v)  # the outer product g g^T v: the "empirical Fisher"


# =========================================================== 5.1 probability_ratio
E = check_probability_ratio


def truth_probability_ratio(fn, rng):
    B = int(rng.integers(1, 6))
    dtype = torch.float32 if rng.random() < 0.5 else D
    scale = 150.0 if rng.random() < 0.3 else 3.0
    new = torch.tensor(-rng.random(B) * scale, dtype=dtype, requires_grad=True)
    old = torch.tensor(-rng.random(B) * scale, dtype=dtype) + new.detach() * 0
    w = torch.tensor(rng.normal(size=B), dtype=dtype)
    got = fn(new, old)
    if not isinstance(got, torch.Tensor) or not got.requires_grad or got.shape != new.shape:
        return False
    (got * w).sum().backward()
    new2 = new.detach().clone().requires_grad_(True)
    ref = torch.exp(new2 - old)
    (ref * w).sum().backward()
    return _close(got, ref, 1e-4, 1e-6) and _close(new.grad, new2.grad, 1e-4, 1e-6)


@ok(E)
def pr_log_space_detached_old(logp_new, logp_old):
    return (logp_new - logp_old.detach()).exp()


@ok(E)
def pr_exp_sub(logp_new, logp_old):
    return torch.exp(torch.sub(logp_new, logp_old))


@ok(E)
def pr_float64(logp_new, logp_old):
    return torch.exp(logp_new.double() - logp_old.double()).to(logp_new.dtype)


@ok(E)
def pr_exp_in_place_on_new_tensor(logp_new, logp_old):
    return (logp_new - logp_old).exp_()


@wrong(E, hint="no gradient reaches")
def pr_no_grad(logp_new, logp_old):
    with torch.no_grad():
        return torch.exp(logp_new - logp_old)


@wrong(E, hint="no gradient reaches")
def pr_detached(logp_new, logp_old):
    return torch.exp(logp_new.detach() - logp_old)


@wrong(E, hint="no gradient reaches")
def pr_numpy(logp_new, logp_old):
    return torch.as_tensor(np.exp(logp_new.detach().numpy() - logp_old.detach().numpy()))


@wrong(E)
def pr_prob_space(logp_new, logp_old):
    return torch.exp(logp_new) / torch.exp(logp_old)  # 0/0 where probabilities underflow


@wrong(E, hint="inverted")
def pr_inverted(logp_new, logp_old):
    return torch.exp(logp_old - logp_new)


@wrong(E, hint="apply exp")
def pr_log(logp_new, logp_old):
    return logp_new - logp_old


# =========================================================== 5.2 clipped_surrogate
E = check_clipped_surrogate


def truth_clipped_surrogate(fn, rng):
    B = int(rng.integers(1, 7))
    ratio = torch.tensor(np.exp(0.4 * rng.normal(size=B)), dtype=D)
    adv = torch.tensor(rng.normal(size=B), dtype=D)
    eps = float(rng.choice([0.1, 0.2, 0.3]))
    return _same_value_and_grads(lambda r: fn(r, adv, eps), lambda r: lib_losses.clipped_surrogate(r, adv, eps),
                                 [ratio])


@ok(E)
def cs_minimum(ratio, advantages, eps):
    return torch.minimum(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages).mean()


@ok(E)
def cs_where(ratio, advantages, eps):
    clipped = torch.where(advantages >= 0, torch.clamp(ratio, max=1 + eps), torch.clamp(ratio, min=1 - eps))
    return (clipped * advantages).mean()


@ok(E)
def cs_neg_max(ratio, advantages, eps):
    return -torch.max(-ratio * advantages, -torch.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean()


@ok(E)
def cs_loop(ratio, advantages, eps):
    terms = []
    for r, a in zip(ratio, advantages):
        terms.append(torch.min(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a))
    return torch.stack(terms).mean()


@wrong(E, hint="min, not max")
def cs_max(ratio, advantages, eps):
    return torch.max(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean()


@wrong(E, hint="never clipped at 1 - eps")
def cs_upper_only(ratio, advantages, eps):
    return torch.min(ratio * advantages, torch.clamp(ratio, max=1 + eps) * advantages).mean()


@wrong(E, hint="not the loss")
def cs_loss(ratio, advantages, eps):
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean()


@wrong(E, hint="do not detach")
def cs_detached(ratio, advantages, eps):
    r = ratio.detach()
    return torch.min(r * advantages, torch.clamp(r, 1 - eps, 1 + eps) * advantages).mean()


@wrong(E, hint="eps you are given")
def cs_fixed_eps(ratio, advantages, eps):
    return torch.min(ratio * advantages, torch.clamp(ratio, 0.8, 1.2) * advantages).mean()


@wrong(E)
def cs_tuple(ratio, advantages, eps):
    obj = torch.min(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean()
    return obj, (torch.abs(ratio - 1) > eps).float().mean()


@wrong(E, hint="never clipped at 1 - eps")
def cs_clip_where_positive(ratio, advantages, eps):
    # clips the ratio only where the advantage is positive
    clipped = torch.where(advantages > 0, torch.clamp(ratio, 1 - eps, 1 + eps), ratio)
    return torch.min(ratio * advantages, clipped * advantages).mean()


# =========================================================== 6.1 kl_penalty_objective
E = check_kl_penalty_objective


def truth_kl_penalty_objective(fn, rng):
    B = int(rng.integers(1, 6))
    ratio = torch.tensor(np.exp(0.3 * rng.normal(size=B)), dtype=D)
    adv = torch.tensor(rng.normal(size=B), dtype=D)
    kl = torch.tensor(rng.random(B) * 0.1, dtype=D)
    beta = float(rng.choice([0.0, 0.3, 1.0, 3.0]))
    return _same_value_and_grads(lambda r, k: fn(r, adv, k, beta),
                                 lambda r, k: lib_losses.kl_penalty_surrogate(r, adv, k, beta), [ratio, kl])


@ok(E)
def kl_mean_of_diff(ratio, advantages, kl, beta):
    return (ratio * advantages - beta * kl).mean()


@ok(E)
def kl_loop(ratio, advantages, kl, beta):
    total = 0
    for r, a, k in zip(ratio, advantages, kl):
        total = total + r * a - beta * k
    return total / len(ratio)


@ok(E)
def kl_torch_fns(ratio, advantages, kl, beta):
    return torch.mean(torch.mul(ratio, advantages)) - torch.mul(kl.mean(), beta)


@ok(E)
def kl_sum_div(ratio, advantages, kl, beta):
    n = ratio.shape[0]
    return (ratio @ advantages) / n - beta * kl.sum() / n


@wrong(E, hint="penalty")
def kl_plus(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() + beta * kl.mean()


@wrong(E, hint="detached")
def kl_detached(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() - beta * kl.mean().item()


@wrong(E, hint="beta")
def kl_no_beta(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() - kl.mean()


@wrong(E, hint="no gradient reaches the ratio")
def kl_ratio_detached(ratio, advantages, kl, beta):
    return (ratio.detach() * advantages).mean() - beta * kl.mean()


@wrong(E, hint="mean")
def kl_sum_penalty(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() - beta * kl.sum()


@wrong(E)
def kl_beta_squared(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() - beta**2 * kl.mean()


# =========================================================== 6.2 adaptive_kl_beta
E = check_adaptive_kl_beta


def truth_adaptive_kl_beta(fn, rng):
    beta = float(rng.choice([0.1, 0.5, 1.0, 3.0]))
    target = float(rng.choice([0.003, 0.01, 0.02, 0.05]))
    kl = target * float(np.exp(rng.uniform(-1.2, 1.2)))
    got = fn(beta, kl, target)
    return np.ndim(got) == 0 and isinstance(got, (float, int, np.floating)) and _close(
        got, ref_adaptive_kl_beta(beta, kl, target))


@ok(E)
def akl_ratio(beta, kl, kl_target):
    x = kl / kl_target
    return beta * 2 if x > 1.5 else (beta * 0.5 if x < 1 / 1.5 else beta)


@ok(E)
def akl_elif(beta, kl, kl_target):
    new = beta
    if kl > kl_target * 1.5:
        new = 2.0 * beta
    elif kl < kl_target / 1.5:
        new = 0.5 * beta
    return new


@ok(E)
def akl_np_float(beta, kl, kl_target):
    return float(np.where(kl > 1.5 * kl_target, 2 * beta, np.where(kl < kl_target / 1.5, beta / 2, beta)))


@ok(E)
def akl_multiplier(beta, kl, kl_target):
    factor = 1.0
    if kl * 1.5 < kl_target:
        factor = 0.5
    if kl > 1.5 * kl_target:
        factor = 2.0
    return beta * factor


@wrong(E)
def akl_array(beta, kl, kl_target):
    return np.array([beta * 2 if kl > 1.5 * kl_target else (beta / 2 if kl < kl_target / 1.5 else beta)])


@wrong(E)
def akl_lower_times(beta, kl, kl_target):
    return beta * 2 if kl > 1.5 * kl_target else (beta / 2 if kl < kl_target * 0.75 else beta)


@wrong(E)
def akl_upper_2(beta, kl, kl_target):
    return beta * 2 if kl > 2 * kl_target else (beta / 2 if kl < kl_target / 1.5 else beta)


@wrong(E, hint="inverted")
def akl_inverted(beta, kl, kl_target):
    return beta / 2 if kl > 1.5 * kl_target else (beta * 2 if kl < kl_target / 1.5 else beta)


@wrong(E)
def akl_swapped_thresholds(beta, kl, kl_target):
    return beta * 2 if kl > kl_target / 1.5 else (beta / 2 if kl < 1.5 * kl_target else beta)


@wrong(E, hint="1.5 is the tolerance")
def akl_factor_15(beta, kl, kl_target):
    return beta * 1.5 if kl > 1.5 * kl_target else (beta / 1.5 if kl < kl_target / 1.5 else beta)


# =========================================================== 7.1 update_running_stats
E = check_running_mean_std


def truth_running(fn, rng):
    d = int(rng.integers(1, 4))
    mean, var = rng.normal(size=d), rng.random(d) * 3 + 0.1
    count = float(rng.choice([1e-12, 1e-4, 3.0, 50.0]))
    rms = RunningMeanStd((d,))
    rms.mean, rms.var, rms.count = mean.copy(), var.copy(), count
    for _ in range(2):  # the chapter feeds chunks one after another
        batch = rng.normal(size=(int(rng.integers(1, 6)), d)) * rng.random(d) * 4
        out = fn(mean, var, count, batch.copy())
        if not isinstance(out, tuple) or len(out) != 3:
            return False
        mean, var, count = out
        rms.update(batch)
        if not (_close(mean, rms.mean) and _close(var, rms.var) and _close(count, rms.count)):
            return False
        if np.shape(mean) != (d,) or np.shape(var) != (d,):
            return False
    return True


@ok(E)
def rs_in_place(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    tot = count + n
    var *= count
    var += batch.var(0) * n + delta**2 * count * n / tot
    var /= tot
    mean += delta * n / tot
    return mean, var, tot


@ok(E)
def rs_welford(mean, var, count, batch):
    m, m2, c = np.array(mean, float), np.array(var, float) * count, count
    for x in batch:
        c += 1
        d = x - m
        m = m + d / c
        m2 = m2 + d * (x - m)
    return m, m2 / c, c


@ok(E)
def rs_np_average(mean, var, count, batch):
    n = batch.shape[0]
    new_mean = np.average([mean, batch.mean(axis=0)], axis=0, weights=[count, n])
    m2 = var * count + batch.var(axis=0) * n + (batch.mean(axis=0) - mean) ** 2 * count * n / (count + n)
    return new_mean, m2 / (count + n), count + n


@ok(E)
def rs_second_moments(mean, var, count, batch):
    n = len(batch)
    tot = count + n
    new_mean = (mean * count + batch.sum(0)) / tot
    ex2 = ((var + mean**2) * count + (batch**2).sum(0)) / tot
    return new_mean, ex2 - new_mean**2, tot


@wrong(E, hint="delta")
def rs_no_delta(mean, var, count, batch):
    n = len(batch)
    tot = count + n
    return (mean * count + batch.mean(0) * n) / tot, (var * count + batch.var(0) * n) / tot, tot


@wrong(E)
def rs_sample_var(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    tot = count + n
    bv = batch.var(0, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean + delta * n / tot, (var * count + bv * n + delta**2 * count * n / tot) / tot, tot


@wrong(E, hint="new count")
def rs_count_unchanged(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    tot = count + n
    return mean + delta * n / tot, (var * count + batch.var(0) * n + delta**2 * count * n / tot) / tot, count


@wrong(E)
def rs_wrong_axis(mean, var, count, batch):
    n = batch.shape[1]
    delta = batch.mean(1).mean() - mean
    tot = count + n
    return mean + delta * n / tot, (var * count + batch.var() * n + delta**2 * count * n / tot) / tot, tot


@wrong(E)
def rs_delta_no_divide(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    tot = count + n
    return mean + delta * n / tot, (var * count + batch.var(0) * n + delta**2 * count * n) / tot, tot


@wrong(E, hint="not the standard deviation")
def rs_returns_std(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    tot = count + n
    return mean + delta * n / tot, np.sqrt((var * count + batch.var(0) * n + delta**2 * count * n / tot) / tot), tot


# =========================================================== 7.2 clipped_value_loss
E = check_clipped_value_loss


def truth_clipped_value_loss(fn, rng):
    B = int(rng.integers(1, 6))
    old = torch.tensor(rng.normal(size=B), dtype=D)
    values = old + torch.tensor(rng.normal(size=B) * 0.4, dtype=D)
    targets = torch.tensor(rng.normal(size=B), dtype=D)
    eps = float(rng.choice([0.1, 0.2, 0.5]))
    return _same_value_and_grads(lambda v: fn(v, old, targets, eps),
                                 lambda v: lib_losses.clipped_value_loss(v, old, targets, eps), [values])


@ok(E)
def cv_maximum(values, old_values, targets, eps):
    clipped = torch.clamp(values, old_values - eps, old_values + eps)
    return 0.5 * torch.maximum((values - targets) ** 2, (clipped - targets) ** 2).mean()


@ok(E)
def cv_where(values, old_values, targets, eps):
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    a, b = (values - targets).pow(2), (clipped - targets).pow(2)
    return torch.where(a > b, a, b).mean() / 2


@ok(E)
def cv_neg_min(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return -0.5 * torch.min(-(values - targets) ** 2, -(clipped - targets) ** 2).mean()


@ok(E)
def cv_loop(values, old_values, targets, eps):
    total = 0
    for v, o, t in zip(values, old_values, targets):
        c = o + torch.clamp(v - o, -eps, eps)
        total = total + 0.5 * torch.max((v - t) ** 2, (c - t) ** 2)
    return total / len(values)


@wrong(E, hint="not the min")
def cv_min(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return 0.5 * torch.min((values - targets) ** 2, (clipped - targets) ** 2).mean()


@wrong(E, hint="max per sample")
def cv_max_of_means(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return 0.5 * torch.max(((values - targets) ** 2).mean(), ((clipped - targets) ** 2).mean())


@wrong(E, hint="graph")
def cv_clipped_detached(values, old_values, targets, eps):
    clipped = (old_values + torch.clamp(values - old_values, -eps, eps)).detach()
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


@wrong(E, hint="eps you are given")
def cv_fixed_eps(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, -0.2, 0.2)
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


@wrong(E, hint="both sides")
def cv_one_sided(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, max=eps)
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


@wrong(E)
def cv_clip_fraction_of_old(values, old_values, targets, eps):
    clipped = torch.clamp(values, old_values * (1 - eps), old_values * (1 + eps))
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


@wrong(E, hint="0.5")
def cv_no_half(values, old_values, targets, eps):
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()


# =========================================================== the placeholder and a partial raise

def placeholder_gae(rewards, values, next_values, dones, gamma, lam):
    # YOUR CODE HERE
    raise NotImplementedError()


def gae_2d_not_done(rewards, values, next_values, dones, gamma, lam):
    if np.ndim(rewards) == 2:
        raise NotImplementedError("2-D later")
    return lib_adv.gae(rewards, values, next_values, dones, gamma, lam).numpy()


TRUTH = {
    "discounted_return": truth_discounted_return, "reward_to_go": truth_reward_to_go,
    "reinforce_loss": truth_reinforce_loss, "td_errors": truth_td_errors,
    "bootstrap_values": truth_bootstrap_values, "gae": truth_gae,
    "normalize_advantages": truth_normalize_advantages, "conjugate_gradient": truth_conjugate_gradient,
    "fisher_vector_product": truth_fisher_vector_product, "probability_ratio": truth_probability_ratio,
    "clipped_surrogate": truth_clipped_surrogate, "kl_penalty_objective": truth_kl_penalty_objective,
    "adaptive_kl_beta": truth_adaptive_kl_beta, "update_running_stats": truth_running,
    "clipped_value_loss": truth_clipped_value_loss,
}
NUMPY_EXERCISES = {"discounted_return", "reward_to_go", "td_errors", "bootstrap_values", "gae",
                   "normalize_advantages", "update_running_stats"}


def confirmed(impl: Impl) -> bool:
    """True when the implementation agrees with the reference on N_RANDOM random inputs."""
    rng = np.random.default_rng(0)
    for _ in range(N_RANDOM):
        try:
            if not TRUTH[impl.exercise.name](impl.fn, rng):
                return False
        except Exception:
            return False
    return True


def _hint(message: str) -> str | None:
    for line in message.splitlines():
        if line.strip().startswith("Hint:"):
            return line
    return None


def verdict(impl: Impl) -> str:
    """"ok", or the audit column the checker's answer falls in."""
    try:
        result = impl.exercise.evaluate(impl.fn)
    except Exception:
        return "crash"
    if impl.label == "ok":
        return "ok" if result.passed else "false rejection"
    if result.passed:
        return "false pass"
    msg = result.message
    hint = _hint(msg)
    if result.status == "unfilled" or "Case:" not in msg:
        return "misleading hint"
    if hint is not None and (impl.hint is None or impl.hint not in hint):
        return "misleading hint"
    if impl.exercise.name in NUMPY_EXERCISES and "autograd" in msg:
        return "misleading hint"
    return "ok"


def audit_counts() -> dict:
    counts: dict = {}
    for impl in IMPLS:
        v = verdict(impl)
        row = counts.setdefault(impl.exercise.name, {"false pass": 0, "false rejection": 0, "crash": 0,
                                                     "misleading hint": 0})
        if v != "ok":
            row[v] += 1
    return counts


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_label_is_confirmed_on_random_inputs(impl):
    assert confirmed(impl) == (impl.label == "ok")


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_checker_verdict(impl):
    assert verdict(impl) == "ok", impl.exercise.evaluate(impl.fn).message


def test_each_exercise_has_enough_implementations():
    for name in TRUTH:
        mine = [i for i in IMPLS if i.exercise.name == name]
        assert sum(i.label == "wrong" for i in mine) >= 6, name
        assert sum(i.label == "ok" for i in mine) >= 4, name


def test_placeholder_is_unfilled_but_a_partial_raise_is_an_error():
    assert check_gae.evaluate(placeholder_gae).status == "unfilled"
    result = check_gae.evaluate(gae_2d_not_done)
    assert result.status == "error", result.message
    assert "NotImplementedError" in result.message and "Case:" in result.message


if __name__ == "__main__":
    total = {"false pass": 0, "false rejection": 0, "crash": 0, "misleading hint": 0}
    for name, row in audit_counts().items():
        print(f"{name:24s} " + "  ".join(f"{k} {v}" for k, v in row.items()))
        for k in total:
            total[k] += row[k]
    print("total", total)
    bad = [i.id for i in IMPLS if confirmed(i) != (i.label == "ok")]
    print("labels not confirmed:", bad)
    for i in IMPLS:
        v = verdict(i)
        if v != "ok":
            print(f"  {v:16s} {i.id}")
