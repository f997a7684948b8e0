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

from ppo_lib.teaching.checks.core import (Case, Exercise, InputChanged, Mistake, changed, compare,
                                          describe_returned, show_value, tracked)


_g = torch.Generator().manual_seed(7)
_MEAN_16 = torch.randn(16, 3, generator=_g).tolist()
_ACTIONS_16 = torch.randn(16, 3, generator=_g).mul(1.5).tolist()


def reference_gaussian_log_prob_entropy(mean, log_std, actions):
    dist = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


_NEXT_CELL = "the chapter's next cell"


def _next_cell_problem(fn) -> str | None:
    """Run what the chapter's next cell does with the function: 10 000 float32 samples of a
    one-dimensional policy, ratios torch.exp(logp_new - logp_old) and their mean printed."""
    try:
        g_mean, g_log_std = torch.full((10_000, 1), 1.8), torch.tensor([math.log(0.5)])
        raw = g_mean + g_log_std.exp() * torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))
        logp_raw, _ = fn(g_mean.clone(), g_log_std.clone(), raw.clone())
        ratio = torch.exp(fn(g_mean + 0.1, g_log_std.clone(), raw.clone())[0] - logp_raw)
        text = f"{ratio.mean():.4f}"
    except Exception as exc:
        return (f"{_NEXT_CELL} calls your function on torch float32 tensors of 10 000 samples and computes "
                f"torch.exp(logp_new - logp_old).mean(); that raised {type(exc).__name__}: {exc} "
                f"(return torch tensors computed from the inputs)")
    if not isinstance(logp_raw, torch.Tensor) or tuple(logp_raw.shape) != (10_000,):
        return (f"{_NEXT_CELL} calls your function with 10 000 samples: log_prob must be a torch tensor of shape "
                f"(10000,), it is {type(logp_raw).__name__} of shape {tuple(getattr(logp_raw, 'shape', ()))}")
    del text
    return None


def _run(fn, mean, log_std, actions, dtype="float64"):
    """The values, and the gradients autograd computes from them: of sum(log_prob) w.r.t. mean and log_std, and
    of sum(entropy) w.r.t. log_std (the text: gradients must flow to mean and log_std). Every input is handed
    over as a copy and checked for in-place changes afterwards."""
    dt = getattr(torch, dtype)
    m, m_in = tracked(mean, dt)
    ls, ls_in = tracked(log_std, dt)
    a, a_in = tracked(actions, dt)
    out = fn(m_in, ls_in, a_in)
    for name, given, original in (("mean", m_in, m), ("log_std", ls_in, ls), ("actions", a_in, a)):
        if changed(given, original):
            return InputChanged(name)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return {"(log_prob, entropy)": out}
    logp, ent = out
    result = {"log_prob": logp, "entropy": ent}
    if isinstance(logp, torch.Tensor) and logp.requires_grad:
        g_mean, g_log_std = torch.autograd.grad(logp.sum(), (m, ls), allow_unused=True, retain_graph=True)
        result["gradient of sum(log_prob) w.r.t. mean"] = g_mean if g_mean is not None else torch.zeros_like(m)
        result["gradient of sum(log_prob) w.r.t. log_std"] = g_log_std if g_log_std is not None else torch.zeros_like(ls)
    if isinstance(ent, torch.Tensor) and ent.requires_grad:
        (g_ent,) = torch.autograd.grad(ent.sum(), (ls,), allow_unused=True)
        result["gradient of sum(entropy) w.r.t. log_std"] = g_ent if g_ent is not None else torch.zeros_like(ls)
    result[_NEXT_CELL] = _next_cell_problem(fn)
    return result


def _compare(expected, got):
    if isinstance(got, dict) and "(log_prob, entropy)" in got:
        value = got["(log_prob, entropy)"]
        if isinstance(expected, dict) and "(log_prob, entropy)" in expected:
            return None if describe_returned(value) == describe_returned(expected["(log_prob, entropy)"]) else "differs"
        return (f"expected a pair (log_prob, entropy), two tensors of shape (B,), got {describe_returned(value)}: "
                f"{show_value(value)}")
    if isinstance(got, dict) and got.get(_NEXT_CELL) is not None:
        return got[_NEXT_CELL]
    strip = (lambda d: {k: v for k, v in d.items() if k != _NEXT_CELL} if isinstance(d, dict) else d)
    return compare(strip(expected), strip(got))


