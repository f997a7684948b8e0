"""What every algorithm shares: a policy built for the env's spaces, a seeded
initialisation, an Adam optimiser, and gradient-norm clipping."""

from __future__ import annotations

import torch

from ppo_lib.config import check_seed
from ppo_lib.policies import ActorCritic, check_spaces


def gradient_step(optimizer, parameters, loss: torch.Tensor, max_grad_norm: float | None) -> float:
    """Zero the gradients, backpropagate ``loss``, clip the global gradient norm to
    ``max_grad_norm`` (0 or None: no clipping) and step. Returns the norm before clipping."""
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm if max_grad_norm else float("inf"), foreach=True)
    optimizer.step()
    return float(norm)


class Algorithm:
    """Subclasses set ``config`` (with ``rollout_steps``, ``lr``, ``hidden``...)
    and implement ``update(rollout) -> dict`` of diagnostics."""

    uses_critic = True

    def __init__(self, observation_space, action_space, config, seed: int = 0):
        check_spaces(observation_space, action_space, type(self).__name__)
        seed = check_seed(seed)
        self.config = config
        torch.manual_seed(seed)  # the same seed gives the same initial weights
        self.policy = ActorCritic(observation_space, action_space, hidden=config.hidden, critic=self.uses_critic,
                                  ortho_init=getattr(config, "ortho_init", True),
                                  shared=getattr(config, "shared_network", False))
        # foreach: one kernel per step for all parameter tensors instead of a Python loop over them
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr,
                                          eps=getattr(config, "adam_eps", 1e-8), foreach=True)
        self.n_updates = 0
        self._built_with = self._structure()
        self._built_lr = config.lr

    def _structure(self) -> dict:
        c = self.config
        return {"hidden": c.hidden, "ortho_init": getattr(c, "ortho_init", True),
                "shared_network": getattr(c, "shared_network", False), "baseline": getattr(c, "baseline", None)}

    def check_config_unchanged(self) -> None:
        """Called when training starts: settings baked into the network at construction
        cannot change afterwards; a changed learning rate is applied to the optimiser."""
        now = self._structure()
        changed = [f"{k}: {self._built_with[k]!r} -> {now[k]!r}" for k in now if now[k] != self._built_with[k]]
        if changed:
            raise ValueError(f"config changed after {type(self).__name__} was built ({'; '.join(changed)}): "
                             f"the network already has its shape; build a new {type(self).__name__} with this config")
        if self.config.lr != self._built_lr:  # config.lr = ... after construction: the learner means it
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
            self._built_lr = self.config.lr

    @property
    def rollout_steps(self) -> int:
        return self.config.rollout_steps

    def _step(self, loss: torch.Tensor, max_grad_norm: float | None) -> float:
        return gradient_step(self.optimizer, self.policy.parameters(), loss, max_grad_norm)

    def update(self, rollout) -> dict[str, float]:
        raise NotImplementedError
