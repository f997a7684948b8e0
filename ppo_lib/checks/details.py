"""Exercises of chapter 7: a running mean/std, and the clipped value loss."""

from __future__ import annotations

import numpy as np
import torch

from ppo_lib import losses
from ppo_lib.checks.core import Case, Exercise, Mistake
from ppo_lib.normalization import RunningMeanStd


def _reference_running(mean, var, count, batch):
    rms = RunningMeanStd(np.shape(mean))
    rms.mean, rms.var, rms.count = np.array(mean, float), np.array(var, float), float(count)
    rms.update(batch)
    return rms.mean, rms.var, rms.count


def _run_running(fn, mean, var, count, batch):
    out = fn(np.array(mean, float), np.array(var, float), float(count), np.array(batch, float))
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return {"(mean, var, count)": out}
    m, v, c = out
    return {"mean": m, "var": v, "count": c}


def _naive_mean(mean, var, count, batch):
    return (mean + batch.mean(0)) / 2, (var + batch.var(0)) / 2, count + len(batch)


def _no_delta(mean, var, count, batch):
    n = len(batch)
    total = count + n
    return (mean * count + batch.mean(0) * n) / total, (var * count + batch.var(0) * n) / total, total


def _batch_only(mean, var, count, batch):
    return batch.mean(0), batch.var(0), count + len(batch)


check_running_mean_std = Exercise(
    "update_running_stats",
    reference=_reference_running,
    reference_name="ppo_lib.normalization.RunningMeanStd.update",
    run=_run_running,
    cases=[
        Case((0.0, 1.0, 1e-4, [[1.0], [3.0]]), "mean=0, var=1, count=0.0001 (nothing seen yet), batch=[[1], [3]]"),
        Case((2.0, 1.0, 2.0, [[4.0], [4.0]]), "mean=2, var=1, count=2, batch=[[4], [4]]: the means differ"),
        Case(([0.0, 10.0], [1.0, 4.0], 10.0, [[1.0, 8.0], [3.0, 12.0], [2.0, 10.0]]),
             "2-D observations: mean=[0, 10], var=[1, 4], count=10, a batch of 3"),
    ],
    mistakes=[
        Mistake("average of means", _naive_mean,
                "weight the old statistics by count and the batch by its size; a plain average of the two "
                "means ignores how much data each summarises."),
        Mistake("no delta term", _no_delta,
                "the variance also needs the spread *between* the two means: add "
                "delta**2 * count * n / (count + n), with delta = batch mean - old mean."),
        Mistake("batch only", _batch_only, "you replaced the running statistics by the batch's; combine them."),
    ],
)


def _run_value_loss(fn, values, old_values, targets, eps):
    v = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    out = fn(v, torch.tensor(old_values, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64), eps)
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
        Case(([0.5, 2.0, 1.2], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0], 0.2), "three samples, eps=0.2"),
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
    ],
)
