"""Run one submission's code in a sandbox and get back what it computed, as data.

The grader (this module, in a process that never runs student code) writes a job into a fresh
scratch directory holding nothing else, starts ``_sandbox_child.py`` there in a session of its
own, and waits. The child:

- gets limits on CPU time, address space (memory), file size, open files and processes
  (``resource.setrlimit``, set before any student code runs);
- where the grader runs as root: drops to a user id of its own (one per worker slot: it can
  read only world-readable files, write nothing of the grader's, and is ended with every
  process it started by ``kill(-1)`` run as that user), in network and mount namespaces of
  its own with the course directory and the solutions hidden under empty read-only mounts;
- otherwise: runs as the grader's user (see ``protections()`` and the README for what that
  cannot protect).

When it ends (or at its wall-clock limit) its whole process group is killed, then every
process left of its user id, and (for the same-user case) every process it left behind,
which this process collects as a child subreaper. What it printed on its own standard output
is read as JSON, size-capped, never unpickled or executed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = Path(__file__).with_name("_sandbox_child.py")
LIBROOT = Path(__file__).resolve().parents[2]  # the folder holding ppo_lib/
SENTINEL = "@@PPO-SANDBOX-RESULT@@ "
SANDBOX_UID_BASE = 61000  # uid 61000 + worker slot: ids no account uses
MAX_REPORT_BYTES = 64 * 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-submission limits. ``wall_s`` is enforced by the grader; the rest by the kernel."""

    wall_s: float = 360.0  # 3 x cpu_s, generous: a submission slowed by others is not failed for it
    cpu_s: int = 120  # the CPU of all its processes together
    memory_mb: int = 4096
    processes: int = 64
    file_mb: int = 64
    open_files: int = 256
    # as root: a user id of its own, namespaces, hidden paths. False runs it as the grader's user,
    # as a grader that is not root must (used by a test of that mode)
    separate_user: bool = True


def is_root() -> bool:
    return os.geteuid() == 0


def protections() -> dict:
    """What the sandbox can promise on this machine, in words."""
    root = is_root()
    return {
        "limits (CPU, memory, processes, file size)": True,
        "process group and leftovers killed": True,
        "separate user id (cannot write the course, gradebook or other students)": root,
        "course directory and solutions hidden (mount namespace)": root,
        "no network (network namespace)": root,
    }


_SUBREAPER = False


def become_subreaper() -> None:
    """Processes a submission detaches (double fork, setsid) are re-parented to this process, so
    they can be found and ended even when they run as the grader's own user."""
    global _SUBREAPER
    if not _SUBREAPER:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            _SUBREAPER = True
        except Exception:
            pass


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def processes_of_uid(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            pass
    return total / _TICK


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_all_of_uid(uid: int) -> None:
    """kill(-1) as that user: every process of it at once, even one forking as fast as it can."""
    pid = os.fork()
    if pid == 0:  # only system calls until _exit
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_everything(proc: subprocess.Popen, uid: int | None, keep: set[int]) -> int:
    """End the submission's process group, every process of its user id, and every process it left
    behind under this one; returns how many processes were found still running."""
    found = 0
    for _ in range(50):
        alive = set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if uid is not None:
            alive |= set(processes_of_uid(uid))
            if alive:
                _kill_all_of_uid(uid)
        for pid in _descendants(os.getpid()):
            if pid not in keep:
                alive.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap()
        found = max(found, len(alive))
        if not alive:
            break
        time.sleep(0.05)
    return found


MAX_SLOTS = 4000


@contextlib.contextmanager
def slot():
    """A sandbox slot (hence user id) no other job on this machine holds: a lock file in a folder
    only the grader's user can write, whatever started the job (a local pool, a Ray worker)."""
    folder = Path(tempfile.gettempdir()) / f"ppo-grading-slots-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not folder.is_dir() or folder.is_symlink():
        raise RuntimeError(f"{folder}: not a private folder of this user; remove it")
    for k in range(MAX_SLOTS):
        fh = open(folder / f"{k}.lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        try:
            yield k
        finally:
            fh.close()
        return
    raise RuntimeError("no free sandbox slot")


def run_job(job: dict, limits: Limits) -> dict:
    """``run_job_in_slot`` in a free slot."""
    with slot() as k:
        return run_job_in_slot(job, limits, k)


def run_job_in_slot(job: dict, limits: Limits, slot: int) -> dict:
    """Run the student side of ``job`` (see ``_sandbox_child``) in a fresh scratch directory;
    returns ``{"report": dict | None, "reason": str, "seconds": float, "leftover": int}``.

    ``reason`` is empty when the child reported normally; otherwise it says why it did not
    (time limit, memory, killed by a signal, no report)."""
    become_subreaper()
    keep = set(_descendants(os.getpid()))
    uid = SANDBOX_UID_BASE + slot if is_root() and limits.separate_user else None
    scratch = Path(tempfile.mkdtemp(prefix="ppo-grade-"))
    private = Path(tempfile.mkdtemp(prefix="ppo-grade-out-"))  # the grader's only: the child's stdout
    t0 = time.perf_counter()
    try:
        job = dict(job, limits=dataclasses.asdict(limits), uid=uid)
        (scratch / "job.json").write_text(json.dumps(job))
        os.chmod(scratch / "job.json", 0o444)
        if uid is not None:
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o700)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
               "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PPO_COURSE_STRICT_CHECKS": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        with open(private / "stdout", "wb") as out, open(private / "stderr", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", str(CHILD), str(LIBROOT)], cwd=scratch, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                    close_fds=True)
            timed_out = cpu_out = False
            while proc.poll() is None:
                if time.perf_counter() - t0 > limits.wall_s:
                    timed_out = True
                    break
                # the CPU of all its processes together: a fork bomb cannot spread its time over many
                pids = processes_of_uid(uid) if uid is not None else [proc.pid, *_descendants(proc.pid)]
                if _cpu_seconds(pids) > limits.cpu_s:
                    cpu_out = True
                    break
                time.sleep(0.1)
            leftover = kill_everything(proc, uid, keep)
            proc.wait()
        seconds = time.perf_counter() - t0
        with open(private / "stdout", "rb") as fh:
            raw = fh.read(MAX_REPORT_BYTES)
        with open(private / "stderr", "rb") as fh:
            err_tail = fh.read(MAX_REPORT_BYTES)[-2000:].decode("utf-8", "replace")
        report = None
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.startswith(SENTINEL):
                try:
                    candidate = json.loads(line[len(SENTINEL):])
                except (ValueError, RecursionError):
                    continue
                if isinstance(candidate, dict):
                    report = candidate
                    break  # the first report: the grader's own, written once the work is done
        reason = ""
        rc = proc.returncode
        if cpu_out:
            reason = f"CPU time limit: its processes used more than {limits.cpu_s} s of CPU together (ended by the grader)"
        elif timed_out:
            reason = f"time limit: still running after {limits.wall_s:g} s (ended by the grader)"
        elif report is None:
            if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and seconds >= limits.cpu_s * 0.9):
                reason = f"CPU time limit: more than {limits.cpu_s} s of CPU"
            elif "MemoryError" in err_tail or "Cannot allocate memory" in err_tail or "std::bad_alloc" in err_tail:
                reason = f"memory limit: more than {limits.memory_mb} MB"
            elif rc is not None and rc < 0:
                reason = f"crashed: killed by signal {signal.Signals(-rc).name}"
            else:
                reason = f"crashed: the grading process exited (status {rc}) before reporting"
        return {"report": report, "reason": reason, "seconds": seconds, "leftover": leftover}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
