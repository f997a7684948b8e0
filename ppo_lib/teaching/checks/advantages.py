"""Exercises on returns, TD errors and advantages (chapters 1-3).

Inputs are NumPy arrays of shape (T,) or (T, N) with time on axis 0; flags at
index t say what happened after action a_t.
"""

from __future__ import annotations

import numpy as np

from ppo_lib import advantages as adv
from ppo_lib.teaching.checks.core import Case, Exercise, Mistake, compare

A = np.array
F = lambda *x: np.array(x, dtype=np.float64)  # noqa: E731
B = lambda *x: np.array(x, dtype=bool)  # noqa: E731


def _backward(x, cut, decay):
    """out[t] = x[t] + decay * (1 - cut[t]) * out[t+1] (the shape of every backward sum here)."""
    x = np.asarray(x, float)
    out, running = np.zeros_like(x), np.zeros_like(x[0])
    for t in reversed(range(len(x))):
        running = x[t] + decay * (1 - np.asarray(cut[t], float)) * running
        out[t] = running
    return out


# ---------------------------------------------------------------- reward-to-go

def _rtg_forward(r, d, g):
    r = np.asarray(r, float)
    return np.cumsum(r * g ** np.arange(len(r)).reshape((-1,) + (1,) * (r.ndim - 1)), axis=0)


def _rtg_whole_episode(r, d, g):
    G = _backward(r, d, g)
    out, start = np.zeros_like(G), 0
    d = np.asarray(d)
    if G.ndim != 1:
        return G * 0
    for t in range(len(G)):
        if d[t] or t == len(G) - 1:
            out[start:t + 1] = G[start]
            start = t + 1
    return out


def _rtg_late_cut(r, d, g):
    d = np.asarray(d, bool)
    shifted = np.concatenate([np.zeros_like(d[:1]), d[:-1]])
    return _backward(r, shifted, g)


_RTG_OFF_BY_ONE = "G_t must include the reward r_t of step t itself: G_t = r_t + gamma * G_{t+1}."
check_reward_to_go = Exercise(
    "reward_to_go",
    reference=lambda r, d, g: adv.reward_to_go(r, d, g).numpy(),
    reference_name="ppo_lib.advantages.reward_to_go",
    cases=[
        Case((F(1, 1, 1), B(0, 0, 0), 0.5), "rewards=[1, 1, 1], dones=[F, F, F], gamma=0.5"),
        Case((F(1, 2, 3, 4), B(0, 1, 0, 0), 0.9),
             "rewards=[1, 2, 3, 4], dones=[F, T, F, F], gamma=0.9 (an episode ends after t=1)"),
        Case((F(0, 0, 1, 0, 2), B(0, 0, 1, 0, 1), 1.0), "rewards=[0, 0, 1, 0, 2], dones=[F, F, T, F, T], gamma=1.0"),
        Case((A([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]), A([[False, True], [False, False], [True, False]]), 0.5),
             "rewards of shape (T=3, N=2), column i = environment i: [[1, 0], [1, 1], [1, 0]], "
             "dones=[[F, T], [F, F], [T, F]], gamma=0.5"),
        Case((F(2, -1, 3, 1), B(0, 0, 1, 1), 0.8),
             "rewards=[2, -1, 3, 1], dones=[F, F, T, T], gamma=0.8 (an episode also ends on the last row)"),
        Case((A([[1.0, 2.0], [0.5, -1.0], [2.0, 1.0], [-1.0, 3.0]]),
              A([[False, False], [True, False], [False, True], [True, False]]), 0.9),
             "rewards of shape (T=4, N=2), dones=[[F, F], [T, F], [F, T], [T, F]], gamma=0.9 "
             "(env 0 ends on the last row, env 1 does not)"),
    ],
    mistakes=[
        Mistake("no done mask", lambda r, d, g: _backward(r, np.zeros_like(d), g),
                "rewards leak across episodes: where dones[t] is True the episode ended, so G_t = r_t "
                "and nothing after t may be added (multiply the future by 1 - dones[t])."),
        Mistake("off by one", lambda r, d, g: _backward(r, d, g) - np.asarray(r, float), _RTG_OFF_BY_ONE),
        Mistake("off by one (undiscounted)", lambda r, d, g: (_backward(r, d, g) - np.asarray(r, float)) / g
                if g else np.zeros_like(np.asarray(r, float)), _RTG_OFF_BY_ONE),
        Mistake("forward", _rtg_forward,
                "you summed the past (rewards up to t); the reward-to-go sums the future, from t to the end."),
        Mistake("undiscounted", lambda r, d, g: _backward(r, d, 1.0),
                "the future is not discounted: G_t = r_t + gamma * G_{t+1}."),
        Mistake("whole episode", _rtg_whole_episode,
                "every step got the return of its whole episode; step t should only count rewards from t on."),
        Mistake("late cut", _rtg_late_cut,
                "the episode boundary is applied one step late: dones[t] cuts the sum right after r_t."),
    ],
)

