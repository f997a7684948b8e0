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
