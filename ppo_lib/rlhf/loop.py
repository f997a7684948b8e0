"""What every training loop of chapters 8-9 shares: a trainable copy of the SFT model, a
progress bar, and a run that keeps its result when it stops early, by the one pattern and
the one callback contract of the whole library (:mod:`ppo_lib.runs`): Ctrl+C returns the
result with ``interrupted=True``, any other error carries it as ``error.partial_result``,
and ``callback(history)`` returns True to stop after the current step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import require_finite
from ppo_lib.rlhf.model import frozen_copy, token_ids_checked
from ppo_lib.runs import callback_says_stop, keep_run
from ppo_lib.rlhf.pretrain import progress_bar


def trainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy with gradients on, in train mode (the policy, or a critic)."""
    copy = frozen_copy(model)
    for p in copy.parameters():
        p.requires_grad_(True)
    return copy.train()


@contextlib.contextmanager
def training_run(result, total: int, desc: str, progress: bool, models: tuple[nn.Module, ...]):
    """Wraps a training loop in :func:`ppo_lib.runs.keep_run`: yields the progress bar (or None)."""
    bar = progress_bar(total, desc, progress)
    t_start = time.perf_counter()

    def finish():
        if bar is not None:
            bar.close()
        result.seconds = time.perf_counter() - t_start
        for m in models:
            m.eval()

    # the loops feed the model the tokens generate sampled, or tokens checked at their entry
    with keep_run(result, finish), token_ids_checked():
        yield bar


def end_of_step(bar, callback: Callable | None, step: int, history, **postfix) -> bool:
    """Advance the bar, show ``postfix``, and ask the callback (checked at the trainer's entry
    by :func:`ppo_lib.runs.check_callback`): True means stop now."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix(**postfix)
    return callback_says_stop(callback, history)


@dataclasses.dataclass
class FineTuneResult:
    """What every fine-tuning method of chapters 8-10 returns: the trained policy, its history,
    the config, whether Ctrl+C stopped it, the response tokens it sampled (0 for DPO, which
    samples none) and its seconds. PPO's adds its value model."""

    policy: nn.Module
    history: Any
    config: Any
    interrupted: bool = False
    tokens_generated: int = 0
    seconds: float = 0.0


def _series():
    return dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StepHistory:
    """The history family of chapters 8-10: one entry per step (an iteration, a gradient step)
    in every list; ``len(history)`` counts the finished steps (what a callback reads)."""

    seconds: list[float] = _series()

    def __len__(self) -> int:
        """Finished steps."""
        return len(self.seconds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SampledHistory(StepHistory):
    """What PPO and GRPO log once per iteration, measured on that iteration's rollouts (the
    policy's own samples); each method's history adds its own diagnostics."""

    proxy: list[float] = _series()          # reward-model score (mean)
    gold: list[float] = _series()           # gold reward (mean)
    kl: list[float] = _series()             # sequence KL to the reference (k1 sum)
    ungrammatical: list[float] = _series()
    eos_rate: list[float] = _series()
    length: list[float] = _series()
    clip_fraction: list[float] = _series()
    # KL(old || new) of each update, k3 = (r - 1) - log r with r = p_new / p_old on the rollout's tokens (sampled
    # from old): ppo_lib.losses.approx_kl's estimator and sign; the mean over the iteration's minibatch steps
    approx_kl: list[float] = _series()
    rollout_seconds: list[float] = _series()  # generation, the policy's and reference's log-probs, the scores
    update_seconds: list[float] = _series()   # the gradient steps
    samples: list[list[str]] = _series()    # a few texts per iteration


def minibatch_epochs(config, rng, device, step: Callable) -> list[dict]:
    """``config.epochs`` passes over the iteration's ``config.batch_size`` responses, each in
    ``config.num_minibatches`` shuffled chunks; ``step(indices)`` takes one gradient step on a
    chunk and returns its diagnostics. Each pass draws its shuffle's seed from ``rng``."""
    infos = []
    for _ in range(config.epochs):
        perm = torch.randperm(config.batch_size, generator=torch.Generator().manual_seed(
            int(rng.integers(2**31)))).to(device)
        for indices in perm.chunk(config.num_minibatches):
            infos.append(step(indices))
    return infos


def optimizer_step(optimizer, loss, parameters, max_grad_norm: float) -> None:
    """Zero the gradients, backpropagate, clip their global norm, step. A loss that is not finite is an
    error before the step, so the model kept with the run (``error.partial_result``) is never NaN."""
    require_finite(loss.detach(), "the loss", "; the model of the last finished step is kept (try a smaller lr)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


def record_sampled(history: SampledHistory, ro, task, infos: list[dict], proxy: float, n_samples_logged: int,
                   info_keys=("clip_fraction", "approx_kl")):
    """Log what PPO and GRPO share for one iteration (its rollouts ``ro``, the updates' ``infos``);
    returns the mean sequence KL and the responses (on the CPU) for the method's own fields."""
    mean_kl = float(ro.kl.mean())
    history.proxy.append(proxy)
    history.gold.append(float(ro.gold.mean()))
    history.kl.append(mean_kl)
    responses = ro.tokens[:, task.prompt_len:].cpu()
    history.ungrammatical.append(1.0 - task.valid_rate(responses))
    history.eos_rate.append(float((responses == task.eos_id).any(1).float().mean()))
    history.length.append(float(ro.mask.sum(1).mean()))
    for key in info_keys:
        getattr(history, key).append(float(np.mean([i[key] for i in infos])))
    history.samples.append([lang.decode(r) if task is lang.TASK else task.decode(r)
                            for r in responses[:n_samples_logged].tolist()])
    return mean_kl, responses


def end_of_iteration(bar, callback, it: int, history: SampledHistory, mean_kl: float) -> bool:
    """A non-finite reward or KL is an error (with the run kept, by :func:`training_run`); then
    the progress bar and the callback: True means stop now."""
    if not math.isfinite(history.proxy[-1]) or not math.isfinite(mean_kl):
        raise FloatingPointError(f"iteration {it}: the reward or the KL is not finite "
                                 f"(proxy {history.proxy[-1]}, KL {mean_kl}); try a smaller lr")
    return end_of_step(bar, callback, it, history, proxy=f"{history.proxy[-1]:.2f}",
                       gold=f"{history.gold[-1]:.2f}", kl=f"{mean_kl:.2f}")
