r"""The reward model: a learned stand-in for the human, trained on preferences.

Pairs of responses to the same prompt are sampled from the SFT model and labelled by
the gold reward the way a noisy human would: the first is preferred with probability
:math:`\sigma((g_1 - g_2) / \tau)` (:math:`\tau` = ``label_temperature``). The reward
model (the SFT trunk and a scalar head, read at ``<eos>``) is fitted by the
Bradley-Terry likelihood (Ouyang et al. 2022, eq. 1):

.. math:: \mathcal L = -\frac1B \sum_b \log\sigma\big(r(x_b, y^w_b) - r(x_b, y^l_b)\big).

Afterwards its bias is shifted so that SFT samples score 0 on average (the choice of
Huang et al. 2024, the N+ implementation details paper; InstructGPT instead shifted it so
that the labellers' demonstrations score 0): the score then says "better or worse than the
SFT model".

Two options for chapter 8's section 7 (the defaults leave everything as above):

- **A labeller who likes length** (``RewardConfig(length_bias=lam)``): the first response is
  preferred with probability :math:`\sigma((g_1 - g_2 + \lambda\,(\ell_1 - \ell_2)) / \tau)`,
  :math:`\ell` the response's length in tokens (``<eos>`` included): each extra token is worth
  :math:`\lambda` gold to this labeller (:func:`preference_probability`). Human labels do favour
  longer answers, and RLHF then lengthens them (Singhal et al. 2023).
- **An ensemble of reward models** (:class:`RewardEnsemble`, Coste et al. 2023): ``k`` reward
  models (different seeds) scored together by their mean, the worst case ``min`` (their WCO),
  or ``mean - coef * variance`` (their UWO; the variance over members is the population one, a sum divided by ``k``);
  ``mean_minus_std`` (``mean - coef * std``) is offered for comparison (:func:`combine_scores`).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppo_lib.config import check_config, check_range, validated, warn_ignored
from ppo_lib.rlhf import cache
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import count, flag, plain_numbers, real, require_finite, require_module
from ppo_lib.rlhf.model import GPT, ScalarModel, generate
from ppo_lib.rlhf.pretrain import PretrainResult, progress_bar, require_pretrained
from ppo_lib.rlhf.task import Task
from ppo_lib.runs import keep_run


@validated
@dataclasses.dataclass
class RewardConfig:
    n_pairs: int = 1000
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    label_temperature: float = 0.25
    seed: int = 0
    length_bias: float = 0.0   # gold per extra response token to the labeller (0: no length preference)

    def __post_init__(self):
        check_range(self, "n_pairs", 2, integer=True)
        check_range(self, "epochs", 1, integer=True)
        check_range(self, "batch_size", 1, integer=True)
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "label_temperature", 0.0, low_open=True)
        check_range(self, "seed", 0, integer=True)
        check_range(self, "length_bias", -1.0, 1.0)
        plain_numbers(self)


def preference_probability(gold_a: torch.Tensor, gold_b: torch.Tensor, label_temperature: float = 0.25,
                           length_a: torch.Tensor | None = None, length_b: torch.Tensor | None = None,
                           length_bias: float = 0.0) -> torch.Tensor:
    r"""The noisy labeller's probability of preferring ``a``:
    :math:`\sigma((g_a - g_b + \lambda(\ell_a - \ell_b)) / \tau)` (without lengths: :math:`\lambda` term 0)."""
    if not label_temperature > 0:
        raise ValueError(f"label_temperature={label_temperature!r}: must be > 0")
    if gold_a.shape != gold_b.shape:
        raise ValueError(f"gold_a {tuple(gold_a.shape)} and gold_b {tuple(gold_b.shape)} differ in shape")
    diff = gold_a - gold_b
    if length_bias != 0:
        if length_a is None or length_b is None:
            raise ValueError(f"length_bias={length_bias}: needs length_a and length_b (response lengths in tokens)")
        diff = diff + length_bias * (length_a.to(diff.dtype) - length_b.to(diff.dtype))
    return torch.sigmoid(diff / label_temperature)


@dataclasses.dataclass
class Pairs:
    """Preference pairs: full token sequences ``(N, CONTEXT)`` and their gold scores ``(N,)``."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    gold_chosen: torch.Tensor
    gold_rejected: torch.Tensor
    task: Task = lang.TASK

    def __len__(self) -> int:
        return len(self.chosen)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    r""":math:`-\mathrm{mean}\,\log\sigma(r_w - r_l)`, written with ``logsigmoid`` (stable for large gaps)."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} differ in shape")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def eos_positions(tokens: torch.Tensor, prompt_len: int = lang.PROMPT_LEN, eos_id: int = lang.EOS_ID) -> torch.Tensor:
    """Index (in the full sequence) of each row's first ``<eos>`` after the prompt, or of its last
    position when it has none: where the reward model reads its score."""
    resp = tokens[:, prompt_len:]
    is_eos = resp == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], resp.shape[1] - 1,
                                                                                   dtype=torch.long))
    return prompt_len + first


def score(reward_model: ScalarModel, tokens: torch.Tensor, prompt_len: int = lang.PROMPT_LEN,
          eos_id: int = lang.EOS_ID) -> torch.Tensor:
    """The reward model's score of each sequence ``(B, T)`` -> ``(B,)``, read at ``<eos>``."""
    out = reward_model(tokens)
    return out.gather(1, eos_positions(tokens, prompt_len, eos_id)[:, None]).squeeze(1)


