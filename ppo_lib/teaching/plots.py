"""Plots shared by the chapters: learning curves across seeds (mean and spread)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ppo_lib.train import History


def curve_on_grid(history: History, grid: np.ndarray, window: int = 20) -> np.ndarray:
    """The smoothed episode return at each env step of ``grid`` (NaN before the first episode)."""
    if not isinstance(history, History):
        raise TypeError(f"history: expected a History (e.g. `result.history`), got a {type(history).__name__}")
    y = history.smoothed_returns(window)
    x = np.asarray(history.episode_steps, dtype=float)
    if len(x) == 0:
        return np.full(len(grid), np.nan)
    out = np.interp(grid, x, y)
    out[grid < x[0]] = np.nan
    out[grid > max(x[-1], history.total_steps)] = np.nan
    return out


def learning_curves(ax, runs: Mapping[str, Sequence[History]], window: int = 20, points: int = 200,
                    threshold: float | None = None, title: str | None = None):
    """Mean (line) and min..max over seeds (band) of the smoothed return, per label."""
    from ppo_lib.config import check_number

    window = check_number("window", window, 1, integer=True)
    points = check_number("points", points, 2, integer=True)
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs: expected a dict {{label: [History, ...]}}, got a {type(runs).__name__}")
    for label, hs in runs.items():
        if isinstance(hs, History) or not all(isinstance(h, History) for h in hs) or not len(hs):
            raise TypeError(f"runs[{label!r}]: expected a non-empty list of History objects (one per seed)")
    end = max((h.total_steps for hs in runs.values() for h in hs), default=1)
    grid = np.linspace(0, end, points)
    for label, histories in runs.items():
        curves = np.array([curve_on_grid(h, grid, window) for h in histories])
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        (line,) = ax.plot(grid, mean, label=f"{label} ({len(histories)} seeds)")
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls=":", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"episode return (mean of last {window})")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return ax
