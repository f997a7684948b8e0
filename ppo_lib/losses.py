r"""Losses shared by the algorithms. Each is a mean over the batch elements.

Advantages and targets are treated as constants: they are detached here, so a
gradient never flows into the critic through the policy loss (a classic bug).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch

class NonFiniteError(ValueError, FloatingPointError):
    """A NaN or infinity reached a loss. A ``ValueError`` (a bad argument) and a
    ``FloatingPointError`` (the training loop reports it as :class:`TrainingDiverged`)."""


# Set while a training loop runs its minibatches on inputs it checked once at its entry
# (see ``inputs_checked``): the per-call finiteness scan, a host read of a sum per tensor
# (a GPU synchronisation each), is then skipped. Types, dtypes and shapes are always checked.
_INPUTS_CHECKED = contextvars.ContextVar("ppo_lib_losses_inputs_checked", default=False)


@contextlib.contextmanager
def inputs_checked():
    """Inside this block the losses skip their NaN/inf scan: for a training loop that checked
    its rollout at its entry (``ppo_update`` does). Everywhere else every call scans its inputs."""
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x``, or a clear error naming ``name`` and the first NaN or infinity in it."""
    # fast path: a finite sum means finite elements; a non-finite sum (NaN, inf, or an overflow
    # of large finite values) gets the exact element-wise test
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x.detach()))[0].tolist()
        raise NonFiniteError(f"{name}: non-finite value {x.detach()[tuple(bad)].item()} at index {bad}; "
                             f"allowed: finite numbers")
    return x


def _check(name: str, x, allow_empty: bool = False) -> torch.Tensor:
    """A floating tensor with only finite values, or an error naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got a {type(x).__name__} "
                        f"(convert it with torch.as_tensor({name}, dtype=torch.float32))")
    if not x.is_floating_point():
        raise TypeError(f"{name}: dtype {x.dtype}; allowed: a floating-point tensor (e.g. {name}.float())")
    if x.numel() == 0 and not allow_empty:
        raise ValueError(f"{name}: an empty tensor (shape {tuple(x.shape)}); a mean over no elements is undefined, "
                         f"allowed: at least one element")
    return x if _INPUTS_CHECKED.get() else check_finite(name, x)


def _check_scalar(name: str, value, low: float = 0.0, high: float | None = None, low_open: bool = False,
                  high_open: bool = False) -> float:
    from ppo_lib.config import check_number

    return check_number(name, value, low, high, low_open, high_open)


def policy_gradient_loss(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""The score-function surrogate :math:`L = -\frac1B\sum_b \log\pi(a_b|s_b)\,\Psi_b`.

    Its gradient is the (negated) policy-gradient estimate
    :math:`-\frac1B\sum_b \nabla\log\pi(a_b|s_b)\,\Psi_b`; :math:`\Psi` is the
    reward-to-go (REINFORCE), reward-to-go minus a baseline, or an advantage.
    ``logprobs``, ``weights``: shape ``(B,)``.
    """
    _check("logprobs", logprobs), _check("weights", weights)
    if logprobs.shape != weights.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and weights {tuple(weights.shape)} differ in shape")
    return -(logprobs * weights.detach()).mean()


