"""Env steps and wall-clock seconds each algorithm needs to reach a return threshold.

    .venv/bin/python benchmarks/steps_to_threshold.py                 # REINFORCE and A2C, CartPole-v1, 195
    .venv/bin/python benchmarks/steps_to_threshold.py --seeds 0 1 2 3 4 --threshold 195
    .venv/bin/python benchmarks/steps_to_threshold.py --algos trpo ppo-clip ppo-penalty --threshold 475

"Reached" means: the mean of the last 20 training episodes first reaches the
threshold. CartPole-v1 counts as solved at 475 (its registered
``reward_threshold``); 195 is CartPole-v0's threshold, kept here as an earlier
milestone that REINFORCE and A2C reach within a short budget. Training time
only (no evaluation runs). Prints a table (median, min, max over seeds) and
writes JSON next to this script, in results/, with the command, date and machine.

The runs go through the sweep runner (``ppo_lib/sweep.py``): an interrupted sweep keeps its
finished runs in ``results/steps_to_threshold_<threshold>.jobs.jsonl`` and a rerun skips them
(``--fresh`` starts over). ``--jobs N`` and ``--ray`` work as in every sweep, but the seconds
are this benchmark's subject: runs that share cores slow each other, so the default runs one
at a time, in this process, and the seconds of a parallel sweep are only comparable with each
other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from ppo_lib.algos import (A2C, CARTPOLE_PRESET, PPO, REINFORCE, TRPO, A2CConfig, PPOConfig,  # noqa: E402
                           ReinforceConfig, TRPOConfig)
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402
from ppo_lib.train import train  # noqa: E402

ALGOS = {
    "reinforce": lambda env, seed: REINFORCE(env.observation_space, env.action_space, ReinforceConfig(), seed=seed),
    "a2c": lambda env, seed: A2C(env.observation_space, env.action_space, A2CConfig(), seed=seed),
    "trpo": lambda env, seed: TRPO(env.observation_space, env.action_space, TRPOConfig(), seed=seed),
    "ppo-clip": lambda env, seed: PPO(env.observation_space, env.action_space,
                                      PPOConfig(variant="clip", **CARTPOLE_PRESET), seed=seed),
    "ppo-penalty": lambda env, seed: PPO(env.observation_space, env.action_space,
                                         PPOConfig(variant="penalty", **CARTPOLE_PRESET), seed=seed),
}


def run_one(name: str, env_id: str, seed: int, budget: int, threshold: float, threads: int) -> dict:
    """One seeded run to the threshold: the steps it took (None if not reached) and its seconds."""
    torch.set_num_threads(threads)
    env = gym.make(env_id)
    t0 = time.perf_counter()
    result = train(ALGOS[name](env, seed), env_id, budget, seed=seed, progress=False, stop_at=threshold)
    seconds = time.perf_counter() - t0
    steps = result.history.first_step_reaching(threshold)
    print(f"{name:10s} seed {seed}: {steps if steps else 'not reached'} steps, {seconds:.1f} s", flush=True)
    return {"seed": seed, "steps": steps, "seconds": round(seconds, 2) if steps else None,
            "env_steps_run": result.history.total_steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=["reinforce", "a2c"], choices=list(ALGOS))
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--threshold", type=float, default=195.0)
    p.add_argument("--budget", type=int, default=300_000, help="max env steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="default: results/steps_to_threshold_<threshold>.json")
    add_arguments(p)  # --jobs, --ray, --fresh
    args = p.parse_args()
    out = Path(args.out) if args.out else (Path(__file__).resolve().parent / "results"
                                           / f"steps_to_threshold_{args.threshold:g}.json")
    kwargs = dict(env_id=args.env, budget=args.budget, threshold=args.threshold, threads=args.threads)
    jobs = [Job(f"{name} env={args.env} threshold={args.threshold:g} budget={args.budget} threads={args.threads} "
                f"seed={seed}", run_one, dict(name=name, seed=seed, **kwargs))
            for name in args.algos for seed in args.seeds]
    with Runner(workers=args.jobs, ray=args.ray, resume=resume_path(out), fresh=args.fresh,
                label="steps_to_threshold") as runner:
        done = runner.map(jobs)
    rows = {}
    for i, name in enumerate(args.algos):
        runs = done[i * len(args.seeds):(i + 1) * len(args.seeds)]
        ok = [r for r in runs if r["steps"]]
        rows[name] = {"runs": runs, "reached": f"{len(ok)}/{len(runs)}"}
        if ok:
            for key in ("steps", "seconds"):
                vals = [r[key] for r in ok]
                rows[name][key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    print(f"\n{args.env}, threshold {args.threshold:g} (mean of last 20 episodes), seeds {args.seeds}")
    print(f"{'algo':10s} {'reached':>8s} {'steps median [min, max]':>28s} {'seconds median [min, max]':>28s}")
    for name, row in rows.items():
        if "steps" in row:
            s, t = row["steps"], row["seconds"]
            print(f"{name:10s} {row['reached']:>8s} {s['median']:>10.0f} [{s['min']:>6}, {s['max']:>6}]"
                  f"      {t['median']:>8.1f} [{t['min']:>5.1f}, {t['max']:>5.1f}]")
        else:
            print(f"{name:10s} {row['reached']:>8s}   never reached within {args.budget} steps")
    record = {**header(torch_threads=args.threads, workers=args.jobs), "env": args.env, "threshold": args.threshold,
              "results": rows}
    write(record, out)
    resume_path(out).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
