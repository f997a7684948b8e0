r"""Advantage actor-critic (A2C, the synchronous variant of Mnih et al., 2016).

Each update uses a short rollout of T steps from N environments:

.. math:: L = -\frac1B\sum_b \log\pi_\theta(a_b|s_b)\hat A_b
              + c_v \frac1B\sum_b \tfrac12 (V_\phi(s_b) - \hat R_b)^2
              - c_e \frac1B\sum_b \mathcal H[\pi_\theta(\cdot|s_b)]

with :math:`\hat A` from GAE(:math:`\gamma, \lambda`) (``gae_lambda=1``: the n-step
return minus V) and :math:`\hat R = \hat A + V`. Termination does not bootstrap;
truncation bootstraps from V of the true final observation.
"""

from __future__ import annotations

import dataclasses

import torch

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos.base import Algorithm
from ppo_lib.config import check_config, check_flag, check_hidden, check_range, validated
from ppo_lib.losses import normalize, policy_gradient_loss, value_loss


@validated
@dataclasses.dataclass
class A2CConfig:
    gamma: float = 0.99
    gae_lambda: float = 1.0
    lr: float = 7e-4
    rollout_steps: int = 5
    num_envs: int = 8
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    normalize_advantages: bool = False
    hidden: tuple = (64, 64)

    def __post_init__(self):
        check_hidden(self)
        check_range(self, "gamma", 0, 1)
        check_range(self, "gae_lambda", 0, 1)
        check_range(self, "lr", 0, 1, low_open=True)
        check_range(self, "rollout_steps", 1, integer=True)
        check_range(self, "num_envs", 1, integer=True)
        check_range(self, "value_coef", 0)
        check_range(self, "entropy_coef", 0)
        check_range(self, "max_grad_norm", 0)
        check_flag(self, "normalize_advantages")


class A2C(Algorithm):
    def __init__(self, observation_space, action_space, config: A2CConfig | None = None, seed: int = 0):
        super().__init__(observation_space, action_space, check_config(config, A2CConfig, "A2C"), seed)

    def update(self, rollout) -> dict[str, float]:
        c = self.config
        adv, targets = rollout_advantages(rollout, c.gamma, c.gae_lambda)   # (T, N) each
        obs = rollout.obs.flatten(0, 1)
        actions = rollout.actions.flatten(0, 1)
        adv, targets = adv.flatten(), targets.flatten()
        actor = self.policy.actor
        with torch.no_grad():
            old_params = actor.params(obs)
        logp, entropy, values = self.policy.evaluate(obs, actions)
        if c.normalize_advantages:
            adv = normalize(adv)
        pg = policy_gradient_loss(logp, adv)
        v_loss = value_loss(values, targets)
        loss = pg + c.value_coef * v_loss - c.entropy_coef * entropy.mean()
        grad_norm = self._step(loss, c.max_grad_norm)
        with torch.no_grad():  # how far did this one step move the policy? KL(old || new), batch mean
            kl = actor.kl(actor.from_params(old_params), actor.distribution(obs)).mean().item()
        self.n_updates += 1
        return {"policy_loss": pg.item(), "value_loss": v_loss.item(), "entropy": entropy.mean().item(),
                "grad_norm": grad_norm, "kl": kl}
