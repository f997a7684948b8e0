"""Exercises of chapter 7: a running mean/std, and the clipped value loss."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ppo_lib import losses
from ppo_lib.teaching.checks.core import (Case, Exercise, InputChanged, Mistake, show_value, describe_returned, changed, compare,
                                 one_number, tracked)
from ppo_lib.normalization import RunningMeanStd


def _reference_running(mean, var, count, batch):
    rms = RunningMeanStd(np.shape(mean))
    rms.mean, rms.var, rms.count = np.array(mean, float), np.array(var, float), float(count)
    rms.update(batch)
    return rms.mean, rms.var, rms.count


@dataclasses.dataclass(frozen=True)
class _NotATriple:
    value: Any


def _run_running(fn, mean, var, count, *batches):
    """Feed the batches one after another, each call getting the statistics the previous one returned
    (as chapter 7 feeds its chunks); compare the final statistics. Statistics have shape (obs_dim,) and a
    batch (n, obs_dim), as the exercise says; updating ``mean`` or ``var`` in place is allowed (the chapter
    replaces them by what comes back); changing ``batch`` is not (the chapter's chunks are views of its data)."""
    m, v, c = np.array(mean, float), np.array(var, float), float(count)
    for batch in batches:
        given = np.array(batch, float)
        out = fn(m, v, c, given)
        if not np.array_equal(given, np.asarray(batch, float)):
            return InputChanged("batch")  # chapter 7's chunks are views of its data: changing one changes the data
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            return _NotATriple(out)
        m, v, c = out
    return {"mean": m, "var": v, "count": c}


def _compare_stats(expected, got):
    if isinstance(got, InputChanged) or isinstance(expected, InputChanged):
        return compare(expected, got)
    if isinstance(got, _NotATriple) or isinstance(expected, _NotATriple):
        if isinstance(got, _NotATriple) and isinstance(expected, _NotATriple):
            return compare(expected.value, got.value)
        if isinstance(expected, _NotATriple):
            return "not the same"
        return (f"expected a tuple (new_mean, new_var, new_count), got {describe_returned(got.value)}: "
                f"{show_value(got.value)}")
    return compare(expected, got)


def _naive_mean(mean, var, count, batch):
    return (mean + batch.mean(0)) / 2, (var + batch.var(0)) / 2, count + len(batch)


def _no_delta(mean, var, count, batch):
    n = len(batch)
    total = count + n
    return (mean * count + batch.mean(0) * n) / total, (var * count + batch.var(0) * n) / total, total


def _batch_only(mean, var, count, batch):
    return batch.mean(0), batch.var(0), count + len(batch)


def _correct(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    total = count + n
    return mean + delta * n / total, (var * count + batch.var(0) * n + delta**2 * count * n / total) / total, total


def _sample_var(mean, var, count, batch):
    n = len(batch)
    delta = batch.mean(0) - mean
    total = count + n
    b_var = batch.var(0, ddof=1)
    return mean + delta * n / total, (var * count + b_var * n + delta**2 * count * n / total) / total, total


def _count_unchanged(mean, var, count, batch):
    m, v, _ = _correct(mean, var, count, batch)
    return m, v, count


def _std(mean, var, count, batch):
    m, v, c = _correct(mean, var, count, batch)
    return m, np.sqrt(v), c


check_running_mean_std = Exercise(
    "update_running_stats",
    reference=_reference_running,
    reference_name="ppo_lib.normalization.RunningMeanStd.update",
    run=_run_running,
    compare=_compare_stats,
    cases=[
        Case(([0.0], [1.0], 1e-4, [[1.0], [4.0]]),
             "obs_dim=1: mean=[0], var=[1], count=0.0001 (nothing seen yet), batch=[[1], [4]]"),
        Case(([2.0], [0.5], 2.0, [[4.0], [5.0], [3.5]]),
             "obs_dim=1: mean=[2], var=[0.5], count=2, batch=[[4], [5], [3.5]]: the means differ"),
        Case(([0.0, 10.0], [2.0, 4.0], 10.0, [[1.0, 8.0], [3.0, 12.0], [2.5, 10.0]]),
             "obs_dim=2: mean=[0, 10], var=[2, 4], count=10, a batch of 3"),
        Case(([1.0, -1.0, 0.5], [0.3, 2.0, 1.5], 5.0, [[2.0, 0.0, -1.0]]),
             "obs_dim=3, a batch of ONE observation [[2, 0, -1]] (its own variance is 0): mean=[1, -1, 0.5], "
             "var=[0.3, 2, 1.5], count=5"),
        Case((np.zeros(3), np.ones(3), 1e-12, [[0.5, 4.0, -3.1], [-1.0, 6.0, -2.9]], [[1.5, -3.0, -3.0]],
              [[0.2, 5.0, -3.05], [0.0, 9.0, -2.95], [-0.7, 1.0, -3.0]]),
             "as chapter 7 runs it: mean=zeros(3), var=ones(3), count=1e-12, then three batches (of 2, 1 and 3 "
             "observations), each call getting what the previous one returned"),
    ],
    mistakes=[
        Mistake("average of means", _naive_mean,
                "weight the old statistics by count and the batch by its size; a plain average of the two "
                "means ignores how much data each summarises."),
        Mistake("no delta term", _no_delta,
                "the variance also needs the spread *between* the two means: add "
                "delta**2 * count * n / (count + n), with delta = batch mean - old mean."),
        Mistake("batch only", _batch_only, "you replaced the running statistics by the batch's; combine them."),
        Mistake("sample variance", _sample_var,
                "the batch variance is the population one (np.var's default, ddof=0), as the formula says."),
        Mistake("count unchanged", _count_unchanged, "return the new count, count + n."),
        Mistake("std", _std, "return the variance (the formula's sigma'^2), not the standard deviation."),
    ],
)


def _run_value_loss(fn, values, old_values, targets, eps):
    v, given = tracked(values, torch.float64)
    old, t = torch.tensor(old_values, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
    old_before, t_before = old.clone(), t.clone()
    out = fn(given, old, t, eps)
    for name, now, before in (("values", given, v), ("old_values", old, old_before), ("targets", t, t_before)):
        if changed(now, before):
            return InputChanged(name)
    # the text asks for the loss of a display, not for a 0-d tensor, and the next cell's autograd.grad works on
    # one element: shape (1,) is accepted as the number it holds
    out = one_number(out)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        return {"loss": out}
    if out.requires_grad:
        out.backward()
    return {"loss": out.detach(), "gradient w.r.t. values": v.grad if v.grad is not None else torch.zeros_like(v)}


def _clip_min(v, old, t, eps):
    clipped = old + torch.clamp(v - old, -eps, eps)
    return 0.5 * torch.min((v - t) ** 2, (clipped - t) ** 2).mean()


def _clip_absolute(v, old, t, eps):
    return 0.5 * torch.max((v - t) ** 2, (torch.clamp(v, -eps, eps) - t) ** 2).mean()


def _clip_around_targets(v, old, t, eps):
    clipped = t + torch.clamp(v - t, -eps, eps)
    return 0.5 * torch.max((v - t) ** 2, (clipped - t) ** 2).mean()


def _max_of_means(v, old, t, eps):
    clipped = old + torch.clamp(v - old, -eps, eps)
    return 0.5 * torch.max(((v - t) ** 2).mean(), ((clipped - t) ** 2).mean())


def _one_sided(v, old, t, eps):
    clipped = old + torch.clamp(v - old, max=eps)
    return 0.5 * torch.max((v - t) ** 2, (clipped - t) ** 2).mean()


def _clipped_detached(v, old, t, eps):
    clipped = (old + torch.clamp(v - old, -eps, eps)).detach()
    return 0.5 * torch.max((v - t) ** 2, (clipped - t) ** 2).mean()


check_clipped_value_loss = Exercise(
    "clipped_value_loss",
    reference=losses.clipped_value_loss,
    reference_name="ppo_lib.losses.clipped_value_loss",
    run=_run_value_loss,
    cases=[
        Case(([1.0], [0.9], [1.5], 0.2), "values=[1.0], old_values=[0.9], targets=[1.5], eps=0.2 (inside the range)"),
        Case(([0.0], [1.0], [1.0], 0.2), "values=[0.0], old_values=[1.0], targets=[1.0], eps=0.2 "
                                           "(moved away from the target: the plain error is the larger)"),
        Case(([2.0], [1.0], [3.0], 0.2), "values=[2.0], old_values=[1.0], targets=[3.0], eps=0.2 "
                                           "(moved 1.0 towards the target: the clipped error is larger)"),
        Case(([0.5, 2.0, 1.3, -0.4], [0.7, 1.5, 1.0, 0.1], [0.0, 1.0, 2.0, -1.0], 0.1),
             "four samples, eps=0.1: values=[0.5, 2, 1.3, -0.4], old_values=[0.7, 1.5, 1, 0.1], "
             "targets=[0, 1, 2, -1] (all moved beyond the range; the clipped error wins in some, "
             "the plain one in others)"),
        Case(([1.2, -0.3, 0.8], [0.5, 0.0, 1.0], [2.0, 1.0, 0.0], 0.5),
             "three samples, eps=0.5: values=[1.2, -0.3, 0.8], old_values=[0.5, 0, 1], targets=[2, 1, 0]"),
        Case(([3.0, -2.0], [2.0, -1.0], [2.5, -3.0], 0.3),
             "eps=0.3: values=[3, -2], old_values=[2, -1], targets=[2.5, -3] (one moved up, one down)"),
    ],
    mistakes=[
        Mistake("no effective clipping", _clip_around_targets,
                "your loss equals the plain squared error: clip the *prediction* around the old values, "
                "old_values + clamp(values - old_values, -eps, eps), and take the max of the two errors."),
        Mistake("min", _clip_min, "take the max of the two squared errors (pessimistic, like L_CLIP's min), not the min."),
        Mistake("absolute clip", _clip_absolute,
                "clip the *change* from the old prediction: old_values + clamp(values - old_values, -eps, eps)."),
        Mistake("no half", lambda v, o, t, eps: 2 * losses.clipped_value_loss(v, o, t, eps),
                "the loss is 0.5 * max(...), averaged over the batch."),
        Mistake("max of the means", _max_of_means,
                "take the max per sample, then the mean: max(mean(a), mean(b)) is not mean(max(a, b))."),
        Mistake("one side clipped", _one_sided,
                "clip the change to [-eps, +eps], both sides: clamp(values - old_values, -eps, eps)."),
        Mistake("eps fixed at 0.2", lambda v, o, t, eps: losses.clipped_value_loss(v, o, t, 0.2),
                "use the eps you are given, not a fixed 0.2."),
        Mistake("clipped value detached", _clipped_detached,
                "the clipped prediction must stay in the graph: where its error is the larger, the gradient "
                "w.r.t. values comes through it."),
    ],
)
