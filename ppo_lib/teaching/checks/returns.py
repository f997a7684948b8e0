"""Exercises on returns (chapter 0)."""

from __future__ import annotations

import numpy as np

from ppo_lib.advantages import discounted_return
from ppo_lib.teaching.checks.core import Case, Exercise, Mistake


def _powers(rewards, gamma, offset=0):
    r = np.asarray(rewards, dtype=np.float64)
    return r * gamma ** (np.arange(len(r)) + offset)


check_discounted_return = Exercise(
    "discounted_return",
    reference=discounted_return,
    reference_name="ppo_lib.advantages.discounted_return",
    cases=[
        Case(([1.0], 0.9), "rewards=[1.0], gamma=0.9 (one step: G = r_0)"),
        Case(([1.0, 0.0, 2.0], 0.5), "rewards=[1.0, 0.0, 2.0], gamma=0.5"),
        Case(([0.0, 0.0, 0.0, 1.0], 0.9), "rewards=[0, 0, 0, 1], gamma=0.9 (reward only at the last step)"),
        Case(([2.0, -1.0, 3.0], 0.0), "rewards=[2, -1, 3], gamma=0.0 (only the first reward counts)"),
        Case(([1.0] * 5, 1.0), "rewards=[1, 1, 1, 1, 1], gamma=1.0 (no discounting)"),
        Case(([], 0.9), "rewards=[] (an empty episode), gamma=0.9"),
        Case((np.array([0.5, 1.5, -2.0, 4.0]), 0.99), "rewards=np.array([0.5, 1.5, -2.0, 4.0]), gamma=0.99"),
        Case(([-1.0, 2.0, 0.5, 3.0, -2.0, 1.0], 0.7),
             "rewards=[-1, 2, 0.5, 3, -2, 1], gamma=0.7 (six steps, mixed signs: every weight matters)"),
        Case((np.array([2.0, 1.0]), 0.3), "rewards=np.array([2.0, 1.0]), gamma=0.3 (the last reward counts too)"),
    ],
    # a number must come back (the next cell formats it with f"{G:.4f}"): compare rejects an array of shape (1,)
    mistakes=[
        Mistake("undiscounted", lambda r, g: float(np.sum(r)),
                "that is the plain sum of the rewards: multiply each r_t by gamma**t before adding."),
        Mistake("off by one", lambda r, g: float(np.sum(_powers(r, g, 1))),
                "every reward is discounted one step too much: the first reward r_0 has weight gamma**0 = 1."),
        Mistake("reversed weights", lambda r, g: float(np.sum(np.asarray(r, float)[::-1] * g ** np.arange(len(r)))),
                "the weights run backwards: the last reward got weight 1; "
                "it is the first reward, r_0, that counts in full."),
        Mistake("not summed", lambda r, g: _powers(r, g),
                "you returned the discounted rewards gamma**t * r_t one by one: add them up into one number."),
        Mistake("gamma times t", lambda r, g: float(np.sum(np.asarray(r, float) * g * np.arange(len(r)))),
                "the weight of step t is gamma to the power t (gamma**t), not gamma * t."),
        Mistake("first reward only", lambda r, g: float(r[0]) if len(r) else 0.0,
                "you returned only the first reward r_0: the later rewards count too, weighted by gamma**t."),
        Mistake("mean", lambda r, g: float(np.mean(_powers(r, g))) if len(r) else 0.0,
                "you averaged the discounted rewards; the return is their sum."),
    ],
)
