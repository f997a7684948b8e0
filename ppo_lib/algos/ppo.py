r"""Proximal Policy Optimization (Schulman et al., 2017): PPO-Clip and PPO-Penalty.

Each update takes one rollout of T steps from N environments (B = T x N samples),
computes GAE advantages and value targets once, then runs ``epochs`` passes of
shuffled minibatches over it, minimising

.. math:: L = -L^{\text{policy}} + c_1 L^{VF} - c_2 S[\pi_\theta]

where the policy objective is, by ``variant``:

- ``"clip"``: :math:`L^{CLIP} = \hat{\mathbb E}[\min(r_t A_t, \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon) A_t)]`,
- ``"penalty"``: :math:`L^{KLPEN} = \hat{\mathbb E}[r_t A_t - \beta\,\mathrm{KL}[\pi_{old}(\cdot|s_t), \pi_\theta(\cdot|s_t)]]`
  with the adaptive rule after each update: KL > 1.5 target -> beta x 2, KL < target / 1.5 -> beta / 2,
- ``"none"``: the unclipped surrogate :math:`\hat{\mathbb E}[r_t A_t]` (the paper's "no clipping" row),

and :math:`r_t = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{old}(a_t|s_t))`. Shapes: rollout
tensors (T, N) are flattened to (B,); minibatches are (M,).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos.base import Algorithm, gradient_step
from ppo_lib.config import (caller_stack_level, check_choice, check_config, check_flag, check_hidden, check_range,
                             validated, warn_ignored)
from ppo_lib.losses import (approx_kl, check_finite, clipped_surrogate, clipped_value_loss, inputs_checked,
                            kl_penalty_surrogate, normalize, value_loss)


def adaptive_kl_beta(beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule (section 4), applied after each policy update."""
    if kl < kl_target / 1.5:
        return beta / 2.0
    if kl > kl_target * 1.5:
        return beta * 2.0
    return beta


