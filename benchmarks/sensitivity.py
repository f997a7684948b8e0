"""Sensitivity of PPO to its hyperparameters on CartPole-v1 and Pendulum-v1: one knob at a time.

    .venv/bin/python benchmarks/sensitivity.py --jobs 2                          # both tasks (~55 min on 2 cores)
    .venv/bin/python benchmarks/sensitivity.py --jobs 2 --envs Pendulum-v1       # one task; the other's rows are kept

Starting from a task's preset (``CARTPOLE_FAST_PRESET``, ``PENDULUM_PRESET``), each
knob is set to three values spanning its typical range (one of them the preset's),
the others left at the preset, and PPO is trained on 5 seeds for a fixed budget
(30 000 steps on CartPole, 60 000 on Pendulum). The score is the mean training
return (an area under the learning curve) and a deterministic 10-episode
evaluation at the end. Writes benchmarks/results/sensitivity.json, which chapter 5
reads: one entry per task under ``tasks``, each with the command and date that
produced it, written after every knob (``"complete": false`` until the task is done).
Tasks not named in ``--envs`` are kept from the existing file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from ppo_lib.algos import CARTPOLE_FAST_PRESET, PENDULUM_PRESET, PPO, PPOConfig  # noqa: E402
from ppo_lib.train import evaluate, train  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sensitivity.json"
TASKS = {
    "CartPole-v1": dict(preset=CARTPOLE_FAST_PRESET, budget=30_000, sweeps={
        "clip_eps": [0.1, 0.2, 0.3],
        "gamma": [0.95, 0.98, 0.999],
        "gae_lambda": [0.8, 0.9, 0.99],
        "lr": [5e-4, 1.5e-3, 5e-3],
        "epochs": [3, 8, 20],
        "minibatch_size": [64, 256, 512],
    }),
    # Pendulum's preset discounts at 0.9, below the usual range: its reward is dense and
    # the swing-up is decided within a few dozen steps, so the sweep spans 0.9 - 0.99.
    "Pendulum-v1": dict(preset=PENDULUM_PRESET, budget=60_000, sweeps={
        "clip_eps": [0.1, 0.2, 0.3],
        "gamma": [0.9, 0.95, 0.99],
        "gae_lambda": [0.8, 0.95, 0.99],
        "lr": [3e-4, 1e-3, 3e-3],
        "epochs": [3, 10, 20],
        "minibatch_size": [64, 256, 512],
    }),
}


def run(env_id: str, knob: str, value, seed: int) -> dict:
    import gymnasium as gym

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    task = TASKS[env_id]
    env = gym.make(env_id)
    config = PPOConfig(**{**task["preset"], knob: value})
    algo = PPO(env.observation_space, env.action_space, config, seed=seed)
    t0 = time.perf_counter()
    h = train(algo, env_id, task["budget"], seed=seed, progress=False).history
    return {"knob": knob, "value": value, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "mean_training_return": round(float(np.mean(h.episode_returns)), 1),
            "final_eval": round(float(np.mean(evaluate(algo.policy, env_id, 10, seed=10_000 + seed))), 1)}


def _job(args):
    return run(*args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    out = Path(args.out)
    kept = json.loads(out.read_text()).get("tasks", {}) if out.exists() else {}
    record = {"machine": header()["machine"],
              "tasks": {env: entry for env, entry in kept.items() if env not in args.envs}}
    pool = None
    if args.jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.jobs)
    try:
        for env_id in args.envs:
            task = TASKS[env_id]
            entry = {**{k: v for k, v in header().items() if k != "machine"}, "budget": task["budget"],
                     "preset": task["preset"], "sweeps": task["sweeps"], "runs": [], "complete": False}
            record["tasks"][env_id] = entry
            for knob, values in task["sweeps"].items():
                jobs = [(env_id, knob, v, s) for v in values for s in args.seeds]
                entry["runs"] += pool.map(_job, jobs, chunksize=1) if pool else [_job(j) for j in jobs]
                print(f"{env_id} {knob}: " + ", ".join(
                    f"{v:g} -> {np.mean([r['mean_training_return'] for r in entry['runs'] if r['knob'] == knob and r['value'] == v]):.1f}"
                    for v in values), flush=True)
                write(record, out)  # after every knob: an interrupted sweep keeps what it finished
            entry["complete"] = True
            write(record, out)
    finally:
        if pool:
            pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
