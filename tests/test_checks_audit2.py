"""A second, fresh audit (issue 19) of the checkers the first one did not cover or that changed since:
chapter 5's capstone (the whole PPO update), chapter 7's Gaussian policy, chapters 8-9, and chapter 4's
conjugate gradient (its call count).

Every implementation here was written for this audit, as a learner would: right answers written in
unusual ways, and mistakes, including those only the text's words decide (a call count, "exactly 0", an
epsilon the text does not put there, an input changed in place, a value the next cell cannot use, a
gradient that is absent). Each label ("ok" or "wrong") is first confirmed on random inputs against the
chapter's words (``confirm_*``: values and gradients against the library's reference, and the spec the
values alone cannot show); then the checker must agree, as in ``tests/test_checks_audit.py``:

- a wrong implementation is rejected (no false pass), a right one accepted (no false rejection);
- the checker never raises (no crash);
- a hint is shown only when it is the hint for that mistake (``hint`` words), never another one.

``python tests/test_checks_audit2.py`` prints the table (run it with ``PYTHONPATH`` pointing at an older
tree for the "before" column; the implementations use only the RL core and the checkers' public names).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos.ppo import PPO, PPOConfig, ppo_update
from ppo_lib.losses import approx_kl, clipped_surrogate, normalize, value_loss
from ppo_lib.teaching.checks import (check_reinforce_loss, check_normalize_advantages, check_adaptive_kl_update, check_conjugate_gradient, check_dpo_loss,
                                     check_gather_logprobs, check_gaussian_log_prob_entropy, check_group_advantages,
                                     check_k3_kl, check_masked_whiten, check_per_token_rewards, check_ppo_update,
                                     check_rloo_advantages)

torch.set_num_threads(1)
D = torch.float64


@dataclasses.dataclass
class Impl:
    exercise: Any
    fn: Callable
    label: str  # "ok" | "wrong"
    hint: str | None = None  # words a shown hint must contain; None: no hint may be shown

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


# =============================================================== 5.3 the capstone: ppo_update
def _update(policy, optimizer, rollout, config, generator, *, keep_last=False, stop_k1=False, zero_after=False,
            split=False, k3_by_hand=False, clip_always=False, gamma=None, tat=None, whole_batch_norm=False,
            alias_values=False, entropy_detached=False, ev_new_values=False, epochs_index=False, mse=False,
            recompute_old=False, tensor_diagnostics=False, manual_norm=False, string_epochs=False,
            no_diagnostics=False):
    """One learner's update, written out from the chapter's steps, with one switch per variant."""
    actor = policy.actor
    tat = (not config.bootstrap_truncation) if tat is None else tat
    adv_all, targets = rollout_advantages(rollout, config.gamma if gamma is None else gamma, config.gae_lambda,
                                          truncation_as_termination=tat)
    if alias_values:  # targets = values + advantages, written as an in-place add on the rollout's tensor
        targets = rollout.values
        targets += adv_all
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    if recompute_old:
        with torch.no_grad():
            logp_old = actor.log_prob(actor.distribution(obs), actions)
    else:
        logp_old = rollout.logprobs.flatten()
    values_old = rollout.values.flatten()
    adv_all, targets = adv_all.flatten(), targets.flatten()
    if whole_batch_norm:
        adv_all = normalize(adv_all)
    B, M = obs.shape[0], config.minibatch_size
    fractions, epochs = [], 0

    def kl_now():
        with torch.no_grad():
            new = actor.log_prob(actor.distribution(obs), actions)
        if k3_by_hand:
            log_r = (new - logp_old).double()
            return float(((log_r.exp() - 1) - log_r).mean()), None
        k1, k3 = approx_kl(logp_old, new)
        return k3, k1

    e = -1
    for e in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        if split:
            batches = [mb for mb in perm.split(M) if len(mb) == M]
        else:
            batches = [perm[s:s + M] for s in range(0, B, M) if keep_last or s + M <= B]
        for mb in batches:
            dist = actor.distribution(obs[mb])
            logp = actor.log_prob(dist, actions[mb])
            ratio = torch.exp(logp - logp_old[mb])
            adv = adv_all[mb]
            if config.normalize_advantages and not whole_batch_norm:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if manual_norm else normalize(adv)
            values = policy.value(obs[mb])
            v_loss = F.mse_loss(values, targets[mb]) if mse else value_loss(values, targets[mb])
            entropy = actor.entropy(dist).mean()
            if entropy_detached:
                entropy = entropy.detach()
            loss = -clipped_surrogate(ratio, adv, config.clip_eps) + config.value_coef * v_loss \
                - config.entropy_coef * entropy
            if not zero_after:
                optimizer.zero_grad()
            loss.backward()
            if clip_always or config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            if zero_after:
                optimizer.zero_grad()
            fractions.append(((ratio.detach() - 1).abs() > config.clip_eps).float().mean())
        epochs += 1
        if config.target_kl is not None:
            k3, k1 = kl_now()
            if (k1 if stop_k1 else k3) > config.target_kl:
                break
    k3, _ = kl_now()
    if no_diagnostics:
        return {}
    with torch.no_grad():
        fit = policy.value(obs) if ev_new_values else values_old
    explained = 1 - torch.var(targets - fit) / torch.var(targets)
    info = {"clip_fraction": torch.stack(fractions).mean(), "approx_kl_k3": torch.tensor(k3),
            "epochs": torch.tensor(float(e if epochs_index else epochs)), "explained_variance": explained}
    if string_epochs:
        info["epochs"] = str(epochs)
    if not tensor_diagnostics:
        info = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in info.items()}
    return info


def _capstone(name, label, hint=None, **switches):
    def fn(policy, optimizer, rollout, config, generator):
        return _update(policy, optimizer, rollout, config, generator, **switches)

    fn.__name__ = name
    IMPLS.append(Impl(check_ppo_update, fn, label, hint))
    return fn


_capstone("upd_zero_grad_after_step", "ok", zero_after=True)
_capstone("upd_split_minibatches", "ok", split=True)
_capstone("upd_k3_by_hand_float64", "ok", k3_by_hand=True)
_capstone("upd_old_logp_recomputed_at_start", "ok", recompute_old=True)
_capstone("upd_tensor_diagnostics", "ok", tensor_diagnostics=True)
_capstone("upd_normalise_by_hand", "ok", manual_norm=True)
_capstone("upd_keeps_last_minibatch", "wrong", "incomplete last minibatch", keep_last=True)
_capstone("upd_early_stop_on_k1", "wrong", "k3", stop_k1=True)
_capstone("upd_clip_grad_even_at_0", "wrong", "max_grad_norm = 0 means no clipping", clip_always=True)
_capstone("upd_gamma_fixed", "wrong", "config.gamma", gamma=0.99)
_capstone("upd_always_bootstraps", "wrong", "bootstrap_truncation", tat=False)
_capstone("upd_normalised_over_batch", "wrong", "each *minibatch*", whole_batch_norm=True)
_capstone("upd_targets_alias_rollout_values", "wrong", None, alias_values=True)
_capstone("upd_entropy_detached", "wrong", "entropy", entropy_detached=True)
_capstone("upd_explained_variance_after_fit", "wrong", "rollout.values", ev_new_values=True)
_capstone("upd_epochs_as_last_index", "wrong", "epochs that ran", epochs_index=True)
_capstone("upd_mse_value_loss", "wrong", "1/2 (V - R)^2", mse=True)
_capstone("upd_no_diagnostics", "wrong", None, no_diagnostics=True)
_capstone("upd_epochs_as_text", "wrong", None, string_epochs=True)

_CAPSTONE_CONFIGS = [
    dict(clip_eps=0.15, gamma=0.95, gae_lambda=0.9, max_grad_norm=0.2, entropy_coef=0.02, epochs=2),
    dict(normalize_advantages=False, max_grad_norm=0.0, value_coef=0.7, epochs=2),
    dict(minibatch_size=40, bootstrap_truncation=False, epochs=2),
    dict(target_kl=2e-3, epochs=5, clip_eps=0.25),
    dict(bootstrap_truncation=True, epochs=2, gamma=0.97),
    dict(target_kl=5e-3, epochs=6),
    dict(target_kl=1e-2, epochs=6, clip_eps=0.3),
    dict(target_kl=3e-3, epochs=6, lr=1e-2),
    dict(target_kl=0.025, epochs=5),  # seed 8: k1 0.033 > 0.025 after epoch 1, k3 stays below 0.016
]
_ROLLOUTS: dict = {}


def _capstone_objects(seed: int, episode_steps: int, overrides: dict):
    """A fresh PPO (seed 100 + seed) and a rollout it collected: the setting of the chapter's training loop."""
    from ppo_lib.envs import VecEnv
    from ppo_lib.rollout import collect_rollout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = PPOConfig(**{"num_envs": 4, "rollout_steps": 24, "minibatch_size": 24, "lr": 5e-3, **overrides})
    key = (seed, episode_steps)
    if key not in _ROLLOUTS:
        venv = VecEnv("CartPole-v1", num_envs=4, seed=100 + seed, max_episode_steps=episode_steps)
        algo = PPO(venv.single_observation_space, venv.single_action_space,
                   PPOConfig(num_envs=4, rollout_steps=24, minibatch_size=24), seed=100 + seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            rollout, _ = collect_rollout(venv, algo.policy, 24, venv.reset())
        _ROLLOUTS[key] = (venv.single_observation_space, venv.single_action_space, rollout)
    obs_space, act_space, rollout = _ROLLOUTS[key]
    algo = PPO(obs_space, act_space, config, seed=100 + seed)
    return algo.policy, algo.optimizer, copy.deepcopy(rollout), config, torch.Generator().manual_seed(seed)


def confirm_capstone(fn) -> bool:
    """The text's contract on random settings: the same parameters as the library's update, the four named
    diagnostics as plain numbers the training loop can store (math.isfinite, float) with the library's values,
    and the rollout left as it was."""
    for i, overrides in enumerate(_CAPSTONE_CONFIGS):
        steps = 9 if i in (2, 4) else 40
        ref = _capstone_objects(i, steps, overrides)
        expected = ppo_update(*ref)
        mine = _capstone_objects(i, steps, overrides)
        pristine = copy.deepcopy(mine[2])
        try:
            got = fn(*mine)
        except Exception:
            return False
        if any(not torch.equal(getattr(mine[2], f.name), getattr(pristine, f.name))
               for f in dataclasses.fields(pristine)):
            return False
        if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(ref[0].parameters(), mine[0].parameters())):
            return False
        if not isinstance(got, dict):
            return False
        for key in ("clip_fraction", "approx_kl_k3", "epochs", "explained_variance"):
            try:
                value = float(got[key])
                math.isfinite(got[key])
            except Exception:
                return False
            if not math.isclose(value, float(expected[key]), rel_tol=1e-3, abs_tol=1e-6):
                return False
    return True