# ---------------------------------------------------------------- TD errors

_TD_SHIFTED = ("use next_values[t], not values[t+1]: next_values already holds the right value after "
               "each step (0 after a termination, V(final obs) after a truncation).")
check_td_errors = Exercise(
    "td_errors",
    reference=lambda r, v, nv, g: adv.td_errors(r, v, nv, g).numpy(),
    reference_name="ppo_lib.advantages.td_errors",
    cases=[
        Case((F(1.0), F(0.5), F(2.0), 0.9), "rewards=[1], values=[0.5], next_values=[2], gamma=0.9"),
        Case((F(1, 0, 2), F(1, 2, 3), F(2, 3, 0), 0.5),
             "rewards=[1, 0, 2], values=[1, 2, 3], next_values=[2, 3, 0], gamma=0.5"),
        Case((A([[1.0, -1.0], [0.0, 2.0]]), A([[0.5, 1.0], [1.5, 0.0]]), A([[1.5, 0.0], [0.0, 2.0]]), 0.99),
             "arrays of shape (T=2, N=2), gamma=0.99"),
        Case((F(0.5, 1.0, -1.0, 2.0), F(1.0, 2.0, 0.5, 1.5), F(2.5, 0.0, 4.0, 3.0), 0.9),
             "rewards=[0.5, 1, -1, 2], values=[1, 2, 0.5, 1.5], next_values=[2.5, 0, 4, 3] (a termination "
             "after t=1, a truncation after t=2: next_values is not values shifted by one), gamma=0.9"),
        Case((A([[1.0, 0.5], [2.0, -1.0], [0.0, 1.0]]), A([[0.3, 0.2], [1.0, 0.7], [0.4, 0.9]]),
              A([[0.0, 0.7], [0.4, 5.0], [1.5, 2.0]]), 1.0),
             "arrays of shape (T=3, N=2) with an episode end in each env, gamma=1.0"),
    ],
    mistakes=[
        Mistake("sign", lambda r, v, nv, g: -(np.asarray(r) + g * np.asarray(nv) - np.asarray(v)),
                "the sign is flipped: delta_t = r_t + gamma * V_next - V(s_t), positive when things went "
                "better than expected."),
        Mistake("no gamma", lambda r, v, nv, g: np.asarray(r) + np.asarray(nv) - np.asarray(v),
                "the next value must be discounted by gamma."),
        Mistake("shifted values", lambda r, v, nv, g: np.asarray(r) + g * np.concatenate(
            [np.asarray(v)[1:], np.zeros_like(np.asarray(v)[:1])]) - np.asarray(v),
                _TD_SHIFTED),
        Mistake("shifted values (wrapped)", lambda r, v, nv, g: np.asarray(r) + g * np.roll(
            np.asarray(v), -1, axis=0) - np.asarray(v), _TD_SHIFTED),
        Mistake("no baseline", lambda r, v, nv, g: np.asarray(r) + g * np.asarray(nv),
                "subtract V(s_t): the TD error compares what happened with what the critic expected."),
    ],
)

# ---------------------------------------------------------------- bootstrap values


def _bv(values, last_value, terminated, truncated, final_values, use_term=True, use_trunc=True,
        trunc_value=None, shift=1, use_last=True):
    v = np.asarray(values, float)
    if shift:
        last = np.asarray(last_value, float) if use_last else np.zeros_like(v[0])
        nxt = np.concatenate([v[1:], last.reshape((1,) + v.shape[1:])])
    else:
        nxt = v.copy()
    if use_trunc:
        nxt = np.where(truncated, final_values if trunc_value is None else trunc_value, nxt)
    if use_term:
        nxt = np.where(terminated, 0.0, nxt)
    return nxt