@validated
@dataclasses.dataclass
class PPOConfig:
    """Defaults: clip_eps, gamma, gae_lambda, lr, rollout_steps, epochs, minibatch_size from the PPO
    paper's MuJoCo settings (Table 3, section 6.1); max_grad_norm 0.5, adam_eps 1e-5 and
    per-minibatch advantage normalisation from OpenAI baselines' ppo2; value_coef is ours (the
    paper's MuJoCo runs share no network; its Atari runs use c1 = 1)."""

    variant: str = "clip"            # "clip" | "penalty" | "none"
    clip_eps: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    lr: float = 3e-4
    rollout_steps: int = 2048        # T per env
    num_envs: int = 1
    epochs: int = 10
    minibatch_size: int = 64
    value_coef: float = 1.0          # c1 on our 1/2 (V - R)^2: equals 0.5 on the unhalved squared error
    entropy_coef: float = 0.0        # c2
    max_grad_norm: float = 0.5       # global gradient clipping; 0 disables
    beta: float = 1.0                # initial KL coefficient (penalty variant)
    kl_target: float = 0.01          # d_targ (penalty variant)
    adaptive_beta: bool = True       # False: a fixed beta
    target_kl: float | None = None   # stop the epochs early once the k3 KL estimate exceeds this
    clip_value: bool = False         # clip the value loss around the old values (by clip_eps)
    normalize_advantages: bool = True  # per minibatch
    anneal_lr: bool = False          # linearly to 0 over the training run
    anneal_clip: bool = False        # clip_eps linearly to 0 too (rl-zoo's CartPole setting)
    adam_eps: float = 1e-5           # as in OpenAI baselines' PPO2
    hidden: tuple = (64, 64)
    # implementation details (chapter 7), each can be switched off for an ablation
    normalize_obs: bool = False      # running mean/std of observations, env side
    scale_rewards: bool = False      # rewards / running std of the discounted return
    ortho_init: bool = True          # orthogonal init (actor head 0.01, critic head 1)
    shared_network: bool = False     # one body for actor and critic
    bootstrap_truncation: bool = True  # False: treat time limits as terminations (the classic bug)

    def __post_init__(self):
        check_hidden(self)
        check_choice(self, "variant", ("clip", "penalty", "none"))
        check_range(self, "clip_eps", 0, 1, low_open=True, high_open=True)
        check_range(self, "gamma", 0, 1)
        check_range(self, "gae_lambda", 0, 1)
        check_range(self, "lr", 0, 1, low_open=True)
        check_range(self, "rollout_steps", 1, integer=True)
        check_range(self, "num_envs", 1, integer=True)
        check_range(self, "epochs", 1, integer=True)
        check_range(self, "minibatch_size", 1, integer=True)
        check_range(self, "value_coef", 0)
        check_range(self, "entropy_coef", 0)
        check_range(self, "max_grad_norm", 0)
        check_range(self, "beta", 0)
        check_range(self, "kl_target", 0, low_open=True)
        check_range(self, "adam_eps", 0, low_open=True)
        if self.target_kl is not None:
            check_range(self, "target_kl", 0, low_open=True)
        for flag in ("adaptive_beta", "clip_value", "normalize_advantages", "anneal_lr", "anneal_clip",
                     "normalize_obs", "scale_rewards", "ortho_init", "shared_network", "bootstrap_truncation"):
            check_flag(self, flag)
        if self.variant != "penalty":
            warn_ignored(self, ("beta", "kl_target", "adaptive_beta"), f"with variant={self.variant!r} "
                         f"(they set the KL penalty of variant='penalty')")
        if self.variant == "penalty" and self.adaptive_beta and self.beta == 0:
            raise ValueError("beta=0: with variant='penalty' and adaptive_beta=True, beta must be > 0 "
                             "(doubling or halving 0 leaves it 0 for ever)")
        batch = self.rollout_steps * self.num_envs
        if self.minibatch_size > batch:
            raise ValueError(f"minibatch_size={self.minibatch_size}: must be <= rollout_steps x num_envs "
                             f"= {batch}")
        if batch % self.minibatch_size:
            # SB3 warns too (it keeps a smaller last minibatch; we drop it, as chapter 5 states)
            warnings.warn(f"minibatch_size={self.minibatch_size} does not divide rollout_steps x num_envs = "
                          f"{batch}: each epoch leaves {batch % self.minibatch_size} randomly chosen samples out "
                          f"(every minibatch step averages {self.minibatch_size} samples)", UserWarning,
                          stacklevel=caller_stack_level())


#: A CartPole preset for notebooks: rl-baselines3-zoo's tuned hyperparameters.
CARTPOLE_PRESET = dict(num_envs=8, rollout_steps=32, minibatch_size=256, gamma=0.98, gae_lambda=0.8,
                       epochs=20, lr=1e-3, entropy_coef=0.0, anneal_lr=True, anneal_clip=True)


#: A CartPole preset tuned for wall-clock time on one CPU core (benchmarks/ppo_speed.py):
#: fewer, larger minibatch steps per env step than the zoo preset.
CARTPOLE_FAST_PRESET = dict(num_envs=8, rollout_steps=64, minibatch_size=256, gamma=0.98, gae_lambda=0.8,
                            epochs=8, lr=5e-3, anneal_lr=True, anneal_clip=False)

#: Pendulum-v1 (continuous actions): short horizon (gamma 0.9), larger steps.
PENDULUM_PRESET = dict(num_envs=4, rollout_steps=512, minibatch_size=64, gamma=0.9, gae_lambda=0.95,
                       epochs=10, lr=1e-3)