# =============================================================== 7.3 the Gaussian policy
LOG_2PI = math.log(2 * math.pi)


@ok(check_gaussian_log_prob_entropy)
def gauss_independent_normal(mean, log_std, actions):
    dist = torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)
    return dist.log_prob(actions), dist.entropy()


@ok(check_gaussian_log_prob_entropy)
def gauss_loop_over_dimensions(mean, log_std, actions):
    logp = torch.zeros(mean.shape[0], dtype=mean.dtype)
    ent = torch.zeros(mean.shape[0], dtype=mean.dtype)
    for d in range(mean.shape[1]):
        z = (actions[:, d] - mean[:, d]) / torch.exp(log_std[d])
        logp = logp - 0.5 * z ** 2 - log_std[d] - 0.5 * LOG_2PI
        ent = ent + log_std[d] + 0.5 + 0.5 * LOG_2PI
    return logp, ent


@ok(check_gaussian_log_prob_entropy)
def gauss_entropy_from_variance(mean, log_std, actions):
    var = torch.exp(2 * log_std)
    logp = -0.5 * (((actions - mean) ** 2) / var + torch.log(2 * math.pi * var)).sum(-1)
    ent = 0.5 * torch.log(2 * math.pi * math.e * var).sum() * torch.ones_like(mean[:, 0])
    return logp, ent


