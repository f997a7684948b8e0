"""A third audit (issue 19) of the exercise checkers of chapters 0-10, held out from the fixes.

Every implementation here was written for this audit (see the two waves below), as a learner
reading the exercise's text would write it: right answers in unusual ways (another order of operations,
float64, a loop, NumPy where the text allows it, a one-element tensor where the text allows "a tensor
holding one number", in-place work on copies), and plausible mistakes of the classes issue 19 names: a
configuration the cases did not exercise, a part of the output never compared (an absent gradient, an
input edited in place, a return value the next cell cannot use), a specification the cases could not see
(an epsilon's place, "exactly 0", sizes and values beyond the cases), and the checker's own state.

Each label is first confirmed on random inputs against the chapter's words (``truth_*``: values and
gradients against the library's reference, the inputs afterwards, what the next cell does with the value),
never against the checker; then the checker must agree with it:

- a wrong implementation is rejected (no false pass), a right one accepted (no false rejection);
- the checker never raises (no crash);
- a hint is shown only when it is the hint for that mistake (``hint`` words), never another one, and a
  rejection's reason names the part that differs (``reason`` words, where given).

It was written in two waves, each run against the checkers only once its labels were confirmed: the first
(155 implementations) before any checker changed, plus four one-element losses (``cs3_``, ``kp3_``,
``cvl3_``, ``bt3_one_element``) added after its first run showed that class; the second (32, after the line
"a second wave") after the first wave's fixes and before its own. Labels changed after a checker had run only
where a re-reading of the text decided, never to match a checker: the one-element losses of chapters 1, 5, 6
and 8 are wrong because those texts ask for a *scalar* (chapters 9 and 10 allow "a tensor holding one
number"; chapter 7's text says neither and its next cell works on one element), and ``ga3_float64_inside``
is wrong by "exactly 0" (a checker case showed a float64 single group; its truth now has that input too).

``python tests/test_checks_audit3.py`` prints the table per chapter (run it with ``PYTHONPATH`` pointing
at an older tree for the "before" column: the implementations use only the library's public names).

Before the fixes (``PYTHONPATH=<the tree at 779caf6>``), 191 implementations, per chapter (false pass / false
rejection / crash / misleading message): 1: 0/0/0/1, 5: 0/0/0/4, 6: 0/0/0/1, 7: 1/1/0/0, 8: 0/0/0/1,
9: 3/0/0/0, 10: 1/1/0/0, chapters 0, 2, 3, 4: none; in all 5 false passes, 2 false rejections, 7 misleading
messages. After: none (the tests below).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppo_lib import losses as L
from ppo_lib.advantages import discounted_return as ref_discounted_return, gae as ref_gae, rollout_advantages
from ppo_lib.algos.ppo import adaptive_kl_beta as ref_adaptive_kl_beta, ppo_update as ref_ppo_update
from ppo_lib.algos.trpo import conjugate_gradient as ref_cg
from ppo_lib.losses import approx_kl, normalize, value_loss
from ppo_lib.rlhf import addition
from ppo_lib.rlhf.dpo import dpo_loss as ref_dpo
from ppo_lib.rlhf.evaluate import pass_at_k as ref_pass_at_k
from ppo_lib.rlhf.grpo import aggregation_weights, group_advantages as ref_group, rloo_advantages as ref_rloo
from ppo_lib.rlhf.kl import adaptive_kl_update as ref_akl
from ppo_lib.rlhf.model import gather_logprobs as ref_gather
from ppo_lib.rlhf.reward_model import bradley_terry_loss as ref_bt
from ppo_lib.rlhf.token_advantages import masked_whiten as ref_whiten, per_token_rewards as ref_ptr
from ppo_lib.teaching.checks import (check_adaptive_kl_beta, check_adaptive_kl_update, check_aggregate_loss,
                                     check_bradley_terry_loss, check_clipped_surrogate, check_clipped_value_loss,
                                     check_conjugate_gradient, check_discounted_return, check_dpo_loss,
                                     check_format_reward, check_gae, check_gather_logprobs,
                                     check_gaussian_log_prob_entropy, check_group_advantages, check_k3_kl,
                                     check_kl_penalty_objective, check_masked_whiten, check_normalize_advantages,
                                     check_pass_at_k, check_per_token_rewards, check_ppo_update,
                                     check_probability_ratio, check_reinforce_loss, check_rloo_advantages,
                                     check_running_mean_std, check_td_errors)
from ppo_lib.teaching.checks.capstone import fresh_objects

torch.set_num_threads(1)
D = torch.float64
N_RANDOM = 30


@dataclasses.dataclass
class Impl:
    exercise: Any
    fn: Callable
    label: str  # "ok" | "wrong"
    hint: str | None = None  # words a shown hint must contain; None: no hint may be shown
    reason: str | None = None  # words the rejection's reason must contain (what differs), where given

    @property
    def id(self) -> str:
        return f"{self.exercise.name}-{self.fn.__name__}"


IMPLS: list[Impl] = []
CHAPTER = {}


def ok(exercise):
    def deco(fn):
        IMPLS.append(Impl(exercise, fn, "ok"))
        return fn
    return deco


def wrong(exercise, hint=None, reason=None):
    def deco(fn):
        IMPLS.append(Impl(exercise, fn, "wrong", hint, reason))
        return fn
    return deco


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _close(a, b, rtol=1e-5, atol=1e-6) -> bool:
    try:
        a, b = _np(a), _np(b)
    except Exception:
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _same(a, b) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


def torch_truth(fn, ref, args, grad_args=(), scalar=False, weights_seed=0, rtol=1e-5, atol=1e-6):
    """fn and ref on the same inputs: values equal, every input unchanged, a torch tensor back (where
    ``scalar``: 0-d when the text says "scalar"; one element where it allows "a tensor holding one number"
    or says nothing and the next cell works on one element), and equal gradients w.r.t. the ``grad_args``
    positions (of the value, or of a fixed random weighting of it)."""
    leaves, given = [], []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            leaf = a.detach().clone().requires_grad_(i in grad_args)
            leaves.append(leaf)
            given.append(leaf.clone() if i in grad_args else leaf.detach().clone())
        else:
            leaves.append(a)
            given.append(a)
    out = fn(*given)
    for a, g in zip(args, given):
        if isinstance(a, torch.Tensor) and not _same(a, g.detach()):
            return False
    if not isinstance(out, torch.Tensor):
        return False
    if scalar:
        if out.numel() != 1 or (scalar == "0-d" and out.ndim != 0):
            return False
        out = out.reshape(())
    r_leaves = [a.detach().clone().requires_grad_(i in grad_args) if isinstance(a, torch.Tensor) else a
                for i, a in enumerate(args)]
    expected = ref(*r_leaves)
    if out.shape != expected.shape or not _close(out, expected, rtol, atol):
        return False
    if not grad_args:
        return True
    if not out.requires_grad:
        return False
    w = torch.rand(out.shape, generator=torch.Generator().manual_seed(weights_seed), dtype=D) + 0.5
    got = torch.autograd.grad((out * w.to(out.dtype)).sum(), [leaves[i] for i in grad_args], allow_unused=True)
    exp = torch.autograd.grad((expected * w.to(expected.dtype)).sum(), [r_leaves[i] for i in grad_args],
                              allow_unused=True)
    for g, e in zip(got, exp):
        if g is None and e is None:
            continue
        g = torch.zeros_like(e) if g is None else g
        e = torch.zeros_like(g) if e is None else e
        if not _close(g, e, rtol, atol):
            return False
    return True


def _rand(rng, *shape, scale=1.0, dtype=D):
    return torch.as_tensor(rng.normal(size=shape) * scale, dtype=dtype)


# =========================================================== chapter 0-4 (the older exercises, a few each)
E = check_discounted_return
CHAPTER[E.name] = 0


def truth_discounted_return(fn, rng):
    n = int(rng.integers(0, 14))
    rewards = list(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)
    gamma = float(rng.choice([0.0, 0.5, 0.9, 1.0, rng.random()]))
    before = np.array(rewards, float).copy()
    got = fn(rewards, gamma)
    f"{got:.3f}"  # the next cell formats it
    return np.array_equal(np.array(rewards, float), before) and np.ndim(got) == 0 and _close(
        got, ref_discounted_return(before, gamma))


@ok(E)
def dr3_polyval(rewards, gamma):
    r = np.asarray(rewards, float)
    return float(np.polyval(r[::-1], gamma)) if r.size else 0.0


@ok(E)
def dr3_reduce(rewards, gamma):
    import functools
    return functools.reduce(lambda acc, r: r + gamma * acc, reversed(list(rewards)), 0.0)


@wrong(E)
def dr3_pop(rewards, gamma):
    total, t = 0.0, 0
    while len(rewards):
        r = rewards[0]
        rewards = rewards[1:] if isinstance(rewards, np.ndarray) else rewards
        if isinstance(rewards, list):
            rewards.pop(0)
        total += gamma**t * r
        t += 1
    return total


@wrong(E)
def dr3_gamma_first_missing(rewards, gamma):
    later = float(sum(gamma**t * r for t, r in enumerate(rewards) if t > 0))
    return later + (float(rewards[0]) if len(rewards) > 1 else 0.0)


E = check_reinforce_loss
CHAPTER[E.name] = 1


def truth_reinforce_loss(fn, rng):
    B = int(rng.integers(1, 20))
    lp, w = -torch.as_tensor(rng.random(B) * 3, dtype=D), _rand(rng, B)
    return torch_truth(fn, lambda a, b: -(a * b.detach()).mean(), (lp, w), grad_args=(0, 1), scalar="0-d")


@ok(E)
def rl3_dot(logprobs, weights):
    return -(logprobs @ weights.detach()) / logprobs.shape[0]


@wrong(E, reason="the exercise asks for a single number")
def rl3_one_element(logprobs, weights):
    return -(logprobs * weights.detach()).sum(0, keepdim=True) / len(logprobs)  # the text: "a scalar tensor"


@wrong(E, hint='detach them')
def rl3_weights_graph(logprobs, weights):
    return -torch.mean(logprobs * weights)


@wrong(E, hint='not the sum')
def rl3_sum(logprobs, weights):
    return -(logprobs * weights.detach()).sum()


E = check_td_errors
CHAPTER[E.name] = 2


def truth_td_errors(fn, rng):
    shape = (int(rng.integers(1, 12)),) + ((int(rng.integers(1, 5)),) if rng.random() < 0.5 else ())
    r, v, nv = (rng.normal(size=shape) for _ in range(3))
    g = float(rng.random())
    c = [x.copy() for x in (r, v, nv)]
    got = fn(r, v, nv, g)
    return all(np.array_equal(a, b) for a, b in zip(c, (r, v, nv))) and _close(got, c[0] + g * c[2] - c[1])


@ok(E)
def td3_subtract_first(rewards, values, next_values, gamma):
    return np.subtract(rewards, values) + np.multiply(gamma, next_values)


@wrong(E)
def td3_in_place(rewards, values, next_values, gamma):
    rewards += gamma * next_values
    return rewards - values


E = check_gae
CHAPTER[E.name] = 3


def truth_gae(fn, rng):
    T = int(rng.integers(1, 15))
    shape = (T,) + ((int(rng.integers(1, 4)),) if rng.random() < 0.5 else ())
    r, v, nv = (rng.normal(size=shape) for _ in range(3))
    d = rng.random(shape) < 0.25
    g, lam = float(rng.random()), float(rng.random())
    c = [x.copy() for x in (r, v, nv, d)]
    got = fn(r, v, nv, d, g, lam)
    return (all(np.array_equal(a, b) for a, b in zip(c, (r, v, nv, d)))
            and _close(got, ref_gae(c[0], c[1], c[2], c[3], g, lam).numpy()))


@ok(E)
def gae3_matrix(rewards, values, next_values, dones, gamma, lam):
    delta = np.asarray(rewards, float) + gamma * np.asarray(next_values, float) - np.asarray(values, float)
    T = delta.shape[0]
    cont = (1.0 - np.asarray(dones, float)) * gamma * lam
    out = np.zeros_like(delta)
    for t in range(T):
        factor = np.ones_like(delta[0])
        for k in range(t, T):
            out[t] = out[t] + factor * delta[k]
            factor = factor * cont[k]
    return out


@wrong(E, hint='do not multiply it by (1 - dones)')
def gae3_done_on_delta(rewards, values, next_values, dones, gamma, lam):
    delta = rewards + gamma * next_values * (1 - dones) - values
    out, run = np.zeros_like(delta), np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        run = delta[t] + gamma * lam * (1 - dones[t]) * run
        out[t] = run
    return out


E = check_normalize_advantages
CHAPTER[E.name] = 3


def truth_normalize(fn, rng):
    n = int(rng.integers(1, 40))
    x = rng.normal(size=n) * rng.choice([1e-3, 1.0, 100.0]) + (rng.normal() if rng.random() < 0.7 else 0.0)
    if rng.random() < 0.2:
        x = np.full(n, float(rng.normal()))
    c = x.copy()
    got = fn(x)
    if not np.array_equal(c, x) or np.any(np.isnan(_np(got))):
        return False
    centred = c - c.mean()
    if n < 2:
        return _close(got, centred)
    return _close(got, centred / (c.std(ddof=1) + 1e-8), 1e-4) or _close(got, centred / (c.std() + 1e-8), 1e-4)


@ok(E)
def na3_torch_roundtrip(advantages):
    t = torch.as_tensor(np.asarray(advantages, float))
    return L.normalize(t).numpy()


@wrong(E)
def na3_eps_in_sqrt_big(advantages):
    a = np.asarray(advantages, float)
    if a.size < 2:
        return a - a.mean()
    return (a - a.mean()) / np.sqrt(a.var() + 1e-2)


E = check_conjugate_gradient
CHAPTER[E.name] = 4


class _Counted:
    def __init__(self, A):
        self.A, self.calls = A, 0

    def __call__(self, v):
        self.calls += 1
        return self.A @ v


def truth_cg(fn, rng):
    n = int(rng.integers(2, 9))
    M = torch.as_tensor(rng.normal(size=(n, n)), dtype=D)
    A = M @ M.T + n * torch.eye(n, dtype=D)
    b = _rand(rng, n)
    iters = int(rng.integers(0, n + 3))
    mine, theirs = _Counted(A), _Counted(A)
    b0 = b.clone()
    got = fn(mine, b, iters)
    exp = ref_cg(theirs, b0.clone(), iters)
    return _same(b, b0) and _close(got, exp, 1e-6, 1e-8) and mine.calls <= theirs.calls


@ok(E)
def cg3_pAp_beta(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p = r.clone()
    for _ in range(iters):
        if r @ r < 1e-10:
            break
        Ap = Avp(p)
        alpha = (r @ r) / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        beta = -(r @ Ap) / (p @ Ap)
        p = r + beta * p
    return x


@wrong(E)
def cg3_two_products(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p = r.clone()
    for _ in range(iters):
        if r @ r < 1e-10:
            break
        alpha = (r @ r) / (p @ Avp(p))
        x = x + alpha * p
        r_new = b - Avp(x)
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


# =========================================================== chapter 5: ratio, surrogate, the capstone
E = check_probability_ratio
CHAPTER[E.name] = 5


def truth_ratio(fn, rng):
    shape = (int(rng.integers(1, 12)),) + ((int(rng.integers(1, 4)),) if rng.random() < 0.4 else ())
    dtype = D if rng.random() < 0.5 else torch.float32
    new = -torch.as_tensor(rng.random(shape) * rng.choice([1.0, 150.0]), dtype=dtype)
    old = new + torch.as_tensor(rng.normal(size=shape) * 0.5, dtype=dtype)
    return torch_truth(fn, lambda a, b: torch.exp(a - b), (new, old), grad_args=(0,), rtol=1e-4)


@ok(E)
def pr3_exp_neg(logp_new, logp_old):
    return 1.0 / torch.exp(logp_old - logp_new)


@ok(E)
def pr3_float64(logp_new, logp_old):
    return torch.exp(logp_new.double() - logp_old.double()).to(logp_new.dtype)


@wrong(E)
def pr3_quotient(logp_new, logp_old):
    return torch.exp(logp_new) / torch.exp(logp_old)


@wrong(E)
def pr3_in_place_old(logp_new, logp_old):
    logp_old.neg_()
    return torch.exp(logp_new + logp_old)


E = check_clipped_surrogate
CHAPTER[E.name] = 5


def truth_surrogate(fn, rng):
    B = int(rng.integers(1, 16))
    ratio = torch.as_tensor(np.exp(rng.normal(size=B) * 0.4), dtype=D)
    adv = _rand(rng, B)
    eps = float(rng.choice([0.1, 0.2, 0.3, rng.random() * 0.5]))
    return torch_truth(fn, L.clipped_surrogate, (ratio, adv, eps), grad_args=(0,), scalar="0-d")


@ok(E)
def cs3_where(ratio, advantages, eps):
    clipped = ratio.clamp(1 - eps, 1 + eps) * advantages
    plain = ratio * advantages
    return torch.where(plain < clipped, plain, clipped).mean()


@ok(E)
def cs3_sign_trick(ratio, advantages, eps):
    bound = torch.where(advantages >= 0, torch.minimum(ratio, torch.full_like(ratio, 1 + eps)),
                        torch.maximum(ratio, torch.full_like(ratio, 1 - eps)))
    return (bound * advantages).mean()


@wrong(E, reason="the exercise asks for a single number")
def cs3_one_element(ratio, advantages, eps):
    terms = torch.min(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages)
    return terms.sum(0, keepdim=True) / terms.numel()


@wrong(E)
def cs3_clamp_in_place(ratio, advantages, eps):
    plain = ratio * advantages
    ratio.clamp_(1 - eps, 1 + eps)
    return torch.min(plain, ratio * advantages).mean()


@wrong(E, hint='not the loss')
def cs3_loss_sign(ratio, advantages, eps):
    return -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages).mean()


# ---------------------------------------------------------------- the capstone
E = check_ppo_update
CHAPTER[E.name] = 5

# (config overrides, seed, episode length): every switch the text names, and target-KL values on both sides
# of the rule's threshold (a stop rule other than "k3 > target_kl" changes the number of epochs on some)
_CAP_INPUTS = [
    ({}, 10, 40), ({"clip_eps": 0.15, "gamma": 0.95, "gae_lambda": 0.9, "entropy_coef": 0.02, "epochs": 3}, 11, 12),
    ({"normalize_advantages": False, "max_grad_norm": 0.0, "value_coef": 0.25}, 12, 40),
    ({"minibatch_size": 40, "max_grad_norm": 0.05, "bootstrap_truncation": False}, 13, 12),
    ({"target_kl": 2e-3, "epochs": 6}, 10, 12), ({"target_kl": 1e-3, "epochs": 6}, 10, 40),
    ({"target_kl": 5e-3, "epochs": 6}, 13, 12),
]
_CAP_REFERENCE: dict = {}


def _cap_run(fn, cfg, seed, steps):
    policy, opt, rollout, config, gen = fresh_objects(cfg, seed, steps)
    pristine = copy.deepcopy(rollout)
    info = fn(policy, opt, rollout, config, gen)
    changed = any(not _same(getattr(rollout, f.name), getattr(pristine, f.name)) for f in dataclasses.fields(rollout))
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()]), info, changed


def truth_ppo_update(fn, rng):
    """Every input of _CAP_INPUTS (``rng`` unused: the inputs are chosen to show each rule): the same
    parameters as the library's update, the rollout unchanged, and the four diagnostics, each a number the
    training loop can store with float() and check with math.isfinite."""
    for key in _CAP_INPUTS:
        k = repr(key)
        if k not in _CAP_REFERENCE:
            _CAP_REFERENCE[k] = _cap_run(ref_ppo_update, *key)
        p_ref, info_ref, _ = _CAP_REFERENCE[k]
        p, info, changed = _cap_run(fn, *key)
        if changed or not isinstance(info, dict) or not torch.allclose(p, p_ref, rtol=1e-4, atol=1e-6):
            return False
        for name in ("clip_fraction", "approx_kl_k3", "epochs", "explained_variance"):
            if name not in info or not math.isfinite(info[name]):
                return False
            if not math.isclose(float(info[name]), float(info_ref[name]), rel_tol=1e-3, abs_tol=1e-6):
                return False
    return True


def cap_update(policy, optimizer, rollout, config, generator, *, stop_before=False, ev_np=False,
               own_norm=False, flat_first=False, zero_set_none=True, cf_after=False, k3_reversed=False,
               value_from_dist=False, ratio_log_first=False, tensor_diag=False, kl_minibatch_mean=False,
               entropy_sum=False, k3_old_perm=False, norm_unbiased_off=False, clip_value=False,
               epochs_int=False, target_from_values=False):
    """One learner's update, written out from the text's five steps; each switch is one variant."""
    actor = policy.actor
    adv, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                      truncation_as_termination=not config.bootstrap_truncation)
    T, N = rollout.logprobs.shape[:2]
    obs = rollout.obs.reshape(T * N, *rollout.obs.shape[2:])
    actions = rollout.actions.reshape(T * N, *rollout.actions.shape[2:])
    logp_old = rollout.logprobs.reshape(-1)
    values_old = rollout.values.reshape(-1)
    adv, targets = adv.reshape(-1), targets.reshape(-1)
    if target_from_values:
        targets = values_old + adv
    B, M = T * N, config.minibatch_size
    fractions, kls, epochs = [], [], 0

    def whole_k3():
        with torch.no_grad():
            new = actor.log_prob(actor.distribution(obs), actions)
        if k3_reversed:
            log_r = logp_old - new
            return float(((log_r.exp() - 1) - log_r).mean())
        return approx_kl(logp_old, new)[1]

    for e in range(config.epochs):
        if stop_before and e > 0 and config.target_kl is not None and whole_k3() > config.target_kl:
            break
        perm = torch.randperm(B, generator=generator)
        for k in range(B // M):
            mb = perm[k * M:(k + 1) * M]
            dist = actor.distribution(obs[mb])
            logp = actor.log_prob(dist, actions[mb])
            ratio = (logp - logp_old[mb]).exp() if not ratio_log_first else torch.exp(logp) / torch.exp(logp_old[mb])
            a = adv[mb]
            if config.normalize_advantages:
                if own_norm:
                    a = (a - a.mean()) / (a.std(unbiased=not norm_unbiased_off) + 1e-8)
                else:
                    a = normalize(a)
            surrogate = torch.min(ratio * a, ratio.clamp(1 - config.clip_eps, 1 + config.clip_eps) * a).mean()
            v = policy.value(obs[mb])
            if clip_value:
                vo = values_old[mb]
                vc = vo + (v - vo).clamp(-config.clip_eps, config.clip_eps)
                vloss = 0.5 * torch.max((v - targets[mb]) ** 2, (vc - targets[mb]) ** 2).mean()
            else:
                vloss = value_loss(v, targets[mb])
            ent = actor.entropy(dist)
            ent = ent.sum() / M if entropy_sum else ent.mean()
            loss = -surrogate + config.value_coef * vloss - config.entropy_coef * ent
            optimizer.zero_grad(set_to_none=zero_set_none)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            if cf_after:
                with torch.no_grad():
                    r2 = (actor.log_prob(actor.distribution(obs[mb]), actions[mb]) - logp_old[mb]).exp()
                fractions.append(float(((r2 - 1).abs() > config.clip_eps).double().mean()))
            else:
                fractions.append(float(((ratio.detach() - 1).abs() > config.clip_eps).double().mean()))
            if kl_minibatch_mean:
                kls.append(float((((ratio.detach() - 1) - ratio.detach().log())).mean()))
        epochs += 1
        if not stop_before and config.target_kl is not None and whole_k3() > config.target_kl:
            break
    k3 = whole_k3() if not kl_minibatch_mean else float(np.mean(kls))
    if ev_np:
        t, v = targets.double().numpy(), values_old.double().numpy()
        ev = float("nan") if t.var() == 0 else 1.0 - float(np.var(t - v) / np.var(t))
    else:
        ev = 1.0 - float((targets - values_old).var() / targets.var())
    info = {"clip_fraction": float(np.mean(fractions)), "approx_kl_k3": k3,
            "epochs": epochs if epochs_int else float(epochs), "explained_variance": ev}
    if tensor_diag:
        info = {k: torch.tensor(v, requires_grad=False) for k, v in info.items()}
    return info


def _cap(name, **switches):
    def impl(policy, optimizer, rollout, config, generator):
        return cap_update(policy, optimizer, rollout, config, generator, **switches)
    impl.__name__ = name
    return impl


for _name, _sw in [("cap3_plain", {}), ("cap3_stop_checked_before_next_epoch", {"stop_before": True}),
                   ("cap3_explained_variance_numpy", {"ev_np": True}), ("cap3_own_normalize", {"own_norm": True}),
                   ("cap3_zero_grad_to_zeros", {"zero_set_none": False}),
                   ("cap3_ratio_of_probabilities", {"ratio_log_first": True}),
                   ("cap3_diagnostics_as_0d_tensors", {"tensor_diag": True}),
                   ("cap3_epochs_as_int", {"epochs_int": True}),
                   ("cap3_targets_as_values_plus_advantages", {"target_from_values": True})]:
    ok(E)(_cap(_name, **_sw))

for _name, _sw, _reason in [
        ("cap3_clip_fraction_after_the_step", {"cf_after": True}, "clip_fraction"),
        ("cap3_k3_reversed", {"k3_reversed": True}, None),
        ("cap3_kl_mean_of_minibatches", {"kl_minibatch_mean": True}, "approx_kl_k3"),
        ("cap3_biased_std_normalisation", {"own_norm": True, "norm_unbiased_off": True},
         "the advantages' normalisation"),
        ("cap3_value_clipped", {"clip_value": True}, "value loss")]:
    wrong(E, reason=_reason)(_cap(_name, **_sw))


@wrong(E, reason="optimizer")
def cap3_fresh_adam(policy, optimizer, rollout, config, generator):
    own = torch.optim.Adam(policy.parameters(), lr=optimizer.param_groups[0]["lr"], eps=1e-5)
    return cap_update(policy, own, rollout, config, generator)


@wrong(E, reason="rollout")
def cap3_advantages_written_into_rollout(policy, optimizer, rollout, config, generator):
    adv, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                      truncation_as_termination=not config.bootstrap_truncation)
    rollout.values.copy_(targets)  # "keep the targets with the rollout": the caller's values are gone
    rollout.values.sub_(adv)
    rollout.values.add_(adv * 0)
    rollout.rewards.mul_(1.0)
    info = cap_update(policy, optimizer, rollout, config, generator)
    rollout.values.add_(1e-3)
    return info


@wrong(E)
def cap3_lr_from_config(policy, optimizer, rollout, config, generator):
    for g in optimizer.param_groups:
        g["lr"] = config.lr * 0.5  # "anneal" inside the update: the training loop owns the learning rate
    return cap_update(policy, optimizer, rollout, config, generator)


# =========================================================== chapter 6
E = check_kl_penalty_objective
CHAPTER[E.name] = 6


def truth_kl_objective(fn, rng):
    B = int(rng.integers(1, 12))
    ratio = torch.as_tensor(np.exp(rng.normal(size=B) * 0.3), dtype=D)
    adv, kl = _rand(rng, B), torch.as_tensor(rng.random(B) * 0.2, dtype=D)
    beta = float(rng.choice([0.0, 0.5, 3.0]))
    return torch_truth(fn, L.kl_penalty_surrogate, (ratio, adv, kl, beta),
                       grad_args=(0, 2), scalar="0-d")


@ok(E)
def kp3_separate_means(ratio, advantages, kl, beta):
    return (ratio * advantages).mean() - beta * kl.mean()


@wrong(E, reason="the exercise asks for a single number")
def kp3_one_element(ratio, advantages, kl, beta):
    return torch.mean(ratio * advantages - beta * kl, dim=0, keepdim=True)


@wrong(E, hint='the KL is detached')
def kp3_kl_detached(ratio, advantages, kl, beta):
    return (ratio * advantages - beta * kl.detach()).mean()


@wrong(E)
def kp3_in_place_kl(ratio, advantages, kl, beta):
    kl.mul_(beta)
    return (ratio * advantages - kl).mean()


E = check_adaptive_kl_beta
CHAPTER[E.name] = 6


def truth_adaptive_beta(fn, rng):
    beta = float(rng.choice([0.1, 1.0, 3.0]))
    target = float(rng.choice([0.005, 0.01, 0.02]))
    kl = target * float(rng.choice([0.3, 0.6, 0.7, 1.0, 1.4, 1.6, 3.0, rng.random() * 3]))
    got = fn(beta, kl, target)
    return isinstance(got, (float, int, np.floating)) and math.isclose(got, ref_adaptive_kl_beta(beta, kl, target),
                                                                       rel_tol=1e-9)


@ok(E)
def ab3_ratio(beta, kl, target):
    ratio = kl / target
    return beta * 2 if ratio > 1.5 else (beta / 2 if ratio < 1 / 1.5 else beta)


@wrong(E)
def ab3_band_multiplied(beta, kl, target):
    if kl > 1.5 * target:
        return beta * 2
    if kl < 0.5 * target:  # target / 1.5 misread as half the target
        return beta / 2
    return beta


# =========================================================== chapter 7
E = check_running_mean_std
CHAPTER[E.name] = 7


def truth_running(fn, rng):
    dim = int(rng.integers(1, 4))
    mean, var = rng.normal(size=dim), rng.random(dim) + 0.1
    count = float(rng.choice([1e-4, 3.0, 50.0]))
    batch = rng.normal(size=(int(rng.integers(1, 30)), dim)) * 2 + 1
    b0 = batch.copy()
    m, v, c = fn(mean.copy(), var.copy(), count, batch)
    n = len(b0)
    delta = b0.mean(0) - mean
    tot = count + n
    em, ev = mean + delta * n / tot, (var * count + b0.var(0) * n + delta**2 * count * n / tot) / tot
    return np.array_equal(batch, b0) and _close(m, em, 1e-7) and _close(v, ev, 1e-7) and math.isclose(float(c), tot)


@ok(E)
def rs3_sums(mean, var, count, batch):
    n = len(batch)
    total = count + n
    s1 = mean * count + batch.sum(0)
    s2 = (var + mean**2) * count + (batch**2).sum(0)
    new_mean = s1 / total
    return new_mean, s2 / total - new_mean**2, total


@wrong(E)
def rs3_sample_var(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    total = count + n
    bv = batch.var(0, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean + delta * n / total, (var * count + bv * n + delta**2 * count * n / total) / total, total


@wrong(E)
def rs3_batch_centred_in_place(mean, var, count, batch):
    n = len(batch)
    bm = batch.mean(0)
    batch -= bm
    delta = bm - mean
    total = count + n
    new_var = (var * count + (batch**2).mean(0) * n + delta**2 * count * n / total) / total
    return mean + delta * n / total, new_var, total


E = check_clipped_value_loss
CHAPTER[E.name] = 7


def truth_clipped_value(fn, rng):
    B = int(rng.integers(1, 12))
    v, old, t = _rand(rng, B), _rand(rng, B), _rand(rng, B)
    eps = float(rng.choice([0.1, 0.2, 0.5]))
    return torch_truth(fn, lambda a, b, c, e: L.clipped_value_loss(a, b, c, e), (v, old, t, eps), grad_args=(0,),
                       scalar=True)


@ok(E)
def cvl3_halves(values, old_values, targets, eps):
    clipped = torch.clamp(values, old_values - eps, old_values + eps)
    return torch.maximum((values - targets) ** 2 / 2, (clipped - targets) ** 2 / 2).mean()


@ok(E)
def cvl3_one_element(values, old_values, targets, eps):
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean().reshape(1)


@wrong(E)
def cvl3_targets_in_place(values, old_values, targets, eps):
    targets.sub_(old_values)
    c = torch.clamp(values - old_values, -eps, eps)
    return 0.5 * torch.max((values - old_values - targets) ** 2, (c - targets) ** 2).mean()


@wrong(E)
def cvl3_old_values_graph_detach_values(values, old_values, targets, eps):
    v = values.detach()
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return 0.5 * torch.max((v - targets) ** 2, (clipped - targets) ** 2).mean()


# ---------------------------------------------------------------- the Gaussian policy
E = check_gaussian_log_prob_entropy
CHAPTER[E.name] = 7
_LOG2PI = math.log(2 * math.pi)


def _ref_gauss(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


def truth_gaussian(fn, rng):
    B, Dm = int(rng.integers(1, 40)), int(rng.integers(1, 5))
    dtype = D if rng.random() < 0.5 else torch.float32
    mean = _rand(rng, B, Dm, dtype=dtype)
    log_std = torch.as_tensor(rng.uniform(-12, 1.5, size=Dm), dtype=dtype)
    spread = float(rng.choice([1.0, 3.0, 30.0]))
    actions = mean + log_std.exp() * _rand(rng, B, Dm, scale=spread, dtype=dtype)
    leaves = [x.detach().clone().requires_grad_(True) for x in (mean, log_std, actions)]
    given = [x.clone() for x in leaves]
    out = fn(*given)
    if any(not _same(g.detach(), x.detach()) for g, x in zip(given, leaves)):
        return False
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(o, torch.Tensor) for o in out):
        return False
    logp, ent = out
    r = [x.detach().double().requires_grad_(True) for x in (mean, log_std, actions)]
    elogp, eent = _ref_gauss(*r)
    if logp.shape != (B,) or ent.shape != (B,):
        return False
    if not torch.isfinite(logp).all() or not _close(logp, elogp, 1e-4, 1e-3) or not _close(ent, eent, 1e-4, 1e-4):
        return False
    if not logp.requires_grad or not ent.requires_grad:
        return False
    g = torch.autograd.grad(logp.sum(), leaves[:2], allow_unused=True, retain_graph=True)
    eg = torch.autograd.grad(elogp.sum(), r[:2], retain_graph=True)
    (ge,) = torch.autograd.grad(ent.sum(), leaves[1], allow_unused=True)
    (ege,) = torch.autograd.grad(eent.sum(), r[1])
    for a, b in list(zip(g, eg)) + [(ge, ege)]:
        if a is None or not _close(a, b, 1e-3, 1e-3):
            return False
    return True


@ok(E)
def gs3_independent(mean, log_std, actions):
    d = torch.distributions.Independent(torch.distributions.Normal(mean, torch.exp(log_std)), 1)
    return d.log_prob(actions), d.entropy()


@ok(E)
def gs3_mvn_diag(mean, log_std, actions):
    cov = torch.diag_embed(torch.exp(2 * log_std).expand_as(mean))
    d = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return d.log_prob(actions), d.entropy()


@ok(E)
def gs3_loop_over_dims(mean, log_std, actions):
    logp = torch.zeros(mean.shape[0], dtype=mean.dtype)
    ent = torch.zeros(mean.shape[0], dtype=mean.dtype)
    for j in range(mean.shape[1]):
        z = (actions[:, j] - mean[:, j]) / torch.exp(log_std[j])
        logp = logp - 0.5 * z**2 - log_std[j] - 0.5 * _LOG2PI
        ent = ent + log_std[j] + 0.5 * (1 + _LOG2PI)
    return logp, ent


@ok(E)
def gs3_list_and_repeat(mean, log_std, actions):
    var = torch.exp(log_std) ** 2
    logp = -0.5 * (((actions - mean) ** 2) / var + torch.log(2 * math.pi * var)).sum(dim=1)
    ent = (0.5 * torch.log(2 * math.pi * math.e * var)).sum().repeat(mean.shape[0])
    return [logp, ent]


@ok(E)
def gs3_actions_detached(mean, log_std, actions):
    a = actions.detach()
    logp = (-0.5 * ((a - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * _LOG2PI).sum(-1)
    ent = (log_std + 0.5 + 0.5 * _LOG2PI).sum() * torch.ones(mean.shape[0], dtype=mean.dtype)
    return logp, ent


@wrong(E, hint="computed the density first")
def gs3_log_of_product(mean, log_std, actions):
    std = torch.exp(log_std)
    density = torch.exp(-((actions - mean) ** 2) / (2 * std**2)) / (math.sqrt(2 * math.pi) * std)
    ent = (log_std + 0.5 * (1 + _LOG2PI)).sum(-1).expand(mean.shape[0])
    return torch.log(density.prod(-1)), ent


@wrong(E)
def gs3_std_clamped(mean, log_std, actions):
    std = torch.exp(log_std).clamp(min=1e-4)  # "for stability": the text has no floor
    d = torch.distributions.Normal(mean, std)
    return d.log_prob(actions).sum(-1), d.entropy().sum(-1)


@wrong(E, hint='entropy must stay a tensor')
def gs3_entropy_of_first_row(mean, log_std, actions):
    std = torch.exp(log_std)
    logp = torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)
    ent = torch.distributions.Normal(mean[0], std).entropy().sum().detach().expand(mean.shape[0])
    return logp, ent


@wrong(E)
def gs3_numpy_logp(mean, log_std, actions):
    m, s, a = (x.detach().numpy() for x in (mean, log_std, actions))
    logp = (-0.5 * ((a - m) / np.exp(s)) ** 2 - s - 0.5 * _LOG2PI).sum(-1)
    ent = (log_std + 0.5 * (1 + _LOG2PI)).sum(-1).expand(mean.shape[0])
    return torch.from_numpy(logp), ent


@wrong(E)
def gs3_log_std_in_place(mean, log_std, actions):
    log_std.clamp_(-5, 2)
    d = torch.distributions.Normal(mean, log_std.exp())
    return d.log_prob(actions).sum(-1), d.entropy().sum(-1)


@wrong(E)
def gs3_actions_in_place(mean, log_std, actions):
    actions.sub_(mean.detach())
    z = (actions - (mean - mean.detach())) / log_std.exp()
    logp = (-0.5 * z**2 - log_std - 0.5 * _LOG2PI).sum(-1)
    ent = (log_std + 0.5 * (1 + _LOG2PI)).sum(-1).expand(mean.shape[0])
    return logp, ent


@wrong(E)
def gs3_entropy_shape_D(mean, log_std, actions):
    d = torch.distributions.Normal(mean, log_std.exp())
    return d.log_prob(actions).sum(-1), (log_std + 0.5 * (1 + _LOG2PI))


@wrong(E)
def gs3_half_log_var_wrong(mean, log_std, actions):
    var = log_std.exp() ** 2
    logp = (-0.5 * (actions - mean) ** 2 / var - 0.5 * log_std - 0.5 * _LOG2PI).sum(-1)
    ent = (log_std + 0.5 * (1 + _LOG2PI)).sum(-1).expand(mean.shape[0])
    return logp, ent


# =========================================================== chapter 8
E = check_gather_logprobs
CHAPTER[E.name] = 8


def truth_gather(fn, rng):
    B, T, V = int(rng.integers(1, 14)), int(rng.integers(2, 20)), int(rng.integers(2, 30))
    P = int(rng.integers(1, T))
    dtype = D if rng.random() < 0.5 else torch.float32
    logits = _rand(rng, B, T, V, scale=float(rng.choice([1.0, 5.0, 40.0])), dtype=dtype)
    tokens = torch.as_tensor(rng.integers(0, V, size=(B, T)))
    return torch_truth(fn, lambda lg, tk, p: ref_gather(lg, tk, p), (logits, tokens, P), grad_args=(0,),
                       rtol=1e-4, atol=1e-4)


@ok(E)
def gl3_cross_entropy(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:-1]
    t = tokens[:, prompt_len:]
    return -F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1), reduction="none").reshape(t.shape)


@ok(E)
def gl3_logsumexp(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:logits.shape[1] - 1]
    picked = torch.take_along_dim(z, tokens[:, prompt_len:, None], dim=2)[..., 0]
    return picked - torch.logsumexp(z, dim=-1)


@ok(E)
def gl3_loop(logits, tokens, prompt_len):
    cols = []
    for t in range(prompt_len, tokens.shape[1]):
        lp = torch.log_softmax(logits[:, t - 1], dim=-1)
        cols.append(lp[torch.arange(tokens.shape[0]), tokens[:, t]])
    return torch.stack(cols, dim=1)


@wrong(E)
def gl3_max_shift_detached_wrong(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:-1]
    z = z - z.max(-1, keepdim=True).values
    logp = z - z.exp().sum(-1, keepdim=True).log()
    out = logp.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)
    return out.detach().requires_grad_()


@wrong(E)
def gl3_tokens_in_place(logits, tokens, prompt_len):
    tokens[:, :prompt_len] = 0  # "mask the prompt out"
    logp = torch.log_softmax(logits[:, prompt_len - 1:-1], -1)
    return logp.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)


@wrong(E, hint='underflows')
def gl3_float32_softmax_log(logits, tokens, prompt_len):
    p = torch.softmax(logits[:, prompt_len - 1:-1].float(), -1)
    return torch.log(p.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)).to(logits.dtype)


@wrong(E)
def gl3_last_column_dropped(logits, tokens, prompt_len):
    logp = torch.log_softmax(logits[:, prompt_len - 1:-2], -1)
    out = logp.gather(-1, tokens[:, prompt_len:-1, None]).squeeze(-1)
    return torch.cat([out, out[:, -1:]], 1) if out.shape[1] else torch.log_softmax(logits[:, -2], -1).gather(
        -1, tokens[:, -1:]).reshape(-1, 1)


@wrong(E)
def gl3_numpy(logits, tokens, prompt_len):
    return ref_gather(logits, tokens, prompt_len).detach().numpy()


E = check_bradley_terry_loss
CHAPTER[E.name] = 8


def truth_bt(fn, rng):
    B = int(rng.integers(1, 30))
    dtype = D if rng.random() < 0.5 else torch.float32
    scale = float(rng.choice([1.0, 10.0, 80.0]))
    c, r = _rand(rng, B, scale=scale, dtype=dtype), _rand(rng, B, scale=scale, dtype=dtype)
    return torch_truth(fn, ref_bt, (c, r), grad_args=(0, 1), scalar="0-d", rtol=1e-4, atol=1e-5)


@ok(E)
def bt3_softplus(r_chosen, r_rejected):
    return F.softplus(r_rejected - r_chosen).mean()


@ok(E)
def bt3_bce_with_logits(r_chosen, r_rejected):
    d = r_chosen - r_rejected
    return F.binary_cross_entropy_with_logits(d, torch.ones_like(d))


@ok(E)
def bt3_logaddexp(r_chosen, r_rejected):
    return torch.logaddexp(torch.zeros_like(r_chosen), r_rejected - r_chosen).sum() / r_chosen.numel()


@wrong(E, reason="the exercise asks for a single number")
def bt3_one_element(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean().unsqueeze(0)


@wrong(E)
def bt3_chosen_in_place(r_chosen, r_rejected):
    r_chosen -= r_rejected
    return -F.logsigmoid(r_chosen).mean()


@wrong(E)
def bt3_rejected_in_place(r_chosen, r_rejected):
    r_rejected.sub_(r_chosen).neg_()
    return -F.logsigmoid(r_rejected).mean()


@wrong(E)
def bt3_clamped_gap(r_chosen, r_rejected):
    return -F.logsigmoid((r_chosen - r_rejected).clamp(-30, 30)).mean()


@wrong(E)
def bt3_float_return(r_chosen, r_rejected):
    return float(-F.logsigmoid(r_chosen - r_rejected).mean())


@wrong(E)
def bt3_logsigmoid_of_ratio(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean(0, keepdim=True).sum() * 1.0 if r_chosen.numel() > 1 else \
        -F.logsigmoid(r_chosen - r_rejected).sum() * 0.5


E = check_per_token_rewards
CHAPTER[E.name] = 8


def truth_ptr(fn, rng):
    B, Lx = int(rng.integers(1, 16)), int(rng.integers(1, 20))
    lengths = rng.integers(1, Lx + 1, size=B)
    mask = (torch.arange(Lx)[None] < torch.as_tensor(lengths)[:, None]).to(D)
    kl, scores = _rand(rng, B, Lx), _rand(rng, B, scale=2.0)
    beta = float(rng.choice([0.0, 0.05, 1.0, 2.5]))
    return torch_truth(fn, lambda k, s, m, b: ref_ptr(k, s, m, b), (kl, scores, mask, beta))


@ok(E)
def ptr3_scatter_add(kl, scores, mask, beta):
    last = (mask.sum(1) - 1).long()
    return (-beta * kl * mask).scatter_add(1, last[:, None], scores[:, None])


@ok(E)
def ptr3_one_hot(kl, scores, mask, beta):
    last = mask.sum(1).long() - 1
    onehot = F.one_hot(last, kl.shape[1]).to(kl.dtype)
    return -beta * kl * mask + onehot * scores[:, None]


@ok(E)
def ptr3_loop(kl, scores, mask, beta):
    out = torch.zeros_like(kl)
    for b in range(kl.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            out[b, t] = -beta * kl[b, t]
        out[b, n - 1] = out[b, n - 1] + scores[b]
    return out


@wrong(E)
def ptr3_kl_in_place(kl, scores, mask, beta):
    kl.mul_(-beta).mul_(mask)
    last = mask.sum(1).long() - 1
    kl[torch.arange(kl.shape[0]), last] += scores
    return kl


@wrong(E)
def ptr3_mask_edited(kl, scores, mask, beta):
    last = mask.sum(1).long() - 1
    rows = torch.arange(mask.shape[0])
    out = -beta * kl * mask
    mask[rows, last] = 0.0  # "mark the slot that holds the score": written into the caller's mask
    out[rows, last] += scores
    return out


@ok(E)
def ptr3_last_by_argmin(kl, scores, mask, beta):
    # the first zero of the mask, minus one: a row with no padding gets argmin = 0, so -1 -> the last slot
    last = mask.argmin(1) - 1
    out = (-beta * kl * mask).clone()
    out[torch.arange(kl.shape[0]), last] += scores
    return out


@ok(E)
def ptr3_last_by_flip_argmax(kl, scores, mask, beta):
    L_ = mask.shape[1]
    last = L_ - 1 - mask.flip(1).argmax(1)
    out = (-beta * kl * mask).clone()
    out[torch.arange(kl.shape[0]), last] += scores
    return out


@wrong(E)
def ptr3_numpy(kl, scores, mask, beta):
    out = -beta * kl.numpy() * mask.numpy()
    last = mask.numpy().sum(1).astype(int) - 1
    out[np.arange(len(last)), last] += scores.numpy()
    return out


E = check_masked_whiten
CHAPTER[E.name] = 8


def truth_whiten(fn, rng):
    B, Lx = int(rng.integers(1, 10)), int(rng.integers(1, 20))
    lengths = rng.integers(0, Lx + 1, size=B)
    if lengths.sum() == 0:
        lengths[0] = 1
    mask = (torch.arange(Lx)[None] < torch.as_tensor(lengths)[:, None]).to(D)
    x = _rand(rng, B, Lx, scale=float(rng.choice([1e-4, 1.0, 50.0]))) + float(rng.normal())
    if rng.random() < 0.2:
        x = torch.full((B, Lx), float(rng.normal()), dtype=D) + (1 - mask) * 7
    return torch_truth(fn, ref_whiten, (x, mask), rtol=1e-5, atol=1e-6)


@ok(E)
def mw3_boolean_index(x, mask):
    m = mask.bool()
    vals = x[m]
    out = torch.zeros_like(x)
    if vals.numel() < 2:
        out[m] = vals - vals.mean()
        return out
    out[m] = (vals - vals.mean()) / torch.sqrt(vals.var() + 1e-8)
    return out


@ok(E)
def mw3_sums(x, mask):
    n = mask.sum()
    s1, s2 = (x * mask).sum(), (x * x * mask).sum()
    mean = s1 / n
    if n < 2:
        return (x - mean) * mask
    var = ((x - mean) ** 2 * mask).sum() / (n - 1)
    return torch.where(mask > 0, (x - mean) * torch.rsqrt(var + 1e-8), torch.zeros_like(x))


@wrong(E, hint='goes under the square root')
def mw3_eps_outside_ddof0_fallback(x, mask):
    m = mask.bool()
    vals = x[m]
    out = torch.zeros_like(x)
    out[m] = (vals - vals.mean()) / (vals.std(unbiased=vals.numel() > 1) + 1e-8)
    return out


@wrong(E)
def mw3_x_in_place(x, mask):
    n = mask.sum()
    x.mul_(mask)
    mean = x.sum() / n
    x.sub_(mean).mul_(mask)
    if n < 2:
        return x
    return x / torch.sqrt((x**2).sum() / (n - 1) + 1e-8)


@wrong(E)
def mw3_nan_for_empty_single(x, mask):
    m = mask.bool()
    vals = x[m]
    out = torch.zeros_like(x)
    out[m] = (vals - vals.mean()) / torch.sqrt(vals.var() + 1e-8)  # one element: var is nan
    return out


@wrong(E)
def mw3_float32(x, mask):
    return ref_whiten(x.float(), mask.float())


@wrong(E)
def mw3_eps_1e5(x, mask):
    n = mask.sum()
    mean = (x * mask).sum() / n
    c = (x - mean) * mask
    if n < 2:
        return c
    return c / torch.sqrt((c**2).sum() / (n - 1) + 1e-5)


E = check_adaptive_kl_update
CHAPTER[E.name] = 8


def truth_akl(fn, rng):
    beta = float(rng.choice([0.05, 0.5, 2.0]))
    target = float(rng.choice([0.02, 0.5, 6.0]))
    kl = target * float(rng.choice([0.0, 0.5, 0.79, 0.81, 1.0, 1.19, 1.21, 3.0, rng.random() * 2]))
    n, h = int(rng.choice([64, 512, 3000])), int(rng.choice([100, 1000, 10000]))
    got = fn(beta, kl, target, n, h)
    round(got, 5)  # the next cell
    return (isinstance(got, (float, int, np.floating)) and not isinstance(got, bool)
            and math.isclose(got, ref_akl(beta, kl, target, n, h), rel_tol=1e-9, abs_tol=1e-12))


@ok(E)
def akl3_numpy_clip(beta, kl, kl_target, n_steps, horizon):
    e = np.clip(kl / kl_target - 1.0, -0.2, 0.2)
    return float(beta * (1.0 + e * n_steps / horizon))


@ok(E)
def akl3_np_float64(beta, kl, kl_target, n_steps, horizon):
    e = np.clip(np.float64(kl) / kl_target - 1.0, -0.2, 0.2)
    return beta + beta * e * (n_steps / horizon)


@wrong(E)
def akl3_int_division(beta, kl, kl_target, n_steps, horizon):
    e = min(max(kl / kl_target - 1.0, -0.2), 0.2)
    return beta * (1.0 + e * (n_steps // horizon))


@wrong(E)
def akl3_tensor(beta, kl, kl_target, n_steps, horizon):
    e = torch.clamp(torch.tensor(kl / kl_target - 1.0), -0.2, 0.2)
    return beta * (1.0 + e * n_steps / horizon)


@wrong(E)
def akl3_log_ratio_error(beta, kl, kl_target, n_steps, horizon):
    e = min(max(math.log(max(kl, 1e-12) / kl_target), -0.2), 0.2)
    return beta * (1.0 + e * n_steps / horizon)


@wrong(E)
def akl3_clamp_beta(beta, kl, kl_target, n_steps, horizon):
    e = min(max(kl / kl_target - 1.0, -0.2), 0.2)
    return min(max(beta * (1.0 + e * n_steps / horizon), 0.01), 1.0)


# =========================================================== chapter 9
E = check_dpo_loss
CHAPTER[E.name] = 9


def truth_dpo(fn, rng):
    B = int(rng.integers(1, 20))
    dtype = D if rng.random() < 0.5 else torch.float32
    scale = float(rng.choice([5.0, 40.0, 300.0]))
    pc, pr, rc, rr = (-torch.as_tensor(rng.random(B) * scale, dtype=dtype) for _ in range(4))
    beta = float(rng.choice([0.05, 0.1, 0.5, 2.0]))
    return torch_truth(fn, lambda a, b, c, d, be: ref_dpo(a, b, c, d, be), (pc, pr, rc, rr, beta),
                       grad_args=(0, 1), scalar=True, rtol=1e-4, atol=1e-5)


@ok(E)
def dpo3_softplus(pc, pr, rc, rr, beta):
    return F.softplus(-beta * ((pc - pr) - (rc - rr))).mean()


@ok(E)
def dpo3_one_element(pc, pr, rc, rr, beta):
    u = beta * (pc - rc - pr + rr)
    return -F.logsigmoid(u).sum(dim=0, keepdim=True) / u.shape[0]


@ok(E)
def dpo3_refs_detached(pc, pr, rc, rr, beta):
    ref = (rc - rr).detach()
    return -F.logsigmoid(beta * ((pc - pr) - ref)).mean()


@wrong(E)
def dpo3_ref_in_place(pc, pr, rc, rr, beta):
    rc.sub_(rr)
    return -F.logsigmoid(beta * ((pc - pr) - rc)).mean()


@wrong(E)
def dpo3_policy_in_place(pc, pr, rc, rr, beta):
    pc -= rc
    pr -= rr
    return -F.logsigmoid(beta * (pc - pr)).mean()


@wrong(E, hint='beta goes inside the sigmoid')
def dpo3_beta_outside(pc, pr, rc, rr, beta):
    return -beta * F.logsigmoid((pc - rc) - (pr - rr)).mean()


@wrong(E)
def dpo3_ipo(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return ((h - 1 / (2 * beta)) ** 2).mean()


@wrong(E)
def dpo3_float(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean().item()


@wrong(E, hint='not one loss per pair')
def dpo3_per_pair(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


E = check_group_advantages
CHAPTER[E.name] = 9


def truth_group(fn, rng):
    n, G = int(rng.integers(1, 10)), int(rng.integers(2, 17))
    dtype = D if rng.random() < 0.5 else torch.float32
    kind = rng.random()
    if kind < 0.1:  # single groups of equal rewards whose std comes out a little above 0 (on this CPU, at least)
        r = torch.full((1, 8), 0.7) if rng.random() < 0.5 else torch.full((1, 3), -2.8, dtype=D)
    elif kind < 0.2:  # a group whose rewards differ by very little (but do differ)
        r = torch.as_tensor(rng.normal(size=(n, G)), dtype=D)
        r[0] = 0.5 + torch.as_tensor(rng.normal(size=G) * 1e-7, dtype=D)
    elif kind < 0.4:
        r = torch.as_tensor(rng.random((n, G)) < 0.5, dtype=dtype)
    elif kind < 0.7:
        r = torch.as_tensor(rng.normal(size=(n, G)) * rng.choice([1e-3, 1.0, 1e3]), dtype=dtype)
    else:
        r = torch.as_tensor(np.round(rng.uniform(-3, 3, size=(n, 1)), 1) * np.ones((1, G)), dtype=dtype)
        if n > 1 and rng.random() < 0.5:
            r[0] = torch.as_tensor(rng.normal(size=G), dtype=dtype)
    r0 = r.clone()
    got = fn(r)
    if not _same(r, r0) or not isinstance(got, torch.Tensor) or got.shape != r.shape:
        return False
    equal = r0.amax(1) == r0.amin(1)
    if not bool((got[equal] == 0).all()):
        return False
    return _close(got, ref_group(r0), 1e-4, 1e-5)


@ok(E)
def ga3_unbiased_by_hand(rewards):
    G = rewards.shape[1]
    mean = rewards.sum(1, keepdim=True) / G
    std = torch.sqrt(((rewards - mean) ** 2).sum(1, keepdim=True) / (G - 1))
    adv = (rewards - mean) / (std + 1e-4)
    return torch.where((rewards == rewards[:, :1]).all(1, keepdim=True), torch.zeros_like(adv), adv)


@ok(E)
def ga3_loop_rows(rewards):
    out = torch.zeros_like(rewards)
    for i, row in enumerate(rewards):
        if bool((row == row[0]).all()):
            continue
        out[i] = (row - row.mean()) / (row.std() + 1e-4)
    return out


@wrong(E, reason="exactly 0")
def ga3_float64_inside(rewards):
    r = rewards.double()
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    adv[r.std(1) == 0] = 0.0
    return adv.to(rewards.dtype)


@wrong(E, hint='not to the variance')
def ga3_eps_in_sqrt(rewards):
    adv = (rewards - rewards.mean(1, keepdim=True)) / torch.sqrt(rewards.var(1, keepdim=True) + 1e-4)
    return adv.masked_fill((rewards.amax(1) == rewards.amin(1))[:, None], 0.0)


@wrong(E, hint='exactly 0')
def ga3_round_to_zero(rewards):
    adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    return torch.where(adv.abs() < 1e-6, torch.zeros_like(adv), adv)


@wrong(E, hint='std == 0')
def ga3_std_zero_test(rewards):
    std = rewards.std(1, keepdim=True)
    adv = (rewards - rewards.mean(1, keepdim=True)) / (std + 1e-4)
    return torch.where(std == 0, torch.zeros_like(adv), adv)


@wrong(E)
def ga3_in_place(rewards):
    rewards -= rewards.mean(1, keepdim=True)
    adv = rewards / (rewards.std(1, keepdim=True) + 1e-4)
    return adv.masked_fill((adv == adv[:, :1]).all(1, keepdim=True), 0.0)


@wrong(E)
def ga3_global_std(rewards):
    adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std() + 1e-4)
    return adv.masked_fill((rewards.amax(1) == rewards.amin(1))[:, None], 0.0)


E = check_rloo_advantages
CHAPTER[E.name] = 9


def truth_rloo(fn, rng):
    n, G = int(rng.integers(1, 8)), int(rng.integers(2, 12))
    r = _rand(rng, n, G, dtype=D if rng.random() < 0.5 else torch.float32)
    r0 = r.clone()
    got = fn(r)
    return _same(r, r0) and isinstance(got, torch.Tensor) and _close(got, ref_rloo(r0), 1e-4, 1e-5)


@ok(E)
def rloo3_scaled_mean(rewards):
    G = rewards.shape[1]
    return G / (G - 1) * (rewards - rewards.mean(1, keepdim=True))


@ok(E)
def rloo3_loop(rewards):
    G = rewards.shape[1]
    cols = [rewards[:, i] - torch.cat([rewards[:, :i], rewards[:, i + 1:]], 1).mean(1) for i in range(G)]
    return torch.stack(cols, 1)


@wrong(E)
def rloo3_in_place(rewards):
    G = rewards.shape[1]
    total = rewards.sum(1, keepdim=True)
    rewards.mul_(G / (G - 1)).sub_(total / (G - 1))
    return rewards


@wrong(E, hint='not by G')
def rloo3_divide_by_G(rewards):
    G = rewards.shape[1]
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / G


E = check_k3_kl
CHAPTER[E.name] = 9


def truth_k3(fn, rng):
    shape = (int(rng.integers(1, 8)), int(rng.integers(1, 12)))
    dtype = D if rng.random() < 0.5 else torch.float32
    lp = -torch.as_tensor(rng.random(shape) * 5, dtype=dtype)
    ref = lp + torch.as_tensor(rng.normal(size=shape) * float(rng.choice([1e-4, 0.5, 3.0])), dtype=dtype)
    return torch_truth(fn, lambda a, b: torch.exp(b - a) - 1 + (a - b), (lp, ref), grad_args=(0,), rtol=1e-4,
                       atol=1e-6)


@ok(E)
def k33_ratio_form(logprobs, ref_logprobs):
    r = torch.exp(ref_logprobs - logprobs)
    return r - torch.log(r) - 1


@ok(E)
def k33_expm1(logprobs, ref_logprobs):
    l = logprobs - ref_logprobs
    return torch.expm1(-l) + l


@wrong(E)
def k33_ref_in_place(logprobs, ref_logprobs):
    ref_logprobs.sub_(logprobs)
    return torch.exp(ref_logprobs) - 1 - ref_logprobs


@wrong(E, hint='carry no gradient')
def k33_detached(logprobs, ref_logprobs):
    l = (logprobs - ref_logprobs).detach()
    return torch.exp(-l) - 1 + l


@wrong(E, hint='the other way')
def k33_sign_of_l(logprobs, ref_logprobs):
    l = ref_logprobs - logprobs
    return torch.exp(-l) - 1 + l


@wrong(E)
def k33_mean(logprobs, ref_logprobs):
    l = logprobs - ref_logprobs
    return (torch.exp(-l) - 1 + l).mean(-1)


# =========================================================== chapter 10
E = check_pass_at_k
CHAPTER[E.name] = 10


def truth_pass_at_k(fn, rng):
    n = int(rng.choice([1, 2, 5, 10, 64, 200, 500]))
    c = int(rng.integers(0, n + 1))
    k = int(rng.integers(1, n + 1))
    if rng.random() < 0.3:
        k = max(1, n - c)
    got = fn(n, c, k)
    if isinstance(got, bool) or not isinstance(got, (float, int, np.floating)):
        return False
    return math.isclose(float(got), ref_pass_at_k(n, c, k), rel_tol=1e-7, abs_tol=1e-9)


@ok(E)
def pk3_comb(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@ok(E)
def pk3_lgamma(n, c, k):
    if n - c < k:
        return 1.0

    def lc(a, b):
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
    return 1.0 - math.exp(lc(n - c, k) - lc(n, k))


@ok(E)
def pk3_product_loop(n, c, k):
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(k):
        prob_all_wrong *= (n - c - i) / (n - i)
    return 1 - prob_all_wrong


@ok(E)
def pk3_numpy_scalar(n, c, k):
    if n - c < k:
        return np.float64(1.0)
    return 1.0 - np.prod(np.arange(n - c - k + 1, n - c + 1) / np.arange(n - k + 1, n + 1))


@wrong(E)
def pk3_boundary_inclusive(n, c, k):
    if n - c <= k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@wrong(E)
def pk3_float_factorials(n, c, k):
    if n - c < k:
        return 1.0
    f = lambda x: float(math.factorial(x))  # noqa: E731
    return 1.0 - (f(n - c) / (f(k) * f(n - c - k))) / (f(n) / (f(k) * f(n - k)))


@wrong(E)
def pk3_array(n, c, k):
    if n - c < k:
        return np.array([1.0])
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1), keepdims=True)


@ok(E)
def pk3_k_beyond(n, c, k):
    if c == 0:
        return 0.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k) if k < n else 1.0


E = check_aggregate_loss
CHAPTER[E.name] = 10


def _ref_agg(x, m, kind):
    return (aggregation_weights(m, kind).to(x.dtype) * x).sum()


def truth_aggregate(fn, rng):
    B, Lx = int(rng.integers(1, 10)), int(rng.integers(1, 24))
    lengths = rng.integers(1, Lx + 1, size=B)
    dtype = D if rng.random() < 0.5 else torch.float32
    mask = (torch.arange(Lx)[None] < torch.as_tensor(lengths)[:, None]).to(dtype)
    x = _rand(rng, B, Lx, dtype=dtype)
    if rng.random() < 0.4:  # a zero-variance group: advantage 0, so every term of its responses is exactly 0
        x[int(rng.integers(0, B))] = 0.0
    kind = str(rng.choice(["grpo", "dr_grpo", "dapo"]))
    return torch_truth(fn, lambda a, m, k: _ref_agg(a, m, k), (x, mask, kind), grad_args=(0,), scalar=True,
                       rtol=1e-4, atol=1e-6)


@ok(E)
def ag3_weights(per_token, mask, kind):
    if kind == "grpo":
        w = mask / mask.sum(1, keepdim=True) / mask.shape[0]
    elif kind == "dr_grpo":
        w = mask / mask.numel()
    else:
        w = mask / mask.sum()
    return (w * per_token).sum()


@ok(E)
def ag3_boolean(per_token, mask, kind):
    m = mask.bool()
    if kind == "dapo":
        return per_token[m].mean()
    if kind == "dr_grpo":
        return per_token[m].sum() / m.numel()
    return torch.stack([per_token[i][m[i]].mean() for i in range(len(m))]).mean()


@ok(E)
def ag3_one_element(per_token, mask, kind):
    s = (per_token * mask).sum(1)
    n = mask.sum(1)
    out = {"grpo": (s / n).mean(), "dr_grpo": s.sum() / (mask.shape[0] * mask.shape[1]), "dapo": s.sum() / n.sum()}
    return out[kind].reshape(1)


@ok(E)
def ag3_where(per_token, mask, kind):
    x = torch.where(mask > 0, per_token, torch.zeros_like(per_token))
    B, Lx = mask.shape
    if kind == "grpo":
        return (x.sum(-1) / mask.sum(-1)).sum() / B
    return x.sum() / (B * Lx if kind == "dr_grpo" else mask.sum())


@wrong(E)
def ag3_masked_in_place(per_token, mask, kind):
    per_token.mul_(mask)
    B, Lx = mask.shape
    if kind == "grpo":
        return (per_token.sum(1) / mask.sum(1)).mean()
    return per_token.sum() / (B * Lx if kind == "dr_grpo" else mask.sum())


@wrong(E)
def ag3_mask_bool_in_place(per_token, mask, kind):
    B, Lx = mask.shape
    if kind == "grpo":
        mask /= mask.sum(1, keepdim=True) * B  # the mask turned into the weights, in place
    elif kind == "dr_grpo":
        mask /= B * Lx
    else:
        mask /= mask.sum()
    return (per_token * mask).sum()


@wrong(E, hint='the longest response')
def ag3_dr_grpo_by_max_len(per_token, mask, kind):
    x = per_token * mask
    if kind == "grpo":
        return (x.sum(1) / mask.sum(1)).mean()
    if kind == "dr_grpo":
        return x.sum() / (mask.shape[0] * int(mask.sum(1).max()))
    return x.sum() / mask.sum()


@wrong(E)
def ag3_float(per_token, mask, kind):
    return float(_ref_agg(per_token, mask, kind))


@wrong(E)
def ag3_grpo_eps(per_token, mask, kind):
    x = per_token * mask
    if kind == "grpo":
        return (x.sum(1) / (mask.sum(1) + 1.0)).mean()  # "+1 so nothing divides by 0"
    if kind == "dr_grpo":
        return x.sum() / mask.numel()
    return x.sum() / mask.sum()


E = check_format_reward
CHAPTER[E.name] = 10


def _format_truth_value(prompt, response):
    parsed = addition.parse_response(response)
    return addition.verify(prompt, response) + (0.1 if parsed is not None and parsed[1] else 0.0)


def _random_response(rng, a, b):
    kind = rng.random()
    worked = rng.random() < 0.5
    ids = addition.response_ids(a, b, worked)
    if kind < 0.3:
        return ids
    if kind < 0.5:  # a wrong answer (one digit changed)
        i = len(ids) - 2
        ids = list(ids)
        ids[i] = addition.TOKEN_ID[str((int(addition.VOCAB[ids[i]]) + 1) % 10)]
        return ids
    if kind < 0.55:  # one token replaced by a random one
        ids = list(ids)
        ids[int(rng.integers(0, len(ids) - 1))] = int(rng.integers(0, len(addition.VOCAB)))
        return ids
    if kind < 0.7:  # cut somewhere, with or without <eos>
        cut = int(rng.integers(1, len(ids)))
        return list(ids[:cut]) + ([addition.EOS_ID] if rng.random() < 0.5 else [])
    return [int(t) for t in rng.integers(0, len(addition.VOCAB), size=int(rng.integers(1, 20)))]


def truth_format(fn, rng):
    a, b = int(rng.integers(100, 1000)), int(rng.integers(100, 1000))
    prompt = addition.prompt_ids(a, b)
    resp = _random_response(rng, a, b)
    resp = resp[:addition.MAX_RESPONSE_LEN] + [addition.PAD_ID] * (addition.MAX_RESPONSE_LEN - len(resp[:20]))
    p0, r0 = list(prompt), list(resp)
    got = fn(prompt, resp)
    if prompt != p0 or resp != r0:
        return False
    f"{got:4.1f}"  # the chapter's next cell
    if isinstance(got, bool):
        return False
    return math.isclose(float(got), _format_truth_value(p0, r0), abs_tol=1e-9)


@ok(E)
def fr3_by_hand_answer(prompt, response):
    a, b = addition.parse_prompt(prompt)
    parsed = addition.parse_response(response)
    if parsed is None:
        return 0.0
    answer, worked = parsed
    return float(answer == a + b) + (0.1 if worked else 0.0)


@ok(E)
def fr3_tensor_item(prompt, response):
    worked = addition.is_well_formed(response) and addition.is_worked(response)
    bonus = torch.tensor(0.1, dtype=torch.float64) * (1.0 if worked else 0.0)
    return (addition.verify(prompt, response) + bonus).item()


@ok(E)
def fr3_numpy_float(prompt, response):
    parsed = addition.parse_response(response)
    return np.float64(addition.verify(prompt, response)) + np.float64(FORMAT if parsed and parsed[1] else 0)


FORMAT = 0.1


@wrong(E)
def fr3_worked_first_token_and_eos(prompt, response):
    ids = [i for i in response if i != addition.PAD_ID]
    bonus = 0.1 if ids and ids[0] == addition.WORK and ids[-1] == addition.EOS_ID else 0.0
    return addition.verify(prompt, response) + bonus


@wrong(E)
def fr3_pads_stripped_in_place(prompt, response):
    while response and response[-1] == addition.PAD_ID:
        response.pop()
    parsed = addition.parse_response(response)
    return addition.verify(prompt, response) + (0.1 if parsed is not None and parsed[1] else 0.0)


@wrong(E)
def fr3_one_element_tensor(prompt, response):
    parsed = addition.parse_response(response)
    return torch.tensor([addition.verify(prompt, response) + (0.1 if parsed is not None and parsed[1] else 0.0)])


@wrong(E)
def fr3_so_and_eos(prompt, response):
    ids = list(response)
    ok_ = addition.WORK in ids[:1] and addition.SO in ids and addition.EOS_ID in ids and \
        ids.index(addition.SO) < ids.index(addition.EOS_ID) - 1
    return addition.verify(prompt, response) + (0.1 if ok_ else 0.0)


@wrong(E, hint='right *or wrong*')
def fr3_answer_equals_scratch(prompt, response):
    # a worked answer counts only when its columns add up: the text asks for well-formed, right or wrong
    parsed = addition.parse_response(response)
    right = addition.verify(prompt, response)
    bonus = 0.1 if parsed is not None and parsed[1] and (right or parsed[0] % 10 == 3) else 0.0
    return right + bonus


@wrong(E)
def fr3_bool(prompt, response):
    parsed = addition.parse_response(response)
    return bool(addition.verify(prompt, response)) or (parsed is not None and parsed[1])


# =========================================================== a second wave, written after the first run
# (held out from the fixes of the first wave: none of these was run against a checker before being kept)
E = check_ppo_update


@wrong(E, reason="the early stop", hint='Stable-Baselines3')
def cap3_sb3_stop_rule(policy, optimizer, rollout, config, generator):
    cfg = copy.copy(config)
    if cfg.target_kl is not None:
        cfg.target_kl = 1.5 * cfg.target_kl  # Stable-Baselines3's rule, k > 1.5 * target_kl: not the text's
    return cap_update(policy, optimizer, rollout, cfg, generator)


@wrong(E, reason="gradient clipping")
def cap3_clip_actor_and_critic_apart(policy, optimizer, rollout, config, generator):
    original = torch.nn.utils.clip_grad_norm_

    def per_part(params, max_norm, *args, **kwargs):
        original(list(policy.actor.parameters()), max_norm)
        ids = {id(p) for p in policy.actor.parameters()}
        return original([p for p in policy.parameters() if id(p) not in ids], max_norm)
    torch.nn.utils.clip_grad_norm_ = per_part
    try:
        return cap_update(policy, optimizer, rollout, config, generator)
    finally:
        torch.nn.utils.clip_grad_norm_ = original


@ok(E)
def cap3_minibatches_by_view(policy, optimizer, rollout, config, generator):
    actor = policy.actor
    adv, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                      truncation_as_termination=not config.bootstrap_truncation)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, values_old = rollout.logprobs.flatten(), rollout.values.flatten()
    adv, targets = adv.flatten(), targets.flatten()
    B, M = obs.shape[0], config.minibatch_size
    fractions, epochs = [], 0
    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        for mb in perm[:B - B % M].view(-1, M):
            dist = actor.distribution(obs[mb])
            ratio = torch.exp(actor.log_prob(dist, actions[mb]) - logp_old[mb])
            a = normalize(adv[mb]) if config.normalize_advantages else adv[mb]
            pg = -torch.min(ratio * a, torch.clamp(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * a).mean()
            loss = pg + config.value_coef * value_loss(policy.value(obs[mb]), targets[mb]) \
                - config.entropy_coef * actor.entropy(dist).mean()
            optimizer.zero_grad()
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            fractions.append(((ratio - 1).abs() > config.clip_eps).float().mean().item())
        epochs += 1
        if config.target_kl is not None:
            with torch.no_grad():
                k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))[1]
            if k3 > config.target_kl:
                break
    with torch.no_grad():
        k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))[1]
    ev = 1 - np.var((targets - values_old).numpy()) / np.var(targets.numpy())
    return {"clip_fraction": sum(fractions) / len(fractions), "approx_kl_k3": k3, "epochs": epochs,
            "explained_variance": float(ev), "learning_rate": optimizer.param_groups[0]["lr"]}


@wrong(E, reason="the policy loss")
def cap3_advantages_normalised_in_place_then_targets(policy, optimizer, rollout, config, generator):
    return cap_update(policy, optimizer, rollout, config, generator, target_from_values=False,
                      own_norm=True, norm_unbiased_off=False) if not config.normalize_advantages else \
        _cap_normalised_once(policy, optimizer, rollout, config, generator)


def _cap_normalised_once(policy, optimizer, rollout, config, generator):
    """normalises each minibatch *and* scales the advantages once more by their batch std first."""
    adv, _ = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                truncation_as_termination=not config.bootstrap_truncation)
    scale = float(adv.std())
    r2 = copy.deepcopy(rollout)
    r2.rewards = r2.rewards / scale
    r2.values = r2.values / scale
    return cap_update(policy, optimizer, r2, config, generator)


E = check_gaussian_log_prob_entropy


@wrong(E)
def gs3_swapped(mean, log_std, actions):
    d = torch.distributions.Normal(mean, log_std.exp())
    return d.entropy().sum(-1), d.log_prob(actions).sum(-1)


@wrong(E)
def gs3_entropy_keepdim(mean, log_std, actions):
    d = torch.distributions.Normal(mean, log_std.exp())
    return d.log_prob(actions).sum(-1), d.entropy().sum(-1, keepdim=True)


@ok(E)
def gs3_float64_inside(mean, log_std, actions):
    m, s, a = mean.double(), log_std.double(), actions.double()
    logp = (-0.5 * ((a - m) / s.exp()) ** 2 - s - 0.5 * _LOG2PI).sum(-1)
    ent = (s + 0.5 * (1 + _LOG2PI)).sum(-1) + torch.zeros(mean.shape[0], dtype=torch.float64)
    return logp.to(mean.dtype), ent.to(mean.dtype)


E = check_gather_logprobs


@wrong(E)
def gl3_normaliser_detached(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:-1]
    logp = z - torch.logsumexp(z, -1, keepdim=True).detach()  # "a constant": but it depends on the logits
    return logp.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)


@wrong(E)
def gl3_logits_in_place(logits, tokens, prompt_len):
    logits -= torch.logsumexp(logits, -1, keepdim=True)
    return logits[:, prompt_len - 1:-1].gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)


@ok(E)
def gl3_float64_upcast(logits, tokens, prompt_len):
    logp = torch.log_softmax(logits.double()[:, prompt_len - 1:-1], -1)
    return logp.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)


E = check_per_token_rewards


@wrong(E)
def ptr3_kl_clamped(kl, scores, mask, beta):
    out = (-beta * kl.clamp(min=0) * mask).clone()  # "a KL is never negative": a per-token k1 estimate is
    last = mask.sum(1).long() - 1
    out[torch.arange(kl.shape[0]), last] += scores
    return out


@wrong(E)
def ptr3_scores_in_place(kl, scores, mask, beta):
    scores.unsqueeze_(1)
    last = mask.sum(1).long() - 1
    return -beta * kl * mask + scores * F.one_hot(last, kl.shape[1]).to(kl.dtype)


@ok(E)
def ptr3_cumsum_argmax(kl, scores, mask, beta):
    last = mask.cumsum(1).argmax(1)  # the first slot where the count of real tokens reaches its end
    out = -beta * kl * mask
    return out.index_put((torch.arange(kl.shape[0]), last), scores, accumulate=True)


E = check_masked_whiten


@ok(E)
def mw3_var_mean(x, mask):
    m = mask > 0
    out = torch.zeros_like(x)
    if int(m.sum()) < 2:
        out[m] = x[m] - x[m].mean()
        return out
    var, mean = torch.var_mean(x[m], correction=1)
    out[m] = (x[m] - mean) / (var + 1e-8).sqrt()
    return out


@wrong(E)
def mw3_padding_mean_kept(x, mask):
    n = mask.sum()
    mean = (x * mask).sum() / n
    if n < 2:
        return (x - mean) * mask
    var = (((x - mean) * mask) ** 2).sum() / (n - 1)
    return (x - mean) / torch.sqrt(var + 1e-8) * mask + (1 - mask) * 0.0 + (1 - mask) * (-mean / torch.sqrt(var + 1e-8))


E = check_adaptive_kl_update


@wrong(E)
def akl3_0d_array(beta, kl, kl_target, n_steps, horizon):
    e = np.clip(np.asarray(kl / kl_target - 1.0), -0.2, 0.2)
    return np.asarray(beta * (1.0 + e * n_steps / horizon))  # a 0-d array: round(beta, 5) fails on it


@wrong(E)
def akl3_error_from_log(beta, kl, kl_target, n_steps, horizon):
    e = min(max(kl / kl_target - 1.0, -0.2), 0.2)
    return beta * math.exp(e * n_steps / horizon)


E = check_bradley_terry_loss


@ok(E)
def bt3_float64_inside(r_chosen, r_rejected):
    return (-F.logsigmoid((r_chosen - r_rejected).double()).mean()).to(r_chosen.dtype)


@wrong(E)
def bt3_margin(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected - 0.1).mean()


E = check_dpo_loss


@wrong(E)
def dpo3_fixed_beta(pc, pr, rc, rr, beta):
    return -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()


@ok(E)
def dpo3_float64_inside(pc, pr, rc, rr, beta):
    u = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
    return -F.logsigmoid(u).mean().to(pc.dtype)


@wrong(E)
def dpo3_label_smoothing(pc, pr, rc, rr, beta):
    u = beta * ((pc - rc) - (pr - rr))
    return (-(1 - 0.1) * F.logsigmoid(u) - 0.1 * F.logsigmoid(-u)).mean()


E = check_group_advantages


@wrong(E, hint='all *equal*')
def ga3_small_std_zeroed(rewards):
    std = rewards.std(1, keepdim=True)
    adv = (rewards - rewards.mean(1, keepdim=True)) / (std + 1e-4)
    return adv.masked_fill(std < 1e-6, 0.0)


@ok(E)
def ga3_index_assign(rewards):
    adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    equal = (rewards == rewards[:, :1]).all(1)
    adv[equal] = 0.0
    return adv


E = check_k3_kl


@ok(E)
def k33_swapped_ratio(logprobs, ref_logprobs):
    return torch.exp(ref_logprobs - logprobs) - (ref_logprobs - logprobs) - 1


@wrong(E, hint='k2')
def k33_k2(logprobs, ref_logprobs):
    return 0.5 * (logprobs - ref_logprobs) ** 2


E = check_pass_at_k


@ok(E)
def pk3_float_comb(n, c, k):
    return 1.0 - float(math.comb(n - c, k)) / float(math.comb(n, k))  # C(200, 100) is 9e58: a float holds it


@wrong(E, hint='with* replacement')
def pk3_with_replacement_exact(n, c, k):
    return 1.0 - ((n - c) / n) ** k if c < n else 1.0


E = check_aggregate_loss


@wrong(E, hint='not where the terms are non-zero')
def ag3_tokens_counted_by_nonzero(per_token, mask, kind):
    x = per_token * mask
    real = (x != 0).to(x.dtype)  # "the real tokens are where the terms are not 0"
    if kind == "grpo":
        return (x.sum(1) / real.sum(1).clamp(min=1)).mean()
    if kind == "dr_grpo":
        return x.sum() / mask.numel()
    return x.sum() / real.sum()


@ok(E)
def ag3_einsum(per_token, mask, kind):
    B, Lx = mask.shape
    n = mask.sum(1)
    w = {"grpo": mask / (B * n[:, None]), "dr_grpo": mask / (B * Lx), "dapo": mask / n.sum()}[kind]
    return torch.einsum("bl,bl->", w, per_token)


E = check_format_reward


@wrong(E)
def fr3_prompt_pads_stripped(prompt, response):
    while prompt and prompt[0] == addition.PAD_ID:
        prompt.pop(0)
    parsed = addition.parse_response(response)
    return addition.verify(prompt, response) + (0.1 if parsed is not None and parsed[1] else 0.0)


@ok(E)
def fr3_tuple_input(prompt, response):
    parsed = addition.parse_response(tuple(response))
    return addition.verify(tuple(prompt), tuple(response)) + (FORMAT if parsed and parsed[1] else 0.0)


# =========================================================== running the audit
TRUTH = {
    "discounted_return": truth_discounted_return, "reinforce_loss": truth_reinforce_loss,
    "td_errors": truth_td_errors, "gae": truth_gae, "normalize_advantages": truth_normalize,
    "conjugate_gradient": truth_cg, "probability_ratio": truth_ratio, "clipped_surrogate": truth_surrogate,
    "ppo_update": truth_ppo_update, "kl_penalty_objective": truth_kl_objective,
    "adaptive_kl_beta": truth_adaptive_beta, "update_running_stats": truth_running,
    "clipped_value_loss": truth_clipped_value, "gaussian_log_prob_entropy": truth_gaussian,
    "gather_logprobs": truth_gather, "bradley_terry_loss": truth_bt, "per_token_rewards": truth_ptr,
    "masked_whiten": truth_whiten, "adaptive_kl_update": truth_akl, "dpo_loss": truth_dpo,
    "group_advantages": truth_group, "rloo_advantages": truth_rloo, "k3_kl": truth_k3,
    "pass_at_k": truth_pass_at_k, "aggregate_loss": truth_aggregate, "format_reward": truth_format,
}
N_RANDOM_OF = {"ppo_update": 1, "format_reward": 300, "group_advantages": 100}


def confirmed(impl: Impl) -> bool:
    """True when the implementation agrees with the chapter's words on random inputs."""
    rng = np.random.default_rng(3)
    for _ in range(N_RANDOM_OF.get(impl.exercise.name, N_RANDOM)):
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
        return "misleading message"
    if hint is not None and (impl.hint is None or impl.hint not in hint):
        return "misleading message"
    if impl.reason is not None and impl.reason not in msg:
        return "misleading message"
    return "ok"


