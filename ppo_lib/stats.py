"""Statistics over a handful of seeded runs (chapter 7, Agarwal et al. 2021): the
interquartile mean and percentile-bootstrap intervals. One copy for the chapters and the
benchmarks; chapter 7 derives both and a cell proves it agrees with these."""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_ci(values, statistic: Callable = np.mean, n_resamples: int = 10_000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the runs in ``values``: resample the
    runs with replacement ``n_resamples`` times (seeded), take the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the resampled statistic."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values: expected a non-empty 1-d list of finite numbers, got {np.asarray(values)!r}")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1)")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    stats = x[idx].mean(axis=1) if statistic is np.mean else np.array([statistic(x[i]) for i in idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def iqm(values) -> float:
    """Interquartile mean: drop the lowest and the highest quarter of the runs, average the rest."""
    x = np.sort(np.asarray(values, dtype=float))
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"values: expected a non-empty 1-d list of numbers, got {np.asarray(values)!r}")
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())
