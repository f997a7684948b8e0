r"""GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024): PPO's clipped loss without a critic.

Instead of a value model, each prompt is answered ``G`` times and every sample is compared
with its own group. One iteration, in execution order (``n`` prompts, ``G`` samples each,
``B = n G`` responses of ``L`` slots):

1. **Roll out**: ``G`` responses per prompt, sampled with a temperature only; the sequence
   reward :math:`r_i` ``(n, G)`` is the reward model's score at ``<eos>`` (a fixed
   ``missing_eos_score`` when a response never finished); log-probs ``(B, L)`` of the
   policy (``old``) and of the frozen reference.
2. **Advantages**, one number per response ``(n, G)``, given to every token of it
   (outcome supervision, Shao et al. 2024, section 4.1.2):

   - ``"group"`` (GRPO): :math:`A_i = (r_i - \mathrm{mean}(r)) / (\mathrm{std}(r) + \varepsilon)`
     over the group (:func:`group_advantages`);
   - ``"rloo"``: :math:`A_i = r_i - \frac{1}{G-1}\sum_{j\ne i} r_j`
     (:func:`rloo_advantages`). With GRPO's loss below this is a **hybrid** ("GRPO with a
     leave-one-out baseline"), not RLOO as Ahmadian et al. 2024 and TRL define it (k1 summed
     in the reward, a sequence-level REINFORCE loss): that one is :mod:`ppo_lib.rlhf.rloo`.
3. **Update**: ``epochs`` passes of ``num_minibatches`` num_minibatches on the GRPO objective
   (Shao et al. 2024, eq. 3), to be maximised:

   .. math:: J = \frac1B\sum_{i=1}^{B} \frac{1}{|o_i|}\sum_{t=1}^{|o_i|}\Big[
             \min\big(\rho_{i,t} A_i,\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon) A_i\big)
             - \beta\, k3_{i,t}\Big],
             \qquad \rho_{i,t} = \frac{\pi_\theta(o_{i,t}|q, o_{i,<t})}{\pi_{old}(o_{i,t}|q, o_{i,<t})}

   with :math:`k3 = \pi_{ref}/\pi_\theta - \log(\pi_{ref}/\pi_\theta) - 1` on the sampled tokens:
   the KL penalty sits **in the loss**, not in the reward as in chapter 8's PPO.

Three models are in memory: the policy, the reference and the reward model; no critic. With a
task's **verifier** instead of a reward model (RL with verifiable rewards, chapter 10:
``train_grpo(sft, None, config)`` on a model pre-trained on such a task), the reward is the
verifier's number for (prompt, response), and only two models are in memory.

GRPO's 2025 successors are switches of this one trainer (the defaults are GRPO's, so
chapters 8-9's seeded numbers do not move):

- ``loss_aggregation`` (:func:`aggregation_weights`): ``"grpo"`` the mean over each response's
  tokens, then over responses (Shao et al. 2024); ``"dr_grpo"`` the token sum divided by
  (responses x the longest possible response), no length normalisation (Liu et al. 2025,
  "Dr. GRPO"; with ``baseline="mean"`` also no std normalisation); ``"dapo"`` the mean over all
  tokens of the minibatch (Yu et al. 2025, DAPO; TRL's default ``loss_type`` today);
- ``clip_eps_high``: DAPO's clip-higher, the upper bound :math:`1+\epsilon_{high}` apart from the
  lower :math:`1-\epsilon`;
- ``dynamic_sampling``: DAPO's filter: groups whose rewards are all equal carry no signal; they
  are dropped and more prompts sampled until the batch is full (at most ``max_sampling_rounds``
  rounds; then the batch is filled with dropped groups), the extra samples counted;
- ``beta = 0`` / ``kl="none"``: no KL to the reference (TRL's default since 2025);
- ``ratio_level="sequence"``: GSPO's sequence-level ratio (Zheng et al. 2025),
  :math:`s_i = \exp\big(\frac{1}{|o_i|}\sum_t \log\frac{\pi_\theta(o_{i,t})}{\pi_{old}(o_{i,t})}\big)`,
  clipped per response, averaged over responses.

Where the KL goes (``kl``): ``"loss_k3"`` is GRPO's choice above. ``"reward_k1"`` is PPO's:
:math:`r_i \leftarrow r_i - \beta \sum_t (\log\pi_{old} - \log\pi_{ref})` before the advantages.
``"none"`` drops it (TRL's GRPO default today: ``beta = 0``). Mind what k3 in the loss does:
its gradient, on tokens sampled from the policy, is in expectation the gradient of the
*reverse* KL, :math:`\nabla_\theta \mathrm{KL}(\pi_{ref}\,\|\,\pi_\theta)`, not of
:math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})` that it estimates in value (TRL issues 2608, 3025,
4967); the two agree near the reference and part further away. A test measures it.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from typing import Callable

import numpy as np
import torch

from ppo_lib.config import check_choice, check_config, check_flag, check_range, validated, warn_ignored
from ppo_lib.losses import approx_kl, clipped_surrogate
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import plain_numbers, real, require_finite
from ppo_lib.rlhf.kl import kl_per_token
from ppo_lib.rlhf.model import GPT, check_temperature, frozen_copy, generate, response_logprobs
from ppo_lib.runs import check_callback
from ppo_lib.rlhf.loop import (FineTuneResult, SampledHistory, end_of_iteration, minibatch_epochs, optimizer_step,
                               record_sampled, trainable_copy, training_run)
from ppo_lib.rlhf.pretrain import PretrainResult, require_pretrained
from ppo_lib.rlhf.reward_model import (RewardModelResult, check_trainer_arguments, require_reward_or_verifier,
                                       score)
from ppo_lib.rlhf.task import Task

BASELINES = ("group", "rloo", "mean")
AGGREGATIONS = ("grpo", "dr_grpo", "dapo")
RATIO_LEVELS = ("token", "sequence")
KL_MODES = ("loss_k3", "reward_k1", "none")
GROUP_STD_EPS = 1e-4  # TRL's GRPOTrainer: (r - mean) / (std + 1e-4)


def _check_groups(rewards: torch.Tensor, what: str) -> None:
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"rewards=<{type(rewards).__name__}>: expected a float tensor of shape (n_prompts, G), e.g. "
                        f"torch.tensor([[1.0, 0.0, 0.5]])")
    if not rewards.is_floating_point():
        raise TypeError(f"rewards: dtype {rewards.dtype}; expected a float tensor (e.g. rewards.float())")
    if rewards.dim() != 2:
        raise ValueError(f"rewards: expected shape (n_prompts, G), one row per group, got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"rewards {tuple(rewards.shape)}: {what} needs G >= 2 samples per prompt; with one sample "
                         f"there is nothing to compare it with")
    # a NaN would give its whole group NaN advantages (and the policy NaN weights): an error at once
    require_finite(rewards, "rewards", " (a reward model or verifier that returned NaN or inf?)")


def group_advantages(rewards: torch.Tensor, eps: float = GROUP_STD_EPS) -> torch.Tensor:
    r"""GRPO's group-normalised advantages, ``(n, G)`` -> ``(n, G)``:

    .. math:: A_{k,i} = \frac{r_{k,i} - \frac1G\sum_j r_{k,j}}{s_k + \varepsilon},\qquad
              s_k = \sqrt{\tfrac{1}{G-1}\textstyle\sum_j (r_{k,j} - \bar r_k)^2}

    per group ``k`` (one row: the ``G`` samples of one prompt). Shao et al. 2024 write
    :math:`\mathrm{std}(r)` without saying which; we follow TRL's GRPOTrainer: the *sample*
    std (``torch.std``, Bessel's :math:`G-1`) and :math:`\varepsilon = 10^{-4}` added to it.
    A group whose rewards are all equal has :math:`s_k = 0` and gets advantages of exactly 0
    (no learning signal), never 0/0 = NaN.
    """
    _check_groups(rewards, "group normalisation")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    adv = centred / (rewards.std(dim=1, keepdim=True) + eps)
    # eps alone does not give 0: in float32 the mean of eight 0.7s is not exactly 0.7, and
    # the ~1e-7 left after centring, divided by eps, becomes an advantage of ~1e-3
    no_spread = (rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True))
    return adv.masked_fill(no_spread, 0.0)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    r"""REINFORCE leave-one-out (Ahmadian et al. 2024; Kool et al. 2019), ``(n, G)`` -> ``(n, G)``:

    .. math:: A_{k,i} = r_{k,i} - \frac{1}{G-1}\sum_{j \ne i} r_{k,j} = \frac{G}{G-1}\,(r_{k,i} - \bar r_k).

    The baseline of a sample never contains the sample itself, so the policy gradient stays
    unbiased; there is no division by a std.
    """
    _check_groups(rewards, "the leave-one-out baseline")
    G = rewards.shape[1]
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)
    # an all-equal group must give exactly 0: in float32 eight 0.7s leave ~6e-8 after the subtraction
    no_spread = (rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True))
    return (rewards - others_mean).masked_fill(no_spread, 0.0)


def mean_advantages(rewards: torch.Tensor) -> torch.Tensor:
    r"""Dr. GRPO's advantages (Liu et al. 2025): :math:`A_{k,i} = r_{k,i} - \bar r_k`, with no
    division by the group's std (which up-weights prompts that are nearly always right or
    nearly always wrong), ``(n, G)`` -> ``(n, G)``. An all-equal group gives exactly 0."""
    _check_groups(rewards, "the group-mean baseline")
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    no_spread = (rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True))
    return adv.masked_fill(no_spread, 0.0)


def aggregation_weights(mask: torch.Tensor, aggregation: str = "grpo") -> torch.Tensor:
    r"""The weight of each token's term in the policy objective, ``(B, L)`` (0 on padding):
    the objective is :math:`\sum_{i,t} w_{i,t}\, f_{i,t}` with ``f`` the clipped surrogate of a token.

    - ``"grpo"``: :math:`w_{i,t} = \frac{1}{B\,|o_i|}` (mean per response, then over responses):
      a token of a short response weighs more than one of a long response;
    - ``"dr_grpo"``: :math:`w_{i,t} = \frac{1}{B\,L}` with ``L`` the response slots (the longest
      possible response): every token the same, a constant that does not depend on the lengths;
    - ``"dapo"``: :math:`w_{i,t} = \frac{1}{N}`, ``N`` the real tokens of the batch: every token
      the same, but the constant depends on the batch's lengths.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r}: must be one of {', '.join(map(repr, AGGREGATIONS))}")
    if mask.dim() != 2:
        raise ValueError(f"mask: expected shape (B, L), got {tuple(mask.shape)}")
    B, L = mask.shape
    lengths = mask.sum(dim=1, keepdim=True)
    if (lengths == 0).any():
        raise ValueError("mask: a response with no real token; each response has at least one")
    if aggregation == "grpo":
        return mask / (B * lengths)
    if aggregation == "dr_grpo":
        return mask / (B * L)
    return mask / mask.sum()


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float, beta: float,
              aggregation: str = "grpo", clip_eps_high: float | None = None,
              ratio_level: str = "token") -> tuple[torch.Tensor, dict]:
    r"""The negated GRPO objective :math:`-J` (module docstring; Shao et al. 2024, eq. 3).

    ``logprobs`` ``(B, L)`` (with gradient), ``old_logprobs``, ``ref_logprobs`` ``(B, L)``,
    ``advantages`` ``(B,)``, ``mask`` ``(B, L)``. ``ref_logprobs=None`` or ``beta=0``: no KL term.

    The clipped part is :func:`ppo_lib.losses.clipped_surrogate`, whose plain mean over the
    ``N`` real tokens we turn into the chosen aggregation by scaling each token's advantage by
    :math:`N w_{i,t} > 0` (:func:`aggregation_weights`; for GRPO :math:`N / (B\,|o_i|)`): a positive
    factor passes through the min and the clip, :math:`\min(\rho A w, \mathrm{clip}(\rho) A w) =
    w \min(\rho A, \mathrm{clip}(\rho) A)`, so the two are equal (a test checks it against the formula).
    The KL term is aggregated the same way.

    GRPO's :math:`1/|o_i|` weighs each token of a short response more than each token of a long
    one, so a long wrong answer is penalised less per token (Liu et al. 2025, "Dr. GRPO", who
    drop it and the std; TRL's ``loss_type`` offers both).
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape (B, L)")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)}: expected one advantage per response, "
                         f"shape ({logprobs.shape[0]},)")
    beta = real("beta", beta, 0.0)
    clip_eps = real("clip_eps", clip_eps, 0.0, low_open=True)
    if clip_eps_high is not None:
        clip_eps_high = real("clip_eps_high", clip_eps_high, 0.0, low_open=True)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r}: must be one of {', '.join(map(repr, AGGREGATIONS))}")
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level={ratio_level!r}: must be one of {', '.join(map(repr, RATIO_LEVELS))}")
    if ratio_level == "sequence" and aggregation != "grpo":
        raise ValueError(f"ratio_level='sequence' with aggregation={aggregation!r}: GSPO's sequence ratio is "
                         f"averaged per response; use aggregation='grpo'")
    m = mask.bool()
    lengths = mask.sum(dim=1, keepdim=True)
    if (lengths == 0).any():
        raise ValueError("mask: a response with no real token; each response has at least one")
    B, N = logprobs.shape[0], m.sum()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = log_ratio.exp()
    if ratio_level == "sequence":
        # GSPO: one ratio per response, the geometric mean of its tokens' ratios
        seq_ratio = ((log_ratio * mask).sum(dim=1) / lengths.squeeze(1)).exp()
        objective = clipped_surrogate(seq_ratio, advantages.detach(), clip_eps, clip_eps_high)
    else:
        if aggregation == "grpo":
            per_token_weight = (N / (B * lengths)).expand_as(mask)        # (B, L): 1/|o_i|, rescaled
        else:
            per_token_weight = N * aggregation_weights(mask, aggregation)
        token_adv = advantages.detach()[:, None].expand_as(mask)          # the same A_i on every token of o_i
        objective = clipped_surrogate(ratio[m], (token_adv * per_token_weight)[m], clip_eps, clip_eps_high)
    info = {}
    if ref_logprobs is not None and beta > 0:
        # k3 with the *current* policy's log-probs (gradient through log pi_theta only); the
        # reference is a constant.
        k3 = kl_per_token(logprobs, ref_logprobs.detach(), "k3")
        if aggregation == "grpo":
            kl_term = ((k3 * mask).sum(dim=1) / lengths.squeeze(1)).mean()
        else:
            kl_term = (k3 * aggregation_weights(mask, aggregation)).sum()
        objective = objective - beta * kl_term
        info["k3"] = float(kl_term.detach())
    with torch.no_grad():
        high = clip_eps if clip_eps_high is None else clip_eps_high
        r = seq_ratio if ratio_level == "sequence" else ratio[m]
        info["clip_fraction"] = float(((r < 1 - clip_eps) | (r > 1 + high)).float().mean()) \
            if clip_eps_high is not None or ratio_level == "sequence" \
            else float(((ratio[m] - 1).abs() > clip_eps).float().mean())
        # k3 of KL(old || new) in ppo_lib.losses.approx_kl's convention: (r - 1) - log r, r = p_new / p_old
        info["approx_kl"] = approx_kl(old_logprobs.detach()[m], logprobs.detach()[m])[1]
    return -objective, info


def check_group_schedule(config) -> None:
    """The settings GRPO and RLOO share (groups, clipping, schedule, sampling), each checked with a
    message that names it and what is allowed."""
    check_range(config, "group_size", 2, integer=True)
    check_range(config, "prompts_per_iteration", 1, integer=True)
    check_range(config, "beta", 0.0)
    check_range(config, "clip_eps", 0.0, 1.0, low_open=True, high_open=True)
    check_range(config, "epochs", 1, integer=True)
    check_range(config, "num_minibatches", 1, integer=True)
    if config.num_minibatches > config.group_size * config.prompts_per_iteration:
        raise ValueError(f"num_minibatches={config.num_minibatches}: more than the {config.batch_size} responses of "
                         f"an iteration (group_size x prompts_per_iteration)")
    check_range(config, "lr", 0.0, 1.0, low_open=True)
    check_range(config, "iterations", 1, integer=True)
    check_temperature(config.temperature)
    check_range(config, "missing_eos_score", -100.0, 100.0)
    check_range(config, "max_grad_norm", 0.0, low_open=True)
    check_range(config, "seed", 0, integer=True)


@validated
@dataclasses.dataclass
class GRPOConfig:
    """GRPO / RLOO on tokens. Each default names its source."""

    RENAMED = {"minibatches": "num_minibatches"}

    group_size: int = 8               # G: TRL's num_generations 8 (the paper: 64)
    prompts_per_iteration: int = 8    # 64 responses an iteration, as chapter 8's PPO
    beta: float = 0.04                # Shao et al. 2024 (TRL's default is 0 today)
    kl: str = "loss_k3"               # GRPO: k3 in the loss; "reward_k1": PPO's k1 in the reward; "none"
    baseline: str = "group"           # "group": GRPO's (r - mean) / std; "rloo": leave-one-out (a hybrid: see rloo.py)
    clip_eps: float = 0.2             # Shao et al. 2024; TRL epsilon 0.2
    epochs: int = 2                   # passes over each batch (TRL num_iterations, the paper's mu)
    num_minibatches: int = 2
    lr: float = 5e-4                  # for this 100k-parameter model, as chapter 8's PPO
    iterations: int = 60
    temperature: float = 1.0          # the same in rollouts and in training forwards (Huang et al. 2024)
    missing_eos_score: float = -1.0   # as chapter 8 (Huang et al. 2024: -1)
    max_grad_norm: float = 1.0        # TRL's default
    seed: int = 0
    # GRPO's 2025 successors (module doc); the defaults are GRPO's
    loss_aggregation: str = "grpo"    # "dr_grpo": Liu et al. 2025; "dapo": Yu et al. 2025 (TRL's default today)
    clip_eps_high: float | None = None  # DAPO's clip-higher (their 0.28); None: symmetric clip_eps
    dynamic_sampling: bool = False    # DAPO: drop groups with equal rewards, sample more until the batch is full
    max_sampling_rounds: int = 4      # the cap on dynamic sampling's rounds per iteration
    ratio_level: str = "token"        # "sequence": GSPO (Zheng et al. 2025)
    kv_cache: bool = False            # sample with cached keys/values (faster; rounding differs, so off for ch. 8-9)

    def __post_init__(self):
        if isinstance(self.group_size, numbers.Integral) and not isinstance(self.group_size, bool) \
                and self.group_size == 1:
            raise ValueError("group_size=1: must be in [2, inf): GRPO compares each response with the others of "
                             "its group, and a group of one has no others (its advantage would always be 0)")
        check_group_schedule(self)
        check_choice(self, "kl", KL_MODES)
        check_choice(self, "baseline", BASELINES)
        check_choice(self, "loss_aggregation", AGGREGATIONS)
        check_choice(self, "ratio_level", RATIO_LEVELS)
        if self.clip_eps_high is not None:
            check_range(self, "clip_eps_high", 0.0, 10.0, low_open=True)
            if self.clip_eps_high < self.clip_eps:
                raise ValueError(f"clip_eps_high={self.clip_eps_high}: must be >= clip_eps={self.clip_eps} (the "
                                 f"lower epsilon); clip-higher only widens the upper bound (DAPO: 0.2 and 0.28), "
                                 f"or None for the symmetric clip")
        if self.ratio_level == "sequence" and self.loss_aggregation != "grpo":
            raise ValueError(f"ratio_level='sequence' with loss_aggregation={self.loss_aggregation!r}: GSPO's "
                             f"sequence ratio is averaged per response; use loss_aggregation='grpo'")
        for flag in ("dynamic_sampling", "kv_cache"):
            check_flag(self, flag)
        check_range(self, "max_sampling_rounds", 1, 100, integer=True)
        if not self.dynamic_sampling:
            warn_ignored(self, ("max_sampling_rounds",), "with dynamic_sampling=False: only DAPO's dynamic "
                         "sampling samples more than one round (set dynamic_sampling=True to use it)")
        if self.kl == "none" and self.beta > 0:
            warn_ignored(self, ("beta",), "with kl='none': no KL term is computed, in the loss or in the reward "
                         "(kl='loss_k3' or 'reward_k1' uses beta)")
        plain_numbers(self)

    @property
    def batch_size(self) -> int:
        return self.group_size * self.prompts_per_iteration


@dataclasses.dataclass
class GRPOHistory(SampledHistory):
    """One entry per iteration (see :class:`SampledHistory`), plus GRPO's own diagnostics."""

    zero_std_groups: list[float] = dataclasses.field(default_factory=list)  # groups with equal rewards: no signal
    # the loss's KL term: k3 of KL(pi_theta || pi_ref) per token, (r - 1) - log r with r = pi_ref / pi_theta on
    # tokens sampled from pi_theta (ppo_lib.rlhf.kl's k3; the same convention as approx_kl: r = other / sampler)
    k3: list[float] = dataclasses.field(default_factory=list)
    responses_sampled: list[int] = dataclasses.field(default_factory=list)  # > batch with dynamic sampling
    task_stats: list[dict] = dataclasses.field(default_factory=list)        # the task's own shares (e.g. worked)


