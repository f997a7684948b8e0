"""The capstone of chapter 5: the learner writes PPO's whole update.

The learner's function has the signature::

    ppo_update(policy, optimizer, rollout, config, generator) -> dict of diagnostics

and must leave ``policy``'s parameters exactly where the library's ``PPO.update``
leaves them, starting from the same weights, the same optimiser state, the same
rollout and the same random generator (which decides the minibatch shuffles).
Each case builds a fresh seeded PPO, collects one CartPole rollout, and compares
the parameters after the learner's update with those after the library's.
"""

from __future__ import annotations

import copy

import torch

from ppo_lib.algos.ppo import ppo_update
from ppo_lib.teaching.checks.core import Case, Exercise, Mistake


def library_ppo_update(policy, optimizer, rollout, config, generator) -> dict:
    """The library's one update (:func:`ppo_lib.algos.ppo.ppo_update`, which ``PPO.update``
    calls) run on the given objects, for comparison."""
    return ppo_update(policy, optimizer, rollout, config, generator)


def _setup(config_overrides: dict, seed: int):
    """A seeded PPO on CartPole-v1 and one rollout from it (identical for every call with the same seed)."""
    from ppo_lib.algos.ppo import PPO, PPOConfig
    from ppo_lib.envs import VecEnv
    from ppo_lib.rollout import collect_rollout

    config = PPOConfig(**{"num_envs": 4, "rollout_steps": 64, "minibatch_size": 64, "epochs": 3, "lr": 3e-3,
                          **config_overrides})
    venv = VecEnv("CartPole-v1", num_envs=config.num_envs, seed=seed, max_episode_steps=40)
    algo = PPO(venv.single_observation_space, venv.single_action_space, config, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rollout, _ = collect_rollout(venv, algo.policy, config.rollout_steps, venv.reset())
    # one update first, so that Adam's moments are not zero in the case we compare
    library_ppo_update(algo.policy, algo.optimizer, rollout, config, torch.Generator().manual_seed(seed + 1))
    return algo, rollout, config


def _run(fn, config_overrides: dict, seed: int):
    algo, rollout, config = _setup(config_overrides, seed)
    policy, optimizer = algo.policy, algo.optimizer
    info = fn(policy, optimizer, rollout, config, torch.Generator().manual_seed(seed))
    params = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    if not isinstance(info, dict):
        return {"diagnostics (a dict)": info, "parameters after the update": params}
    return {"parameters after the update": params}


def _compare(expected, got):
    if "diagnostics (a dict)" in got:
        return (f"your function must return a dict of diagnostics (e.g. {{'kl': ..., 'clip_fraction': ...}}), "
                f"it returned {type(got['diagnostics (a dict)']).__name__}")
    exp, mine = expected["parameters after the update"], got["parameters after the update"]
    if torch.allclose(exp, mine, rtol=1e-4, atol=1e-6):
        return None
    moved = float((mine - exp).abs().max())
    return (f"after your update the parameters differ from the library's by up to {moved:.3g} "
            f"(compare your steps, in order, with the list above: the first that differs is the bug)")


def _as_library_but(**changes):
    """The library's update with one thing done differently: a usual mistake."""

    def impl(policy, optimizer, rollout, config, generator):
        return library_ppo_update(policy, optimizer, rollout, dataclass_replace(config, **changes), generator)

    return impl


def dataclass_replace(config, **changes):
    new = copy.copy(config)
    for k, v in changes.items():
        object.__setattr__(new, k, v)
    return new


def _no_update(policy, optimizer, rollout, config, generator):
    return {}


CASES = [
    Case(({}, 0), "CartPole, 4 envs x 64 steps, 3 epochs of minibatches of 64, clip 0.2, no early stopping"),
    Case(({"entropy_coef": 0.01, "value_coef": 0.5, "max_grad_norm": 0.1}, 1),
         "entropy bonus 0.01, value coefficient 0.5, gradient norm clipped at 0.1 (it binds)"),
    Case(({"target_kl": 1e-4, "epochs": 6}, 2),
         "target_kl = 0.0001: the k3 KL on the whole batch exceeds it after the first epoch, so stop there"),
]

check_ppo_update = Exercise(
    "ppo_update",
    reference=library_ppo_update,
    reference_name="ppo_lib.algos.ppo.ppo_update",
    run=_run,
    compare=_compare,
    cases=CASES,
    mistakes=[
        Mistake("no update", _no_update, "the parameters did not move: did you call optimizer.step()?"),
        Mistake("advantages not normalised", _as_library_but(normalize_advantages=False),
                "normalise the advantages of each *minibatch* (mean 0, std 1, with the library's `normalize`)."),
        Mistake("no gradient clipping", _as_library_but(max_grad_norm=0.0),
                "clip the global gradient norm to config.max_grad_norm between backward() and step()."),
        Mistake("no early stopping", _as_library_but(target_kl=None),
                "after each epoch, when config.target_kl is set, compute the k3 KL estimate on the whole batch "
                "and stop the epochs once it exceeds target_kl."),
        Mistake("no entropy bonus", _as_library_but(entropy_coef=0.0),
                "the loss subtracts config.entropy_coef times the mean entropy of the minibatch."),
        Mistake("value coefficient ignored", _as_library_but(value_coef=1.0),
                "multiply the value loss by config.value_coef."),
        Mistake("one epoch", _as_library_but(epochs=1), "run config.epochs passes over the batch, not one."),
    ],
)
