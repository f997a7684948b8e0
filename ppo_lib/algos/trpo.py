r"""Trust Region Policy Optimization (Schulman et al., 2015).

Each update solves, approximately,

.. math:: \max_\theta\ L(\theta) = \hat{\mathbb E}\Big[\frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)} A_t\Big]
          \quad \text{s.t.}\quad \bar{D}_{KL}(\theta) = \hat{\mathbb E}\big[\mathrm{KL}[\pi_{old}(\cdot|s_t), \pi_\theta(\cdot|s_t)]\big] \le \delta

by linearising L (gradient g) and taking the KL to second order (its Hessian at
:math:`\theta_{old}` is the Fisher matrix F):

1. ``conjugate_gradient`` solves :math:`F x = g` with only Fisher-vector products,
   which ``fisher_vector_product`` computes by differentiating the mean KL twice
   (never forming F: it has n_params^2 entries);
2. the natural-gradient step is scaled to the trust region:
   :math:`\Delta\theta = \sqrt{2\delta / x^\top F x}\; x`;
3. a backtracking line search shrinks the step until the *measured* mean KL is
   at most :math:`\delta` and the surrogate actually improves; if no step passes,
   the policy is left unchanged.

The value function is fitted separately, by Adam on the GAE value targets.
Shapes: rollout tensors (T, N) flattened to (B,); parameters flattened to (P,).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos.base import Algorithm
from ppo_lib.config import check_config, check_hidden, check_range, validated
from ppo_lib.losses import normalize, value_loss


def flat_grad(y: torch.Tensor, params, retain_graph: bool = False, create_graph: bool = False) -> torch.Tensor:
    grads = torch.autograd.grad(y, params, retain_graph=retain_graph or create_graph, create_graph=create_graph,
                                allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def flat_params(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(params, flat: torch.Tensor) -> None:
    i = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[i:i + n].view_as(p))
        i += n


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    r"""Solve :math:`A x = b` for symmetric positive-definite A, given only ``Avp(v) = A v``.

    At most ``iters`` iterations; stops once the squared residual :math:`\|b - Ax\|^2`
    falls below ``residual_tol``. In exact arithmetic it solves an n x n system in n steps.
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x, with x = 0
    p = r.clone()  # search direction
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(actor, obs: torch.Tensor, old_params: torch.Tensor, v: torch.Tensor,
                          damping: float = 0.0) -> torch.Tensor:
    r""":math:`(F + \text{damping}\, I)\, v` by double backpropagation through the mean KL.

    :math:`\nabla_\theta \big(\nabla_\theta \bar D_{KL}(\theta_{old} \| \theta) \cdot v\big) = H v`,
    and at :math:`\theta = \theta_{old}` the Hessian of the KL is the Fisher matrix.
    """
    params = [p for p in actor.parameters() if p.requires_grad]
    kl = actor.kl(actor.from_params(old_params.detach()), actor.distribution(obs)).mean()
    grad_kl = flat_grad(kl, params, create_graph=True)
    return flat_grad(grad_kl @ v, params) + damping * v


@validated
@dataclasses.dataclass
class TRPOConfig:
    delta: float = 0.01              # the KL radius of the trust region
    gamma: float = 0.99
    gae_lambda: float = 0.97
    rollout_steps: int = 256         # T per env
    num_envs: int = 8
    cg_iters: int = 10
    cg_residual_tol: float = 1e-10
    damping: float = 0.1             # added to F for a well-conditioned solve
    backtrack_coef: float = 0.8
    backtrack_iters: int = 10
    lr: float = 1e-3                 # the critic's Adam learning rate (the policy step is the natural gradient)
    value_epochs: int = 5
    value_minibatch_size: int = 64
    hidden: tuple = (64, 64)

    def __post_init__(self):
        check_hidden(self)
        check_range(self, "delta", 0, 1, low_open=True)
        check_range(self, "gamma", 0, 1)
        check_range(self, "gae_lambda", 0, 1)
        check_range(self, "rollout_steps", 1, integer=True)
        check_range(self, "num_envs", 1, integer=True)
        check_range(self, "cg_iters", 1, integer=True)
        check_range(self, "cg_residual_tol", 0)
        check_range(self, "damping", 0)
        check_range(self, "backtrack_coef", 0, 1, low_open=True, high_open=True)
        check_range(self, "backtrack_iters", 1, integer=True)
        check_range(self, "lr", 0, 1, low_open=True)
        check_range(self, "value_epochs", 0, integer=True)
        check_range(self, "value_minibatch_size", 1, integer=True)


