"""Misuse of the language-model library (ppo_lib.rlhf), tried as a careless or hurried user would.

The classes of issue 19 (as tests/test_misuse.py does for the RL core):

- ``NAN``: NaN or inf where a number enters (a config field, a reward, a score, a point) is an
  error at the boundary, never passed on or dropped silently;
- ``COUNT``: a count that is not a whole number (2.5, True, nan) is an error, never truncated;
- ``NUMPY``: NumPy numbers are accepted wherever a number is (and stored as Python numbers);
- ``FLAG``: a string where True/False is expected is an error (``"False"`` would read as true);
- ``UNUSED``: a setting that the other settings make unused is a warning naming it and why;
- ``OBJECT``: a result object where a model is expected (or a model where a result is, or the
  arguments swapped) is a ``TypeError`` naming the argument, what was passed and what to pass;
- ``DPO``: zero pairs, pairs whose chosen and rejected responses are the same, a reference that
  is the policy's own log-probabilities;
- ``LOST`` (at the end): a NaN produced during training stops the run before it reaches the
  weights, and the run so far is ``error.partial_result``, with finite weights.

Each case asserts the exception (or warning) type and phrases that its message must hold: the
argument, its value and what is allowed. The models are tiny (a few pre-training steps) so the
file runs in well under a minute; what it checks does not depend on how well they were trained.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Callable

import numpy as np
import pytest
import torch

from ppo_lib.rlhf import addition, dpo as dpo_module, grpo as grpo_module, language as lang, ppo as ppo_module
from ppo_lib.rlhf import pretrain as pretrain_module, reward_model as reward_module
from ppo_lib.rlhf.best_of_n import best_of_n_curve, bon_kl, fit_gao
from ppo_lib.rlhf.dpo import DPOConfig, dpo_loss, train_dpo
from ppo_lib.rlhf.evaluate import evaluate_policy, evaluate_verifier, pass_at_k
from ppo_lib.rlhf.grpo import GRPOConfig, grpo_loss, group_advantages, mean_advantages, rloo_advantages, train_grpo
from ppo_lib.rlhf.kl import adaptive_kl_update
from ppo_lib.rlhf.model import GPTConfig, generate
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain, sample_report
from ppo_lib.rlhf.reward_model import Pairs, RewardConfig, agreement, sample_pairs, train_reward_model
from ppo_lib.rlhf.task import Task
from ppo_lib.rlhf.token_advantages import per_token_rewards, token_gae

NAN, INF = float("nan"), float("inf")
TINY_PRE = PretrainConfig(n_texts=256, steps=6, batch_size=16)
TINY_RM = RewardConfig(n_pairs=16, epochs=1, batch_size=8)
TINY_PPO = dict(iterations=4, batch_size=4, num_minibatches=1, epochs=1)
TINY_GRPO = dict(iterations=4, group_size=2, prompts_per_iteration=2, num_minibatches=1, epochs=1)
TINY_DPO = dict(steps=4, batch_size=4)


@functools.lru_cache(maxsize=None)
def sft():
    return pretrain(TINY_PRE, device="cpu", progress=False, use_cache=False)


@functools.lru_cache(maxsize=None)
def reward():
    return train_reward_model(sft(), TINY_RM, progress=False, use_cache=False)


@functools.lru_cache(maxsize=None)
def addition_sft():
    """A (barely) pre-trained model on the addition task, whose verifier is the reward."""
    config = PretrainConfig(n_texts=64, steps=2, batch_size=8, model=GPTConfig.for_task(addition.TASK))
    return pretrain(config, device="cpu", progress=False, use_cache=False, task=addition.TASK)


@functools.lru_cache(maxsize=None)
def ppo_result():
    return train_ppo(sft(), reward(), TokenPPOConfig(**{**TINY_PPO, "iterations": 1}), progress=False)


def nan_reward_model():
    """A copy of the tiny reward model whose head outputs NaN."""
    import copy

    model = copy.deepcopy(reward().model)
    with torch.no_grad():
        model.head.bias.fill_(NAN)
    return model


def pairs_with(identical: int, n: int = 8) -> Pairs:
    """``n`` pairs of the tiny reward model, the first ``identical`` of them with rejected = chosen."""
    p = reward().pairs
    chosen, rejected = p.chosen[:n].clone(), p.rejected[:n].clone()
    rejected[:identical] = chosen[:identical]
    if identical < n:  # make sure the others differ
        rejected[identical:, -2] = (chosen[identical:, -2] + 1) % lang.VOCAB_SIZE
    return Pairs(chosen, rejected, p.gold_chosen[:n], p.gold_rejected[:n], p.task)


def task_with(**changes) -> Task:
    fields = {f.name: getattr(lang.TASK, f.name) for f in dataclasses.fields(Task)}
    return Task(**{**fields, **changes})


@dataclasses.dataclass
class Case:
    kind: str                   # NAN, COUNT, NUMPY, FLAG, UNUSED, OBJECT, DPO
    name: str
    run: Callable[[], object]
    exc: type | None            # the exception or warning; None: accepted (``check`` holds on the value)
    phrases: tuple[str, ...] = ()
    check: Callable[[object], bool] | None = None

    def __str__(self):
        return f"{self.kind}: {self.name}"


def _logps(n: int = 3, grad: bool = True) -> torch.Tensor:
    return torch.linspace(-3.0, -1.0, n).requires_grad_(grad)


CASES = [
    # ------------------------------------------------------------------ NaN and inf at the boundary
    Case("NAN", "TokenPPOConfig beta nan", lambda: TokenPPOConfig(beta=NAN), ValueError, ("beta=nan", "[0, inf)")),
    Case("NAN", "TokenPPOConfig lr nan", lambda: TokenPPOConfig(lr=NAN), ValueError, ("lr=nan", "(0, 1]")),
    Case("NAN", "TokenPPOConfig clip_eps inf", lambda: TokenPPOConfig(clip_eps=INF), ValueError,
         ("clip_eps=inf", "(0, 1)")),
    Case("NAN", "TokenPPOConfig temperature nan", lambda: TokenPPOConfig(temperature=NAN), ValueError,
         ("temperature=nan", "> 0")),
    Case("NAN", "TokenPPOConfig value_coef nan", lambda: TokenPPOConfig(value_coef=NAN), ValueError,
         ("value_coef=nan", "[0, inf)")),
    Case("NAN", "TokenPPOConfig kl_target nan", lambda: TokenPPOConfig(adaptive_kl=True, kl_target=NAN), ValueError,
         ("kl_target=nan", "(0, inf)")),
    Case("NAN", "TokenPPOConfig missing_eos_score nan", lambda: TokenPPOConfig(missing_eos_score=NAN), ValueError,
         ("missing_eos_score=nan", "[-100, 100]")),
    Case("NAN", "TokenPPOConfig beta assigned nan", lambda: setattr(TokenPPOConfig(), "beta", NAN), ValueError,
         ("beta=nan", "[0, inf)")),
    Case("NAN", "GRPOConfig beta nan", lambda: GRPOConfig(beta=NAN), ValueError, ("beta=nan", "[0, inf)")),
    Case("NAN", "GRPOConfig clip_eps_high nan", lambda: GRPOConfig(clip_eps_high=NAN), ValueError,
         ("clip_eps_high=nan", "(0, 10]")),
    Case("NAN", "GRPOConfig lr inf", lambda: GRPOConfig(lr=INF), ValueError, ("lr=inf", "(0, 1]")),
    Case("NAN", "DPOConfig beta nan", lambda: DPOConfig(beta=NAN), ValueError, ("beta=nan", "(0, inf)")),
    Case("NAN", "DPOConfig lr nan", lambda: DPOConfig(lr=NAN), ValueError, ("lr=nan", "(0, 1]")),
    Case("NAN", "RewardConfig label_temperature nan", lambda: RewardConfig(label_temperature=NAN), ValueError,
         ("label_temperature=nan", "(0, inf)")),
    Case("NAN", "RewardConfig lr nan", lambda: RewardConfig(lr=NAN), ValueError, ("lr=nan", "(0, 1]")),
    Case("NAN", "PretrainConfig lr nan", lambda: PretrainConfig(lr=NAN), ValueError, ("lr=nan", "(0, 1]")),
    Case("NAN", "addition task worked_share nan", lambda: addition.make_task(worked_share=NAN), ValueError,
         ("worked_share=nan", "[0, 1]")),
    Case("NAN", "group_advantages of a nan reward", lambda: group_advantages(torch.tensor([[1.0, NAN, 0.0]])),
         ValueError, ("rewards", "nan", "finite")),
    Case("NAN", "rloo_advantages of a nan reward", lambda: rloo_advantages(torch.tensor([[1.0, 0.0], [NAN, 1.0]])),
         ValueError, ("rewards", "nan", "index (1, 0)")),
    Case("NAN", "mean_advantages of an inf reward", lambda: mean_advantages(torch.tensor([[INF, 0.0]])),
         ValueError, ("rewards", "inf", "finite")),
    Case("NAN", "per_token_rewards of a nan score",
         lambda: per_token_rewards(torch.zeros(2, 3), torch.tensor([1.0, NAN]), torch.ones(2, 3), 0.1),
         ValueError, ("scores", "nan", "finite")),
    Case("NAN", "per_token_rewards with beta nan",
         lambda: per_token_rewards(torch.zeros(2, 3), torch.ones(2), torch.ones(2, 3), NAN),
         ValueError, ("beta=nan", "[0, inf)")),
    Case("NAN", "token_gae of a nan value",
         lambda: token_gae(torch.zeros(1, 3), torch.tensor([[0.0, NAN, 0.0]]), torch.ones(1, 3)),
         ValueError, ("values", "nan", "finite")),
    Case("NAN", "grpo_loss with beta nan",
         lambda: grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), torch.ones(2, 3),
                           0.2, NAN), ValueError, ("beta=nan", "[0, inf)")),
    Case("NAN", "grpo_loss with clip_eps nan",
         lambda: grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, torch.ones(2), torch.ones(2, 3), NAN, 0.0),
         ValueError, ("clip_eps=nan", "must be")),
    Case("NAN", "adaptive_kl_update with beta nan", lambda: adaptive_kl_update(NAN, 1.0, 6.0, 64, 10_000),
         ValueError, ("beta=nan",)),
    Case("NAN", "pass_at_k with n nan", lambda: pass_at_k(NAN, 3, 1), ValueError, ("n=nan", "whole number")),
    Case("NAN", "fit_gao with a nan point", lambda: fit_gao([0.5, 1.0, 2.0], [0.1, NAN, 0.3], "bon"), ValueError,
         ("gold_gain", "NaN", "finite")),
    Case("NAN", "best_of_n_curve with a reward model scoring nan",
         lambda: best_of_n_curve(sft().model, nan_reward_model(), ns=(1, 2), n_prompts=2), ValueError,
         ("reward model's scores", "nan", "finite")),
    Case("NAN", "bon_kl of nan", lambda: bon_kl(NAN), ValueError, ("n=nan", "whole number")),
    Case("NAN", "generate at temperature inf", lambda: generate(sft().model, ["the food was"], temperature=INF),
         ValueError, ("temperature=inf", "> 0")),

    # ------------------------------------------------------------------ counts: never truncated
    Case("COUNT", "bon_kl(2.5)", lambda: bon_kl(2.5), ValueError, ("n=2.5", "whole number")),
    Case("COUNT", "best_of_n_curve ns with 2.5", lambda: best_of_n_curve(sft().model, reward().model, ns=(1, 2.5)),
         ValueError, ("ns[1]=2.5", "whole number")),
    Case("COUNT", "best_of_n_curve n_prompts 4.5",
         lambda: best_of_n_curve(sft().model, reward().model, ns=(1, 2), n_prompts=4.5),
         ValueError, ("n_prompts=4.5", "whole number")),
    Case("COUNT", "pass_at_k k 2.5", lambda: pass_at_k(10, 3, 2.5), ValueError, ("k=2.5", "whole number")),
    Case("COUNT", "pass_at_k n 10.5", lambda: pass_at_k(10.5, 3, 2), ValueError, ("n=10.5", "whole number")),
    Case("COUNT", "pass_at_k c True", lambda: pass_at_k(10, True, 2), TypeError, ("c=True", "whole")),
    Case("COUNT", "evaluate_verifier ks with 2.5",
         lambda: evaluate_verifier(addition_sft().model, addition.TASK, n_prompts=2, samples_per_prompt=4,
                                   ks=(1, 2.5)), ValueError, ("ks[1]=2.5", "whole number")),
    Case("COUNT", "evaluate_verifier samples_per_prompt 3.5",
         lambda: evaluate_verifier(addition_sft().model, addition.TASK, n_prompts=2, samples_per_prompt=3.5),
         ValueError, ("samples_per_prompt=3.5", "whole number")),
    Case("COUNT", "GRPOConfig group_size 4.5", lambda: GRPOConfig(group_size=4.5), ValueError,
         ("group_size=4.5", "whole number", "[2, inf)")),
    Case("COUNT", "GRPOConfig group_size True", lambda: GRPOConfig(group_size=True), TypeError,
         ("group_size=True", "whole")),
    Case("COUNT", "TokenPPOConfig iterations True", lambda: TokenPPOConfig(iterations=True), TypeError,
         ("iterations=True", "whole")),
    Case("COUNT", "TokenPPOConfig batch_size 8.5", lambda: TokenPPOConfig(batch_size=8.5), ValueError,
         ("batch_size=8.5", "whole number")),
    Case("COUNT", "DPOConfig steps 10.5", lambda: DPOConfig(steps=10.5), ValueError, ("steps=10.5", "whole number")),
    Case("COUNT", "RewardConfig n_pairs 100.5", lambda: RewardConfig(n_pairs=100.5), ValueError,
         ("n_pairs=100.5", "whole number")),
    Case("COUNT", "sample_pairs n_pairs 10.5", lambda: sample_pairs(sft().model, 10.5), ValueError,
         ("n_pairs=10.5", "whole number")),
    Case("COUNT", "generate max_new_tokens 3.5", lambda: generate(sft().model, ["the food was"], max_new_tokens=3.5),
         ValueError, ("max_new_tokens=3.5", "whole number")),
    Case("COUNT", "evaluate_policy n 10.5", lambda: evaluate_policy(sft().model, sft().model, n=10.5), ValueError,
         ("n=10.5", "whole number")),
    Case("COUNT", "evaluate_policy n_samples more than n",
         lambda: evaluate_policy(sft().model, sft().model, n=4, n_samples=9), ValueError, ("n_samples=9", "[0, 4]")),
    Case("COUNT", "GPTConfig d_model 64.5", lambda: GPTConfig(d_model=64.5), ValueError,
         ("d_model=64.5", "whole number")),
    Case("COUNT", "train_ppo n_samples_logged 2.5",
         lambda: train_ppo(sft(), reward(), TokenPPOConfig(**TINY_PPO), progress=False, n_samples_logged=2.5),
         ValueError, ("n_samples_logged=2.5", "whole number")),

    # ------------------------------------------------------------------ NumPy numbers: accepted
    Case("NUMPY", "TokenPPOConfig from NumPy numbers",
         lambda: TokenPPOConfig(beta=np.float64(0.1), iterations=np.int64(3), lr=np.float32(1e-3)), None,
         check=lambda c: type(c.iterations) is int and c.iterations == 3 and type(c.lr) is float
         and type(c.beta) is float),
    Case("NUMPY", "GRPOConfig from NumPy numbers", lambda: GRPOConfig(group_size=np.int64(4), beta=np.float32(0.5)),
         None, check=lambda c: c.group_size == 4 and type(c.group_size) is int and type(c.beta) is float),
    Case("NUMPY", "DPOConfig beta float32", lambda: DPOConfig(beta=np.float32(0.25)), None,
         check=lambda c: c.beta == 0.25 and type(c.beta) is float),
    Case("NUMPY", "PretrainConfig lr float32 keys the cache", lambda: PretrainConfig(lr=np.float32(2e-3)), None,
         check=lambda c: type(c.lr) is float),
    Case("NUMPY", "GPTConfig sizes int64", lambda: GPTConfig(d_model=np.int64(32), n_heads=np.int64(4)), None,
         check=lambda c: type(c.d_model) is int and c.d_model == 32),
    Case("NUMPY", "bon_kl of int64", lambda: bon_kl(np.int64(4)), None, check=lambda v: v == bon_kl(4)),
    Case("NUMPY", "pass_at_k of int64", lambda: pass_at_k(np.int64(10), np.int64(3), np.int64(2)), None,
         check=lambda v: v == pass_at_k(10, 3, 2)),
    Case("NUMPY", "generate at temperature float32",
         lambda: generate(sft().model, ["the food was"], temperature=np.float32(0.7), max_new_tokens=np.int64(3)),
         None, check=lambda g: g.responses.shape == (1, 3)),
    Case("NUMPY", "dpo_loss with beta float32",
         lambda: dpo_loss(_logps(), _logps(), _logps(grad=False), _logps(grad=False) - 1, np.float32(0.1)), None,
         check=lambda v: math.isfinite(float(v.detach()))),
    Case("NUMPY", "Task prompt_len int64", lambda: task_with(prompt_len=np.int64(lang.PROMPT_LEN)), None,
         check=lambda t: type(t.prompt_len) is int),
    Case("NUMPY", "TokenPPOConfig adaptive_kl np.True_", lambda: TokenPPOConfig(adaptive_kl=np.True_), None,
         check=lambda c: c.adaptive_kl is True),

    # ------------------------------------------------------------------ flags: never a string read as true
    Case("FLAG", "TokenPPOConfig adaptive_kl 'False'", lambda: TokenPPOConfig(adaptive_kl="False"), TypeError,
         ("adaptive_kl='False'", "True or False")),
    Case("FLAG", "TokenPPOConfig whiten_advantages 'no'", lambda: TokenPPOConfig(whiten_advantages="no"), TypeError,
         ("whiten_advantages='no'", "True or False")),
    Case("FLAG", "GRPOConfig dynamic_sampling 'False'", lambda: GRPOConfig(dynamic_sampling="False"), TypeError,
         ("dynamic_sampling='False'", "True or False")),
    Case("FLAG", "GRPOConfig kv_cache 1", lambda: GRPOConfig(kv_cache=1), TypeError, ("kv_cache=1", "True or False")),
    Case("FLAG", "Task sft_loss_on_prompt 'False'", lambda: task_with(sft_loss_on_prompt="False"), TypeError,
         ("sft_loss_on_prompt='False'", "True or False")),
    Case("FLAG", "generate kv_cache 'False'", lambda: generate(sft().model, ["the food was"], kv_cache="False"),
         TypeError, ("kv_cache='False'", "True or False")),
    Case("FLAG", "pretrain progress 'no'", lambda: pretrain(TINY_PRE, progress="no", use_cache=False), TypeError,
         ("progress='no'", "True or False")),
    Case("FLAG", "pretrain use_cache 'False'", lambda: pretrain(TINY_PRE, progress=False, use_cache="False"),
         TypeError, ("use_cache='False'", "True or False")),
    Case("FLAG", "train_reward_model use_cache 'False'",
         lambda: train_reward_model(sft(), TINY_RM, progress=False, use_cache="False"), TypeError,
         ("use_cache='False'", "True or False")),
    Case("FLAG", "evaluate_verifier kv_cache 'True'",
         lambda: evaluate_verifier(addition_sft().model, addition.TASK, n_prompts=2, samples_per_prompt=2, ks=(1,),
                                   kv_cache="True"), TypeError, ("kv_cache='True'", "True or False")),
    Case("FLAG", "train_dpo progress 'False'",
         lambda: train_dpo(sft(), pairs_with(0), DPOConfig(**TINY_DPO), progress="False"), TypeError,
         ("progress='False'", "True or False")),
    Case("FLAG", "train_grpo progress 'off'",
         lambda: train_grpo(sft(), reward(), GRPOConfig(**TINY_GRPO), progress="off"), TypeError,
         ("progress='off'", "True or False")),

    # ------------------------------------------------------------------ settings that have no effect
    Case("UNUSED", "kl_target without adaptive_kl", lambda: TokenPPOConfig(kl_target=3.0), UserWarning,
         ("kl_target=3.0", "adaptive_kl=False")),
    Case("UNUSED", "kl_horizon without adaptive_kl", lambda: TokenPPOConfig(kl_horizon=5000), UserWarning,
         ("kl_horizon=5000", "adaptive_kl=False")),
    Case("UNUSED", "kl_estimator with beta 0", lambda: TokenPPOConfig(beta=0.0, kl_estimator="k3"), UserWarning,
         ("kl_estimator='k3'", "beta=0")),
    Case("UNUSED", "max_sampling_rounds without dynamic sampling", lambda: GRPOConfig(max_sampling_rounds=8),
         UserWarning, ("max_sampling_rounds=8", "dynamic_sampling=False")),
    Case("UNUSED", "GRPO beta with kl='none'", lambda: GRPOConfig(kl="none", beta=0.1), UserWarning,
         ("beta=0.1", "kl='none'")),
    Case("UNUSED", "GRPO missing_eos_score with a verifier",
         lambda: train_grpo(addition_sft(), None, GRPOConfig(**{**TINY_GRPO, "iterations": 1},
                                                              missing_eos_score=-2.0), progress=False),
         UserWarning, ("missing_eos_score=-2.0", "verifier")),
    Case("UNUSED", "PPO missing_eos_score with a verifier",
         lambda: train_ppo(addition_sft(), None, TokenPPOConfig(**{**TINY_PPO, "iterations": 1},
                                                                missing_eos_score=0.0), progress=False),
         UserWarning, ("missing_eos_score=0.0", "verifier")),
    Case("UNUSED", "a value setting given to GRPO", lambda: GRPOConfig(value_coef=0.5), TypeError,
         ("value_coef", "Valid fields")),

    # ------------------------------------------------------------------ a result where a model is expected
    Case("OBJECT", "train_ppo with sft.model", lambda: train_ppo(sft().model, reward(), TokenPPOConfig(**TINY_PPO)),
         TypeError, ("sft", "GPT", "PretrainResult")),
    Case("OBJECT", "train_ppo from a TokenPPOResult",
         lambda: train_ppo(ppo_result(), reward(), TokenPPOConfig(**TINY_PPO)), TypeError,
         ("sft", "TokenPPOResult", "PretrainResult")),
    Case("OBJECT", "train_ppo with reward.model", lambda: train_ppo(sft(), reward().model, TokenPPOConfig(**TINY_PPO)),
         TypeError, ("reward", "ScalarModel", "RewardModelResult")),
    Case("OBJECT", "train_ppo with the arguments swapped",
         lambda: train_ppo(reward(), sft(), TokenPPOConfig(**TINY_PPO)), TypeError,
         ("sft", "RewardModelResult", "PretrainResult")),
    Case("OBJECT", "train_grpo with the SFT result as reward",
         lambda: train_grpo(sft(), sft(), GRPOConfig(**TINY_GRPO)),
         TypeError, ("reward", "PretrainResult", "RewardModelResult")),
    Case("OBJECT", "train_grpo with a DPOResult as reward",
         lambda: train_grpo(sft(), train_dpo(sft(), pairs_with(0), DPOConfig(steps=1, batch_size=2), progress=False)),
         TypeError, ("reward", "DPOResult", "RewardModelResult")),
    Case("OBJECT", "train_dpo with sft.model", lambda: train_dpo(sft().model, pairs_with(0)), TypeError,
         ("sft", "GPT", "PretrainResult")),
    Case("OBJECT", "train_dpo with the reward result as pairs", lambda: train_dpo(sft(), reward()), TypeError,
         ("RewardModelResult", "reward.pairs")),
    Case("OBJECT", "train_reward_model with sft.model", lambda: train_reward_model(sft().model, TINY_RM), TypeError,
         ("sft", "GPT", "PretrainResult")),
    Case("OBJECT", "best_of_n_curve with the SFT result", lambda: best_of_n_curve(sft(), reward().model), TypeError,
         ("sft=<PretrainResult>", "a GPT", "sft.model")),
    Case("OBJECT", "best_of_n_curve with the reward result", lambda: best_of_n_curve(sft().model, reward()),
         TypeError, ("reward_model=<RewardModelResult>", "ScalarModel", "reward.model")),
    Case("OBJECT", "evaluate_policy with a TokenPPOResult",
         lambda: evaluate_policy(ppo_result(), sft().model, reward().model, n=4), TypeError,
         ("policy=<TokenPPOResult>", "a GPT", "tokenpporesult.policy")),
    Case("OBJECT", "evaluate_policy with the reward result",
         lambda: evaluate_policy(sft().model, sft().model, reward(), n=4), TypeError,
         ("reward_model=<RewardModelResult>", "reward.model")),
    Case("OBJECT", "evaluate_policy with a GPT as reward model",
         lambda: evaluate_policy(sft().model, sft().model, sft().model, n=4), TypeError,
         ("reward_model=<GPT>", "ScalarModel", "order of the arguments")),
    Case("OBJECT", "evaluate_policy with the SFT result as reference",
         lambda: evaluate_policy(sft().model, sft(), n=4), TypeError, ("ref=<PretrainResult>", "sft.model")),
    Case("OBJECT", "generate with the SFT result", lambda: generate(sft(), ["the food was"]), TypeError,
         ("PretrainResult", "result.model")),
    Case("OBJECT", "sample_pairs with the SFT result", lambda: sample_pairs(sft(), 8), TypeError,
         ("sft=<PretrainResult>", "a GPT")),
    Case("OBJECT", "agreement with the reward result", lambda: agreement(reward(), sft().model, n_pairs=8), TypeError,
         ("reward_model=<RewardModelResult>", "reward.model")),
    Case("OBJECT", "sample_report with the SFT result", lambda: sample_report(sft(), n=4), TypeError,
         ("model=<PretrainResult>", "sft.model")),
    Case("OBJECT", "PretrainConfig with a string as model", lambda: PretrainConfig(model="small"), TypeError,
         ("model=<str>", "GPTConfig")),

    # ------------------------------------------------------------------ DPO's data and reference
    Case("DPO", "dpo_loss on zero pairs", lambda: dpo_loss(*(torch.zeros(0) for _ in range(4)), 0.1), ValueError,
         ("0 pairs", "at least one pair")),
    Case("DPO", "dpo_loss with the policy's log-probs as reference",
         lambda: (lambda c, r: dpo_loss(c, r, c, r, 0.1))(_logps(), _logps() - 1), ValueError,
         ("ref_chosen_logps is policy_chosen_logps", "frozen SFT model")),
    Case("DPO", "dpo_loss with the policy's detached log-probs as reference",
         lambda: (lambda c, r: dpo_loss(c, r, c.detach(), r.detach(), 0.1))(_logps(), _logps() - 1), ValueError,
         ("ref_chosen_logps is policy_chosen_logps", "detached")),
    Case("DPO", "train_dpo on zero pairs",
         lambda: train_dpo(sft(), Pairs(*(t[:0] for t in (reward().pairs.chosen, reward().pairs.rejected,
                                                          reward().pairs.gold_chosen, reward().pairs.gold_rejected))),
                           DPOConfig(**TINY_DPO), progress=False), ValueError, ("pairs", "got 0", "at least 2")),
    Case("DPO", "train_dpo on pairs that are all identical",
         lambda: train_dpo(sft(), pairs_with(8), DPOConfig(**TINY_DPO), progress=False), ValueError,
         ("all 8 pairs", "chosen response is the rejected one", "train nothing")),
    Case("DPO", "train_dpo on pairs half identical",
         lambda: train_dpo(sft(), pairs_with(4), DPOConfig(**TINY_DPO), progress=False), UserWarning,
         ("4 of 8 pairs", "train nothing")),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_misuse_gets_a_clear_answer(case):
    if case.exc is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # accepted means accepted quietly
            value = case.run()
        assert case.check(value), f"{case.name}: accepted, but the value is not what was asked: {value!r}"
        return
    if issubclass(case.exc, Warning):
        with pytest.warns(case.exc) as record:
            case.run()
        msg = " ".join(str(w.message) for w in record if issubclass(w.category, case.exc))
    else:
        with pytest.raises(case.exc) as info:
            case.run()
        msg = str(info.value)
    for phrase in case.phrases:
        assert phrase in msg, f"{case.name}: {phrase!r} not in {msg!r}"


def test_the_suite_covers_every_class():
    kinds = {c.kind for c in CASES}
    assert kinds == {"NAN", "COUNT", "NUMPY", "FLAG", "UNUSED", "OBJECT", "DPO"} and len(CASES) >= 60


def test_settings_that_are_used_do_not_warn():
    """The warnings fire only where a setting has no effect: the presets and the chapters' configs are quiet."""
    from ppo_lib.rlhf.presets import GRPO_VARIANTS, presets, rlvr_presets

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TokenPPOConfig(adaptive_kl=True, kl_target=3.0, kl_horizon=5000)
        TokenPPOConfig(beta=0.0)
        TokenPPOConfig(**presets("cuda")[2])
        GRPOConfig(dynamic_sampling=True, max_sampling_rounds=8)
        GRPOConfig(kl="none", beta=0.0)
        GRPOConfig(kl="none")  # beta left at its default: nothing was set in vain
        GRPOConfig(**rlvr_presets()[2])
        for variant in GRPO_VARIANTS.values():
            GRPOConfig(**variant)