@ok(check_gaussian_log_prob_entropy)
def gauss_multivariate_diagonal(mean, log_std, actions):
    cov = torch.diag_embed(torch.exp(2 * log_std).expand_as(mean))
    dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return dist.log_prob(actions), dist.entropy()


@wrong(check_gaussian_log_prob_entropy, "entropy")
def gauss_entropy_as_python_number(mean, log_std, actions):
    logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    h = sum(float(s) + 0.5 * (1 + LOG_2PI) for s in log_std)
    return logp, torch.full((mean.shape[0],), h, dtype=mean.dtype)


@wrong(check_gaussian_log_prob_entropy, "epsilon")
def gauss_eps_in_std(mean, log_std, actions):
    std = log_std.exp() + 1e-6
    dist = torch.distributions.Normal(mean, std)
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


@wrong(check_gaussian_log_prob_entropy)
def gauss_log_std_clamped(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.clamp(-5.0, 2.0).exp())
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


@wrong(check_gaussian_log_prob_entropy)
def gauss_numpy(mean, log_std, actions):
    m, s, a = mean.detach().numpy(), np.exp(log_std.detach().numpy()), actions.detach().numpy()
    logp = (-(a - m) ** 2 / (2 * s ** 2) - np.log(s) - 0.5 * LOG_2PI).sum(-1)
    return logp, np.full(len(m), (np.log(s) + 0.5 * (1 + LOG_2PI)).sum())


