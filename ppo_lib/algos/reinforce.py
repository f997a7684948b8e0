r"""REINFORCE (Williams, 1992) with reward-to-go and an optional learned baseline.

Policy gradient estimate, over the B steps of the batch that belong to episodes
completed within it:

.. math:: \hat g = \frac1B \sum_b \nabla_\theta \log \pi_\theta(a_b|s_b)\,(G_b - b(s_b)),
          \qquad G_t = \sum_{k \ge t} \gamma^{k-t} r_k \ \text{(to the episode's end)}

with :math:`b(s) = V_\phi(s)` (fitted to :math:`G` by regression) when
``baseline=True``, else 0. Shapes: rollout tensors are ``(T, N)``.

Without a critic nothing can stand in for the rewards after the batch, so the
steps of an episode still running when the batch ends are left out of this
update (the episode goes on in the next batch, whose steps are used once it
ends); a time-limit truncation simply ends the sum, as REINFORCE has no value
to bootstrap from.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from ppo_lib.advantages import complete_episode_mask, reward_to_go
from ppo_lib.algos.base import Algorithm
from ppo_lib.config import check_config, check_flag, check_hidden, check_range, validated, warn_ignored
from ppo_lib.losses import normalize, policy_gradient_loss, value_loss


@validated
@dataclasses.dataclass
class ReinforceConfig:
    gamma: float = 0.99
    lr: float = 1e-2
    rollout_steps: int = 500         # T steps per env per update (CartPole episodes last <= 500)
    num_envs: int = 4
    baseline: bool = False           # learn V(s) and subtract it from G
    value_coef: float = 0.5
    normalize_weights: bool = True   # standardise G - b over the batch
    max_grad_norm: float = 0.0       # 0: no clipping
    hidden: tuple = (64, 64)

    def __post_init__(self):
        check_hidden(self)
        check_range(self, "gamma", 0, 1)
        check_range(self, "lr", 0, 1, low_open=True)
        check_range(self, "rollout_steps", 1, integer=True)
        check_range(self, "num_envs", 1, integer=True)
        check_range(self, "value_coef", 0)
        check_range(self, "max_grad_norm", 0)
        check_flag(self, "baseline")
        check_flag(self, "normalize_weights")
        if not self.baseline:
            warn_ignored(self, ("value_coef",), "with baseline=False (there is no value function to fit)")


class REINFORCE(Algorithm):
    def __init__(self, observation_space, action_space, config: ReinforceConfig | None = None, seed: int = 0):
        config = check_config(config, ReinforceConfig, "REINFORCE")
        self.uses_critic = config.baseline
        super().__init__(observation_space, action_space, config, seed)

    def update(self, rollout) -> dict[str, float]:
        c = self.config
        returns = reward_to_go(rollout.rewards, rollout.dones, c.gamma)      # (T, N)
        mask = complete_episode_mask(rollout.dones)                          # (T, N)
        if not mask.any():
            warnings.warn(f"REINFORCE skipped an update: no episode ended within rollout_steps={c.rollout_steps} "
                          f"steps, and without a critic an unfinished episode has no return yet. Make "
                          f"rollout_steps at least as long as an episode.", RuntimeWarning, stacklevel=2)
            return {"skipped": 1.0, "used_steps": 0.0}
        obs, actions, G = rollout.obs[mask], rollout.actions[mask], returns[mask]
        logp, entropy, values = self.policy.evaluate(obs, actions)
        weights = G - values.detach() if c.baseline else G
        if c.normalize_weights:
            weights = normalize(weights)
        loss = policy_gradient_loss(logp, weights)
        v_loss = value_loss(values, G) if c.baseline else torch.zeros(())
        grad_norm = self._step(loss + c.value_coef * v_loss, c.max_grad_norm)
        self.n_updates += 1
        return {"policy_loss": loss.item(), "value_loss": v_loss.item(), "entropy": entropy.mean().item(),
                "grad_norm": grad_norm, "used_steps": float(mask.sum()), "skipped": 0.0}
