"""Sensitivity of PPO to its hyperparameters on CartPole-v1 and Pendulum-v1: one knob at a time (11 knobs).

    .venv/bin/python benchmarks/sensitivity.py --jobs 2                          # both tasks (~40 min on 2 cores)
    .venv/bin/python benchmarks/sensitivity.py --jobs 2 --envs Pendulum-v1       # one task; the other's rows are kept
    .venv/bin/python benchmarks/sensitivity.py --jobs 2 --knobs target_kl         # one knob; the others' runs are kept
    .venv/bin/python benchmarks/sensitivity.py --ray auto                         # on a Ray cluster

Starting from a task's preset (``CARTPOLE_FAST_PRESET``, ``PENDULUM_PRESET``), each
knob is set to three values spanning its typical range (one of them the preset's),
the others left at the preset, and PPO is trained on 5 seeds for a fixed budget
(30 000 steps on CartPole, 60 000 on Pendulum). The score is the mean training
return (an area under the learning curve) and a deterministic 10-episode
evaluation at the end. Writes benchmarks/results/sensitivity.json, which chapter 5
reads: one entry per task under ``tasks``, each with the command and date that
produced it, written after every knob (``"complete": false`` until the task is done).
Tasks not named in ``--envs`` are kept from the existing file. The runs go through
the sweep runner (``ppo_lib.sweep``): an interrupted sweep also keeps its finished
runs (inside a knob too) in results/sensitivity.jobs.jsonl, and a rerun of the same
command skips them (``--fresh`` starts over); the file is removed once the sweep ends.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from ppo_lib.algos import CARTPOLE_FAST_PRESET, PENDULUM_PRESET, PPO, PPOConfig  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402
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
        "rollout_steps": [32, 64, 256],
        "value_coef": [0.5, 1.0, 2.0],
        "entropy_coef": [0.0, 0.003, 0.01],
        "target_kl": [None, 0.01, 0.03],
        "max_grad_norm": [0.0, 0.5, 1.0],
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
        "rollout_steps": [128, 512, 2048],
        "value_coef": [0.5, 1.0, 2.0],
        "entropy_coef": [0.0, 0.003, 0.01],
        "target_kl": [None, 0.01, 0.03],
        "max_grad_norm": [0.0, 0.5, 1.0],
    }),
}
# rollout_steps is the horizon per environment (the batch is num_envs x rollout_steps); target_kl None and
# max_grad_norm 0 mean "off"; value_coef multiplies 1/2 (V - R)^2 (so 1.0 here is 0.5 on the unhalved square)


def label(value) -> str:
    """How a swept value is shown: None and 0 mean "off" for the knobs that can be switched off."""
    return "off" if value is None or value == 0 else f"{value:g}"


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


def job_key(env_id: str, knob: str, value, seed: int) -> str:
    """What a run depends on, for the resume file: the task, its budget, the knob's value, the seed, and a
    digest of the preset (so a changed preset never reuses an old run)."""
    task = TASKS[env_id]
    preset = hashlib.sha256(json.dumps(task["preset"], sort_keys=True).encode()).hexdigest()[:12]
    return f"{env_id} budget={task['budget']} preset={preset} {knob}={json.dumps(value)} seed={seed}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    add_arguments(p)  # --jobs N (worker processes), --ray auto|ADDRESS, --fresh
    p.add_argument("--knobs", nargs="+", default=None, metavar="KNOB",
                   help="only these knobs; the task's other knobs are kept from the existing file")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    out = Path(args.out)
    kept = json.loads(out.read_text()).get("tasks", {}) if out.exists() else {}
    record = {"machine": header()["machine"],
              "tasks": {env: entry for env, entry in kept.items() if env not in args.envs}}
    resume = resume_path(out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="sensitivity") as runner:
        for env_id in args.envs:
            task = TASKS[env_id]
            knobs = args.knobs or list(task["sweeps"])
            unknown = [k for k in knobs if k not in task["sweeps"]]
            if unknown:
                p.error(f"{env_id}: unknown knobs {unknown}; choose from {list(task['sweeps'])}")
            run_info = {k: v for k, v in header().items() if k != "machine"}
            old = kept.get(env_id) if args.knobs else None
            if old is not None:  # add or redo some knobs: the others' runs stay as they were
                if old["budget"] != task["budget"] or old["preset"] != task["preset"]:
                    p.error(f"{env_id}: the file's budget or preset differs from the script's: rerun all knobs")
                entry = {**old, "sweeps": task["sweeps"], "complete": False,
                         "runs": [r for r in old["runs"] if r["knob"] not in knobs],
                         "added_by": old.get("added_by", []) + [{**run_info, "knobs": knobs}]}
            else:
                entry = {**run_info, "budget": task["budget"], "preset": task["preset"], "sweeps": task["sweeps"],
                         "runs": [], "complete": False}
            record["tasks"][env_id] = entry
            for knob in knobs:
                values = task["sweeps"][knob]
                jobs = [Job(job_key(env_id, knob, v, s), run, dict(env_id=env_id, knob=knob, value=v, seed=s))
                        for v in values for s in args.seeds]
                entry["runs"] += runner.map(jobs)
                print(f"{env_id} {knob}: " + ", ".join(
                    f"{label(v)} -> {np.mean([r['mean_training_return'] for r in entry['runs'] if r['knob'] == knob and r['value'] == v]):.1f}"
                    for v in values), flush=True)
                write(record, out)  # after every knob: an interrupted sweep keeps what it finished
            entry["complete"] = {r["knob"] for r in entry["runs"]} == set(task["sweeps"])
            write(record, out)
    resume.unlink(missing_ok=True)  # done: the next run of this script trains afresh
    return 0


if __name__ == "__main__":
    sys.exit(main())