@wrong(check_gaussian_log_prob_entropy)
def gauss_centres_actions_in_place(mean, log_std, actions):
    actions -= mean
    std = log_std.exp()
    logp = (-actions ** 2 / (2 * std ** 2) - log_std - 0.5 * LOG_2PI).sum(-1)
    return logp, (log_std + 0.5 * (1 + LOG_2PI)).sum().expand(mean.shape[0])


@wrong(check_gaussian_log_prob_entropy)
def gauss_entropy_not_per_state(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.exp())
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1).mean()


@wrong(check_gaussian_log_prob_entropy, "variance")
def gauss_variance_eps(mean, log_std, actions):
    var = torch.exp(2 * log_std) + 1e-8
    logp = (-(actions - mean) ** 2 / (2 * var) - 0.5 * torch.log(var) - 0.5 * LOG_2PI).sum(-1)
    return logp, (0.5 * torch.log(var) + 0.5 * (1 + LOG_2PI)).sum().expand(mean.shape[0])


def confirm_gaussian(fn) -> bool:
    g = torch.Generator().manual_seed(3)
    for B, Dm, dtype, lo in ((1, 1, D, -1.0), (7, 3, D, -13.0), (40, 2, torch.float32, -3.0), (12, 5, D, -8.0)):
        mean = torch.randn(B, Dm, generator=g, dtype=dtype)
        log_std = (torch.rand(Dm, generator=g, dtype=dtype) * (2.0 - lo) + lo)
        actions = mean + torch.randn(B, Dm, generator=g, dtype=dtype) * log_std.exp() * 1.5
        leaves = [x.clone().requires_grad_(True) for x in (mean, log_std)]
        a_in = actions.clone()
        try:
            logp, ent = fn(leaves[0] * 1, leaves[1] * 1, a_in)
        except Exception:
            return False
        if not torch.equal(a_in, actions):
            return False
        ref_leaves = [x.clone().requires_grad_(True) for x in (mean, log_std)]
        dist = torch.distributions.Normal(ref_leaves[0], ref_leaves[1].exp().expand_as(mean))
        r_logp, r_ent = dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
        for mine, ref in ((logp, r_logp), (ent, r_ent)):
            if not isinstance(mine, torch.Tensor) or mine.shape != ref.shape or not mine.requires_grad:
                return False
            tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-8)
            if not torch.allclose(mine.double(), ref.double(), **tol):
                return False
            gm = torch.autograd.grad(mine.sum(), leaves, allow_unused=True, retain_graph=True)
            gr = torch.autograd.grad(ref.sum(), ref_leaves, allow_unused=True, retain_graph=True)
            for x, y, leaf in zip(gm, gr, leaves):
                x = torch.zeros_like(leaf) if x is None else x
                y = torch.zeros_like(leaf) if y is None else y
                if not torch.allclose(x.double(), y.double(), **tol):
                    return False
    return True


# =============================================================== 8.1 gather_logprobs
@ok(check_gather_logprobs)
def gather_via_cross_entropy(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:-1]
    target = tokens[:, prompt_len:]
    return -F.cross_entropy(z.transpose(1, 2), target, reduction="none")


@ok(check_gather_logprobs)
def gather_logsumexp(logits, tokens, prompt_len):
    z = logits[:, prompt_len - 1:-1]
    picked = torch.take_along_dim(z, tokens[:, prompt_len:, None], dim=-1)[..., 0]
    return picked - torch.logsumexp(z, dim=-1)


@wrong(check_gather_logprobs)
def gather_max_subtracted_in_place(logits, tokens, prompt_len):
    logits -= logits.max(dim=-1, keepdim=True).values.detach()
    return F.log_softmax(logits[:, prompt_len - 1:-1], -1).gather(-1, tokens[:, prompt_len:, None])[..., 0]


@wrong(check_gather_logprobs, "the logits at position i predict")
def gather_unshifted_loop(logits, tokens, prompt_len):
    out = [F.log_softmax(logits[:, t], -1).gather(-1, tokens[:, t:t + 1])[:, 0] for t in range(prompt_len, tokens.shape[1])]
    return torch.stack(out, 1)


