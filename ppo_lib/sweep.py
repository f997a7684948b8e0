"""One runner for every sweep: seeded jobs in, results out, on local processes or a Ray cluster.

    from ppo_lib.sweep import Job, Runner, resume_path

    jobs = [Job(f"seed={s}", train_one, {"seed": s}) for s in range(5)]
    with Runner(workers=2, resume=resume_path("results/x.json")) as runner:
        results = runner.map(jobs)            # in the order of ``jobs``

A job is a picklable function (defined at module level), its keyword arguments and a
stable key that names everything its result depends on. The runs are seeded, so
the results are the same whatever the backend: in this process (``workers=1``), on
``workers`` local processes (spawn context, torch on one thread in each), or on a Ray
cluster (``ray="auto"`` or an address; ``"local"`` starts a fresh instance on this
machine). Ray is imported only when asked for, and is an optional extra. Every result
goes through JSON, so it comes back the same way whether it was just computed or read
back from the resume file.

Resume: with ``resume=PATH`` each finished job is appended to a JSON-lines file
(``{"key": ..., "result": ...}``) as soon as it finishes, and a later run skips the keys
already there (a cut-off last line is ignored). A failing job never stops the others:
they all finish (and are kept), then ``map`` raises :class:`SweepFailed` naming each
failed key and its error, so a rerun only redoes the failures.

A progress line goes to stderr after every job: the count, the failures so far, the
seconds per job (wall time over the jobs run in this call) and an ETA.

This module belongs to the RL core's room: the standard library only at import
(torch and Ray are imported inside the functions that use them).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Job", "JobFailure", "Runner", "SweepFailed", "add_arguments", "resume_path", "run_jobs"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Job:
    """One seeded run: ``fn(**kwargs)``, known by ``key`` (unique in a sweep, stable across runs)."""

    key: str
    fn: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobFailure:
    """A job that raised (or whose worker died): its key and the error, in words."""

    key: str
    error: str
    traceback: str = ""


class SweepFailed(RuntimeError):
    """Some jobs failed; the others finished (and are in the resume file, if any)."""

    def __init__(self, failures: list[JobFailure], results: list):
        self.failures, self.results = failures, results
        lines = "\n".join(f"  {f.key}: {f.error}" for f in failures)
        super().__init__(f"{len(failures)} of {len(results)} jobs failed (the others finished):\n{lines}")


def resume_path(out: str | Path) -> Path:
    """Where a sweep writing ``out`` keeps its finished jobs: ``out`` with ``.jobs.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".jobs.jsonl")


def add_arguments(parser) -> None:
    """The runner's command-line options, the same in every sweep script."""
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes (1: in this process)")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS|local",
                        help="run the jobs on a Ray cluster instead, or on a fresh local Ray instance (needs the optional extra: pip install -e '.[ray]')")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the finished jobs kept from an interrupted run (the .jobs.jsonl next to --out)")


def _one_thread():
    try:
        import torch
    except ImportError:  # a job that does not use torch
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


def _call(fn, kwargs):
    """Runs one job wherever it lands; an exception comes back as data, never kills the worker."""
    _one_thread()
    try:
        return ("ok", json.loads(json.dumps(fn(**kwargs))))
    except Exception as exc:  # noqa: BLE001 - reported with the job's key, the others go on
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())


def _worker_init():
    _one_thread()