# --------------------------------------------------------------------------
# Nothing is lost: a NaN produced during training stops the run before it reaches the weights
# --------------------------------------------------------------------------

def _nan_from_call(monkeypatch, module, name: str, call: int):
    """``module.name`` returns NaN (in its result's shape) from its ``call``-th call on."""
    original = getattr(module, name)
    calls = {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        out = original(*args, **kwargs)
        return out + torch.full_like(out, NAN) if calls["n"] >= call else out  # NaN, still on the graph

    monkeypatch.setattr(module, name, patched)


def _assert_kept(info, finished: int, message: str, model_attr: str = "policy"):
    """The run stopped with the ``finished`` steps before the NaN kept, finite, then a message naming it."""
    exc = info.value
    partial = exc.partial_result
    assert all(torch.isfinite(p).all() for p in getattr(partial, model_attr).parameters()), \
        "the kept model has NaN weights: the NaN reached an update"
    assert len(partial.losses if model_attr == "model" else partial.history) == finished
    assert "partial_result" in "".join(getattr(exc, "__notes__", []))
    assert isinstance(exc, FloatingPointError) and isinstance(exc, ValueError)
    assert message in str(exc), f"{message!r} not in {str(exc)!r}"


def test_a_reward_model_scoring_nan_at_iteration_3_stops_ppo_and_keeps_two_iterations(monkeypatch):
    _nan_from_call(monkeypatch, ppo_module, "score", 3)
    with pytest.raises(Exception) as info:
        train_ppo(sft(), reward(), TokenPPOConfig(**TINY_PPO), progress=False)
    _assert_kept(info, 2, "scores: nan")


def test_a_reward_model_scoring_nan_at_iteration_3_stops_grpo_and_keeps_two_iterations(monkeypatch):
    _nan_from_call(monkeypatch, grpo_module, "score", 3)
    with pytest.raises(Exception) as info:
        train_grpo(sft(), reward(), GRPOConfig(**TINY_GRPO), progress=False)
    _assert_kept(info, 2, "rewards: nan")


def test_a_nan_log_prob_at_step_3_stops_dpo_before_the_update(monkeypatch):
    _nan_from_call(monkeypatch, dpo_module, "sequence_logprobs", 7)  # 2 for the reference, then 2 a step
    with pytest.raises(Exception) as info:
        train_dpo(sft(), pairs_with(0), DPOConfig(**TINY_DPO), progress=False)
    _assert_kept(info, 2, "step 2: the DPO loss: nan")


def test_a_nan_loss_at_step_3_stops_pretraining_and_keeps_two_steps(monkeypatch):
    _nan_from_call(monkeypatch, pretrain_module, "lm_loss", 3)
    with pytest.raises(Exception) as info:
        pretrain(TINY_PRE, progress=False, use_cache=False)
    _assert_kept(info, 2, "pre-training step 2: the loss: nan", "model")


def test_a_nan_loss_at_step_3_stops_reward_model_training_and_keeps_two_steps(monkeypatch):
    _nan_from_call(monkeypatch, reward_module, "bradley_terry_loss", 3)
    with pytest.raises(Exception) as info:
        train_reward_model(sft(), RewardConfig(n_pairs=16, epochs=2, batch_size=8), progress=False, use_cache=False)
    _assert_kept(info, 2, "reward-model step 2: the Bradley-Terry loss: nan", "model")


def test_a_verifier_returning_nan_at_iteration_3_stops_grpo_and_keeps_two_iterations():
    task = addition.TASK
    calls = {"n": 0}
    per_iteration = TINY_GRPO["group_size"] * TINY_GRPO["prompts_per_iteration"]

    def verifier(prompt, response):
        calls["n"] += 1
        return NAN if calls["n"] > 2 * per_iteration else addition.verify(prompt, response)

    nan_task = Task(**{**{f.name: getattr(task, f.name) for f in dataclasses.fields(Task)}, "verifier": verifier})
    sft_nan = dataclasses.replace(addition_sft(), task=nan_task)
    with pytest.raises(TypeError, match="returned nan") as info:
        train_grpo(sft_nan, None, GRPOConfig(**TINY_GRPO), progress=False)
    partial = info.value.partial_result
    assert len(partial.history) == 2 and all(torch.isfinite(p).all() for p in partial.policy.parameters())


def test_the_hugging_face_adapter_refuses_a_result_and_warns_about_unused_settings():
    """``from_hf``: the same standard (OBJECT, COUNT, FLAG, UNUSED) on the optional adapter."""
    pytest.importorskip("transformers")
    from ppo_lib.rlhf import hf

    model, tok = hf.tiny_gpt2(addition.TASK)
    with pytest.raises(TypeError, match=r"model=<PretrainResult>: expected a Hugging Face causal LM"):
        hf.from_hf(addition_sft(), tok, addition.TASK)
    with pytest.raises(ValueError, match=r"sft_steps=2.5: must be a whole number"):
        hf.from_hf(model, tok, addition.TASK, sft_steps=2.5)
    with pytest.raises(TypeError, match=r"one_cycle='False': must be True or False"):
        hf.from_hf(model, tok, addition.TASK, one_cycle="False")
    with pytest.warns(UserWarning, match=r"lr=0.001, one_cycle=True: ignored with sft_steps=0"):
        hf.from_hf(model, tok, addition.TASK, lr=1e-3, one_cycle=True)