def confirm_gather(fn) -> bool:
    from ppo_lib.rlhf.model import gather_logprobs

    g = torch.Generator().manual_seed(5)
    for B, T, V, P, dt in ((3, 7, 5, 2, D), (13, 18, 9, 6, D), (4, 6, 12, 1, torch.float32)):
        logits = torch.randn(B, T, V, generator=g, dtype=dt) * 3
        tokens = torch.randint(0, V, (B, T), generator=g)
        leaf = logits.clone().requires_grad_(True)
        given = leaf.clone()
        try:
            out = fn(given, tokens, P)
        except Exception:
            return False
        if not torch.equal(given, logits) or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        ref = gather_logprobs(logits, tokens, P)
        if out.shape != ref.shape or not torch.allclose(out.double(), ref.double(), atol=1e-5):
            return False
    return True


# =============================================================== 8.3 per_token_rewards
@ok(check_per_token_rewards)
def rewards_scatter_add(kl, scores, mask, beta):
    last = (mask.sum(1).long() - 1).unsqueeze(1)
    return (-beta * kl * mask).scatter_add(1, last, scores.unsqueeze(1).to(kl.dtype))


@ok(check_per_token_rewards)
def rewards_one_hot_last(kl, scores, mask, beta):
    L = kl.shape[1]
    last = F.one_hot(mask.sum(1).long() - 1, L).to(kl.dtype)
    return -beta * kl * mask + scores[:, None] * last


@ok(check_per_token_rewards)
def rewards_last_by_argmin(kl, scores, mask, beta):
    # argmin finds the first padding slot, minus one is the last real token; in a full row argmin is 0 and
    # index -1 wraps to slot L - 1, which is right too (written as a mistake, confirmed right)
    last = mask.argmin(1) - 1
    out = (-beta * kl * mask).clone()
    out[torch.arange(len(scores)), last] += scores
    return out


@wrong(check_per_token_rewards)
def rewards_scaled_kl_in_place(kl, scores, mask, beta):
    kl *= -beta
    out = kl * mask
    out[torch.arange(len(scores)), mask.sum(1).long() - 1] += scores
    return out


def confirm_per_token_rewards(fn) -> bool:
    from ppo_lib.rlhf.token_advantages import per_token_rewards

    g = torch.Generator().manual_seed(8)
    for B, L in ((5, 6), (15, 12), (3, 1)):
        kl = torch.randn(B, L, generator=g, dtype=D)
        scores = torch.randn(B, generator=g, dtype=D)
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        lengths[0] = L
        mask = (torch.arange(L)[None] < lengths[:, None]).to(D)
        args = [kl.clone(), scores.clone(), mask.clone(), 0.3]
        try:
            out = fn(*args)
        except Exception:
            return False
        if not (torch.equal(args[0], kl) and torch.equal(args[1], scores) and torch.equal(args[2], mask)):
            return False
        ref = per_token_rewards(kl, scores, mask, 0.3)
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape or not torch.allclose(out, ref):
            return False
    return True


# =============================================================== 8.4 masked_whiten
@ok(check_masked_whiten)
def whiten_masked_select(x, mask):
    real = x[mask > 0]
    if real.numel() < 2:
        return (x - real.mean()) * mask
    return (x - real.mean()) / torch.sqrt(real.var() + 1e-8) * mask


@wrong(check_masked_whiten, "sqrt(var + 1e-8)")
def whiten_std_plus_eps(x, mask):
    real = x[mask > 0]
    if real.numel() < 2:
        return (x - real.mean()) * mask
    return (x - real.mean()) / (real.std() + 1e-8) * mask


@wrong(check_masked_whiten, "unbiased")
def whiten_population_std(x, mask):
    real = x[mask > 0]
    if real.numel() < 2:
        return (x - real.mean()) * mask
    return (x - real.mean()) / torch.sqrt(real.var(unbiased=False) + 1e-8) * mask


def confirm_whiten(fn) -> bool:
    from ppo_lib.rlhf.token_advantages import masked_whiten

    g = torch.Generator().manual_seed(9)
    for B, L, spread in ((4, 6, 1.0), (11, 16, 1e-4), (2, 3, 3.0)):
        x = 1 + torch.randn(B, L, generator=g, dtype=D) * spread
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        mask = (torch.arange(L)[None] < lengths[:, None]).to(D)
        try:
            out = fn(x.clone(), mask.clone())
        except Exception:
            return False
        ref = masked_whiten(x, mask)
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape or not torch.allclose(out, ref, atol=1e-7):
            return False
    return True


