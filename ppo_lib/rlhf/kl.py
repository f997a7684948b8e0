r"""The KL to the reference model: per-token estimators and the adaptive coefficient.

With :math:`l_t = \log\pi(a_t|s_t) - \log\pi_{ref}(a_t|s_t)` on tokens sampled from
:math:`\pi`, three estimators of :math:`\mathrm{KL}(\pi\,\|\,\pi_{ref})` per token
(J. Schulman, "Approximating KL divergence", 2020):

- ``k1`` :math:`= l_t`: unbiased, but a single sample can be negative;
- ``k2`` :math:`= l_t^2 / 2`: biased, low variance, never negative;
- ``k3`` :math:`= (e^{-l_t} - 1) + l_t`: unbiased and never negative.

Summed over a response's tokens, ``k1`` is an unbiased estimate of the sequence KL.
"""

from __future__ import annotations

import math

import torch

from ppo_lib.config import check_number

ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """The chosen estimator on every token (same shape as the inputs)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: must be one of {', '.join(ESTIMATORS)}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} "
                         f"differ in shape")
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    return torch.expm1(-log_ratio) + log_ratio


def adaptive_kl_update(beta: float, kl: float, kl_target: float, n_steps: int, horizon: int) -> float:
    r"""One step of the adaptive KL controller, in the form of Ziegler et al.'s reference code
    (openai/lm-human-preferences, ``AdaptiveKLController``; TRL's class of the same name):

    .. math:: e = \mathrm{clip}\Big(\frac{KL}{KL_{target}} - 1,\ -0.2,\ 0.2\Big), \qquad
              \beta \leftarrow \beta\,\big(1 + e\,\tfrac{n}{\text{horizon}}\big)

    where ``n`` is the number of samples (responses) behind this KL measurement. The paper
    (Ziegler et al. 2019, section 2.2) writes the same proportional controller with a fixed
    gain instead of ``n / horizon``: :math:`\beta_{t+1} = \beta_t (1 + K_\beta e_t)`,
    :math:`K_\beta = 0.1`.
    """
    for name, value in (("beta", beta), ("kl_target", kl_target), ("n_steps", n_steps), ("horizon", horizon)):
        check_number(name, value)  # a number (NumPy's too), not NaN: a NaN beta would pass every test below
    if beta < 0 or kl_target <= 0 or horizon <= 0 or n_steps < 0:
        raise ValueError(f"beta={beta}, kl_target={kl_target}, n_steps={n_steps}, horizon={horizon}: need beta >= 0, "
                         f"kl_target > 0, n_steps >= 0 and horizon > 0")
    if not math.isfinite(kl):
        raise ValueError(f"kl={kl}: must be finite")
    error = min(max(kl / kl_target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


class AdaptiveKLController:
    """Holds beta and applies :func:`adaptive_kl_update` after each batch (the defaults of TRL's
    ``AdaptiveKLController`` in its old PPOTrainer: initial 0.2, target 6 nats, horizon 10 000)."""

    def __init__(self, init_beta: float = 0.2, target: float = 6.0, horizon: int = 10_000):
        self.beta, self.target, self.horizon = float(init_beta), float(target), int(horizon)

    def update(self, kl: float, n_steps: int) -> float:
        self.beta = adaptive_kl_update(self.beta, kl, self.target, n_steps, self.horizon)
        return self.beta
