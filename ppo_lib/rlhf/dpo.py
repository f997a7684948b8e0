r"""Direct Preference Optimization (Rafailov et al. 2023): RLHF without a reward model or sampling.

DPO trains the policy on the preference pairs themselves. For a prompt :math:`x`, a chosen
response :math:`y_w` and a rejected one :math:`y_l`, the implicit reward of a response is
:math:`\hat r(x, y) = \beta\,[\log\pi_\theta(y|x) - \log\pi_{ref}(y|x)]`, and the loss is the
Bradley-Terry loss of chapter 8 written with that reward (Rafailov et al. 2023, eq. 7):

.. math:: \mathcal L_{DPO} = -\frac1B \sum_{b=1}^{B} \log\sigma\Big(
          \beta\big[\log\pi_\theta(y^w_b|x_b) - \log\pi_{ref}(y^w_b|x_b)\big]
          - \beta\big[\log\pi_\theta(y^l_b|x_b) - \log\pi_{ref}(y^l_b|x_b)\big]\Big).

Shapes: ``B`` pairs per batch; each :math:`\log\pi(y|x)` is a *sequence* log-probability
``(B,)``, the sum over the response tokens (``<eos>`` included, padding excluded) of the
per-token log-probs ``(B, L)``. The reference log-probs are constants (the frozen SFT model),
computed once for every pair before training.

Its gradient, with :math:`u_b` the argument of the sigmoid,

.. math:: \nabla_\theta \mathcal L_{DPO} = -\frac{\beta}{B}\sum_b \sigma(-u_b)\,
          \big[\nabla\log\pi_\theta(y^w_b|x_b) - \nabla\log\pi_\theta(y^l_b|x_b)\big],

raises the chosen log-ratio *relative to* the rejected one, weighted by how wrongly the
implicit reward orders the pair. Nothing in it holds :math:`\log\pi_\theta(y^w)` up on its
own: in practice both fall, the rejected one faster (TRL issue 800; the DPO authors'
repository, issues 8 and 32), and the mass freed goes to responses in neither set. Off the
data, the policy can drift to ungrammatical text that no pair ever penalised.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ppo_lib.config import caller_stack_level, check_config, check_range, validated
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import flag, plain_numbers, require_finite
from ppo_lib.rlhf.model import GPT, check_token_ids, frozen_copy, response_logprobs, response_mask
from ppo_lib.runs import check_callback
from ppo_lib.rlhf.loop import FineTuneResult, StepHistory, end_of_step, trainable_copy, training_run
from ppo_lib.rlhf.pretrain import PretrainResult, require_pretrained
from ppo_lib.rlhf.reward_model import Pairs, RewardModelResult


def _check_beta(beta: float) -> float:
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real):
        raise ValueError(f"beta={beta!r}: must be a number in (0, inf), not a {type(beta).__name__} (TRL's default "
                         f"is 0.1)")
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta={beta!r}: must be in (0, inf); DPO divides the implicit reward by beta "
                         f"(TRL's default is 0.1; smaller lets the policy move further from the reference)")
    return float(beta)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``b`` is ``a`` or a view of its memory (``a.detach()``, ``a[:]``)."""
    return a is b or (a.numel() > 0 and a.data_ptr() == b.data_ptr() and a.shape == b.shape
                      and a.device == b.device)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    r"""The DPO loss (Rafailov et al. 2023, eq. 7), a mean over the ``B`` pairs.

    .. math:: \mathcal L = -\frac1B\sum_b \log\sigma\big(\beta\,[(\pi^w_b - \pi^{ref,w}_b)
              - (\pi^l_b - \pi^{ref,l}_b)]\big)

    Every argument is a sequence log-probability of shape ``(B,)`` (summed over the response
    tokens: :func:`sequence_logprobs`). The reference log-probs are detached: they are
    constants, and a gradient into a shared reference would move it (and the ``beta`` anchor).
    """
    beta = _check_beta(beta)
    shape = policy_chosen_logps.shape
    for name, x in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        if x.shape != shape:
            raise ValueError(f"policy_chosen_logps {tuple(shape)} and {name} {tuple(x.shape)} differ in shape; "
                             f"each is one summed log-prob per pair, shape (B,)")
    if policy_chosen_logps.dim() != 1:
        raise ValueError(f"log-probs of shape {tuple(shape)}: expected one sequence log-prob per pair, shape (B,); "
                         f"sum the per-token log-probs over the response first (sequence_logprobs)")
    if shape[0] == 0:
        raise ValueError("policy_chosen_logps: 0 pairs (shape (0,)); the mean over no pairs is NaN: give at "
                         "least one pair")
    for side, policy_logps, ref_logps in (("chosen", policy_chosen_logps, ref_chosen_logps),
                                          ("rejected", policy_rejected_logps, ref_rejected_logps)):
        if _same_tensor(policy_logps, ref_logps):
            raise ValueError(f"ref_{side}_logps is policy_{side}_logps (the same tensor, or a detached view of it): "
                             f"the reference must be the frozen SFT model's log-probs, computed apart (TRL refuses a "
                             f"reference that is the model itself); with the policy's own the loss is log 2 whatever "
                             f"the policy does")
    chosen_log_ratio = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_log_ratio = policy_rejected_logps - ref_rejected_logps.detach()
    # logsigmoid, not log(sigmoid(.)): sigmoid underflows to 0 for a margin below about -100 and
    # its log is then -inf (a NaN gradient); logsigmoid is exact there.
    return -F.logsigmoid(beta * (chosen_log_ratio - rejected_log_ratio)).mean()