class TRPO(Algorithm):
    def __init__(self, observation_space, action_space, config: TRPOConfig | None = None, seed: int = 0):
        super().__init__(observation_space, action_space, check_config(config, TRPOConfig, "TRPO"), seed)
        self.optimizer = torch.optim.Adam(self.policy.critic.parameters(), lr=self.config.lr)
        self._generator = torch.Generator().manual_seed(seed)

    def _surrogate(self, obs, actions, logp_old, adv) -> torch.Tensor:
        actor = self.policy.actor
        logp = actor.log_prob(actor.distribution(obs), actions)
        return (torch.exp(logp - logp_old) * adv).mean()

    def _mean_kl(self, obs, old_params) -> float:
        actor = self.policy.actor
        with torch.no_grad():
            return actor.kl(actor.from_params(old_params), actor.distribution(obs)).mean().item()

    def update(self, rollout) -> dict[str, float]:
        c, actor = self.config, self.policy.actor
        advantages, targets = rollout_advantages(rollout, c.gamma, c.gae_lambda)
        obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
        logp_old, adv, targets = rollout.logprobs.flatten(), normalize(advantages.flatten()), targets.flatten()
        params = [p for p in actor.parameters() if p.requires_grad]
        with torch.no_grad():
            old_params = actor.params(obs)

        # 1. the gradient of the surrogate, and the natural-gradient direction F^-1 g
        surrogate = self._surrogate(obs, actions, logp_old, adv)
        g = flat_grad(surrogate, params)
        Fvp = lambda v: fisher_vector_product(actor, obs, old_params, v, c.damping)  # noqa: E731
        x = conjugate_gradient(Fvp, g, c.cg_iters, c.cg_residual_tol)
        # 2. scale it to the trust region: 1/2 s^T F s = delta
        xFx = (x @ Fvp(x)).item()
        full_step = (2 * c.delta / max(xFx, 1e-12)) ** 0.5 * x
        expected = (g @ full_step).item()
        # 3. backtracking line search on the true KL and the true surrogate
        theta_old, surr_old = flat_params(params), surrogate.item()
        accepted, kl, improvement, steps = False, 0.0, 0.0, 0
        for j in range(c.backtrack_iters):
            steps = j + 1
            set_flat_params(params, theta_old + c.backtrack_coef**j * full_step)
            with torch.no_grad():
                improvement = self._surrogate(obs, actions, logp_old, adv).item() - surr_old
            kl = self._mean_kl(obs, old_params)
            if kl <= c.delta and improvement > 0:
                accepted = True
                break
        if not accepted:
            set_flat_params(params, theta_old)
            kl, improvement = 0.0, 0.0

        # 4. the critic, fitted separately
        v_losses = []
        B = obs.shape[0]
        for _ in range(c.value_epochs):
            perm = torch.randperm(B, generator=self._generator)
            for start in range(0, B, c.value_minibatch_size):
                mb = perm[start:start + c.value_minibatch_size]
                loss = value_loss(self.policy.value(obs[mb]), targets[mb])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                v_losses.append(loss.item())
        with torch.no_grad():
            entropy = actor.entropy(actor.distribution(obs)).mean().item()
        self.n_updates += 1
        return {"kl": kl, "delta": c.delta, "accepted": float(accepted), "line_search_steps": float(steps),
                "surrogate_improvement": improvement, "expected_improvement": expected,
                "value_loss": float(sum(v_losses) / max(len(v_losses), 1)), "entropy": entropy,
                "step_norm": full_step.norm().item()}