@torch.no_grad()
def sample_pairs(sft: GPT, n_pairs: int, seed: int = 0, label_temperature: float = 0.25,
                 temperature: float = 1.0, task: Task = lang.TASK, length_bias: float = 0.0) -> Pairs:
    """``n_pairs`` pairs of SFT responses to the same prompts of ``task``, labelled by the noisy
    gold "human" (the task's gold score, or its verifier); ``length_bias``: see
    :func:`preference_probability`."""
    require_module("sft", sft, GPT, "the SFT language model (a GPT)")
    try:
        n_pairs = count("n_pairs", n_pairs, 2)  # a whole number: 10.5 is an error, never 10
    except ValueError as exc:
        raise ValueError(f"{exc}; a reward model needs at least 2 preference pairs") from None
    seed = count("seed", seed, 0, 2**32 - 1)
    label_temperature = real("label_temperature", label_temperature, 0.0, low_open=True)
    if not isinstance(task, Task):
        raise TypeError(f"task=<{type(task).__name__}>: expected a Task (e.g. ppo_lib.rlhf.language.TASK)")
    length_bias = real("length_bias", length_bias, -1.0, 1.0)
    dev = next(sft.parameters()).device
    g = torch.Generator(dev).manual_seed(10_000 + seed)
    rng = np.random.default_rng(seed)
    prompts = task.sample_prompts(rng, n_pairs)
    a = generate(sft, prompts, temperature=temperature, generator=g, task=task)
    b = generate(sft, prompts, temperature=temperature, generator=g, task=task)
    ga = task.gold_scores(a.prompts.cpu(), a.responses.cpu())
    gb = task.gold_scores(b.prompts.cpu(), b.responses.cpu())
    if length_bias == 0:
        p_a = torch.sigmoid((ga - gb) / label_temperature)  # as before the option existed: the same floats
    else:
        p_a = preference_probability(ga, gb, label_temperature, a.lengths.cpu(), b.lengths.cpu(), length_bias)
    a_wins = torch.from_numpy(rng.random(n_pairs) < p_a.numpy())
    chosen = torch.where(a_wins[:, None].to(dev), a.tokens, b.tokens)
    rejected = torch.where(a_wins[:, None].to(dev), b.tokens, a.tokens)
    return Pairs(chosen, rejected, torch.where(a_wins, ga, gb), torch.where(a_wins, gb, ga), task)


@dataclasses.dataclass
class RewardModelResult:
    model: ScalarModel
    losses: list[float]
    pairs: Pairs
    bias_shift: float
    seconds: float
    from_cache: bool
    config: RewardConfig
    interrupted: bool = False  # Ctrl+C stopped training: the model of the last finished step (centred)


