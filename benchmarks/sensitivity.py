"""Sensitivity of PPO to its hyperparameters on CartPole-v1: one knob at a time.

    .venv/bin/python benchmarks/sensitivity.py --jobs 2     # 6 knobs x 3 values x 5 seeds (~10 min on 1 core)

Starting from the fast CartPole preset (``CARTPOLE_FAST_PRESET``), each knob is set
to three values spanning its typical range (one of them the preset's), the others
left at the preset, and PPO is trained for 30 000 steps on 5 seeds. The score is
the mean training return (an area under the learning curve) and a deterministic
10-episode evaluation at the end. Writes benchmarks/results/sensitivity.json, which
chapter 5 reads. (Pendulum-v1 is not swept yet: at ~20 s a run it needs a free core
for about half an hour.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from ppo_lib.algos import CARTPOLE_FAST_PRESET, PPO, PPOConfig  # noqa: E402
from ppo_lib.train import evaluate, train  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sensitivity.json"
BUDGET = 30_000
SWEEPS = {
    "clip_eps": [0.1, 0.2, 0.3],
    "gamma": [0.95, 0.98, 0.999],
    "gae_lambda": [0.8, 0.9, 0.99],
    "lr": [5e-4, 1.5e-3, 5e-3],
    "epochs": [3, 8, 20],
    "minibatch_size": [64, 256, 512],
}


def run(knob: str, value, seed: int) -> dict:
    import gymnasium as gym

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    config = PPOConfig(**{**CARTPOLE_FAST_PRESET, knob: value})
    algo = PPO(env.observation_space, env.action_space, config, seed=seed)
    t0 = time.perf_counter()
    h = train(algo, "CartPole-v1", BUDGET, seed=seed, progress=False).history
    return {"knob": knob, "value": value, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "mean_training_return": round(float(np.mean(h.episode_returns)), 1),
            "final_eval": round(float(np.mean(evaluate(algo.policy, "CartPole-v1", 10, seed=10_000 + seed))), 1)}


def _job(args):
    return run(*args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    jobs = [(k, v, s) for k, values in SWEEPS.items() for v in values for s in args.seeds]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(_job, jobs, chunksize=1)
    else:
        runs = [_job(j) for j in jobs]
    record = {**header(), "env": "CartPole-v1", "budget": BUDGET, "preset": CARTPOLE_FAST_PRESET,
              "sweeps": SWEEPS, "runs": runs}
    write(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
