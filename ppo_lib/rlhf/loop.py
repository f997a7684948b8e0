"""What every training loop of chapters 8-9 shares: a trainable copy of the SFT model, a
progress bar, and a run that keeps its result when it stops early, by the one pattern and
the one callback contract of the whole library (:mod:`ppo_lib.runs`): Ctrl+C returns the
result with ``interrupted=True``, any other error carries it as ``error.partial_result``,
and ``callback(history)`` returns True to stop after the current step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import torch.nn as nn

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


def _series():
    return dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SampledHistory:
    """What PPO and GRPO log once per iteration, measured on that iteration's rollouts (the
    policy's own samples); each method's history adds its own diagnostics."""

    proxy: list[float] = _series()          # reward-model score (mean)
    gold: list[float] = _series()           # gold reward (mean)
    kl: list[float] = _series()             # sequence KL to the reference (k1 sum)
    ungrammatical: list[float] = _series()
    eos_rate: list[float] = _series()
    length: list[float] = _series()
    clip_fraction: list[float] = _series()
    approx_kl: list[float] = _series()      # old -> new, per update (k3)
    seconds: list[float] = _series()
    samples: list[list[str]] = _series()    # a few texts per iteration

    def __len__(self) -> int:
        """Finished iterations."""
        return len(self.seconds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
