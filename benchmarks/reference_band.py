"""Reference runs for chapter 7's "is it my bug, or seed variance?": one configuration, many seeds.

    .venv/bin/python benchmarks/reference_band.py --jobs 2           # 20 seeds (~5 min on 2 cores)
    .venv/bin/python benchmarks/reference_band.py --ray auto         # the same on a Ray cluster

PPO on CartPole-v1 with every implementation detail on (the ablation's
"all details on": ``CARTPOLE_FAST_PRESET`` plus ``ablation.ALL_ON``) for the
ablation's budget, once per seed, each run exactly as ``benchmarks/ablation.py``
trains it (its seeds 0-4 reproduce that file's runs). Writes
benchmarks/results/reference_band.json: each run's smoothed learning curve, its mean
training return and a deterministic 10-episode evaluation at the end. A band of n
runs is their min..max; a new run of the same code falls outside it at a given point
with probability 2/(n+1), so more seeds make "outside the band" mean more.
The runs go through the sweep runner (``ppo_lib.sweep``): an interrupted run keeps its
finished seeds in results/reference_band.jobs.jsonl, which a rerun skips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from benchmarks.ablation import ALL_ON, SETUPS, job_key, run  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "reference_band.json"
ENV_ID = "CartPole-v1"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    add_arguments(p)  # --jobs N (worker processes), --ray auto|ADDRESS, --fresh
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    resume = resume_path(args.out)
    jobs = [Job(job_key(ENV_ID, {}, s), run, dict(env_id=ENV_ID, overrides={}, seed=s)) for s in args.seeds]
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="reference band") as runner:
        runs = runner.map(jobs)
    preset, budget = SETUPS[ENV_ID]
    write({**header(), "env": ENV_ID, "budget": budget, "config": {**preset, **ALL_ON}, "runs": runs}, args.out)
    resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh
    return 0


if __name__ == "__main__":
    sys.exit(main())