@dataclasses.dataclass
class GRPOResult(FineTuneResult):
    """See :class:`~ppo_lib.rlhf.loop.FineTuneResult`; ``history`` is a :class:`GRPOHistory`, ``config``
    a :class:`GRPOConfig`."""


@dataclasses.dataclass
class GroupRollout:
    tokens: torch.Tensor        # (B, P + L), B = n G, the G samples of a prompt adjacent
    mask: torch.Tensor          # (B, L)
    logprobs: torch.Tensor      # (B, L) policy at rollout time (pi_old)
    ref_logprobs: torch.Tensor  # (B, L)
    scores: torch.Tensor        # (B,) reward-model score (missing_eos_score without <eos>) or verifier
    rewards: torch.Tensor       # (n, G) sequence rewards the advantages are built from
    advantages: torch.Tensor    # (B,)
    gold: torch.Tensor          # (B,)
    kl: torch.Tensor            # (B,) sequence k1
    zero_std_share: float = float("nan")  # of all groups sampled (every round)
    n_sampled: int = 0          # responses generated (more than B with dynamic sampling)


def _reward_of(reward_model, task: Task, config: GRPOConfig):
    """The sequence reward of a generation: the reward model's score at ``<eos>`` (a fixed
    ``missing_eos_score`` without one), or the task's verifier."""
    if reward_model is None:
        def verified(gen):
            return task.verify(gen.prompts.cpu(), gen.responses.cpu()).to(gen.tokens.device)
        verified.is_verifier = True
        return verified

    def scored(gen):
        # a response without <eos> gets a fixed score: the reward model reads the last slot of an
        # unfinished text, which it never saw in training (TRL's missing_eos_penalty; TRL issue 2387)
        return torch.where(gen.has_eos, score(reward_model, gen.tokens, gen.prompt_len, task.eos_id),
                           torch.full((len(gen.tokens),), config.missing_eos_score, device=gen.tokens.device))
    scored.is_verifier = False
    return scored