def value_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac1B\sum_b \tfrac12 (V(s_b) - \hat R_b)^2`, the critic's regression loss."""
    _check("values", values), _check("targets", targets)
    if values.shape != targets.shape:
        raise ValueError(f"values {tuple(values.shape)} and targets {tuple(targets.shape)} differ in shape")
    return 0.5 * (values - targets.detach()).pow(2).mean()


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std. A single element (std undefined) is only centred: returns 0."""
    _check("x", x, allow_empty=True)
    if x.numel() <= 1:
        return x - x.mean() if x.numel() else x
    return (x - x.mean()) / (x.std() + eps)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float,
                      clip_eps_high: float | None = None) -> torch.Tensor:
    r"""PPO's clipped objective (to be *maximised*), Schulman et al. 2017, eq. (7):

    .. math:: L^{CLIP} = \frac1B\sum_b \min\big(r_b A_b,\ \mathrm{clip}(r_b, 1-\epsilon, 1+\epsilon) A_b\big)

    ``ratio`` :math:`r_b = \pi_\theta(a_b|s_b) / \pi_{old}(a_b|s_b)`, ``advantages``: (B,).
    Where the clipped term is the smaller one, the gradient is zero: for A > 0
    once r > 1 + eps, for A < 0 once r < 1 - eps.

    ``clip_eps_high`` (DAPO's "clip-higher", Yu et al. 2025) replaces the upper bound by
    :math:`1 + \epsilon_{high}`, so unlikely tokens with A > 0 can grow further; None keeps
    the symmetric clip.
    """
    _check("ratio", ratio), _check("advantages", advantages)
    if ratio.shape != advantages.shape:
        raise ValueError(f"ratio {tuple(ratio.shape)} and advantages {tuple(advantages.shape)} differ in shape")
    _check_scalar("clip_eps", clip_eps, 0.0, 1.0, low_open=True, high_open=True)
    high = clip_eps
    if clip_eps_high is not None:
        _check_scalar("clip_eps_high", clip_eps_high, 0.0, low_open=True)
        if clip_eps_high < clip_eps:
            raise ValueError(f"clip_eps_high={clip_eps_high}: must be >= clip_eps={clip_eps} (clip-higher widens "
                             f"only the upper bound)")
        high = clip_eps_high
    adv = advantages.detach()
    return torch.min(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high) * adv).mean()


def kl_penalty_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    r"""PPO's KL-penalised objective (to be maximised), eq. (8):
    :math:`L^{KLPEN} = \frac1B\sum_b \big(r_b A_b - \beta\,\mathrm{KL}[\pi_{old}(\cdot|s_b), \pi_\theta(\cdot|s_b)]\big)`."""
    _check_scalar("beta", beta, 0.0)
    _check("ratio", ratio), _check("advantages", advantages), _check("kl", kl)
    for name, x in (("advantages", advantages), ("kl", kl)):
        if x.shape != ratio.shape:
            raise ValueError(f"ratio {tuple(ratio.shape)} and {name} {tuple(x.shape)} differ in shape")
    return (ratio * advantages.detach()).mean() - beta * kl.mean()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
                       clip_eps: float) -> torch.Tensor:
    """The value loss with PPO2-style clipping: the larger of the plain and the
    clipped squared error, so the critic cannot move far from its old prediction."""
    _check_scalar("clip_eps", clip_eps, 0.0)
    _check("values", values), _check("old_values", old_values), _check("targets", targets)
    for name, x in (("old_values", old_values), ("targets", targets)):
        if x.shape != values.shape:
            raise ValueError(f"values {tuple(values.shape)} and {name} {tuple(x.shape)} differ in shape")
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    t = targets.detach()
    return 0.5 * torch.max((values - t) ** 2, (clipped - t) ** 2).mean()


def approx_kl(logp_old: torch.Tensor, logp_new: torch.Tensor) -> tuple[float, float]:
    r"""Two sample estimates of KL(old || new) from log-probs of actions drawn from old:
    k1 = mean(log p_old - log p_new) (unbiased, can be negative) and
    k3 = mean((r - 1) - log r) with r = p_new / p_old (unbiased, never negative)."""
    _check("logp_old", logp_old), _check("logp_new", logp_new)
    if logp_old.shape != logp_new.shape:
        raise ValueError(f"logp_old {tuple(logp_old.shape)} and logp_new {tuple(logp_new.shape)} differ in shape "
                         f"(they would broadcast to a wrong answer); allowed: the same shape, e.g. both (B,)")
    with torch.no_grad():
        log_r = logp_new - logp_old
        return float((-log_r).mean()), float(((log_r.exp() - 1) - log_r).mean())