def sequence_logprobs(model: GPT, tokens: torch.Tensor, prompt_len: int = lang.PROMPT_LEN,
                      temperature: float = 1.0, eos_id: int = lang.EOS_ID) -> torch.Tensor:
    r""":math:`\log\pi(y|x) = \sum_t m_t \log\pi(y_t|x, y_{<t})`: ``tokens`` ``(B, T)`` -> ``(B,)``.

    The mask ``m`` ``(B, L)`` keeps the response tokens up to and including the first ``<eos>``
    and drops the padding after it. ``<pad>`` is its own token here; where pad and eos share an
    id, masking "every pad" also drops the real ``<eos>`` and the model never learns to stop
    (TRL PR 5303).
    """
    logps = response_logprobs(model, tokens, prompt_len, temperature)
    return (logps * response_mask(tokens[:, prompt_len:], eos_id)).sum(dim=1)


@validated
@dataclasses.dataclass
class DPOConfig:
    """DPO's settings. Each default names its source."""

    beta: float = 0.1          # TRL's DPOConfig default (Rafailov et al. used 0.1 to 0.5)
    steps: int = 150           # gradient steps: about 10 epochs of the 1000 default pairs
    batch_size: int = 64       # pairs per step
    lr: float = 1e-4           # for this 100k-parameter model (TRL's 1e-6 is for billions); 3e-4 leaves the grammar
    max_grad_norm: float = 1.0  # TRL's default
    seed: int = 0

    def __post_init__(self):
        check_range(self, "beta", 0.0, low_open=True)
        check_range(self, "steps", 1, integer=True)
        check_range(self, "batch_size", 1, integer=True)
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "max_grad_norm", 0.0, low_open=True)
        check_range(self, "seed", 0, integer=True)
        plain_numbers(self)


@dataclasses.dataclass
class DPOHistory(StepHistory):
    """One entry per gradient step, measured on that step's batch of pairs (before the step)."""

    loss: list[float] = dataclasses.field(default_factory=list)
    accuracy: list[float] = dataclasses.field(default_factory=list)        # implicit reward: chosen > rejected
    chosen_logp: list[float] = dataclasses.field(default_factory=list)     # mean log pi(y_w|x) under the policy
    rejected_logp: list[float] = dataclasses.field(default_factory=list)   # mean log pi(y_l|x) under the policy
    chosen_reward: list[float] = dataclasses.field(default_factory=list)   # mean beta * (log pi - log pi_ref)(y_w)
    rejected_reward: list[float] = dataclasses.field(default_factory=list)
    margin: list[float] = dataclasses.field(default_factory=list)          # mean implicit reward margin


@dataclasses.dataclass
class DPOResult(FineTuneResult):
    """See :class:`~ppo_lib.rlhf.loop.FineTuneResult`; ``history`` is a :class:`DPOHistory`, ``config``
    a :class:`DPOConfig`."""