@torch.no_grad()
def _sample_round(policy, ref, reward_of, config: GRPOConfig, generator, rng, task: Task):
    n, G = config.prompts_per_iteration, config.group_size
    # the G samples of a group share one prompt: repeat each prompt G times, side by side
    prompts = task.sample_prompts(rng, n).repeat_interleave(G, dim=0)
    gen = generate(policy, prompts, temperature=config.temperature, generator=generator, task=task,
                   kv_cache=config.kv_cache)
    P, mask = gen.prompt_len, gen.mask
    logprobs = response_logprobs(policy, gen.tokens, P, config.temperature) * mask
    ref_logprobs = response_logprobs(ref, gen.tokens, P, config.temperature) * mask
    scores = reward_of(gen)
    kl = (logprobs - ref_logprobs).sum(1)  # k1 summed over the real tokens (padding is 0 in both)
    rewards = scores - config.beta * kl if config.kl == "reward_k1" else scores
    # the truth logged beside the reward: the verifier itself needs no second run
    gold = scores.cpu() if reward_of.is_verifier and task.gold is None else \
        task.gold_scores(gen.prompts.cpu(), gen.responses.cpu())
    return {"tokens": gen.tokens, "mask": mask, "logprobs": logprobs, "ref_logprobs": ref_logprobs,
            "scores": scores, "rewards": rewards.view(n, G), "gold": gold, "kl": kl}


