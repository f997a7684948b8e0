"""ppo_lib.stats: the interquartile mean and the bootstrap interval, by hand."""

import numpy as np
import pytest

from ppo_lib import stats


def test_iqm_drops_the_outer_quarters():
    assert stats.iqm([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0]) == pytest.approx(3.5)  # mean of 2..5


def test_bootstrap_of_equal_runs_is_a_point_and_brackets_the_mean():
    assert stats.bootstrap_ci([3.0] * 5) == (3.0, 3.0)
    x = [0.0, 10.0, 20.0, 30.0, 40.0]
    lo, hi = stats.bootstrap_ci(x)
    assert lo < np.mean(x) < hi and 0.0 <= lo and hi <= 40.0
    assert stats.bootstrap_ci(x) == (lo, hi)  # seeded: the same interval again


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-empty 1-d"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"level=1.5: must be in \(0, 1\)"):
        stats.bootstrap_ci([1.0, 2.0], level=1.5)