# =============================================================== 8.5 adaptive_kl_update
@ok(check_adaptive_kl_update)
def beta_numpy_float(beta, kl, kl_target, n_steps, horizon):
    return beta * (1 + np.clip(kl / kl_target - 1, -0.2, 0.2) * n_steps / horizon)


@wrong(check_adaptive_kl_update)
def beta_zero_d_tensor(beta, kl, kl_target, n_steps, horizon):
    e = torch.clamp(torch.tensor(kl / kl_target - 1.0), -0.2, 0.2)
    return beta * (1 + e * n_steps / horizon)


@wrong(check_adaptive_kl_update)
def beta_zero_d_array(beta, kl, kl_target, n_steps, horizon):
    return np.asarray(beta * (1 + min(max(kl / kl_target - 1, -0.2), 0.2) * n_steps / horizon))


def confirm_beta(fn) -> bool:
    from ppo_lib.rlhf.kl import adaptive_kl_update

    rng = np.random.default_rng(4)
    for _ in range(30):
        args = (float(rng.uniform(0.01, 3)), float(rng.uniform(0, 12)), float(rng.uniform(0.5, 8)),
                int(rng.integers(1, 3000)), int(rng.integers(100, 20000)))
        try:
            out = fn(*args)
            round(out, 5)  # the chapter's next cell
        except Exception:
            return False
        if not math.isclose(float(out), adaptive_kl_update(*args), rel_tol=1e-6):
            return False
    return True


# =============================================================== 9.1 dpo_loss
@ok(check_dpo_loss)
def dpo_one_element(pc, pr, rc, rr, beta):
    u = beta * ((pc - rc) - (pr - rr))
    return -F.logsigmoid(u).mean().reshape(1)  # "a torch tensor holding one number"


@ok(check_dpo_loss)
def dpo_softplus_form(pc, pr, rc, rr, beta):
    return F.softplus(-beta * ((pc - pr) - (rc - rr))).mean()


@wrong(check_dpo_loss)
def dpo_item(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean().item()


def confirm_dpo(fn) -> bool:
    from ppo_lib.rlhf.dpo import dpo_loss

    g = torch.Generator().manual_seed(10)
    for B, dt, scale in ((6, D, 5.0), (14, torch.float32, 200.0), (1, D, 1.0)):
        xs = [-(torch.rand(B, generator=g, dtype=dt) * scale) for _ in range(4)]
        leaves = [x.clone().requires_grad_(True) for x in xs[:2]]
        try:
            loss = fn(leaves[0] * 1, leaves[1] * 1, xs[2].clone(), xs[3].clone(), 0.5)
            value = loss.item()
            loss.sum().backward()
        except Exception:
            return False
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return False
        ref_leaves = [x.clone().requires_grad_(True) for x in xs[:2]]
        ref = dpo_loss(ref_leaves[0], ref_leaves[1], xs[2], xs[3], 0.5)
        ref.backward()
        if not math.isclose(value, ref.item(), rel_tol=1e-5, abs_tol=1e-6):
            return False
        if not all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(leaves, ref_leaves)):
            return False
    return True


# =============================================================== 9.2 group_advantages
@wrong(check_group_advantages, "std == 0")  # "ok" until audit 3: the text's "exactly 0" fails for a single
def group_where_equal(rewards):  # row of equal rewards whose std comes out a little above 0
    std = rewards.std(dim=1, keepdim=True)
    adv = (rewards - rewards.mean(dim=1, keepdim=True)) / (std + 1e-4)
    return torch.where(std == 0, torch.zeros_like(adv), adv)


@wrong(check_group_advantages, "exactly 0")
def group_trl_as_is(rewards):
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)


@wrong(check_group_advantages, "eps")
def group_eps_under_sqrt(rewards):
    adv = (rewards - rewards.mean(1, keepdim=True)) / torch.sqrt(rewards.var(1, keepdim=True) + 1e-4)
    return adv.masked_fill(rewards.amax(1, keepdim=True) == rewards.amin(1, keepdim=True), 0.0)