def no_spread(rewards: torch.Tensor) -> torch.Tensor:
    """``(n, G)`` -> ``(n,)``: the groups whose rewards are all equal (no learning signal)."""
    return rewards.amax(dim=1) == rewards.amin(dim=1)  # std() of equal floats can be 1e-8


def select_groups(spread: torch.Tensor, n: int) -> torch.Tensor:
    """Dynamic sampling's choice among all groups sampled, ``spread`` ``(n_total,)`` bool: the
    first ``n`` groups with a spread of rewards in sampling order, then, if there are fewer, the
    first groups without one (their advantages are 0) to fill the batch."""
    order = torch.cat([torch.nonzero(spread).squeeze(1), torch.nonzero(~spread).squeeze(1)])
    return order[:n]


@torch.no_grad()
def collect_groups(policy: GPT, ref: GPT, reward_model, config: GRPOConfig, generator: torch.Generator,
                   rng: np.random.Generator, task: Task = lang.TASK) -> GroupRollout:
    """Sample ``G`` responses to each of ``prompts_per_iteration`` prompts and compute their advantages.

    ``reward_model`` None: the task's verifier is the reward. With ``dynamic_sampling``, rounds of
    ``prompts_per_iteration`` prompts are sampled until that many groups have a spread of
    rewards, or ``max_sampling_rounds`` rounds were sampled (:func:`select_groups`)."""
    n, G = config.prompts_per_iteration, config.group_size
    reward_of = _reward_of(reward_model, task, config)
    rounds = [_sample_round(policy, ref, reward_of, config, generator, rng, task)]
    if config.dynamic_sampling:
        n_spread = lambda: sum(int((~no_spread(r["rewards"])).sum()) for r in rounds)  # noqa: E731
        while n_spread() < n and len(rounds) < config.max_sampling_rounds:
            rounds.append(_sample_round(policy, ref, reward_of, config, generator, rng, task))
    all_rewards = torch.cat([r["rewards"] for r in rounds])
    zero_share = float(no_spread(all_rewards).float().mean())
    if len(rounds) == 1:
        parts, rewards = rounds[0], rounds[0]["rewards"]
    else:
        groups = select_groups(~no_spread(all_rewards), n)
        rows = (groups[:, None] * G + torch.arange(G)[None]).reshape(-1)
        parts = {k: torch.cat([r[k] for r in rounds])[rows.to(rounds[0][k].device)]
                 for k in ("tokens", "mask", "logprobs", "ref_logprobs", "scores", "gold", "kl")}
        rewards = all_rewards[groups]
    if config.baseline == "group":
        adv = group_advantages(rewards)
    elif config.baseline == "rloo":
        adv = rloo_advantages(rewards)
    else:
        adv = mean_advantages(rewards)
    return GroupRollout(parts["tokens"], parts["mask"], parts["logprobs"], parts["ref_logprobs"], parts["scores"],
                        rewards, adv.reshape(-1), parts["gold"], parts["kl"], zero_share, len(rounds) * n * G)


