r"""Losses shared by the algorithms. Each is a mean over the batch elements.

Advantages and targets are treated as constants: they are detached here, so a
gradient never flows into the critic through the policy loss (a classic bug).
"""

from __future__ import annotations

import torch


def policy_gradient_loss(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""The score-function surrogate :math:`L = -\frac1B\sum_b \log\pi(a_b|s_b)\,\Psi_b`.

    Its gradient is the (negated) policy-gradient estimate
    :math:`-\frac1B\sum_b \nabla\log\pi(a_b|s_b)\,\Psi_b`; :math:`\Psi` is the
    reward-to-go (REINFORCE), reward-to-go minus a baseline, or an advantage.
    ``logprobs``, ``weights``: shape ``(B,)``.
    """
    if logprobs.shape != weights.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and weights {tuple(weights.shape)} differ in shape")
    return -(logprobs * weights.detach()).mean()


def value_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac1B\sum_b \tfrac12 (V(s_b) - \hat R_b)^2`, the critic's regression loss."""
    if values.shape != targets.shape:
        raise ValueError(f"values {tuple(values.shape)} and targets {tuple(targets.shape)} differ in shape")
    return 0.5 * (values - targets.detach()).pow(2).mean()


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std. A single element (std undefined) is only centred: returns 0."""
    if x.numel() <= 1:
        return x - x.mean() if x.numel() else x
    return (x - x.mean()) / (x.std() + eps)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    r"""PPO's clipped objective (to be *maximised*), Schulman et al. 2017, eq. (7):

    .. math:: L^{CLIP} = \frac1B\sum_b \min\big(r_b A_b,\ \mathrm{clip}(r_b, 1-\epsilon, 1+\epsilon) A_b\big)

    ``ratio`` :math:`r_b = \pi_\theta(a_b|s_b) / \pi_{old}(a_b|s_b)`, ``advantages``: (B,).
    Where the clipped term is the smaller one, the gradient is zero: for A > 0
    once r > 1 + eps, for A < 0 once r < 1 - eps.
    """
    if ratio.shape != advantages.shape:
        raise ValueError(f"ratio {tuple(ratio.shape)} and advantages {tuple(advantages.shape)} differ in shape")
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps={clip_eps}: must be in (0, 1)")
    adv = advantages.detach()
    return torch.min(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv).mean()


def kl_penalty_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    r"""PPO's KL-penalised objective (to be maximised), eq. (8):
    :math:`L^{KLPEN} = \frac1B\sum_b \big(r_b A_b - \beta\,\mathrm{KL}[\pi_{old}(\cdot|s_b), \pi_\theta(\cdot|s_b)]\big)`."""
    if beta < 0:
        raise ValueError(f"beta={beta}: must be >= 0")
    for name, x in (("advantages", advantages), ("kl", kl)):
        if x.shape != ratio.shape:
            raise ValueError(f"ratio {tuple(ratio.shape)} and {name} {tuple(x.shape)} differ in shape")
    return (ratio * advantages.detach()).mean() - beta * kl.mean()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
                       clip_eps: float) -> torch.Tensor:
    """The value loss with PPO2-style clipping: the larger of the plain and the
    clipped squared error, so the critic cannot move far from its old prediction."""
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
    with torch.no_grad():
        log_r = logp_new - logp_old
        return float((-log_r).mean()), float(((log_r.exp() - 1) - log_r).mean())
