"""A bug hunt for chapter 7: PPO with one known implementation bug.

``BuggyPPO(obs_space, act_space, config, bug=...)`` is the library's PPO whose
one update (:func:`ppo_lib.algos.ppo.ppo_update`, also chapter 5's capstone reference)
runs with one bug switched in, as a parameter. ``MYSTERY`` is the bug of the mystery run the
learner diagnoses from its curves; it is stored encoded so that the answer is
not in plain sight (decode it only to check yourself). ``check_bug_guess(guess)``
answers like an exercise checker: right, or why the evidence does not fit.
"""

from __future__ import annotations

import base64
import copy

from ppo_lib.algos.ppo import PPO, UpdateHooks, ppo_update
from ppo_lib.teaching.checks.core import GuessCheck

BUGS = {
    "none": "no bug: the healthy update",
    "entropy sign": "the entropy bonus is added to the loss instead of subtracted (it punishes exploration)",
    "advantages not normalised": "the per-minibatch advantage normalisation is missing",
    "truncation as termination": "a time limit is treated as a termination: no bootstrap at truncations",
    "value loss x100": "the value loss is multiplied by 100: it dominates the clipped global gradient norm",
    "early stop on the wrong KL": "early stopping reads the k1 KL with its sign flipped, which is almost "
                                  "always negative, so it never stops",
    "policy loss sign": "the clipped objective is minimised instead of maximised",
}

#: The mystery run's bug, base64-encoded (no peeking: read the curves instead).
MYSTERY = base64.b64decode(b"ZWFybHkgc3RvcCBvbiB0aGUgd3JvbmcgS0w=").decode()

#: Why a wrong guess does not fit the mystery run's evidence.
_WHY_NOT = {
    "none": "the mystery run never stops its epochs early although target_kl is set, while the healthy run "
            "with the same settings stops early in some updates. Something is wrong.",
    "entropy sign": "read the configuration before the curves: the hunt's entropy_coef is 0, so the entropy "
                    "term is multiplied by 0 and its sign changes nothing. This bug could not have left a "
                    "trace in this run.",
    "advantages not normalised": "unnormalised advantages would change the *size* of every step, but the "
                                 "target KL should still stop the epochs: count the epochs per update.",
    "truncation as termination": "CartPole's time limit would only matter near 500 steps, and it would show "
                                 "in the critic (explained variance), not in the KL and the epoch count.",
    "value loss x100": "a dominating value loss would make the policy's steps *smaller* (lower KL, lower "
                       "clip fraction), so the target KL would stop the epochs *more* often; the mystery run "
                       "never stops them.",
    "policy loss sign": "a minimised objective would drive the return *below* the random policy's; the "
                        "mystery run learns.",
}


class _BugHooks(UpdateHooks):
    """The bugs that are not a setting of the config, switched into the library's one update."""

    def __init__(self, bug: str):
        self.bug = bug

    def objective(self, objective):
        return -objective if self.bug == "policy loss sign" else objective

    def entropy_bonus(self, bonus):
        return -bonus if self.bug == "entropy sign" else bonus

    def early_stop_kl(self, k1, k3):
        return -k1 if self.bug == "early stop on the wrong KL" else k3


def _buggy_config(config, bug: str):
    """The bugs that are a setting: the same config with that setting wrong (not re-validated)."""
    changes = {"advantages not normalised": {"normalize_advantages": False},
               "truncation as termination": {"bootstrap_truncation": False},
               "value loss x100": {"value_coef": config.value_coef * 100.0}}.get(bug)
    if not changes:
        return config
    buggy = copy.copy(config)
    for field, value in changes.items():
        object.__setattr__(buggy, field, value)
    return buggy


def ppo_update_with_bug(policy, optimizer, rollout, config, generator, bug: str = "none") -> dict:
    """The library's PPO update (:func:`ppo_lib.algos.ppo.ppo_update`) with ``bug`` (a key of
    ``BUGS``) switched in: a wrong setting, or a hook at the line the bug changes."""
    if bug not in BUGS:
        raise ValueError(f"bug {bug!r}: expected one of {list(BUGS)}")
    return ppo_update(policy, optimizer, rollout, _buggy_config(config, bug), generator, hooks=_BugHooks(bug))


class BuggyPPO(PPO):
    """PPO whose update is :func:`ppo_update_with_bug` with a fixed ``bug``."""

    def __init__(self, observation_space, action_space, config=None, seed: int = 0, bug: str = "none"):
        if bug not in BUGS:
            raise ValueError(f"bug {bug!r}: expected one of {list(BUGS)}")
        super().__init__(observation_space, action_space, config, seed)
        self.bug = bug

    def update(self, rollout):
        info = ppo_update_with_bug(self.policy, self.optimizer, rollout, self.config, self._generator, self.bug)
        self.n_updates += 1
        return info


def _check_bug_guess(guess) -> bool:
    """Say whether ``guess`` (a key of ``BUGS``) is the mystery run's bug, with the reason if not."""
    if guess is None or guess == "":
        print("○ bug hunt: no guess yet. Make `bug_guess()` return one of: " + ", ".join(repr(b) for b in BUGS))
        return False
    if guess not in BUGS:
        print(f"✗ bug hunt: {guess!r} is not one of the candidates: " + ", ".join(repr(b) for b in BUGS))
        return False
    if guess == MYSTERY:
        print(f"✓ bug hunt: right, {guess!r}: {BUGS[guess]}. The tell-tale panel: the epoch count always at "
              f"its maximum although target_kl is set, where the healthy run stops early in some updates.")
        return True
    print(f"✗ bug hunt: not {guess!r}: {_WHY_NOT[guess]}")
    return False


#: The bug hunt's checker (a guess, not a function): ``check_bug_guess(guess)`` prints the reply and
#: returns True when right; graded in isolation from the value of the learner's ``bug_guess()``.
check_bug_guess = GuessCheck(_check_bug_guess, guess_function="bug_guess", name="bug hunt")