_BV_CASE = (F(1.0, 2.0, 3.0, 4.0, 5.0), np.float64(6.0), B(0, 1, 0, 0, 0), B(0, 0, 0, 1, 0),
            F(0.0, 0.0, 0.0, 9.0, 0.0))
check_bootstrap_values = Exercise(
    "bootstrap_values",
    reference=lambda *a: adv.bootstrap_values(*a).numpy(),
    reference_name="ppo_lib.advantages.bootstrap_values",
    cases=[
        Case((F(1.0, 2.0), np.float64(3.0), B(0, 0), B(0, 0), F(0, 0)),
             "values=[1, 2], last_value=3, no episode ends"),
        Case(_BV_CASE, "values=[1, 2, 3, 4, 5], last_value=6, terminated at t=1, truncated at t=3, "
                       "final_values=[0, 0, 0, 9, 0]"),
        Case((A([[1.0, 10.0], [2.0, 20.0]]), F(3.0, 30.0), A([[False, True], [False, False]]),
              A([[False, False], [True, False]]), A([[0.0, 0.0], [7.0, 0.0]])),
             "two envs (shape (T=2, N=2)): env 1 terminates at t=0, env 0 is truncated at t=1 "
             "with final value 7; last_value=[3, 30]"),
        Case((F(1.0, 2.0), np.float64(3.0), B(1, 0), B(1, 0), F(5.0, 0.0)),
             "terminated AND truncated at t=0 (the pole fell on the last allowed step), final_values=[5, 0]: "
             "a real end wins, the next value is 0"),
        Case((F(1.0, 2.0, 3.0), np.float64(6.0), B(0, 0, 0), B(0, 0, 1), F(0.0, 0.0, 8.0)),
             "values=[1, 2, 3], last_value=6, truncated on the LAST row with final_values[2]=8: "
             "bootstrap from 8, not from last_value"),
        Case((A([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]), F(7.0, 9.0), A([[False, False], [True, False], [False, True]]),
              A([[True, False], [False, False], [False, False]]), A([[2.5, 0.0], [1.5, 0.0], [0.0, 4.0]])),
             "shape (T=3, N=2), last_value=[7, 9]: env 0 truncated at t=0 (final value 2.5) and terminated at t=1; "
             "env 1 terminated on the last row; final_values=[[2.5, 0], [1.5, 0], [0, 4]] (only a truncation "
             "reads it: after a termination the next value is 0 whatever final_values holds)"),
    ],
    mistakes=[
        Mistake("truncation wins", lambda v, lv, te, tr, fv: np.where(
            np.asarray(tr), fv, _bv(v, lv, te, np.zeros_like(tr), fv)),
                "when a step is both terminated and truncated, the episode really ended: termination wins "
                "and the next value is 0."),
        Mistake("bootstraps through termination", lambda *a: _bv(*a, use_term=False),
                "after a termination (terminated[t] = True) nothing follows: the next value must be 0, "
                "but yours bootstraps from a later value."),
        Mistake("truncation as termination", lambda *a: _bv(*a, trunc_value=0.0),
                "a truncation is not an end: the time limit cut the episode, so bootstrap from "
                "final_values[t] (V of the true final observation), not 0."),
        Mistake("reset obs after truncation", lambda *a: _bv(*a, use_trunc=False),
                "after a truncation, values[t+1] is the value of the *next* episode's first observation; "
                "use final_values[t] instead."),
        Mistake("off by one", lambda *a: _bv(*a, shift=0),
                "the next value of step t is V(s_{t+1}) = values[t+1], not values[t]."),
        Mistake("no last value", lambda *a: _bv(*a, use_last=False),
                "the last step of the batch bootstraps from last_value (the observation after the batch)."),
    ],
)

# ---------------------------------------------------------------- GAE