@dataclasses.dataclass(frozen=True)
class UpdateHooks:
    """Points of :func:`ppo_update` where the bug hunt (:mod:`ppo_lib.teaching.bug_hunt`)
    switches one bug in, as a parameter rather than as a second copy of the update.
    The defaults are PPO itself: each hook returns what it is given."""

    def objective(self, objective: torch.Tensor) -> torch.Tensor:
        return objective

    def entropy_bonus(self, bonus: torch.Tensor) -> torch.Tensor:
        return bonus

    def early_stop_kl(self, k1: float, k3: float) -> float:
        """The KL estimate that early stopping compares with ``target_kl``: k3 (never negative)."""
        return k3


def ppo_update(policy, optimizer, rollout, config: PPOConfig, generator: torch.Generator, *,
               beta: float | None = None, clip_eps: float | None = None,
               hooks: UpdateHooks | None = None) -> dict[str, float]:
    r"""One PPO update of ``policy`` on ``rollout``: the one the library, chapter 5's capstone
    and the bug hunt all run.

    ``rollout`` holds T steps of N envs; advantages and value targets are computed once, then
    ``config.epochs`` passes each draw one permutation of the B = T N samples from
    ``generator`` and walk it in minibatches of M = ``config.minibatch_size``. When M does
    not divide B, the last B mod M indices of each permutation are not used in that epoch
    (a different random few each epoch; :class:`PPOConfig` warns when it is built): every
    step then averages the same number of samples, as chapter 5's text states. ``beta``
    (penalty variant) and ``clip_eps`` default to the config's; :class:`PPO` passes its
    adapted beta and its annealed epsilon. Returns the diagnostics of the update (means over
    minibatches, and KL estimates of pi_new against pi_old on the whole batch); it does not
    adapt beta (the caller does, from ``info["kl"]``).
    """
    c, actor, hooks = config, policy.actor, hooks or UpdateHooks()
    beta = c.beta if beta is None else beta
    eps = max(c.clip_eps if clip_eps is None else clip_eps, 1e-8)
    advantages, targets = rollout_advantages(rollout, c.gamma, c.gae_lambda,
                                             truncation_as_termination=not c.bootstrap_truncation)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, values_old = rollout.logprobs.flatten(), rollout.values.flatten()
    advantages, targets = advantages.flatten(), targets.flatten()
    with torch.no_grad():
        old_params = actor.params(obs)  # pi_old at every state, for the exact KL
    B = obs.shape[0]
    if B < c.minibatch_size:
        raise ValueError(f"the rollout has {B} samples ({rollout.T} steps x {rollout.N} envs), fewer than "
                         f"minibatch_size={c.minibatch_size}: no minibatch can be formed. Use more envs or "
                         f"steps, or a smaller minibatch (the config expects num_envs={c.num_envs})")
    # the rollout is checked once here, at the entry; the minibatch losses then skip their own
    # NaN scans (a host read each: a GPU synchronisation per tensor per minibatch)
    for name, x in (("rollout.obs", obs), ("rollout.logprobs", logp_old), ("rollout.values", values_old),
                    ("the advantages", advantages), ("the value targets", targets)):
        check_finite(name, x.float())
    stats = {k: [] for k in ("policy_loss", "value_loss", "entropy", "clip_fraction")}
    epochs_done, stopped_early = 0, False
    with inputs_checked():
        for _ in range(c.epochs):
            perm = torch.randperm(B, generator=generator)
            for start in range(0, B - c.minibatch_size + 1, c.minibatch_size):
                mb = perm[start:start + c.minibatch_size]
                dist = actor.distribution(obs[mb])
                logp, entropy = actor.log_prob(dist, actions[mb]), actor.entropy(dist)
                values = policy.value(obs[mb])
                ratio = torch.exp(logp - logp_old[mb])
                adv = normalize(advantages[mb]) if c.normalize_advantages else advantages[mb]
                if c.variant == "clip":
                    objective = clipped_surrogate(ratio, adv, eps)
                elif c.variant == "penalty":
                    kl = actor.kl(actor.from_params(old_params[mb]), dist)  # exact, per state
                    objective = kl_penalty_surrogate(ratio, adv, kl, beta)
                else:
                    objective = (ratio * adv.detach()).mean()
                objective = hooks.objective(objective)
                if c.clip_value:
                    v_loss = clipped_value_loss(values, values_old[mb], targets[mb], eps)
                else:
                    v_loss = value_loss(values, targets[mb])
                loss = -objective + c.value_coef * v_loss - hooks.entropy_bonus(c.entropy_coef * entropy.mean())
                gradient_step(optimizer, policy.parameters(), loss, c.max_grad_norm)
                stats["policy_loss"].append(-objective.item())
                stats["value_loss"].append(v_loss.item())
                stats["entropy"].append(entropy.mean().item())
                stats["clip_fraction"].append(((ratio - 1.0).abs() > eps).float().mean().item())
            epochs_done += 1
            if c.target_kl is not None:
                with torch.no_grad():
                    k1, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
                if hooks.early_stop_kl(k1, k3) > c.target_kl:
                    stopped_early = True
                    break
    # Diagnostics of the whole update: pi_new against pi_old on the full batch.
    with torch.no_grad():
        dist = actor.distribution(obs)
        k1, k3 = approx_kl(logp_old, actor.log_prob(dist, actions))
        kl_exact = actor.kl(actor.from_params(old_params), dist).mean().item()
    # explained variance of the value targets by the rollout's own predictions (as CleanRL and
    # SB3 compute it): the critic *after* fitting these very targets would flatter itself
    var_y = targets.var().item()
    explained = float("nan") if var_y == 0 else 1.0 - (targets - values_old).var().item() / var_y
    info = {k: float(np.mean(v)) for k, v in stats.items()}
    info.update(approx_kl_k1=k1, approx_kl_k3=k3, kl=kl_exact, explained_variance=explained,
                epochs=float(epochs_done), early_stop=float(stopped_early), beta=beta,
                lr=optimizer.param_groups[0]["lr"], clip_eps=eps)
    return info


