"""Grading and a sweep at scale: serially, on 2 local workers, and on a two-node Ray cluster.

    .venv/bin/python benchmarks/grading_scale.py                       # 30 students of chapters 1 and 5, a sweep slice
    .venv/bin/python benchmarks/grading_scale.py --students 10 --no-ray

Grading: ``--students`` made-up students of chapter 1 (solved, untouched, a flipped sign, a
wrong reward-to-go, in turn: ``benchmarks/grading.py``'s) and of one heavy chapter (``--heavy``,
default 05, whose capstone check runs a whole PPO update; solved, untouched, and every exercise
cell raising, in turn) are graded in isolated mode three ways, each in its own copy of the
course directory: one worker, ``--workers`` local workers, and ``--ray`` on a Ray cluster of
two nodes on 127.0.0.1 with one CPU each (``tests/ray_cluster.py``, as the tests start it).
The three give the same grades (checked).

Sweep: a slice of the sensitivity sweep (``benchmarks/sensitivity.py``'s CartPole preset with
``clip_eps`` at its three values, ``--sweep-seeds`` seeds, ``--sweep-steps`` steps each instead
of 30 000) through ``ppo_lib.sweep``'s runner the same three ways; the results are the same
(checked).

From the measured seconds per submission of one worker (one core), the projection for 300
students x 10 chapters, and from ``results/sensitivity.json``'s own per-run seconds the
projection for the whole sensitivity sweep, on 1, 10 and 50 machines of 8 cores, assuming the
work spreads linearly over the cores (every submission and every run is independent; only 2
cores were there to measure it on). The load average is recorded before and after each part:
on a shared machine the seconds are those of a loaded one. Writes results/grading_scale.json.
Never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from benchmarks.grading import made_up_students  # noqa: E402
from ppo_lib.course import grading, isolated, load_book  # noqa: E402
from ppo_lib.course.sandbox import is_root  # noqa: E402
from ppo_lib.sweep import Job, run_jobs  # noqa: E402

STUDENTS, CHAPTERS, MACHINES, CORES = 300, 10, (1, 10, 50), 8


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def heavy_students(source: dict, release: dict, n: int) -> dict:
    """Solved, untouched, and every exercise cell raising, in turn."""
    solved = json.loads(json.dumps(made_up_students(source, release, 1)["student000"]))
    broken = json.loads(json.dumps(solved))
    for cell in broken["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            cell["source"] = "raise ValueError('broken on purpose')\n"
    kinds = [solved, release, broken]
    return {f"student{k:03d}": kinds[k % len(kinds)] for k in range(n)}


def slice_run(clip_eps: float, seed: int, steps: int) -> dict:
    """One run of the sweep slice: the sensitivity sweep's CartPole preset with ``clip_eps``."""
    import gymnasium as gym
    import numpy as np
    import torch

    from ppo_lib.algos import CARTPOLE_FAST_PRESET, PPO, PPOConfig
    from ppo_lib.train import train

    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    algo = PPO(env.observation_space, env.action_space, PPOConfig(**{**CARTPOLE_FAST_PRESET, "clip_eps": clip_eps}),
               seed=seed)
    h = train(algo, "CartPole-v1", steps, seed=seed, progress=False).history
    return {"clip_eps": clip_eps, "seed": seed, "mean_training_return": float(np.mean(h.episode_returns)),
            "param_sum": float(sum(p.detach().sum() for p in algo.policy.parameters()))}


def _grade(course: Path, chapter: str, **kw) -> tuple[float, dict]:
    t0 = time.perf_counter()
    results = isolated.autograde_isolated(course, chapter, progress=False, **kw)
    return time.perf_counter() - t0, {r["student"]: [e["score"] for e in r["exercises"]] for r in results}


