r"""RLOO as its authors define it: REINFORCE with a leave-one-out baseline on whole responses.

Ahmadian et al. 2024 ("Back to Basics: Revisiting REINFORCE Style Optimization for Learning
from Human Feedback in LLMs") treat a whole response as one action. TRL's ``RLOOTrainer``
(``trl/trainer/rloo_trainer.py``, read at commit f2cd577 of July 2026) implements the same,
with PPO's clip on a *sequence-level* ratio for when a batch is reused. One iteration, in
execution order (``n`` prompts, ``G`` samples each, ``B = n G`` responses of ``L`` slots):

1. **Roll out**: ``G`` responses per prompt; the reward model's score :math:`s_i` at ``<eos>``
   (``missing_eos_score`` without one); log-probs ``(B, L)`` of the policy (``old``) and of
   the frozen reference.
2. **KL in the reward, k1 summed per sequence** (the paper's :math:`r - \beta\log\frac{\pi}{\pi_{ref}}`
   on the whole response; TRL: ``rewards - beta * (old_logps - ref_logps).sum(-1)``):

   .. math:: r_i = s_i - \beta \sum_t \big(\log\pi_{old}(o_{i,t}) - \log\pi_{ref}(o_{i,t})\big)

3. **Leave-one-out baseline** (Kool et al. 2019): :math:`A_i = r_i - \frac{1}{G-1}\sum_{j\ne i} r_j`
   (:func:`ppo_lib.rlhf.grpo.rloo_advantages`); no division by a std (TRL's
   ``normalize_advantages`` is off by default).
4. **Sequence-level update**: with :math:`\log\pi(o_i) = \sum_t \log\pi(o_{i,t})`, the ratio
   :math:`\rho_i = \exp(\log\pi_\theta(o_i) - \log\pi_{old}(o_i))` is one number per response,
   and the loss (TRL's ``_compute_loss``) is

   .. math:: \mathcal L = -\frac1B\sum_i \min\big(\rho_i A_i,\ \mathrm{clip}(\rho_i, 1-\epsilon, 1+\epsilon) A_i\big).

   On the first step after a rollout :math:`\rho_i = 1` and its gradient is exactly REINFORCE's,
   :math:`-\frac1B\sum_i A_i \nabla\log\pi_\theta(o_i)` (a test checks it against the hand-computed
   gradient); later steps on the same batch are clipped per response.

What differs from GRPO (:mod:`ppo_lib.rlhf.grpo`): the KL is k1 in the reward, not k3 in the
loss; the ratio is per response (the *sum* of its tokens' log-ratios), not per token; the
tokens of a response are summed, not averaged; the advantage is not divided by the group's std.
``GRPOConfig(baseline="rloo")`` keeps GRPO's loss with this baseline: a hybrid, not RLOO.

The update schedule (``epochs`` x ``num_minibatches`` steps per batch) defaults to GRPOConfig's
so that the two differ only in the objective; TRL's RLOO default is one pass
(``num_iterations=1``), Ahmadian et al.'s one on-policy step.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from ppo_lib.config import check_config, validated
from ppo_lib.losses import approx_kl, clipped_surrogate
from ppo_lib.rlhf.arguments import plain_numbers
from ppo_lib.rlhf.grpo import GRPOConfig, GRPOHistory, GRPOResult, check_group_schedule, collect_groups, no_spread
from ppo_lib.rlhf.loop import end_of_iteration, minibatch_epochs, optimizer_step, record_sampled, trainable_copy, \
    training_run
from ppo_lib.rlhf.model import frozen_copy, response_logprobs
from ppo_lib.rlhf.pretrain import PretrainResult, require_pretrained
from ppo_lib.rlhf.reward_model import RewardModelResult, check_trainer_arguments, require_reward_or_verifier
from ppo_lib.runs import check_callback

__all__ = ["RLOOConfig", "RLOOHistory", "RLOOResult", "rloo_loss", "sequence_logprobs", "train_rloo"]


@validated
@dataclasses.dataclass
class RLOOConfig:
    """RLOO on whole responses. Each default names its source."""

    group_size: int = 8               # k: TRL's num_generations 8 (Ahmadian et al. 2024 try k = 2 and 4)
    prompts_per_iteration: int = 8    # 64 responses an iteration, as GRPO and chapter 8's PPO
    beta: float = 0.05                # TRL RLOOConfig.beta 0.05; k1 summed per response, in the reward
    clip_eps: float = 0.2             # TRL epsilon 0.2, on the sequence-level ratio
    epochs: int = 2                   # GRPOConfig's schedule, so the two differ only in the loss (TRL: 1)
    num_minibatches: int = 2
    lr: float = 5e-4                  # as GRPOConfig, for this 100k-parameter model
    iterations: int = 60              # as GRPOConfig: the same samples
    temperature: float = 1.0
    missing_eos_score: float = -1.0   # as chapter 8 (Huang et al. 2024: -1)
    max_grad_norm: float = 1.0        # TRL's default
    seed: int = 0

    def __post_init__(self):
        check_group_schedule(self)
        plain_numbers(self)

    @property
    def batch_size(self) -> int:
        return self.group_size * self.prompts_per_iteration

    def sampling_config(self) -> GRPOConfig:
        """The rollout settings in the form :func:`ppo_lib.rlhf.grpo.collect_groups` reads: k1 summed
        in the reward (none at ``beta=0``), the leave-one-out baseline."""
        return GRPOConfig(group_size=self.group_size, prompts_per_iteration=self.prompts_per_iteration,
                          beta=self.beta, kl="reward_k1" if self.beta > 0 else "none", baseline="rloo",
                          clip_eps=self.clip_eps, epochs=self.epochs, num_minibatches=self.num_minibatches,
                          lr=self.lr, iterations=self.iterations, temperature=self.temperature,
                          missing_eos_score=self.missing_eos_score, max_grad_norm=self.max_grad_norm, seed=self.seed)


@dataclasses.dataclass
class RLOOHistory(GRPOHistory):
    """GRPO's history (``k3`` stays 0: there is no KL in the loss), plus the share of groups whose
    reward-model scores are all equal. ``zero_std_groups`` counts groups whose *rewards* (score minus
    the KL term) are all equal, which the KL in the reward makes rare."""

    equal_score_groups: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RLOOResult(GRPOResult):
    """See :class:`~ppo_lib.rlhf.loop.FineTuneResult`; ``history`` an :class:`RLOOHistory`, ``config``
    an :class:`RLOOConfig`."""


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` per-token log-probs -> ``(B,)``: the log-probability of each whole response."""
    if logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and mask {tuple(mask.shape)}: expected the same "
                         f"shape (B, L)")
    return (logprobs * mask).sum(dim=1)