class PPO(Algorithm):
    def __init__(self, observation_space, action_space, config: PPOConfig | None = None, seed: int = 0):
        super().__init__(observation_space, action_space, check_config(config, PPOConfig, "PPO"), seed)
        self.beta = self.config.beta
        self.progress = 0.0
        self._generator = torch.Generator().manual_seed(seed)

    def wrap_env(self, venv):
        """Observation normalisation and reward scaling live on the env side (the
        rollout then stores what the policy saw); the policy keeps a reference to
        the observation statistics for evaluation."""
        c = self.config
        if not (c.normalize_obs or c.scale_rewards):
            return venv
        from ppo_lib.normalization import NormalizedVecEnv

        wrapped = NormalizedVecEnv(venv, normalize_obs=c.normalize_obs,
                                   reward_gamma=c.gamma if c.scale_rewards else None)
        if c.normalize_obs and self.policy.obs_rms is not None:
            wrapped.obs_rms = self.policy.obs_rms  # training again: keep the statistics the policy learned with
        self.policy.obs_rms = wrapped.obs_rms
        return wrapped

    def set_progress(self, fraction: float) -> None:
        """Called by the training loop before each update (0 at the start, -> 1 at the end)."""
        self.progress = min(max(fraction, 0.0), 1.0)
        if self.config.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr * (1.0 - self.progress)

    @property
    def clip_eps(self) -> float:
        c = self.config
        return c.clip_eps * (1.0 - self.progress) if c.anneal_clip else c.clip_eps

    def update(self, rollout) -> dict[str, float]:
        info = ppo_update(self.policy, self.optimizer, rollout, self.config, self._generator,
                          beta=self.beta, clip_eps=self.clip_eps)
        if self.config.variant == "penalty" and self.config.adaptive_beta:
            self.beta = adaptive_kl_beta(self.beta, info["kl"], self.config.kl_target)
        self.n_updates += 1
        return info
