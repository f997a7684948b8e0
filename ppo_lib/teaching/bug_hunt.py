"""A bug hunt for chapter 7: PPO with one known implementation bug.

``BuggyPPO(obs_space, act_space, config, bug=...)`` is the library's PPO whose
update is written out here (the same steps as ``PPO.update`` and as chapter 5's
capstone) with one bug switched in. ``MYSTERY`` is the bug of the mystery run the
learner diagnoses from its curves; it is stored encoded so that the answer is
not in plain sight (decode it only to check yourself). ``check_bug_guess(guess)``
answers like an exercise checker: right, or why the evidence does not fit.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos.ppo import PPO
from ppo_lib.losses import approx_kl, clipped_surrogate, normalize, value_loss

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
    "none": "the mystery run never stops its epochs early although target_kl is set, and its largest KL of "
            "an update is several times the healthy run's. Something is wrong.",
    "entropy sign": "read the configuration before the curves: the hunt's entropy_coef is 0, so the entropy "
                    "term is multiplied by 0 and its sign changes nothing. This bug could not have left a "
                    "trace in this run.",
    "advantages not normalised": "unnormalised advantages would change the *size* of every step, but the "
                                 "target KL should still stop the epochs: count the epochs per update.",
    "truncation as termination": "CartPole's time limit would only matter near 500 steps, and it would show "
                                 "in the critic (explained variance), not in the KL and the epoch count.",
    "value loss x100": "a dominating value loss would make the policy's steps *smaller* (lower KL, lower "
                       "clip fraction); the mystery run's largest steps are larger than the healthy run's.",
    "policy loss sign": "a minimised objective would drive the return *below* the random policy's; the "
                        "mystery run learns.",
}


def ppo_update_with_bug(policy, optimizer, rollout, config, generator, bug: str = "none") -> dict:
    """The PPO update, written out step by step, with ``bug`` (a key of ``BUGS``) switched in."""
    if bug not in BUGS:
        raise ValueError(f"bug {bug!r}: expected one of {list(BUGS)}")
    actor = policy.actor
    as_termination = (not config.bootstrap_truncation) or bug == "truncation as termination"
    advantages, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                             truncation_as_termination=as_termination)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, values_old = rollout.logprobs.flatten(), rollout.values.flatten()
    advantages, targets = advantages.flatten(), targets.flatten()
    B, M = obs.shape[0], config.minibatch_size
    clip_fractions, entropies, epochs_run = [], [], 0
    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        for start in range(0, B - M + 1, M):
            mb = perm[start:start + M]
            dist = actor.distribution(obs[mb])
            ratio = torch.exp(actor.log_prob(dist, actions[mb]) - logp_old[mb])
            normalise = config.normalize_advantages and bug != "advantages not normalised"
            adv = normalize(advantages[mb]) if normalise else advantages[mb]
            objective = clipped_surrogate(ratio, adv, config.clip_eps)
            if bug == "policy loss sign":
                objective = -objective
            v_coef = config.value_coef * (100.0 if bug == "value loss x100" else 1.0)
            entropy = actor.entropy(dist).mean()
            e_term = config.entropy_coef * entropy * (-1.0 if bug == "entropy sign" else 1.0)
            loss = -objective + v_coef * value_loss(policy.value(obs[mb]), targets[mb]) - e_term
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm or float("inf"))
            optimizer.step()
            clip_fractions.append(((ratio - 1).abs() > config.clip_eps).float().mean().item())
            entropies.append(entropy.item())
        epochs_run += 1
        if config.target_kl is not None:
            with torch.no_grad():
                k1, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
            measured = -k1 if bug == "early stop on the wrong KL" else k3
            if measured > config.target_kl:
                break
    with torch.no_grad():
        _, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
    var_y = targets.var().item()
    explained = float("nan") if var_y == 0 else 1.0 - (targets - values_old).var().item() / var_y
    return {"clip_fraction": float(np.mean(clip_fractions)), "entropy": float(np.mean(entropies)),
            "approx_kl_k3": k3, "epochs": float(epochs_run), "explained_variance": explained}


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


def check_bug_guess(guess) -> bool:
    """Say whether ``guess`` (a key of ``BUGS``) is the mystery run's bug, with the reason if not."""
    if guess is None or guess == "":
        print("○ bug hunt: no guess yet. Make `bug_guess()` return one of: " + ", ".join(repr(b) for b in BUGS))
        return False
    if guess not in BUGS:
        print(f"✗ bug hunt: {guess!r} is not one of the candidates: " + ", ".join(repr(b) for b in BUGS))
        return False
    if guess == MYSTERY:
        print(f"✓ bug hunt: right, {guess!r}: {BUGS[guess]}. The tell-tale panels: the epoch count always at "
              f"its maximum although target_kl is set, and KL spikes far above anything the healthy run allows.")
        return True
    print(f"✗ bug hunt: not {guess!r}: {_WHY_NOT[guess]}")
    return False
