"""Reference runs for chapter 7's "is it my bug, or seed variance?": one configuration, many seeds.

    .venv/bin/python benchmarks/reference_band.py --jobs 2           # 20 seeds (~5 min on 2 cores)

PPO on CartPole-v1 with every implementation detail on (the ablation's
"all details on": ``CARTPOLE_FAST_PRESET`` plus ``ablation.ALL_ON``) for the
ablation's budget, once per seed, each run exactly as ``benchmarks/ablation.py``
trains it (its seeds 0-4 reproduce that file's runs). Writes
benchmarks/results/reference_band.json: each run's smoothed learning curve, its mean
training return and a deterministic 10-episode evaluation at the end. A band of n
runs is their min..max; a new run of the same code falls outside it at a given point
with probability 2/(n+1), so more seeds make "outside the band" mean more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from benchmarks.ablation import ALL_ON, SETUPS, run  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "reference_band.json"
ENV_ID = "CartPole-v1"


def _job(seed: int) -> dict:
    torch.set_num_threads(1)
    return run(ENV_ID, {}, seed)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(_job, args.seeds, chunksize=1)
    else:
        runs = [_job(s) for s in args.seeds]
    preset, budget = SETUPS[ENV_ID]
    write({**header(), "env": ENV_ID, "budget": budget, "config": {**preset, **ALL_ON}, "runs": runs}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
