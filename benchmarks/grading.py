"""Seconds per submission of chapter 1, graded the old way and the isolated way.

    .venv/bin/python benchmarks/grading.py                      # 30 students, 3 of them the old way
    .venv/bin/python benchmarks/grading.py --students 30 --notebook 0

Made-up students of chapter 1 (solved, untouched, a flipped sign, a wrong reward-to-go, in
turn) are graded

- the old way (``--mode notebook``: nbgrader executes each whole notebook, serially), on the
  first ``--notebook`` students only, because it is slow;
- the isolated way (``--mode isolated``: only the exercise cells, each submission in its own
  sandbox), serially (one worker) and with ``--workers`` (default 2);

and the script checks that all of them get the same grades, prints the seconds, the seconds
per submission, the speed-ups and a projection for 3,000 submissions (300 students x 10
chapters), and writes results/grading.json. Never a timed test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.course import grading, isolated, load_book  # noqa: E402
from ppo_lib.course.sandbox import is_root  # noqa: E402

CHAPTER = "01_reinforce"


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def made_up_students(source: dict, release: dict, n: int) -> dict:
    from ppo_lib.course.sources import BEGIN_MARK, END_MARK

    answers = {c["metadata"]["nbgrader"]["grade_id"]: _src(c) for c in source["cells"]
               if c["metadata"].get("nbgrader", {}).get("solution")}
    solved = json.loads(json.dumps(release))
    for cell in solved["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            cell["source"] = "".join(ln for ln in answers[meta["grade_id"]].splitlines(keepends=True)
                                     if ln.strip() not in (BEGIN_MARK, END_MARK))
    sign = json.loads(json.dumps(solved))
    wrong = json.loads(json.dumps(solved))
    for cell in sign["cells"]:
        cell["source"] = _src(cell).replace("return -(logprobs", "return (logprobs")
    for cell in wrong["cells"]:
        cell["source"] = _src(cell).replace("running = rewards[t] + gamma", "running = rewards[t] + 0.5 * gamma")
    kinds = [solved, release, sign, wrong]
    return {f"student{k:03d}": kinds[k % len(kinds)] for k in range(n)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--notebook", type=int, default=3, help="students graded the old way too (slow)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "grading.json"))
    args = ap.parse_args(argv)

    book = load_book()
    base = Path(tempfile.mkdtemp(prefix="ppo-grading-bench-"))
    try:
        course = base / "serial"
        grading.build_course(book, course, only=["01"])
        release = json.loads((course / "release" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
        source = json.loads((course / "source" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
        subs = base / "submissions"
        for name, nb in made_up_students(source, release, args.students).items():
            (subs / name).mkdir(parents=True)
            (subs / name / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
        isolated.collect_safely(course, CHAPTER, subs)
        parallel = base / "parallel"
        shutil.copytree(course, parallel)
        record = header(root=is_root())
        rows = {}

        t0 = time.perf_counter()
        serial = isolated.autograde_isolated(course, CHAPTER, workers=1)
        rows["isolated, 1 worker"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        par = isolated.autograde_isolated(parallel, CHAPTER, workers=args.workers)
        rows[f"isolated, {args.workers} workers"] = time.perf_counter() - t0
        assert [r["exercises"] for r in serial] == [r["exercises"] for r in par], "serial and parallel differ"
        assert grading.scores(course, CHAPTER) == grading.scores(parallel, CHAPTER)

        if args.notebook:
            old = base / "notebook"
            grading.build_course(book, old, only=["01"])
            few = sorted(made_up_students(source, release, args.students))[:args.notebook]
            old_subs = base / "old_submissions"
            for s in few:
                shutil.copytree(subs / s, old_subs / s)
            grading.collect(old, CHAPTER, old_subs)
            t0 = time.perf_counter()
            grading.autograde(old, CHAPTER, timeout=grading.execute_timeout([book.chapter("01")]))
            rows["notebook (nbgrader), serial"] = time.perf_counter() - t0
            ours = grading.scores(course, CHAPTER)
            assert grading.scores(old, CHAPTER) == {s: ours[s] for s in few}, "the old and the new grades differ"

        counts = {k: (args.notebook if k.startswith("notebook") else args.students) for k in rows}
        print(f"\nchapter 1, {args.students} made-up students ({args.notebook} of them also the old way), "
              f"{record['machine']['cpus']} CPUs")
        print(f"{'how':32s} {'submissions':>11s} {'seconds':>8s} {'s/submission':>13s}")
        per = {}
        for k, secs in rows.items():
            per[k] = secs / counts[k]
            print(f"{k:32s} {counts[k]:11d} {secs:8.1f} {per[k]:13.2f}")
        one = per["isolated, 1 worker"]
        print(f"speed-up of {args.workers} workers over 1: {one / per[f'isolated, {args.workers} workers']:.2f}x")
        if "notebook (nbgrader), serial" in per:
            print(f"isolated (1 worker) over the old way: {per['notebook (nbgrader), serial'] / one:.0f}x")
        print(f"3,000 submissions at {one:.2f} s each: {3000 * one / 3600:.2f} h on one core; "
              f"{3000 * one / 3600 / 8:.2f} h on 8 cores if it scales linearly (chapter 1's checks; "
              f"heavier chapters' checks take longer)")
        record.update(students=args.students, notebook_students=args.notebook, workers=args.workers,
                      seconds=rows, seconds_per_submission=per)
        write(record, args.out)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