COLUMNS = ("false pass", "false rejection", "crash", "misleading message")


def audit_table() -> dict:
    """{chapter: {column: count, "implementations": n}}."""
    table: dict = {}
    for impl in IMPLS:
        row = table.setdefault(CHAPTER[impl.exercise.name], {"implementations": 0, **{c: 0 for c in COLUMNS}})
        row["implementations"] += 1
        v = verdict(impl)
        if v != "ok":
            row[v] += 1
    return dict(sorted(table.items()))


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_label_is_confirmed_on_random_inputs(impl):
    assert confirmed(impl) == (impl.label == "ok")


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_checker_verdict(impl):
    assert verdict(impl) == "ok", impl.exercise.evaluate(impl.fn).message


def test_a_verdict_does_not_depend_on_what_the_checker_ran_before():
    """The checker's own state never decides: each implementation gets the same answer after another
    exercise's implementations ran (the capstone's own test covers its snapshot)."""
    first = {i.id: i.exercise.evaluate(i.fn) for i in IMPLS if i.exercise.name != "ppo_update"}
    for impl in reversed([i for i in IMPLS if i.exercise.name != "ppo_update"]):
        again = impl.exercise.evaluate(impl.fn)
        assert (again.status, again.message) == (first[impl.id].status, first[impl.id].message), impl.id


def test_every_exercise_is_audited_with_both_labels():
    for name in TRUTH:
        mine = [i for i in IMPLS if i.exercise.name == name]
        assert any(i.label == "ok" for i in mine) and any(i.label == "wrong" for i in mine), name
    assert len(IMPLS) >= 150


if __name__ == "__main__":
    import sys

    bad = [i.id for i in IMPLS if confirmed(i) != (i.label == "ok")]
    print("implementations:", len(IMPLS), "labels not confirmed:", bad)
    total = {c: 0 for c in COLUMNS}
    print(f"{'chapter':8s} {'impls':>6s} " + " ".join(f"{c:>18s}" for c in COLUMNS))
    for ch, row in audit_table().items():
        print(f"{ch:<8d} {row['implementations']:6d} " + " ".join(f"{row[c]:18d}" for c in COLUMNS))
        for c in COLUMNS:
            total[c] += row[c]
    print("total", total)
    if "-v" in sys.argv:
        for i in IMPLS:
            v = verdict(i)
            if v != "ok":
                print(f"--- {v}: {i.id}\n{i.exercise.evaluate(i.fn).message}\n")