def _gae(r, v, nv, d, g, lam, cut=True, forward=False):
    delta = np.asarray(r, float) + g * np.asarray(nv, float) - np.asarray(v, float)
    cuts = np.asarray(d, bool) if cut else np.zeros_like(np.asarray(d, bool))
    if forward:
        out, running = np.zeros_like(delta), np.zeros_like(delta[0])
        for t in range(len(delta)):
            running = delta[t] + g * lam * running
            out[t] = running
        return out
    return _backward(delta, cuts, g * lam)


def _gae_wrong_axis(r, v, nv, d, g, lam):
    r = np.asarray(r, float)
    if r.ndim != 2:
        return _gae(r, v, nv, d, g, lam)
    return _gae(r.T, np.asarray(v).T, np.asarray(nv).T, np.asarray(d).T, g, lam).T


_GAE_2D = (A([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), A([[0.5, 0.2], [0.1, 0.4], [0.3, 0.3], [0.2, 0.1]]),
           A([[0.1, 0.4], [0.3, 0.0], [0.2, 0.1], [0.6, 0.5]]),
           A([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]), 0.9, 0.8)
# chapter 3 passes done flags as floats (batch.dones.double().numpy()); chapter 1's flags are bool: both occur
check_gae = Exercise(
    "gae",
    reference=lambda *a: adv.gae(*a).numpy(),
    reference_name="ppo_lib.advantages.gae",
    cases=[
        Case((F(1.0), F(0.5), F(2.0), B(0), 0.9, 0.8), "one step: rewards=[1], values=[0.5], next_values=[2]"),
        Case((F(1, 1, 1), F(0, 0, 0), F(0, 0, 0), F(0, 0, 0), 0.5, 0.8),
             "rewards=[1, 1, 1], values and next_values all 0, dones=[0., 0., 0.] (floats), gamma=0.5, lam=0.8"),
        Case((F(1, 2, 3, 4), F(1, 1, 1, 1), F(1, 0, 1, 1), B(0, 1, 0, 0), 0.9, 0.95),
             "rewards=[1, 2, 3, 4], values=[1, 1, 1, 1], next_values=[1, 0, 1, 1], dones=[F, T, F, F] (bool), "
             "gamma=0.9, lam=0.95"),
        Case(_GAE_2D, "arrays of shape (T=4, N=2) (time on axis 0), dones as floats: env 1 done after t=1, "
                      "env 0 done on the last row; gamma=0.9, lam=0.8"),
        Case((F(1, 1, 1), F(0.5, 0.5, 0.5), F(0.5, 2.0, 0.5), F(0, 1, 0), 0.9, 0.9),
             "a truncation after t=1: dones=[0., 1., 0.] but next_values[1] = 2.0 (V of the true final obs) "
             "must still be used in delta_1"),
        Case((F(0.5, -1.0, 2.0, 1.0), F(0.2, 0.4, -0.3, 0.8), F(0.4, -0.3, 0.8, 1.1), F(0, 0, 1, 1), 0.99, 1.0),
             "lam=1 (Monte-Carlo), gamma=0.99, dones=[0., 0., 1., 1.] (floats; an episode ends on the last row)"),
        Case((F(0.5, -1.0, 2.0), F(0.2, 0.4, -0.3), F(0.4, 0.0, 0.8), F(0, 1, 0), 0.7, 0.0),
             "lam=0 (one-step TD errors), gamma=0.7, dones=[0., 1., 0.]"),
    ],
    mistakes=[
        Mistake("trace not cut", lambda *a: _gae(*a, cut=False),
                "the sum runs across the end of an episode: where dones[t] is True, A_t = delta_t "
                "(multiply the carried sum by 1 - dones[t])."),
        Mistake("no lambda", lambda r, v, nv, d, g, lam: _gae(r, v, nv, d, g, 1.0),
                "lambda is missing: the carried sum decays by gamma * lam per step."),
        Mistake("no gamma", lambda r, v, nv, d, g, lam: _backward(
            np.asarray(r) + g * np.asarray(nv) - np.asarray(v), d, lam),
                "the carried sum decays by gamma * lam per step, not by lam alone."),
        Mistake("forward", lambda *a: _gae(*a, forward=True),
                "the sum runs forwards: A_t adds the TD errors of the steps *after* t, so loop backwards "
                "from t = T-1."),
        Mistake("returns", lambda r, v, nv, d, g, lam: _gae(r, v, nv, d, g, lam) + np.asarray(v),
                "you returned A_t + V(s_t) (the value target); return the advantage A_t itself."),
        Mistake("td only", lambda r, v, nv, d, g, lam: _gae(r, v, nv, d, g, 0.0),
                "that is only the TD error delta_t (lam = 0); add the discounted later TD errors."),
        Mistake("bootstrap masked by dones", lambda r, v, nv, d, g, lam: _gae(
            r, v, np.asarray(nv, float) * (1 - np.asarray(d, float)), d, g, lam),
                "dones only cut the *sum* of later TD errors; the bootstrap inside delta_t comes from "
                "next_values, which is already 0 after a termination and V(final obs) after a truncation: "
                "do not multiply it by (1 - dones)."),
        Mistake("wrong axis", _gae_wrong_axis,
                "time runs along axis 0 (rows) and environments along axis 1: loop over rows."),
    ],
)

# ---------------------------------------------------------------- normalisation


def _normalized_ok(expected, got) -> str | None:
    """Accept either the sample (ddof=1) or the population (ddof=0) std."""
    first = compare(expected, got, rtol=1e-4, atol=1e-5)
    if first is None:
        return None
    x = np.asarray(expected, float)
    if x.size > 1:
        # expected used ddof=1; the ddof=0 answer is larger by sqrt(n / (n - 1))
        alt = x * np.sqrt(x.size / (x.size - 1))
        if compare(alt, got, rtol=1e-4, atol=1e-5) is None:
            return None
    return first


def _no_eps(a, ddof):
    a = np.asarray(a, float)
    if a.size < 2:
        return a - a.mean()
    return (a - a.mean()) / a.std(ddof=ddof)


def _reference_normalize(a):
    import torch

    from ppo_lib.losses import normalize
    return normalize(torch.as_tensor(np.asarray(a, float))).numpy()


check_normalize_advantages = Exercise(
    "normalize_advantages",
    reference=_reference_normalize,
    reference_name="ppo_lib.losses.normalize",
    compare=_normalized_ok,
    cases=[
        Case((F(1.0, 2.0, 4.0),), "advantages=[1, 2, 4]"),
        Case((F(3.0, -1.0),), "advantages=[3, -1] (two elements)"),
        Case((F(0.5, 7.0, -2.0, 0.1, 3.5),), "advantages=[0.5, 7, -2, 0.1, 3.5]"),
        Case((F(-4.0, 0.0, 0.0, 8.0),), "advantages=[-4, 0, 0, 8]"),
        Case((F(2.5),), "a minibatch of one: advantages=[2.5] (its std is undefined)"),
        Case((F(1.5, 1.5, 1.5, 1.5),), "a constant minibatch: advantages=[1.5, 1.5, 1.5, 1.5] (std 0: the result is "
                                       "zeros, not nan)"),
        Case((F(*np.round(np.random.default_rng(3).normal(0.4, 2.0, 24), 3)),),
             "24 advantages drawn at random (sizes beyond the small cases)"),
    ],
    mistakes=[m for ddof in (1, 0) for m in (
        Mistake("not centred", lambda a, ddof=ddof: np.asarray(a, float) / (np.asarray(a, float).std(ddof=ddof) + 1e-8)
                if len(a) > 1 else np.asarray(a, float),
                "subtract the mean first: normalised advantages have mean 0."),
        Mistake("variance", lambda a, ddof=ddof: (np.asarray(a, float) - np.mean(a)) / (np.var(a, ddof=ddof) + 1e-8)
                if len(a) > 1 else np.zeros(1),
                "divide by the standard deviation, not the variance."),
        Mistake("constant minibatch", lambda a, ddof=ddof: _no_eps(a, ddof),
                "when every advantage is the same the std is 0, and 0 / 0 is nan: add a small eps to the std "
                "(the library: std + 1e-8), so a constant minibatch gives zeros."),
        Mistake("one element", lambda a, ddof=ddof: (np.asarray(a, float) - np.mean(a)) / np.std(a, ddof=ddof),
                "with one element the std is 0 (or undefined): return the centred value 0 instead of dividing."),
    )],  # each with the sample and the population std: the text accepts either
)