def train_grpo(sft: PretrainResult, reward: RewardModelResult | None = None, config: GRPOConfig | None = None,
               progress: bool = True, callback: Callable[[GRPOHistory], bool | None] | None = None,
               n_samples_logged: int = 4) -> GRPOResult:
    """Fine-tune a copy of the SFT model with GRPO (or RLOO) against ``reward``'s model, or, when
    ``reward`` is None, against the verifier of the task the SFT model was trained on (``sft.task``).

    Ctrl+C (or a callback returning True) stops early and returns what was done;
    any other error re-raises with the partial result attached as ``error.partial_result``.
    """
    config = check_config(config, GRPOConfig, "train_grpo")
    require_pretrained(sft)
    task = sft.task
    require_reward_or_verifier(reward, task)
    check_trainer_arguments(config, reward, progress, n_samples_logged)
    dev = next(sft.model.parameters()).device
    torch.manual_seed(config.seed)
    policy = trainable_copy(sft.model)
    ref = frozen_copy(sft.model)
    reward_model = None if reward is None else frozen_copy(reward.model)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    generator = torch.Generator(dev).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loss_beta = config.beta if config.kl == "loss_k3" else 0.0
    history = GRPOHistory()
    result = GRPOResult(policy, history, config)
    name = "RLOO" if config.baseline == "rloo" else "GRPO"
    callback = check_callback(callback)
    P = task.prompt_len
    with training_run(result, config.iterations, f"{name} beta={config.beta:g}", progress, (policy,)) as bar:
        for it in range(config.iterations):
            t0 = time.perf_counter()
            ro = collect_groups(policy, ref, reward_model, config, generator, rng, task)
            t1 = time.perf_counter()
            result.tokens_generated += int(ro.mask.sum())

            def step(idx):
                new_logprobs = response_logprobs(policy, ro.tokens[idx], P, config.temperature)
                loss, info = grpo_loss(new_logprobs, ro.logprobs[idx], ro.ref_logprobs[idx], ro.advantages[idx],
                                       ro.mask[idx], config.clip_eps, loss_beta, config.loss_aggregation,
                                       config.clip_eps_high, config.ratio_level)
                optimizer_step(opt, loss, policy.parameters(), config.max_grad_norm)
                return info

            infos = minibatch_epochs(config, rng, dev, step)
            t2 = time.perf_counter()
            mean_kl, responses = record_sampled(history, ro, task, infos, float(ro.scores.mean()), n_samples_logged)
            history.zero_std_groups.append(ro.zero_std_share)
            history.k3.append(float(np.mean([i.get("k3", 0.0) for i in infos])))
            history.rollout_seconds.append(t1 - t0)
            history.update_seconds.append(t2 - t1)
            history.responses_sampled.append(ro.n_sampled)
            history.task_stats.append(task.stats(responses) if task.stats is not None else {})
            history.seconds.append(time.perf_counter() - t0)
            if end_of_iteration(bar, callback, it, history, mean_kl):
                break
    return result