def _entropy_without_gradient(mean, log_std, actions):
    std = log_std.exp()
    logp = (-(actions - mean) ** 2 / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    ent = torch.full((mean.shape[0],), float((log_std.detach() + 0.5 * (1 + math.log(2 * math.pi))).sum()),
                     dtype=mean.dtype)
    return logp, ent


def _epsilon_in_sigma(mean, log_std, actions):
    std = log_std.exp() + 1e-6
    logp = (-(actions - mean) ** 2 / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    ent = (torch.log(std) + 0.5 * (1 + math.log(2 * math.pi))).sum(-1).expand(mean.shape[0])
    return logp, ent


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


def _log_of_density(mean, log_std, actions):
    std = log_std.exp()
    density = torch.exp(-(actions - mean) ** 2 / (2 * std**2)) / (math.sqrt(2 * math.pi) * std)
    ent = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1).expand(mean.shape[0])
    return torch.log(density.prod(-1)), ent


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
    compare=_compare,
    cases=[
        Case(([[0.0]], [0.0], [[0.0]]), "one action dimension, mean 0, std 1, action 0 (the peak of N(0, 1))"),
        Case(([[0.5, -1.0], [0.0, 2.0]], [0.0, 0.0], [[1.0, -1.0], [0.0, 0.0]]),
             "2 samples, 2 action dimensions, std 1 in both: the log-probabilities add up over dimensions"),
        Case(([[0.5, -1.0, 0.0], [0.0, 2.0, 1.0]], [-1.0, 0.5, 0.0], [[1.0, -1.0, 3.0], [0.2, 2.5, -0.5]]),
             "2 samples, 3 dimensions, different log-stds (-1, 0.5, 0)"),
        Case((_MEAN_16, [-0.7, 0.3, 1.2], _ACTIONS_16), "16 samples, 3 dimensions, in float32 (the dtype the "
             "chapter's policy uses): values and gradients to float32 precision", {"dtype": "float32"}),
        Case(([[0.0, 1.0], [2.0, -1.0]], [-12.0, 2.0], [[5e-6, 1.0], [2.0, 3.0]]),
             "a very narrow dimension (log_std -12, sigma = 6.1e-6) next to a wide one: no epsilon belongs in "
             "sigma or in its log (the text's formula has none)"),
        Case(([[0.0, 1.0], [0.5, -0.5]], [-3.0, 0.0], [[2.5, 1.5], [0.5, -0.5]]),
             "an action 50 standard deviations from the mean (dimension 0 of sample 0, sigma = exp(-3)): its "
             "log-density is about -1260, finite; a density computed first (exp, then a product) underflows "
             "to 0 and its log to -inf"),
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
        Mistake("entropy without gradient", _entropy_without_gradient,
                "the entropy must stay a tensor computed from log_std (no float(), .item(), .detach() or NumPy): "
                "the entropy bonus trains log_std through it."),
        Mistake("epsilon added to sigma", _epsilon_in_sigma,
                "sigma = exp(log_std) is never 0, so no epsilon is needed; one added to sigma changes every narrow "
                "dimension's density (the text's formula has none)."),
        Mistake("log of the density", _log_of_density,
                "you computed the density first and took its log: exp(-z^2 / 2) underflows to 0 for an action "
                "far from the mean (z about 39 in float64, 14 in float32), and log(0) = -inf. Independence makes "
                "the joint density a product, so its log is a SUM of per-dimension logs: "
                "-(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2, summed over the dimensions."),
        Mistake("variance not squared", _variance_not_squared,
                "the exponent is -(a - mu)^2 / (2 sigma^2): the variance, sigma squared, not sigma."),
    ],
)
