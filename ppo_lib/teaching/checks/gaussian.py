"""The Gaussian-policy exercise of chapter 7: log-probability and entropy of a
diagonal Gaussian, summed over the action dimensions.

The learner writes ``gaussian_log_prob_entropy(mean, log_std, actions)`` for torch
tensors ``mean`` and ``actions`` of shape (B, D) and ``log_std`` of shape (D,), and
returns ``(log_prob, entropy)``, each of shape (B,):

    log pi(a|s) = sum_d [ -(a_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi) / 2 ]
    H[pi(.|s)]  = sum_d [ log sigma_d + (1 + log(2 pi)) / 2 ]
"""

from __future__ import annotations

import math

import torch

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake


def reference_gaussian_log_prob_entropy(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


def _run(fn, mean, log_std, actions):
    m = torch.tensor(mean, dtype=torch.float64, requires_grad=True)
    ls = torch.tensor(log_std, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(actions, dtype=torch.float64)
    out = fn(m, ls, a)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return {"(log_prob, entropy)": out}
    logp, ent = out
    result = {"log_prob": logp, "entropy": ent}
    if isinstance(logp, torch.Tensor) and logp.requires_grad:
        g_mean, g_log_std = torch.autograd.grad(logp.sum(), (m, ls), allow_unused=True)
        result["gradient of sum(log_prob) w.r.t. mean"] = g_mean if g_mean is not None else torch.zeros_like(m)
        result["gradient of sum(log_prob) w.r.t. log_std"] = g_log_std if g_log_std is not None else torch.zeros_like(ls)
    return result


def _per_dimension(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    return dist.log_prob(actions).mean(-1), dist.entropy().mean(-1)


def _no_constant(mean, log_std, actions):
    std = log_std.exp()
    logp = (-(actions - mean) ** 2 / (2 * std**2) - log_std).sum(-1)
    ent = (log_std + 0.5).sum(-1).expand(mean.shape[0])
    return logp, ent


def _std_as_log_std(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.expand_as(mean).abs() + 1e-12)
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


def _no_log_std_term(mean, log_std, actions):
    std = log_std.exp()
    logp = (-(actions - mean) ** 2 / (2 * std**2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    ent = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1).expand(mean.shape[0])
    return logp, ent


def _variance_not_squared(mean, log_std, actions):
    std = log_std.exp()
    logp = (-(actions - mean) ** 2 / (2 * std) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    ent = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1).expand(mean.shape[0])
    return logp, ent


check_gaussian_log_prob_entropy = Exercise(
    "gaussian_log_prob_entropy",
    reference=reference_gaussian_log_prob_entropy,
    reference_name="ppo_lib.policies.GaussianActor.log_prob / entropy",
    run=_run,
    cases=[
        Case(([[0.0]], [0.0], [[0.0]]), "one action dimension, mean 0, std 1, action 0 (the peak of N(0, 1))"),
        Case(([[0.5, -1.0], [0.0, 2.0]], [0.0, 0.0], [[1.0, -1.0], [0.0, 0.0]]),
             "2 samples, 2 action dimensions, std 1 in both: the log-probabilities add up over dimensions"),
        Case(([[0.5, -1.0, 0.0], [0.0, 2.0, 1.0]], [-1.0, 0.5, 0.0], [[1.0, -1.0, 3.0], [0.2, 2.5, -0.5]]),
             "2 samples, 3 dimensions, different log-stds (-1, 0.5, 0)"),
    ],
    mistakes=[
        Mistake("mean over dimensions", _per_dimension,
                "the dimensions are independent, so the joint log-probability is the SUM over them (and so is "
                "the entropy); a mean divides both by the number of dimensions."),
        Mistake("no 2 pi constant", _no_constant,
                "the density has the factor 1/sqrt(2 pi sigma^2): its log contributes -log(2 pi)/2 per "
                "dimension. It cancels in the ratio, but not in the entropy or in a reported log-prob."),
        Mistake("log_std used as std", _std_as_log_std,
                "log_std is the LOG of the standard deviation: sigma = exp(log_std)."),
        Mistake("no log sigma term", _no_log_std_term,
                "the normalising constant of N(mu, sigma^2) depends on sigma: log pi has a -log sigma term per "
                "dimension, without which a wider policy would not lose density."),
        Mistake("variance not squared", _variance_not_squared,
                "the exponent is -(a - mu)^2 / (2 sigma^2): the variance, sigma squared, not sigma."),
    ],
)