def rloo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_eps: float) -> tuple[torch.Tensor, dict]:
    r"""RLOO's loss on whole responses (module docstring; TRL's ``RLOOTrainer._compute_loss``):
    :math:`-\frac1B\sum_i\min(\rho_i A_i, \mathrm{clip}(\rho_i, 1\pm\epsilon) A_i)` with the
    sequence ratio :math:`\rho_i = \exp(\sum_t \log\pi_\theta(o_{i,t}) - \log\pi_{old}(o_{i,t}))`.

    ``logprobs`` ``(B, L)`` (with gradient), ``old_logprobs`` ``(B, L)``, ``advantages`` ``(B,)``,
    ``mask`` ``(B, L)``. Returns the loss and ``clip_fraction`` (of responses) and ``approx_kl``
    (k3 of KL(old || new) per token, :func:`ppo_lib.losses.approx_kl`)."""
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape (B, L)")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)}: expected one advantage per response, "
                         f"shape ({logprobs.shape[0]},)")
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps={clip_eps}: must be in (0, 1)")
    log_ratio = sequence_logprobs(logprobs, mask) - sequence_logprobs(old_logprobs.detach(), mask)
    ratio = log_ratio.exp()
    objective = clipped_surrogate(ratio, advantages.detach(), clip_eps)
    with torch.no_grad():
        m = mask.bool()
        info = {"clip_fraction": float(((ratio - 1).abs() > clip_eps).float().mean()),
                "approx_kl": approx_kl(old_logprobs.detach()[m], logprobs.detach()[m])[1]}
    return -objective, info


def train_rloo(sft: PretrainResult, reward: RewardModelResult | None = None, config: RLOOConfig | None = None,
               progress: bool = True, callback: Callable[[RLOOHistory], bool | None] | None = None,
               n_samples_logged: int = 4) -> RLOOResult:
    """Fine-tune a copy of the SFT model with RLOO (module docstring) against ``reward``'s model, or,
    when ``reward`` is None, against the verifier of the task the SFT model was trained on.

    Ctrl+C (or a callback returning True) stops early and returns what was done;
    any other error re-raises with the partial result attached as ``error.partial_result``.
    """
    config = check_config(config, RLOOConfig, "train_rloo")
    require_pretrained(sft)
    task = sft.task
    require_reward_or_verifier(reward, task)
    check_trainer_arguments(config, reward, progress, n_samples_logged)
    sampling = config.sampling_config()
    dev = next(sft.model.parameters()).device
    torch.manual_seed(config.seed)
    policy = trainable_copy(sft.model)
    ref = frozen_copy(sft.model)
    reward_model = None if reward is None else frozen_copy(reward.model)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    generator = torch.Generator(dev).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    history = RLOOHistory()
    result = RLOOResult(policy, history, config)
    callback = check_callback(callback)
    P = task.prompt_len
    with training_run(result, config.iterations, f"RLOO beta={config.beta:g}", progress, (policy,)) as bar:
        for it in range(config.iterations):
            t0 = time.perf_counter()
            ro = collect_groups(policy, ref, reward_model, sampling, generator, rng, task)
            t1 = time.perf_counter()
            result.tokens_generated += int(ro.mask.sum())

            def step(idx):
                new_logprobs = response_logprobs(policy, ro.tokens[idx], P, config.temperature)
                loss, info = rloo_loss(new_logprobs, ro.logprobs[idx], ro.advantages[idx], ro.mask[idx],
                                       config.clip_eps)
                optimizer_step(opt, loss, policy.parameters(), config.max_grad_norm)
                return info

            infos = minibatch_epochs(config, rng, dev, step)
            t2 = time.perf_counter()
            mean_kl, responses = record_sampled(history, ro, task, infos, float(ro.scores.mean()), n_samples_logged)
            history.zero_std_groups.append(ro.zero_std_share)
            history.equal_score_groups.append(float(no_spread(ro.scores.view(-1, config.group_size)).float().mean()))
            history.k3.append(0.0)
            history.rollout_seconds.append(t1 - t0)
            history.update_seconds.append(t2 - t1)
            history.responses_sampled.append(ro.n_sampled)
            history.task_stats.append(task.stats(responses) if task.stats is not None else {})
            history.seconds.append(time.perf_counter() - t0)
            if end_of_iteration(bar, callback, it, history, mean_kl):
                break
    return result