def projection(seconds_per_item: float, items: int) -> dict:
    """Hours on 1, 10 and 50 machines of 8 cores, spread linearly over the cores."""
    return {str(m): round(items * seconds_per_item / (m * CORES) / 3600, 3) for m in MACHINES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--heavy", default="05", help="the heavy chapter's id")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="skip the two-node Ray cluster")
    ap.add_argument("--sweep-seeds", type=int, default=2)
    ap.add_argument("--sweep-steps", type=int, default=4096)
    ap.add_argument("--out", default=str(RESULTS / "grading_scale.json"))
    args = ap.parse_args(argv)

    record = {**header(root=is_root()), "load_before": _load(), "students": args.students,
              "workers": args.workers, "ray_nodes": 0 if args.no_ray else 2, "grading": {}, "sweep": {}}
    book = load_book()
    base = Path(tempfile.mkdtemp(prefix="ppo-grading-scale-"))
    chapters = ["01", args.heavy]
    stems = {c: book.chapter(c).stem for c in chapters}
    try:
        course = base / "course"
        grading.build_course(book, course, only=chapters)
        for cid, stem in stems.items():
            release = json.loads((course / "release" / stem / f"{stem}.ipynb").read_text())
            source = json.loads((course / "source" / stem / f"{stem}.ipynb").read_text())
            make = made_up_students if cid == "01" else heavy_students
            subs = base / "subs" / stem
            for name, nb in make(source, release, args.students).items():
                (subs / name).mkdir(parents=True)
                (subs / name / f"{stem}.ipynb").write_text(json.dumps(nb))
            isolated.collect_safely(course, stem, subs)
        copies = {how: base / how for how in ("serial", "workers", "ray")}
        for path in copies.values():
            shutil.copytree(course, path, symlinks=True)

        jobs = [Job(f"clip_eps={c} seed={s} steps={args.sweep_steps}", slice_run,
                    {"clip_eps": c, "seed": s, "steps": args.sweep_steps})
                for c in (0.1, 0.2, 0.3) for s in range(args.sweep_seeds)]
        quiet = open(os.devnull, "w")

        def local_part(how, workers):
            for cid, stem in stems.items():
                load0 = _load()
                secs, scores = _grade(copies[how], stem, workers=workers)
                record["grading"].setdefault(stem, {})[how] = {
                    "seconds": round(secs, 2), "per_submission": round(secs / args.students, 3),
                    "load_before": load0, "load_after": _load()}
                grades.setdefault(stem, {})[how] = scores
                print(f"{stem} {how}: {secs:.1f} s ({secs / args.students:.2f} s per submission)", flush=True)
            load0 = _load()
            t0 = time.perf_counter()
            out = run_jobs(jobs, workers=workers, stream=quiet)
            secs = time.perf_counter() - t0
            record["sweep"][how] = {"seconds": round(secs, 2), "per_run": round(secs / len(jobs), 3),
                                    "load_before": load0, "load_after": _load()}
            sweeps[how] = out
            print(f"sweep slice {how}: {secs:.1f} s for {len(jobs)} runs", flush=True)

        grades, sweeps = {}, {}
        local_part("serial", 1)
        local_part("workers", args.workers)
        if not args.no_ray:
            from tests.ray_cluster import loopback_cluster

            t0 = time.perf_counter()
            try:
                with loopback_cluster(base / "ray-logs", nodes=2, cpus=1) as cluster:
                    record["ray_start_seconds"] = round(time.perf_counter() - t0, 1)
                    for cid, stem in stems.items():
                        load0 = _load()
                        secs, scores = _grade(copies["ray"], stem, ray_address=cluster["address"])
                        record["grading"].setdefault(stem, {})["ray"] = {
                            "seconds": round(secs, 2), "per_submission": round(secs / args.students, 3),
                            "load_before": load0, "load_after": _load()}
                        grades.setdefault(stem, {})["ray"] = scores
                        print(f"{stem} ray: {secs:.1f} s", flush=True)
                    load0 = _load()
                    t0 = time.perf_counter()
                    sweeps["ray"] = run_jobs(jobs, ray=cluster["address"], stream=quiet)
                    secs = time.perf_counter() - t0
                    record["sweep"]["ray"] = {"seconds": round(secs, 2), "per_run": round(secs / len(jobs), 3),
                                              "load_before": load0, "load_after": _load()}
                    print(f"sweep slice ray: {secs:.1f} s", flush=True)
            except Exception as exc:  # e.g. the head node times out starting on an overloaded machine
                record["ray_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                print(f"the Ray part did not run: {record['ray_error']}", flush=True)

        for stem, by in grades.items():  # the same grades whatever the backend (run in this invocation)
            first = next(iter(by.values()))
            assert all(v == first for v in by.values()), f"{stem}: the grades differ between backends"
        first = sweeps["serial"]
        assert all(v == first for v in sweeps.values()), "the sweep's results differ between backends"

        for stem, rows in record["grading"].items():
            one = rows["serial"]["seconds"]
            for how, row in rows.items():
                row["speedup_over_serial"] = round(one / row["seconds"], 2)
        one = record["sweep"]["serial"]["seconds"]
        for row in record["sweep"].values():
            row["speedup_over_serial"] = round(one / row["seconds"], 2)
        per = {stem: rows["serial"]["per_submission"] for stem, rows in record["grading"].items()}
        record["projection_grading_hours"] = {
            "assumption": f"{STUDENTS} students x {CHAPTERS} chapters, every chapter at the serial seconds per "
                          f"submission measured here for the chapter named, spread linearly over {CORES} cores "
                          f"per machine",
            **{stem: {"seconds_per_submission": s, "hours_by_machines": projection(s, STUDENTS * CHAPTERS)}
               for stem, s in per.items()}}
        sens = json.loads((RESULTS / "sensitivity.json").read_text())
        runs = [r for t in sens["tasks"].values() for r in t["runs"]]
        core_s = sum(float(r["seconds"]) for r in runs)
        record["projection_sensitivity_sweep_hours"] = {
            "assumption": "the whole sensitivity sweep at the per-run seconds recorded in results/sensitivity.json "
                          f"(its own machine), spread linearly over {CORES} cores per machine",
            "runs": len(runs), "core_seconds": round(core_s, 1),
            "hours_by_machines": {str(m): round(core_s / (m * CORES) / 3600, 3) for m in MACHINES}}
        record["load_after"] = _load()
        print(json.dumps({k: record[k] for k in ("grading", "sweep", "projection_grading_hours",
                                                   "projection_sensitivity_sweep_hours")}, indent=1))
        write(record, args.out)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