def train_reward_model(sft: PretrainResult, config: RewardConfig | None = None, progress: bool = True,
                       use_cache: bool = True) -> RewardModelResult:
    """Fit a reward model on ``config.n_pairs`` labelled pairs of ``sft``'s samples (or load it)."""
    config = check_config(config, RewardConfig, "train_reward_model")
    require_pretrained(sft)
    progress, use_cache = flag("progress", progress), flag("use_cache", use_cache)
    lm = sft.model
    dev = next(lm.parameters()).device
    task = sft.task
    # the key covers the SFT model's weights, not only its settings: a model trained further (or
    # edited) by hand must not get the reward model cached for the one it was before
    settings = {"sft": dataclasses.asdict(sft.config), "reward": dataclasses.asdict(config),
                "sft_weights": cache.weights_digest(lm)}
    if config.length_bias == 0:  # the default's key stays as it was before the option existed
        del settings["reward"]["length_bias"]
    if task is not lang.TASK:  # the review language's keys stay as they were
        settings["task"] = task.cache_settings()
    pairs = sample_pairs(lm, config.n_pairs, config.seed, config.label_temperature, task=task,
                         length_bias=config.length_bias)
    P, eos = task.prompt_len, task.eos_id
    model = ScalarModel.from_lm(lm)
    if use_cache and (hit := cache.load("reward", settings)) is not None:
        model.load_state_dict(hit["state"])
        return RewardModelResult(model.to(dev).eval(), list(hit["losses"]), pairs, float(hit["bias_shift"]),
                                 float(hit["seconds"]), True, config)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = max(1, -(-len(pairs) // config.batch_size))
    bar = progress_bar(config.epochs * steps_per_epoch, "reward model", progress)
    losses = []
    result = RewardModelResult(model, losses, pairs, 0.0, 0.0, False, config)

    def finish():  # however the loop ends: Ctrl+C keeps the model so far, an error carries it
        if bar is not None:
            bar.close()
        result.seconds = time.perf_counter() - t0
        model.eval()

    model.train()
    with keep_run(result, finish, on_interrupt=lambda: f"Reward-model training interrupted after {len(losses)} "
                                                       f"steps: returning the model so far (centred)."):
        for _ in range(config.epochs):
            perm = torch.randperm(len(pairs), generator=gen).to(dev)
            for i in range(0, len(pairs), config.batch_size):
                idx = perm[i:i + config.batch_size]
                loss = bradley_terry_loss(score(model, pairs.chosen[idx], P, eos),
                                          score(model, pairs.rejected[idx], P, eos))
                value = loss.item()  # checked before the step: a NaN never reaches the kept model
                require_finite(torch.tensor(value), f"reward-model step {len(losses)}: the Bradley-Terry loss",
                               f"; the model of the last finished step is kept (try a smaller lr than {config.lr:g})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(value)
                if bar is not None:
                    bar.update(1)
    # centre: SFT samples score 0 on average
    with torch.no_grad():
        fresh = generate(lm, task.heldout_prompts(1024), task=task,
                         generator=torch.Generator(dev).manual_seed(20_000 + config.seed))
        shift = float(score(model, fresh.tokens, P, eos).mean())
        model.head.bias -= shift
    result.bias_shift = shift
    result.seconds = time.perf_counter() - t0
    if use_cache and not result.interrupted:  # a partly trained model is never cached as the real one
        cache.save("reward", settings, {"state": {k: v.cpu() for k, v in model.state_dict().items()},
                                        "losses": losses, "bias_shift": shift, "seconds": result.seconds})
    return result


ENSEMBLE_MODES = ("mean", "min", "uwo", "mean_minus_std")


def combine_scores(scores: torch.Tensor, mode: str = "min", coef: float = 1.0) -> torch.Tensor:
    r"""Combine ``k`` reward models' scores ``(k, ...)`` into one ``(...)``: ``"mean"``; ``"min"``
    (Coste et al. 2023's worst-case optimisation, WCO); ``"uwo"``: mean minus ``coef`` times the
    variance over members (their uncertainty-weighted optimisation, UWO; the population variance,
    a sum divided by ``k``); ``"mean_minus_std"``: mean minus ``coef`` times its square root."""
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"mode={mode!r}: allowed: {', '.join(map(repr, ENSEMBLE_MODES))}")
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not coef >= 0 or coef == float("inf"):
        raise ValueError(f"coef={coef!r}: must be a finite number >= 0 (how much the members' disagreement costs)")
    if scores.dim() < 1 or scores.shape[0] < 2:
        raise ValueError(f"scores {tuple(scores.shape)}: the first axis holds the members, at least 2")
    if mode == "min":
        return scores.min(0).values
    mean = scores.mean(0)
    if mode == "mean":
        return mean
    var = scores.var(0, unbiased=False)
    return mean - coef * (var if mode == "uwo" else var.sqrt())


class EnsembleScalarModel(nn.Module):
    """Several reward models as one: per position, their scores combined by :func:`combine_scores`
    (combining per position and then reading at ``<eos>`` is the same as reading each at ``<eos>``
    and combining, since the combination is taken position by position)."""

    def __init__(self, members, mode: str = "min", coef: float = 1.0):
        super().__init__()
        combine_scores(torch.zeros(2, 1), mode, coef)  # the mode and coef checks, before anything is built
        self.members = nn.ModuleList(members)
        self.mode, self.coef = mode, coef

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return combine_scores(torch.stack([m(tokens) for m in self.members]), self.mode, self.coef)


@dataclasses.dataclass
class RewardEnsemble:
    """``k >= 2`` trained reward models scored as one (Coste et al. 2023); ``train_ppo`` takes it where it
    takes a :class:`RewardModelResult`. PPO's critic starts from the first member (a value model is
    one network)."""

    members: list
    mode: str = "min"
    coef: float = 1.0

    def __post_init__(self):
        members = list(self.members) if isinstance(self.members, (list, tuple)) else self.members
        if not isinstance(members, list) or len(members) < 2:
            raise ValueError(f"members={self.members!r}: an ensemble needs a list of at least 2 RewardModelResults")
        for i, m in enumerate(members):
            if not isinstance(m, RewardModelResult):
                raise TypeError(f"members[{i}]: expected a RewardModelResult from train_reward_model(), "
                                f"got {type(m).__name__}")
        self.members = members
        self.model = EnsembleScalarModel([m.model for m in members], self.mode, self.coef)

    @property
    def critic_start(self) -> ScalarModel:
        return self.members[0].model


def require_reward_model(reward, name: str = "reward") -> None:
    """``reward`` must be what :func:`train_reward_model` returned: a clear ``TypeError`` naming what
    was passed (a bare model, another result, the arguments swapped) and what to pass."""
    if isinstance(reward, (RewardModelResult, RewardEnsemble)):
        return
    kind = type(reward).__name__
    if isinstance(reward, torch.nn.Module):
        hint = "; pass the RewardModelResult itself (`reward`, not `reward.model`)"
    elif isinstance(reward, PretrainResult):
        hint = "; a PretrainResult is the SFT model: check the order of the arguments (sft, reward, config)"
    elif hasattr(reward, "policy"):
        hint = f"; a {kind} is a fine-tuned policy, not a reward model"
    else:
        hint = ""
    raise TypeError(f"{name}=<{kind}>: expected the RewardModelResult returned by train_reward_model() (or a "
                    f"RewardEnsemble of them, or None with a task that has a verifier), got a {kind}{hint}")


def require_reward_or_verifier(reward, task: Task) -> None:
    """``reward`` is a :class:`RewardModelResult`, or None when ``task`` has a verifier to reward with."""
    if reward is None:
        if task.verifier is None:
            raise ValueError(f"reward=None: task {task.name!r} has no verifier; pass the RewardModelResult of "
                             f"train_reward_model (chapter 8), or pre-train on a task with a verifier")
    else:
        require_reward_model(reward)


def check_trainer_arguments(config, reward, progress, n_samples_logged) -> None:
    """What train_ppo and train_grpo check beside their config: the flags, the count, and a setting
    that a verifier makes unused (the score of a response without ``<eos>`` is the reward model's)."""
    flag("progress", progress)
    count("n_samples_logged", n_samples_logged, 0)
    if reward is None:
        warn_ignored(config, ("missing_eos_score",), "with reward=None: the task's verifier scores every "
                     "response, finished or not (missing_eos_score replaces the reward model's score only)")


@torch.no_grad()
def agreement(reward_model: ScalarModel, sft: GPT, n_pairs: int = 1000, seed: int = 123) -> dict:
    """Held-out check against gold on fresh SFT pairs: the fraction of pairs with different gold
    scores that the reward model orders the same way, and the correlation of scores."""
    require_module("reward_model", reward_model, ScalarModel, "the reward model (a ScalarModel, e.g. reward.model)")
    require_module("sft", sft, GPT, "the SFT language model (a GPT, e.g. sft.model)")
    pairs = sample_pairs(sft, n_pairs, seed=seed)
    rc, rr = score(reward_model, pairs.chosen).cpu(), score(reward_model, pairs.rejected).cpu()
    gc, gr = pairs.gold_chosen, pairs.gold_rejected
    differ = gc != gr
    agree = ((rc - rr).sign() == (gc - gr).sign())[differ].float().mean()
    r, g = torch.cat([rc, rr]).numpy(), torch.cat([gc, gr]).numpy()
    return {"agreement": float(agree), "correlation": float(np.corrcoef(r, g)[0, 1]), "pairs_compared": int(differ.sum())}


@torch.no_grad()
def score_texts(reward_model: ScalarModel, prompt: str, responses: list[str]) -> list[float]:
    """Reward-model scores of hand-written responses (words separated by spaces; ``<eos>`` appended
    when missing) to one prompt."""
    require_module("reward_model", reward_model, ScalarModel, "the reward model (a ScalarModel, e.g. reward.model)")
    if isinstance(responses, str):
        raise TypeError(f"responses={responses!r}: expected a list of responses, e.g. [{responses!r}]")
    rows = []
    for text in responses:
        words = text.split()
        if lang.EOS not in words:
            words.append(lang.EOS)
        rows.append([lang.BOS, *prompt.split(), *words])
    tokens = lang.to_batch(rows).tokens.to(next(reward_model.parameters()).device)
    return score(reward_model, tokens).cpu().tolist()