def confirm_group(fn) -> bool:
    from ppo_lib.rlhf.grpo import group_advantages

    g = torch.Generator().manual_seed(12)
    cases = [torch.randn(5, 8, generator=g, dtype=D), torch.full((3, 8), 0.7), (torch.rand(12, 6, generator=g) > 0.5).float(),
             1 + torch.randn(2, 4, generator=g, dtype=D) * 1e-4, torch.full((1, 8), 0.7),
             torch.full((1, 3), -2.8, dtype=D), torch.full((1, 6), 0.3)]
    for r in cases:
        try:
            out = fn(r.clone())
        except Exception:
            return False
        ref = group_advantages(r)
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape or not torch.allclose(out.double(), ref.double(), atol=1e-6):
            return False
        equal = r.amax(1) == r.amin(1)
        if equal.any() and not bool((out[equal] == 0).all()):
            return False
    return True


# =============================================================== 9.3 rloo and 9.4 k3
@ok(check_rloo_advantages)
def rloo_loop(rewards):
    n, G = rewards.shape
    out = torch.empty_like(rewards)
    for i in range(G):
        others = torch.cat([rewards[:, :i], rewards[:, i + 1:]], 1)
        out[:, i] = rewards[:, i] - others.mean(1)
    return out


@wrong(check_rloo_advantages, "G - 1")
def rloo_over_g(rewards):
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / rewards.shape[1]


def confirm_rloo(fn) -> bool:
    from ppo_lib.rlhf.grpo import rloo_advantages

    g = torch.Generator().manual_seed(13)
    for r in (torch.randn(4, 5, generator=g, dtype=D), torch.randn(12, 2, generator=g, dtype=D)):
        try:
            out = fn(r.clone())
        except Exception:
            return False
        if not isinstance(out, torch.Tensor) or not torch.allclose(out, rloo_advantages(r)):
            return False
    return True


@ok(check_k3_kl)
def k3_expm1(logprobs, ref_logprobs):
    l = logprobs - ref_logprobs
    return torch.expm1(-l) + l


@wrong(check_k3_kl, "gradient")
def k3_under_no_grad(logprobs, ref_logprobs):
    with torch.no_grad():
        l = logprobs - ref_logprobs
        return torch.exp(-l) - 1 + l


def confirm_k3(fn) -> bool:
    g = torch.Generator().manual_seed(14)
    for shape in ((3, 7), (20,), (2, 3, 4)):
        lp = -torch.rand(shape, generator=g, dtype=D) * 4
        ref = -torch.rand(shape, generator=g, dtype=D) * 4
        leaf = lp.clone().requires_grad_(True)
        try:
            out = fn(leaf * 1, ref.clone())
            out.sum().backward()
        except Exception:
            return False
        l = lp - ref
        if not torch.allclose(out.detach(), torch.exp(-l) - 1 + l) or not torch.allclose(leaf.grad, 1 - torch.exp(-l)):
            return False
    return True


# =============================================================== 4.1 conjugate gradient: one Avp per iteration
@ok(check_conjugate_gradient)
def cg_stop_after_update(Avp, b, iters):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    if rr < 1e-10:
        return x
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if rr_new < 1e-10:
            break
        p, rr = r + rr_new / rr * p, rr_new
    return x


@wrong(check_conjugate_gradient, None)
def cg_residual_recomputed(Avp, b, iters):
    # right values, but a second product per iteration (b - A x): twice the Fisher-vector products in TRPO
    x = torch.zeros_like(b)
    r = b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = b - Avp(x)
        rr_new = r @ r
        p, rr = r + rr_new / rr * p, rr_new
    return x


class _Counting:
    def __init__(self, A):
        self.A, self.calls = A, 0

    def __call__(self, v):
        self.calls += 1
        return self.A @ v


def confirm_cg(fn) -> bool:
    from ppo_lib.algos.trpo import conjugate_gradient

    g = torch.Generator().manual_seed(15)
    for n, iters in ((5, 3), (8, 12), (3, 0), (4, 4)):
        m = torch.randn(n, n, generator=g, dtype=D)
        A = m @ m.T + n * torch.eye(n, dtype=D)
        b = torch.randn(n, generator=g, dtype=D)
        mine, ref = _Counting(A), _Counting(A)
        try:
            x = fn(mine, b.clone(), iters)
        except Exception:
            return False
        if not torch.allclose(x, conjugate_gradient(ref, b, iters), atol=1e-8) or mine.calls != ref.calls:
            return False
    return True


# =============================================================== 1.2 and 3.2: zero weights, a constant minibatch
@ok(check_reinforce_loss)
def reinforce_dot(logprobs, weights):
    return -torch.dot(logprobs, weights.detach()) / logprobs.numel()


