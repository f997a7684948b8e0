r"""PPO on a language model (RLHF): the policy is the LM, an episode is one response.

One iteration, in execution order (the shapes: ``B`` responses, ``L`` response slots):

1. **Roll out**: sample ``B`` responses with a temperature only; log-probs ``(B, L)`` of
   the policy (``old``) and of the frozen reference, values ``(B, L)`` of the value
   model, the reward model's score ``(B,)`` at ``<eos>`` (a fixed ``missing_eos_score``
   when a response never finished).
2. **Rewards**: ``-beta * kl_t`` on every token plus the score on the last token
   (:func:`ppo_lib.rlhf.token_advantages.per_token_rewards`).
3. **Advantages**: GAE over tokens (``gamma`` 1, ``lambda`` 0.95), whitened over the mask.
4. **Update**: ``epochs`` passes of ``num_minibatches`` minibatches. The loss is chapter 5's:
   :func:`ppo_lib.losses.clipped_surrogate` and :func:`ppo_lib.losses.clipped_value_loss`
   on the real (masked) tokens, plus optionally InstructGPT's PPO-ptx term
   ``ptx_coef * NLL`` on fresh pre-training strings.

Steps 1-4 are :func:`ppo_iteration` (chapter 8's exercise 8.6 is checked against it);
:func:`train_ppo` builds the models and calls it once per iteration.

Four models are in memory: policy, reference, reward model, value model (the value
model starts as a copy of the reward model: Ouyang et al. 2022; Huang et al. 2024). With a
task's verifier instead (``train_ppo(sft, None, config)``, chapter 10's baseline with a critic),
the score is the verifier's number and the value model starts from the SFT trunk with a zero head.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from ppo_lib.config import check_choice, check_config, check_flag, check_range, validated, warn_ignored
from ppo_lib.losses import approx_kl, clipped_surrogate, clipped_value_loss
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import plain_numbers
from ppo_lib.rlhf.kl import ESTIMATORS, adaptive_kl_update, kl_per_token
from ppo_lib.rlhf.model import GPT, ScalarModel, check_temperature, frozen_copy, generate, response_logprobs
from ppo_lib.runs import check_callback
from ppo_lib.rlhf.loop import (FineTuneResult, SampledHistory, end_of_iteration, minibatch_epochs, optimizer_step,
                               record_sampled, trainable_copy, training_run)
from ppo_lib.rlhf.pretrain import PretrainResult, lm_loss, require_pretrained
from ppo_lib.rlhf.reward_model import (RewardEnsemble, RewardModelResult, check_trainer_arguments,
                                       require_reward_or_verifier, score)
from ppo_lib.rlhf.task import Task
from ppo_lib.rlhf.token_advantages import masked_mean, masked_whiten, per_token_rewards, token_gae


@validated
@dataclasses.dataclass
class TokenPPOConfig:
    """PPO on tokens. Each default names its source. The names are the RL core's
    (:class:`ppo_lib.algos.ppo.PPOConfig`) where the idea is the same: ``value_coef``,
    ``gae_lambda``; ``num_minibatches`` is a count (the core's ``minibatch_size`` a size), and
    ``value_clip_range`` the value clip's own range (the core's ``clip_value`` switch reuses
    ``clip_eps``)."""

    RENAMED = {"vf_coef": "value_coef", "lam": "gae_lambda", "value_clip": "value_clip_range",
               "minibatches": "num_minibatches"}

    beta: float = 0.05              # KL coefficient: TRL's kl_coef 0.05 (InstructGPT used 0.02)
    kl_estimator: str = "k1"        # k1 in the reward: InstructGPT eq. 2, TRL's default
    adaptive_kl: bool = False       # the n/H controller of lm-human-preferences, TRL (old TRL: target 6, horizon 10000)
    kl_target: float = 6.0
    kl_horizon: int = 10_000
    ptx_coef: float = 0.0           # InstructGPT's PPO-ptx (their gamma 27.8 is for their scale, not ours)
    iterations: int = 80
    batch_size: int = 64            # responses per iteration
    epochs: int = 4                 # TRL: 4 PPO epochs
    num_minibatches: int = 2
    lr: float = 1e-3                # tuned here for this 100k-parameter model (big models use ~1e-6)
    clip_eps: float = 0.2           # PPO paper; TRL cliprange 0.2
    value_clip_range: float = 0.2   # TRL cliprange_value 0.2 (in units of the reward model's score)
    value_coef: float = 0.1         # TRL vf_coef 0.1
    gamma: float = 1.0              # TRL, Zheng et al. 2023: no discount within a response
    gae_lambda: float = 0.95        # TRL, Zheng et al. 2023
    temperature: float = 1.0        # the same in rollouts and in training forwards (Huang et al. 2024)
    missing_eos_score: float = -1.0  # the score of a response with no <eos> (Huang et al. 2024: -1)
    max_grad_norm: float = 1.0      # TRL's default
    whiten_advantages: bool = True  # over the mask (TRL)
    seed: int = 0

    def __post_init__(self):
        check_range(self, "beta", 0.0)
        check_choice(self, "kl_estimator", ESTIMATORS)
        for flag in ("adaptive_kl", "whiten_advantages"):
            check_flag(self, flag)
        check_range(self, "kl_target", 0.0, low_open=True)
        check_range(self, "kl_horizon", 1, integer=True)
        check_range(self, "ptx_coef", 0.0)
        check_range(self, "iterations", 1, integer=True)
        check_range(self, "batch_size", 2, integer=True)
        check_range(self, "epochs", 1, integer=True)
        check_range(self, "num_minibatches", 1, integer=True)
        if self.num_minibatches > self.batch_size:
            raise ValueError(f"num_minibatches={self.num_minibatches}: more than batch_size={self.batch_size} responses")
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "clip_eps", 0.0, 1.0, low_open=True, high_open=True)
        check_range(self, "value_clip_range", 0.0, low_open=True)
        check_range(self, "value_coef", 0.0)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "gae_lambda", 0.0, 1.0)
        check_temperature(self.temperature)
        check_range(self, "missing_eos_score", -100.0, 100.0)
        check_range(self, "max_grad_norm", 0.0, low_open=True)
        check_range(self, "seed", 0, integer=True)
        if self.adaptive_kl and self.beta == 0:
            raise ValueError("beta=0 with adaptive_kl=True: the controller multiplies beta, so it would stay 0; "
                             "start from a positive beta")
        if not self.adaptive_kl:
            warn_ignored(self, ("kl_target", "kl_horizon"), "with adaptive_kl=False: only Ziegler et al.'s "
                         "controller reads them (set adaptive_kl=True to use them)")
            if self.beta == 0:
                warn_ignored(self, ("kl_estimator",), "with beta=0 and adaptive_kl=False: the KL penalty is "
                             "0 times the estimate, so no estimator is used")
        plain_numbers(self)


@dataclasses.dataclass
class TokenPPOHistory(SampledHistory):
    """One entry per iteration (see :class:`SampledHistory`), plus PPO's beta and value loss."""

    beta: list[float] = dataclasses.field(default_factory=list)
    value_loss: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TokenPPOResult(FineTuneResult):
    """See :class:`~ppo_lib.rlhf.loop.FineTuneResult`; ``history`` is a :class:`TokenPPOHistory`, ``config``
    a :class:`TokenPPOConfig`, and PPO keeps its trained value model (the critic) too."""

    value_model: ScalarModel | None = None