@torch.no_grad()
def pair_logprobs(model: GPT, pairs: Pairs, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of every chosen and every rejected response, ``(N,)`` each."""
    dev = next(model.parameters()).device
    out = []
    for tokens in (pairs.chosen, pairs.rejected):
        out.append(torch.cat([sequence_logprobs(model, tokens[i:i + batch_size].to(dev), pairs.task.prompt_len,
                                                eos_id=pairs.task.eos_id)
                              for i in range(0, len(tokens), batch_size)]))
    return out[0], out[1]


#: train_dpo warns when more than this share of the pairs have the same chosen and rejected tokens
#: (sampled pairs of a tiny language tie now and then: 1 of chapter 9's 1000 does)
IDENTICAL_PAIRS_WARN = 0.05


def _check_pairs(pairs) -> None:
    if isinstance(pairs, RewardModelResult):
        raise TypeError("pairs: got a RewardModelResult; DPO trains on the preference pairs themselves, "
                        "pass reward.pairs")
    if not isinstance(pairs, Pairs):
        raise TypeError(f"pairs: expected the Pairs of chapter 8 (reward.pairs, or sample_pairs()), "
                        f"got {type(pairs).__name__}")
    if pairs.chosen.dim() != 2 or pairs.chosen.shape != pairs.rejected.shape:
        raise ValueError(f"pairs: chosen {tuple(pairs.chosen.shape)} and rejected {tuple(pairs.rejected.shape)} "
                         f"must both be token sequences of shape (N, T)")
    if len(pairs) < 2:
        raise ValueError(f"pairs: got {len(pairs)} preference pair(s); DPO needs at least 2")
    same = (pairs.chosen == pairs.rejected).all(dim=1)
    n_same = int(same.sum())
    if n_same == len(pairs):
        raise ValueError(f"pairs: in all {len(pairs)} pairs the chosen response is the rejected one (the same "
                         f"tokens); DPO learns from the difference between the two, so these train nothing: "
                         f"give pairs of different responses")
    if n_same > IDENTICAL_PAIRS_WARN * len(pairs):
        warnings.warn(f"pairs: in {n_same} of {len(pairs)} pairs the chosen response is the rejected one (the same "
                      f"tokens): those pairs have a gradient of exactly 0 and train nothing, they only dilute the "
                      f"batches", UserWarning, stacklevel=caller_stack_level())


def train_dpo(sft: PretrainResult, pairs: Pairs, config: DPOConfig | None = None, progress: bool = True,
              callback: Callable[[DPOHistory], bool | None] | None = None) -> DPOResult:
    """Fine-tune a copy of the SFT model with DPO on ``pairs`` (no reward model, no sampling).

    Each step draws a fresh random batch of ``batch_size`` distinct pairs (with repeats only
    when there are fewer pairs than that). Ctrl+C (or a callback returning True) stops early
    and returns what was done; any other error re-raises with the partial result attached
    as ``error.partial_result``.
    """
    config = check_config(config, DPOConfig, "train_dpo")
    require_pretrained(sft)
    progress = flag("progress", progress)
    _check_pairs(pairs)
    for name in ("chosen", "rejected"):  # once here: the training loop trusts them (model.token_ids_checked)
        check_token_ids(getattr(pairs, name), sft.model.cfg.vocab_size, f"pairs.{name}")
    dev = next(sft.model.parameters()).device
    torch.manual_seed(config.seed)
    policy = trainable_copy(sft.model)
    ref = frozen_copy(sft.model)
    chosen, rejected = pairs.chosen.to(dev), pairs.rejected.to(dev)
    # The reference is frozen: its log-probs are computed once, not at every step (TRL's
    # precompute_ref_log_probs), and then it is dropped: only the policy stays in memory.
    ref_chosen, ref_rejected = pair_logprobs(ref, Pairs(chosen, rejected, pairs.gold_chosen, pairs.gold_rejected,
                                                        pairs.task))
    del ref
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    rng = np.random.default_rng(config.seed)
    n = len(pairs)
    history = DPOHistory()
    result = DPOResult(policy, history, config)
    callback = check_callback(callback)
    with training_run(result, config.steps, f"DPO beta={config.beta:g}", progress, (policy,)) as bar:
        for step in range(config.steps):
            t0 = time.perf_counter()
            idx = torch.from_numpy(rng.choice(n, size=config.batch_size, replace=config.batch_size > n)).to(dev)
            pc = sequence_logprobs(policy, chosen[idx], pairs.task.prompt_len, eos_id=pairs.task.eos_id)
            pr = sequence_logprobs(policy, rejected[idx], pairs.task.prompt_len, eos_id=pairs.task.eos_id)
            loss = dpo_loss(pc, pr, ref_chosen[idx], ref_rejected[idx], config.beta)
            # checked before the step: a NaN never reaches the kept policy (the error carries the run so far)
            require_finite(loss.detach(), f"step {step}: the DPO loss",
                           f"; the policy of the last finished step is kept (try a smaller lr than {config.lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            opt.step()
            with torch.no_grad():
                r_w = config.beta * (pc - ref_chosen[idx])
                r_l = config.beta * (pr - ref_rejected[idx])
                history.loss.append(float(loss))
                history.accuracy.append(float((r_w > r_l).float().mean()))
                history.chosen_logp.append(float(pc.mean()))
                history.rejected_logp.append(float(pr.mean()))
                history.chosen_reward.append(float(r_w.mean()))
                history.rejected_reward.append(float(r_l.mean()))
                history.margin.append(float((r_w - r_l).mean()))
            history.seconds.append(time.perf_counter() - t0)
            if not math.isfinite(history.loss[-1]):
                raise FloatingPointError(f"step {step}: the DPO loss is not finite ({history.loss[-1]}); "
                                         f"try a smaller lr")
            if end_of_step(bar, callback, step, history, loss=f"{history.loss[-1]:.3f}",
                           acc=f"{history.accuracy[-1]:.2f}", chosen=f"{history.chosen_logp[-1]:.2f}"):
                break
    return result
