"""Probe environments: tiny tasks whose right answer is known in closed form.

Each probe isolates one part of an agent, so that a broken value loss, a broken
bootstrap or a policy loss with the wrong sign shows up in seconds instead of
after an hour of mysteriously bad learning curves (the idea is Andy Jones's
"debugging RL" probes, and a standard item of the RL debugging checklists):

======================  =====================================  ==============================
probe                   the task                               what a working agent learns
======================  =====================================  ==============================
``constant_reward``     one step, observation 0, reward +1     V(0) = 1 (the value loss works)
``obs_reward``          one step, observation +-1, reward = it  V(+-1) = +-1 (the critic reads s)
``two_step``            observation 0 then 1, reward 1 at end   V(0) = gamma, V(1) = 1 (bootstrap)
``action_reward``       one step, reward 1 for action 1 only    pi(1 | 0) -> 1 (the policy loss)
``obs_action_reward``   observation +-1, reward 1 if the        pi(matching action | s) -> 1
                        action matches its sign                 (the policy reads s)
======================  =====================================  ==============================

``run_probe(name, make_algo)`` trains an algorithm on a probe and returns what it
learned next to what it should have; ``probe_passes`` says whether it is close.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

PROBES = ("constant_reward", "obs_reward", "two_step", "action_reward", "obs_action_reward")


def make_probe(name: str):
    """A Gymnasium env for probe ``name`` (observation: 1 float; actions: 2)."""
    import gymnasium as gym

    if name not in PROBES:
        raise ValueError(f"probe {name!r}: expected one of {PROBES}")

    class Probe(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            self.obs = 0.0
            if name in ("obs_reward", "obs_action_reward"):
                self.obs = float(self.np_random.choice([-1.0, 1.0]))
            return np.array([self.obs], dtype=np.float32), {}

        def step(self, action):
            action = int(action)
            if name == "constant_reward":
                reward, done = 1.0, True
            elif name == "obs_reward":
                reward, done = self.obs, True
            elif name == "two_step":
                if self.t == 0:
                    self.t, self.obs = 1, 1.0
                    return np.array([1.0], dtype=np.float32), 0.0, False, False, {}
                reward, done = 1.0, True
            elif name == "action_reward":
                reward, done = float(action == 1), True
            else:  # obs_action_reward
                reward, done = float((action == 1) == (self.obs > 0)), True
            return np.array([self.obs], dtype=np.float32), reward, done, False, {}

    Probe.__name__ = f"Probe_{name}"
    return Probe()


@dataclasses.dataclass
class ProbeResult:
    name: str
    learned: dict   # what the agent predicts, e.g. {"V(0)": 0.98}
    expected: dict  # the closed-form answer
    tolerance: float

    @property
    def passed(self) -> bool:
        return all(abs(self.learned[k] - v) <= self.tolerance for k, v in self.expected.items())

    def __str__(self) -> str:
        got = ", ".join(f"{k} = {self.learned[k]:+.3f} (want {v:+.3f})" for k, v in self.expected.items())
        return f"{'PASS' if self.passed else 'FAIL'} {self.name:18s} {got}"


def run_probe(name: str, make_algo: Callable, steps: int = 3_000, seed: int = 0, gamma: float = 0.9,
              tolerance: float = 0.15) -> ProbeResult:
    """Train ``make_algo(observation_space, action_space)`` on probe ``name`` and read off
    what it learned. ``gamma`` must be the one the algorithm uses (for ``two_step``)."""
    from ppo_lib.train import train

    env = make_probe(name)
    algo = make_algo(env.observation_space, env.action_space)
    train(algo, lambda: make_probe(name), steps, seed=seed, progress=False)
    policy = algo.policy
    obs = {"0": [0.0], "+1": [1.0], "-1": [-1.0], "1": [1.0]}
    with torch.no_grad():
        def V(key):
            return float(policy.value(torch.tensor([obs[key]], dtype=torch.float32))[0])

        def P1(key):
            dist = policy.actor.distribution(torch.tensor([obs[key]], dtype=torch.float32))
            return float(dist.probs[0, 1])

        if name == "constant_reward":
            learned, expected = {"V(0)": V("0")}, {"V(0)": 1.0}
        elif name == "obs_reward":
            learned, expected = {"V(+1)": V("+1"), "V(-1)": V("-1")}, {"V(+1)": 1.0, "V(-1)": -1.0}
        elif name == "two_step":
            learned, expected = {"V(0)": V("0"), "V(1)": V("1")}, {"V(0)": gamma, "V(1)": 1.0}
        elif name == "action_reward":
            learned, expected = {"pi(1|0)": P1("0")}, {"pi(1|0)": 1.0}
        else:
            learned = {"pi(1|+1)": P1("+1"), "pi(0|-1)": 1.0 - P1("-1")}
            expected = {"pi(1|+1)": 1.0, "pi(0|-1)": 1.0}
    return ProbeResult(name, learned, expected, tolerance)