@wrong(check_reinforce_loss)
def reinforce_mean_over_nonzero(logprobs, weights):
    used = weights != 0  # "skip the samples that carry no signal": changes the mean's denominator
    return -(logprobs[used] * weights.detach()[used]).mean()


def confirm_reinforce(fn) -> bool:
    g = torch.Generator().manual_seed(16)
    for n in (3, 12, 20):
        lp = -torch.rand(n, generator=g, dtype=D) * 3
        w = torch.randn(n, generator=g, dtype=D)
        w[::3] = 0.0
        leaf = lp.clone().requires_grad_(True)
        try:
            loss = fn(leaf * 1, w.clone())
            loss.backward()
        except Exception:
            return False
        if not math.isclose(float(loss), float(-(lp * w).mean()), rel_tol=1e-9) or \
                not torch.allclose(leaf.grad, -w / n):
            return False
    return True


@ok(check_normalize_advantages)
def normalize_with_eps_np(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / (a.std(ddof=1) + 1e-8) if a.size > 1 else a - a.mean()


@wrong(check_normalize_advantages, "std is 0")
def normalize_no_eps_np(advantages):
    a = np.asarray(advantages, float)
    return (a - a.mean()) / a.std(ddof=1) if a.size > 1 else a - a.mean()


def confirm_normalize(fn) -> bool:
    from ppo_lib.losses import normalize

    rng = np.random.default_rng(17)
    for a in (rng.normal(size=7), np.full(5, 0.3), rng.normal(size=30) * 4, np.array([2.0])):
        with np.errstate(all="ignore"):
            got = np.asarray(fn(a.copy()), float)
        ref = normalize(torch.as_tensor(a)).numpy()
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
            return False
    return True


CONFIRM = {"reinforce_loss": confirm_reinforce, "normalize_advantages": confirm_normalize,"ppo_update": confirm_capstone, "gaussian_log_prob_entropy": confirm_gaussian,
           "gather_logprobs": confirm_gather, "per_token_rewards": confirm_per_token_rewards,
           "masked_whiten": confirm_whiten, "adaptive_kl_update": confirm_beta, "dpo_loss": confirm_dpo,
           "group_advantages": confirm_group, "rloo_advantages": confirm_rloo, "k3_kl": confirm_k3,
           "conjugate_gradient": confirm_cg}


def confirmed(impl: Impl) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CONFIRM[impl.exercise.name](impl.fn)


def _hint(message: str) -> str | None:
    for line in message.splitlines():
        if line.strip().startswith("Hint:"):
            return line.strip()[len("Hint:"):].strip()
    return None


def verdict(impl: Impl) -> str:
    """"ok", or the audit column the checker's answer falls in."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = impl.exercise.evaluate(impl.fn)
    except Exception:
        return "crash"
    if impl.label == "ok":
        return "ok" if result.passed else "false rejection"
    if result.passed:
        return "false pass"
    hint = _hint(result.message)
    if result.status == "unfilled" or "Case:" not in result.message:
        return "misleading hint"
    if hint is not None and (impl.hint is None or impl.hint not in hint):
        return "misleading hint"
    return "ok"


def audit_counts() -> dict:
    counts: dict = {}
    for impl in IMPLS:
        v = verdict(impl)
        row = counts.setdefault(impl.exercise.name, {"false pass": 0, "false rejection": 0, "crash": 0,
                                                     "misleading hint": 0, "implementations": 0})
        row["implementations"] += 1
        if v != "ok":
            row[v] += 1
    return counts


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_label_is_confirmed_on_random_inputs(impl):
    assert confirmed(impl) == (impl.label == "ok")


@pytest.mark.parametrize("impl", IMPLS, ids=[i.id for i in IMPLS])
def test_checker_verdict(impl):
    assert verdict(impl) == "ok", impl.exercise.evaluate(impl.fn).message


if __name__ == "__main__":
    total = {"false pass": 0, "false rejection": 0, "crash": 0, "misleading hint": 0, "implementations": 0}
    for name, row in audit_counts().items():
        print(f"{name:26s} " + "  ".join(f"{k} {v}" for k, v in row.items()))
        for k in total:
            total[k] += row[k]
    print("total", total)
    print("labels not confirmed:", [i.id for i in IMPLS if confirmed(i) != (i.label == "ok")])
    for i in IMPLS:
        v = verdict(i)
        if v != "ok":
            print(f"  {v:16s} {i.id}")
