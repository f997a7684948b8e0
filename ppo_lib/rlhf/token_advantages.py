r"""Rewards and advantages over the tokens of a response: an episode is one response.

A response of ``L`` slots is an episode whose step ``t`` is emitting token ``a_t``.
Slots after ``<eos>`` are padding (``mask`` 0). The per-token reward (Ziegler et al.
2019; Ouyang et al. 2022, eq. 2; TRL) is the KL penalty on every token and the
reward model's score on the last real token:

.. math:: r_t = -\beta\,\mathrm{kl}_t + [t = t_{last}]\; R(x, y).

GAE over the tokens is the library's :func:`ppo_lib.advantages.gae` on ``(L, B)``
arrays: the episode ends after the last real token (no bootstrap), and padding has
zero reward, zero value and is cut off by the done flags.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ppo_lib.advantages import bootstrap_values, gae
from ppo_lib.rlhf.arguments import real, require_finite


def _check_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "values") -> None:
    if mask.shape != like.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and {name} {tuple(like.shape)} differ in shape")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token ``(B,)`` (``<eos>``, or the last slot when there is none)."""
    lengths = mask.sum(dim=1).long()
    if (lengths == 0).any():
        raise ValueError("mask: a response with no real token (every slot masked); each response has at least one")
    return lengths - 1


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``-beta * kl`` on every real token, plus each row's score on its last real token; 0 on padding.

    ``kl``, ``mask``: ``(B, L)``; ``scores``: ``(B,)``.
    """
    if isinstance(beta, torch.Tensor) and beta.numel() == 1:
        beta = beta.item()
    if not isinstance(beta, (bool, np.bool_)) and isinstance(beta, numbers.Real) and beta < 0:
        raise ValueError(f"beta={beta}: must be >= 0 (a negative beta would reward moving away from the reference)")
    beta = real("beta", beta, 0.0)
    _check_mask(mask, kl, "kl")
    if scores.shape != kl.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)}: expected one score per response, shape ({kl.shape[0]},)")
    # a NaN score would become every advantage of the batch after whitening: an error at once
    require_finite(scores, "scores", " (the reward model's or the verifier's)")
    rewards = -beta * kl * mask
    last = last_token_index(mask)
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def token_dones(mask: torch.Tensor) -> torch.Tensor:
    """True where the episode has ended after this slot: the last real token and all padding."""
    nxt = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    return nxt == 0


def token_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
              lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    r"""GAE over tokens, ``(B, L)`` in and out: advantages (0 on padding) and value targets
    (advantage + value). Exactly :func:`ppo_lib.advantages.gae` on the transposed arrays."""
    _check_mask(mask, values)
    _check_mask(mask, rewards, "rewards")
    # here, not only in per_token_rewards: a chapter may plug in its own rewards function
    real_tokens = mask.bool()
    require_finite(rewards[real_tokens], "rewards", " on the real tokens (a NaN score, KL or rewards function?)")
    require_finite(values[real_tokens], "values", " on the real tokens (the value model's: did the critic diverge?)")
    m = mask.float()
    v = (values * m).T                     # (L, B): time on axis 0, as everywhere in the library
    r = (rewards * m).T
    dones = token_dones(m).T
    zeros = torch.zeros_like(v)
    next_values = bootstrap_values(v, torch.zeros_like(v[0]), dones, torch.zeros_like(dones), zeros)
    adv = gae(r, v, next_values, dones, gamma, lam).T * m
    return adv, adv + values * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _check_mask(mask, x, "x")
    n = mask.sum()
    if n == 0:
        raise ValueError("mask: selects no element")
    return (x * mask).sum() / n


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""``(x - mean) / std`` over the masked elements only; 0 outside the mask. The std is the
    unbiased one (divides by ``n - 1``); with a single element (std undefined) it only centres."""
    mean = masked_mean(x, mask)
    centred = (x - mean) * mask
    n = mask.sum()
    if n < 2:
        return centred
    var = (centred ** 2).sum() / (n - 1)
    return centred * torch.rsqrt(var + eps)