@dataclasses.dataclass
class Rollout:
    tokens: torch.Tensor      # (B, P + L)
    mask: torch.Tensor        # (B, L)
    logprobs: torch.Tensor    # (B, L) policy at rollout time
    ref_logprobs: torch.Tensor
    values: torch.Tensor      # (B, L)
    scores: torch.Tensor      # (B,) reward-model score (missing_eos_score without <eos>)
    rewards: torch.Tensor     # (B, L)
    advantages: torch.Tensor  # (B, L)
    returns: torch.Tensor     # (B, L)
    gold: torch.Tensor        # (B,)
    kl: torch.Tensor          # (B,) sequence k1


CRITIC_INITS = ("reward_model", "sft")


def token_values(value_model: ScalarModel, tokens: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """V(s_t) for every response slot ``t``: the value head at the position just before token ``t``."""
    return value_model(tokens)[:, prompt_len - 1:-1]


def _ptx_batch(n: int, seed: int, device, task: Task = lang.TASK) -> torch.Tensor:
    return task.sample_texts(n, seed).to(device)


@torch.no_grad()
def collect(policy: GPT, ref: GPT, reward_model: ScalarModel | None, value_model: ScalarModel, config: TokenPPOConfig,
            beta: float, generator: torch.Generator, rng: np.random.Generator,
            rewards_fn: Callable = per_token_rewards, whiten_fn: Callable = masked_whiten,
            task: Task = lang.TASK) -> Rollout:
    """One batch of rollouts; ``reward_model`` None: the task's verifier gives the score."""
    dev = next(policy.parameters()).device
    prompts = task.sample_prompts(rng, config.batch_size)
    gen = generate(policy, prompts, temperature=config.temperature, generator=generator, task=task)
    P, mask = gen.prompt_len, gen.mask
    logprobs = response_logprobs(policy, gen.tokens, P, config.temperature) * mask
    ref_logprobs = response_logprobs(ref, gen.tokens, P, config.temperature) * mask
    values = token_values(value_model, gen.tokens, P) * mask
    if reward_model is None:
        scores = task.verify(gen.prompts.cpu(), gen.responses.cpu()).to(dev)
    else:
        scores = torch.where(gen.has_eos, score(reward_model, gen.tokens, P, task.eos_id),
                             torch.full((len(prompts),), config.missing_eos_score, device=dev))
    kl = kl_per_token(logprobs, ref_logprobs, config.kl_estimator)
    rewards = rewards_fn(kl, scores, mask, beta)
    advantages, returns = token_gae(rewards, values, mask, config.gamma, config.gae_lambda)
    if config.whiten_advantages:
        advantages = whiten_fn(advantages, mask)
    return Rollout(gen.tokens, mask, logprobs, ref_logprobs, values, scores, rewards, advantages, returns,
                   task.gold_scores(gen.prompts.cpu(), gen.responses.cpu()), ((logprobs - ref_logprobs) * mask).sum(1))


def ppo_token_loss(policy: GPT, value_model: ScalarModel, ro: Rollout, idx: torch.Tensor, config: TokenPPOConfig,
                   prompt_len: int = lang.PROMPT_LEN) -> tuple[torch.Tensor, dict]:
    """The clipped policy loss and the clipped value loss over the real tokens of a minibatch."""
    tokens, m = ro.tokens[idx], ro.mask[idx].bool()
    new_logprobs = response_logprobs(policy, tokens, prompt_len, config.temperature)
    log_ratio = new_logprobs - ro.logprobs[idx]
    ratio = log_ratio.exp()
    policy_loss = -clipped_surrogate(ratio[m], ro.advantages[idx][m], config.clip_eps)
    new_values = token_values(value_model, tokens, prompt_len)
    v_loss = clipped_value_loss(new_values[m], ro.values[idx][m], ro.returns[idx][m], config.value_clip_range)
    with torch.no_grad():
        info = {"clip_fraction": float(((ratio[m] - 1).abs() > config.clip_eps).float().mean()),
                # k3 of KL(old || new), ppo_lib.losses.approx_kl's convention: (r - 1) - log r, r = p_new / p_old
                "approx_kl": approx_kl(ro.logprobs[idx][m], new_logprobs.detach()[m])[1], "value_loss": float(v_loss)}
    return policy_loss + config.value_coef * v_loss, info


@dataclasses.dataclass
class TokenPPOIteration:
    """What one :func:`ppo_iteration` did: its rollouts, the diagnostics of each gradient step, the seconds."""

    rollout: Rollout
    infos: list[dict]          # per minibatch step: clip_fraction, approx_kl, value_loss
    rollout_seconds: float     # sampling and scoring
    update_seconds: float      # the gradient steps


def ppo_iteration(policy: GPT, ref: GPT, reward_model: ScalarModel | None, value_model: ScalarModel,
                  optimizer: torch.optim.Optimizer, config: TokenPPOConfig, beta: float, generator: torch.Generator,
                  rng: np.random.Generator, task: Task = lang.TASK, rewards_fn: Callable = per_token_rewards,
                  whiten_fn: Callable = masked_whiten) -> TokenPPOIteration:
    """One PPO iteration on tokens, rollout to update (steps 1-4 of the module's docstring).

    ``optimizer`` holds the policy's and the value model's parameters; the gradient norm is clipped
    over both together. The randomness, in order: ``rng`` draws the prompts, ``generator`` the
    sampled tokens, then each epoch's shuffle seed comes from ``rng``
    (:func:`~ppo_lib.rlhf.loop.minibatch_epochs`), and with ``ptx_coef > 0`` each step's
    pre-training batch seed too. ``beta`` is this iteration's KL coefficient (the adaptive
    controller, if any, updates it in :func:`train_ppo` afterwards)."""
    dev = next(policy.parameters()).device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    t0 = time.perf_counter()
    ro = collect(policy, ref, reward_model, value_model, config, beta, generator, rng, rewards_fn, whiten_fn, task)
    t1 = time.perf_counter()

    def step(chunk):
        loss, info = ppo_token_loss(policy, value_model, ro, chunk, config, task.prompt_len)
        if config.ptx_coef > 0:
            loss = loss + config.ptx_coef * lm_loss(
                policy, _ptx_batch(len(chunk), int(rng.integers(2**31)), dev, task),
                0 if task.sft_loss_on_prompt else task.prompt_len, task.pad_id)
        optimizer_step(optimizer, loss, params, config.max_grad_norm)
        return info

    infos = minibatch_epochs(config, rng, dev, step)
    return TokenPPOIteration(ro, infos, t1 - t0, time.perf_counter() - t1)


def train_ppo(sft: PretrainResult, reward: RewardModelResult | None, config: TokenPPOConfig | None = None,
              progress: bool = True, callback: Callable[[TokenPPOHistory], bool | None] | None = None,
              n_samples_logged: int = 4, rewards_fn: Callable = per_token_rewards,
              whiten_fn: Callable = masked_whiten, critic_init: str = "reward_model") -> TokenPPOResult:
    """Fine-tune a copy of the SFT model with PPO against ``reward``'s model.

    Ctrl+C (or a callback returning True) stops early and returns what was done;
    any other error re-raises with the partial result attached as ``error.partial_result``.
    ``rewards_fn`` and ``whiten_fn`` let a chapter plug in the learner's own per-token rewards
    and masked whitening (same signatures as the library's). ``critic_init``: the value model
    starts as a copy of the reward model (``"reward_model"``, InstructGPT's choice; an ensemble's
    first member) or as the SFT trunk with a zero head (``"sft"``, the verifier case's start).
    """
    config = check_config(config, TokenPPOConfig, "train_ppo")
    require_pretrained(sft)
    task = sft.task
    require_reward_or_verifier(reward, task)
    check_trainer_arguments(config, reward, progress, n_samples_logged)
    for name, fn in (("rewards_fn", rewards_fn), ("whiten_fn", whiten_fn)):
        if not callable(fn):
            raise TypeError(f"{name}={fn!r}: must be a function with the signature of the library's "
                            f"{'per_token_rewards' if name == 'rewards_fn' else 'masked_whiten'}")
    if critic_init not in CRITIC_INITS:
        raise ValueError(f"critic_init={critic_init!r}: allowed: {', '.join(map(repr, CRITIC_INITS))}")
    dev = next(sft.model.parameters()).device
    torch.manual_seed(config.seed)
    policy = trainable_copy(sft.model)
    ref = frozen_copy(sft.model)
    reward_model = None if reward is None else frozen_copy(reward.model)
    # the critic starts from the reward model (or, with a verifier or critic_init="sft", from the SFT trunk
    # and a zero head)
    if reward is None or critic_init == "sft":
        critic = ScalarModel.from_lm(sft.model)
    else:
        critic = reward.critic_start if isinstance(reward, RewardEnsemble) else reward.model
    value_model = trainable_copy(critic)
    params = list(policy.parameters()) + list(value_model.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
    generator = torch.Generator(dev).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    history = TokenPPOHistory()
    result = TokenPPOResult(policy, history, config, value_model=value_model)
    beta = config.beta
    callback = check_callback(callback)
    with training_run(result, config.iterations, f"PPO beta={config.beta:g}", progress,
                      (policy, value_model)) as bar:
        for it in range(config.iterations):
            t0 = time.perf_counter()
            step = ppo_iteration(policy, ref, reward_model, value_model, opt, config, beta, generator, rng, task,
                                 rewards_fn, whiten_fn)
            ro, infos = step.rollout, step.infos
            result.tokens_generated += int(ro.mask.sum())
            proxy = float(masked_mean(ro.scores, torch.ones_like(ro.scores)))
            mean_kl, _ = record_sampled(history, ro, task, infos, proxy, n_samples_logged,
                                        ("clip_fraction", "approx_kl", "value_loss"))
            history.beta.append(beta)
            history.rollout_seconds.append(step.rollout_seconds)
            history.update_seconds.append(step.update_seconds)
            history.seconds.append(time.perf_counter() - t0)
            if config.adaptive_kl:
                beta = adaptive_kl_update(beta, mean_kl, config.kl_target, config.batch_size, config.kl_horizon)
            if end_of_iteration(bar, callback, it, history, mean_kl):
                break
    return result


_OLD_NAMES = {"RLHFConfig": "TokenPPOConfig", "RLHFResult": "TokenPPOResult", "RLHFHistory": "TokenPPOHistory"}


def __getattr__(name: str):
    """The old class names (they named PPO alone "RLHF", though DPO and GRPO are RLHF too) work
    for one release, with a warning."""
    if name in _OLD_NAMES:
        import warnings

        warnings.warn(f"ppo_lib.rlhf.ppo.{name} is now {_OLD_NAMES[name]}; the old name goes in the next release",
                      FutureWarning, stacklevel=2)
        return globals()[_OLD_NAMES[name]]
    raise AttributeError(f"module 'ppo_lib.rlhf.ppo' has no attribute {name!r}")