def _load(path: Path | None) -> dict:
    done = {}
    if path is None or not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            done[entry["key"]] = entry["result"]
        except (ValueError, KeyError, TypeError):  # a line cut off by an interruption: that job runs again
            continue
    return done


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Runner:
    """Runs lists of jobs on one backend; the local pool (or the Ray connection) lives until ``close``."""

    def __init__(self, workers: int = 1, ray: str | None = None, resume: str | Path | None = None,
                 fresh: bool = False, progress: bool = True, stream=None, label: str = "sweep"):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers, self.ray_address, self.progress, self.label = workers, ray, progress, label
        self.stream = stream
        self.resume = Path(resume) if resume is not None else None
        if fresh and self.resume is not None and self.resume.exists():
            self.resume.unlink()
        self._pool = None
        self._ray = None
        self._ray_started = False

    # -- backends ----------------------------------------------------------------------------
    def _local_pool(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def _ray_module(self):
        if self._ray is None:
            try:
                import ray
            except ImportError:
                raise ValueError("--ray needs Ray: pip install -e '.[ray]' (an optional extra)") from None
            if not ray.is_initialized():  # "local": a fresh one-machine instance, stopped at close
                ray.init(address=None if self.ray_address == "local" else self.ray_address,
                         include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
                self._ray_started = True
            self._ray = ray
        return self._ray

    def _submit_all(self, todo):
        """Yields (index, outcome) as jobs finish; outcome is what ``_call`` returns."""
        if self.ray_address is not None:
            ray = self._ray_module()
            remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_call)
            pending = {remote.remote(job.fn, job.kwargs): i for i, job in todo}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        yield i, ray.get(ref)
                    except Exception as exc:  # the task's node died past its retries
                        yield i, ("error", f"Ray task lost: {type(exc).__name__}: {exc}", "")
        elif self.workers > 1:
            from concurrent.futures import FIRST_COMPLETED, wait
            from concurrent.futures.process import BrokenProcessPool

            pool = self._local_pool()
            pending = {pool.submit(_call, job.fn, job.kwargs): i for i, job in todo}
            broken = False
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        yield i, fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        yield i, ("error", f"worker process died: {exc}", "")
                    except Exception as exc:  # e.g. the function or its result could not be pickled
                        yield i, ("error", f"{type(exc).__name__}: {exc}", "")
            if broken:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        else:
            import contextlib

            before = _one_thread()
            try:
                for i, job in todo:
                    yield i, _call(job.fn, job.kwargs)
            finally:
                if before is not None:
                    with contextlib.suppress(Exception):
                        import torch

                        torch.set_num_threads(before)

    # -- the sweep ---------------------------------------------------------------------------
    def map(self, jobs: list[Job], raise_on_failure: bool = True) -> list:
        """Results of ``jobs`` in their order. A failed job's place holds its :class:`JobFailure`;
        with ``raise_on_failure`` (the default), :class:`SweepFailed` is raised once all have run."""
        jobs = list(jobs)
        keys = [j.key for j in jobs]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"job keys must be unique: {dup}")
        kept = _load(self.resume)
        results: list = [None] * len(jobs)
        todo = []
        for i, job in enumerate(jobs):
            if job.key in kept:
                results[i] = kept[job.key]
            else:
                todo.append((i, job))
        total, skipped = len(jobs), len(jobs) - len(todo)
        failures: list[JobFailure] = []
        t0, ran = time.perf_counter(), 0
        if self.progress and skipped:
            self._say(f"[{self.label}] {skipped}/{total} kept from {self.resume}")
        log = None
        try:
            if self.resume is not None and todo:
                self.resume.parent.mkdir(parents=True, exist_ok=True)
                cut = self.resume.exists() and not self.resume.read_bytes().endswith(b"\n") \
                    and self.resume.stat().st_size > 0
                log = self.resume.open("a")
                if cut:  # end the line an interruption cut off, so the next one stands alone
                    log.write("\n")
            for i, outcome in self._submit_all(todo) if todo else ():  # nothing to do: no pool, no Ray
                ran += 1
                job = jobs[i]
                if outcome[0] == "ok":
                    results[i] = outcome[1]
                    if log is not None:
                        log.write(json.dumps({"key": job.key, "result": outcome[1]}) + "\n")
                        log.flush()
                else:
                    results[i] = JobFailure(job.key, outcome[1], outcome[2] if len(outcome) > 2 else "")
                    failures.append(results[i])
                    self._say(f"[{self.label}] FAILED {job.key}: {outcome[1]}")
                if self.progress:
                    per = (time.perf_counter() - t0) / ran
                    left = len(todo) - ran
                    self._say(f"[{self.label}] {skipped + ran}/{total} done, {len(failures)} failed, "
                              f"{per:.1f} s/job, ETA {_fmt_seconds(per * left)}  ({job.key})")
        finally:
            if log is not None:
                log.close()
        if failures and raise_on_failure:
            raise SweepFailed(failures, results)
        return results

    def _say(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._ray is not None and self._ray_started:
            self._ray.shutdown()
        self._ray, self._ray_started = None, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_jobs(jobs: list[Job], workers: int = 1, ray: str | None = None, resume: str | Path | None = None,
             **kwargs) -> list:
    """One list of jobs on a fresh :class:`Runner` (see there)."""
    with Runner(workers=workers, ray=ray, resume=resume, **kwargs) as runner:
        return runner.map(jobs)
