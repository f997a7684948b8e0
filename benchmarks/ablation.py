"""Ablation of PPO's implementation details: each changed, one at a time.

    .venv/bin/python benchmarks/ablation.py                  # CartPole-v1 and Pendulum-v1, 5 seeds (~30 min on 1 core)
    .venv/bin/python benchmarks/ablation.py --jobs 2         # the same on 2 processes
    .venv/bin/python benchmarks/ablation.py --ray auto       # the same on a Ray cluster
    .venv/bin/python benchmarks/ablation.py --envs CartPole-v1 --seeds 0 1 2 3 4 5 6 7

For every detail, the "all on" configuration is trained with that one detail
off, on each seed, for a fixed budget. The score is the mean of a deterministic
10-episode evaluation at the end, and the mean training return over the whole
run (an area under the learning curve: it rewards learning *fast*). Writes
benchmarks/results/ablation.json (with the command, the date and the machine),
which chapter 7 reads; rerun this script to regenerate it. The runs go through the
sweep runner (``ppo_lib.sweep``): an interrupted sweep keeps its finished runs in
results/ablation.jobs.jsonl and a rerun of the same command skips them (``--fresh``
starts over); the file is removed once the sweep is complete.

Value clipping's epsilon is in raw return units, so whether it bites depends on
the reward scale: "no reward scaling" alone would also change what value
clipping does. The row "no reward scaling, no value clipping" separates the two:
compare it with "no value-function clipping". Every row also stores a 95%
bootstrap confidence interval of its mean over seeds (10,000 resamples).
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
from ppo_lib import stats  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402
from ppo_lib.train import evaluate, train  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "ablation.json"

#: The baseline has every detail on; each entry switches one off.
ALL_ON = dict(normalize_obs=True, scale_rewards=True, ortho_init=True, anneal_lr=True, clip_value=True,
              normalize_advantages=True, max_grad_norm=0.5, adam_eps=1e-5, entropy_coef=0.0,
              bootstrap_truncation=True, shared_network=False)
DETAILS = {  # row name -> the one change from ALL_ON
    "no observation normalisation": dict(normalize_obs=False),
    "no reward scaling": dict(scale_rewards=False),
    "no reward scaling, no value clipping": dict(scale_rewards=False, clip_value=False),
    "no orthogonal initialisation": dict(ortho_init=False),
    "no learning-rate annealing": dict(anneal_lr=False),
    "no value-function clipping": dict(clip_value=False),
    "no advantage normalisation": dict(normalize_advantages=False),
    "no global gradient clipping": dict(max_grad_norm=0.0),
    "Adam epsilon 1e-8 instead of 1e-5": dict(adam_eps=1e-8),
    "entropy bonus 0.01 instead of 0": dict(entropy_coef=0.01),
    "truncation treated as termination": dict(bootstrap_truncation=False),
    "shared actor/critic body": dict(shared_network=True),
}
SETUPS = {
    "CartPole-v1": (CARTPOLE_FAST_PRESET, 40_000),
    "Pendulum-v1": (PENDULUM_PRESET, 60_000),
}


def run(env_id: str, overrides: dict, seed: int) -> dict:
    preset, budget = SETUPS[env_id]
    torch.manual_seed(seed)
    import gymnasium as gym

    env = gym.make(env_id)
    config = PPOConfig(**{**preset, **ALL_ON, **overrides})
    algo = PPO(env.observation_space, env.action_space, config, seed=seed)
    t0 = time.perf_counter()
    result = train(algo, env_id, budget, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    final = float(np.mean(evaluate(algo.policy, env_id, 10, seed=10_000 + seed)))
    h = result.history
    return {"seed": seed, "final_eval": round(final, 1), "mean_training_return": round(float(np.mean(h.episode_returns)), 1),
            "seconds": round(seconds, 1), "curve_steps": h.episode_steps[::5], "curve": [round(x, 1) for x in h.smoothed_returns()[::5]]}


def bootstrap_ci(values) -> list[float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling seeds), rounded."""
    return [round(v, 1) for v in stats.bootstrap_ci(values)]


def job_key(env_id: str, overrides: dict, seed: int) -> str:
    """What a run depends on, for the resume file: the task, its budget, the changed details, the seed, and a
    digest of the whole configuration (so a changed preset or ALL_ON never reuses an old run)."""
    preset, budget = SETUPS[env_id]
    config = hashlib.sha256(json.dumps({**preset, **ALL_ON, **overrides}, sort_keys=True).encode()).hexdigest()[:12]
    return f"{env_id} budget={budget} {json.dumps(overrides, sort_keys=True)} config={config} seed={seed}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    add_arguments(p)  # --jobs N (worker processes), --ray auto|ADDRESS, --fresh
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="only these rows (names as in DETAILS), in this order; 'all details on' is always first")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    torch.set_num_threads(1)
    record = {**header(), "all_on": ALL_ON, "budgets": {k: v[1] for k, v in SETUPS.items()}, "results": {}}
    rows_all = {"all details on": {}, **DETAILS}
    if args.rows:
        unknown = [r for r in args.rows if r not in rows_all]
        if unknown:
            p.error(f"unknown rows {unknown}; choose from {list(rows_all)}")
        rows_all = {"all details on": {}, **{r: rows_all[r] for r in args.rows if r != "all details on"}}
    resume = resume_path(args.out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="ablation") as runner:
        for env_id in args.envs:
            rows = record["results"].setdefault(env_id, {})
            for name, overrides in rows_all.items():
                jobs = [Job(job_key(env_id, overrides, s), run, dict(env_id=env_id, overrides=overrides, seed=s))
                        for s in args.seeds]
                runs = runner.map(jobs)
                finals = [r["final_eval"] for r in runs]
                aucs = [r["mean_training_return"] for r in runs]
                rows[name] = {"overrides": overrides, "runs": runs,
                              "final_eval_mean": round(float(np.mean(finals)), 1),
                              "final_eval_ci95": bootstrap_ci(finals),
                              "mean_training_return": round(float(np.mean(aucs)), 1),
                              "mean_training_return_ci95": bootstrap_ci(aucs)}
                print(f"{env_id:12s} {name:45s} final eval {rows[name]['final_eval_mean']:8.1f} "
                      f"{rows[name]['final_eval_ci95']}   mean training return "
                      f"{rows[name]['mean_training_return']:8.1f} {rows[name]['mean_training_return_ci95']}",
                      flush=True)
                # written after every row: an interrupted run leaves the rows it finished, and says so
                record["complete"] = False
                write(record, args.out)
    record["complete"] = True
    write(record, args.out)
    resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh
    return 0


if __name__ == "__main__":
    sys.exit(main())
