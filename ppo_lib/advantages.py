"""Returns and advantages: discounted returns, reward-to-go, TD errors, GAE.

Chapter 0 starts with the discounted return of one episode.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def discounted_return(rewards: Sequence[float], gamma: float) -> float:
    r"""The discounted return of a reward sequence,
    :math:`G_0 = \sum_{t=0}^{T-1} \gamma^t r_t` (0 for an empty sequence).

    ``rewards``: shape ``(T,)``; ``gamma`` in ``[0, 1]``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma}: must be in [0, 1]")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards: expected a 1-D sequence, got shape {r.shape}")
    return float(np.sum(r * gamma ** np.arange(len(r))))


def discount_weights(gamma: float, horizon: int) -> np.ndarray:
    r"""The weights :math:`\gamma^t` for ``t = 0 .. horizon-1``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma}: must be in [0, 1]")
    if horizon < 0:
        raise ValueError(f"horizon={horizon}: must be >= 0")
    return gamma ** np.arange(horizon, dtype=np.float64)
