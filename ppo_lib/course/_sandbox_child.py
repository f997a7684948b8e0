"""The student side of isolated grading: run as ``python -I _sandbox_child.py LIBROOT`` in a
scratch directory holding only ``job.json``, by ``ppo_lib.course.sandbox``.

Everything after ``_confine()`` runs untrusted student code, so nothing this process says is
believed: it only *reports* what the student's functions returned on the checker's cases, as
plain data (JSON) on its standard output. The verdict is computed by the grader in another
process, which compares that data with the reference it computes itself; a student who patches
the checker here can only change their own answers, never the comparison.

This file imports nothing from ``ppo_lib`` until the sandbox is set up (limits, a separate
user where the grader is root, no network, instructor paths hidden).
"""

import ctypes
import dataclasses
import json
import os
import resource
import sys

SENTINEL = "@@PPO-SANDBOX-RESULT@@ "
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_REC, MS_PRIVATE, MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x4000, 1 << 18, 1, 2, 4, 32


def _confine(job: dict) -> list:
    """Limits first, then (as root) namespaces, hidden paths and a user of its own. Returns the
    protections that could not be applied (said in the result, never fatal)."""
    missing = []
    lim = job["limits"]
    mb = 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, int(lim["cpu_s"])), (resource.RLIMIT_AS, int(lim["memory_mb"]) * mb),
                       (resource.RLIMIT_FSIZE, int(lim["file_mb"]) * mb), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NOFILE, int(lim["open_files"]))):
        resource.setrlimit(res, (value, value))
    uid = job.get("uid")
    if uid is not None and os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            missing.append("network namespace")
        if libc.unshare(CLONE_NEWNS) == 0:
            libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
            missing += _reachable(libc, [sys.base_prefix, sys.prefix, sys.argv[1]], uid)
            for path in job.get("hide", []):
                if os.path.isdir(path):
                    opts = b"size=16k,mode=000"
                    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, opts) != 0:
                        missing.append(f"hiding {path}")
                elif os.path.exists(path):
                    if libc.mount(b"/dev/null", path.encode(), None, 4096, None) != 0:  # MS_BIND
                        missing.append(f"hiding {path}")
        else:
            missing.append("mount namespace (instructor paths hidden)")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        # per-user process limit: only meaningful once we are not root (root ignores it)
        resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["processes"]), int(lim["processes"])))
    else:
        missing.append("separate user (the grader is not root: student code runs as the grader's user)")
        missing.append("network namespace")
        nproc = int(lim["processes"]) + _own_processes()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    return missing


MS_BIND = 4096


def _world_traversable(path: str) -> str | None:
    """The highest ancestor of ``path`` that others cannot enter (e.g. /root, mode 0700), or None."""
    parts = os.path.realpath(path).split("/")
    for k in range(2, len(parts) + 1):
        d = "/".join(parts[:k]) or "/"
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


def _reachable(libc, paths, uid) -> list:
    """Make the Python installation, the environment and the library readable by the sandbox user
    when they sit under a private folder (e.g. pyenv under /root): that folder is replaced by an empty
    one holding only read-only views of them (which also hides the rest of it). Every path is set
    aside first, so two of them under the same private folder both come back."""
    missing, moved, blocked_dirs = [], [], []
    keep_root = os.path.join(os.getcwd(), ".keep")
    for k, path in enumerate(dict.fromkeys(os.path.realpath(p) for p in paths)):
        blocked = _world_traversable(path)
        if blocked is None:
            continue
        keep = os.path.join(keep_root, str(k))
        os.makedirs(keep, exist_ok=True)
        if libc.mount(path.encode(), keep.encode(), None, MS_BIND | MS_REC, None) != 0:
            missing.append(f"{path} is not readable by the sandbox user")
            continue
        moved.append((path, keep))
        if blocked not in blocked_dirs:
            blocked_dirs.append(blocked)
    for blocked in sorted(blocked_dirs, key=len):
        if libc.mount(b"tmpfs", blocked.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=755") != 0:
            missing.append(f"{blocked} could not be hidden")
    for path, keep in moved:
        os.makedirs(path, mode=0o755, exist_ok=True)
        libc.mount(keep.encode(), path.encode(), None, MS_BIND | MS_REC, None)
        libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None)
        libc.umount2(keep.encode(), 2)  # MNT_DETACH
        os.rmdir(keep)
    if os.path.isdir(keep_root):
        os.rmdir(keep_root)
    return missing


def _own_processes() -> int:
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


# ------------------------------------------------------------------ values as data

MAX_ITEMS = 200_000
#: the modules whose dataclasses travel as data (a checker's ``run`` may return one); the grader
#: rebuilds only those
CHECKER_DATA_MODULES = ("ppo_lib.teaching.checks.",)


def encode(x, depth=0):
    """A value as JSON-able data: numbers, arrays, tensors, containers; anything else as its repr
    (with its float-array view where numpy has one)."""
    import numpy as np

    try:
        if depth > 12:
            return {"t": "repr", "type": type(x).__name__, "repr": "(nested too deep)"}
        if x is None or isinstance(x, bool):
            return {"t": "v", "v": x}
        if isinstance(x, int):
            return {"t": "int", "v": str(x)}
        if isinstance(x, float):
            return {"t": "float", "v": x}
        if isinstance(x, str):
            return {"t": "str", "v": x[:10_000]}
        if type(x).__name__ == "InputChanged" and hasattr(x, "name"):
            return {"t": "inputchanged", "name": str(x.name)[:200]}
        if dataclasses.is_dataclass(x) and not isinstance(x, type) and \
                type(x).__module__.startswith(CHECKER_DATA_MODULES):
            # a checker's own record of a call (e.g. the capstone's UpdateRecord): its fields as data
            return {"t": "dataclass", "module": type(x).__module__, "name": type(x).__name__,
                    "fields": {f.name: encode(getattr(x, f.name), depth + 1) for f in dataclasses.fields(x)}}
        if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numel"):
            if x.numel() > MAX_ITEMS or x.is_complex():
                raise ValueError("too large or complex")
            return {"t": "tensor", "dtype": str(x.dtype).replace("torch.", ""), "shape": list(x.shape),
                    "data": x.detach().cpu().reshape(-1).tolist(), "grad": bool(x.requires_grad)}
        if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            if x.size > MAX_ITEMS:
                raise ValueError("too large")
            return {"t": "ndarray", "dtype": x.dtype.str, "shape": list(x.shape), "data": x.reshape(-1).tolist()}
        if isinstance(x, np.generic) and x.dtype.kind in "biuf":
            return {"t": "npscalar", "dtype": x.dtype.str, "v": x.item()}
        if isinstance(x, (tuple, list)):
            if len(x) > MAX_ITEMS:
                raise ValueError("too long")
            return {"t": type(x).__name__ if type(x) in (tuple, list) else "list",
                    "items": [encode(v, depth + 1) for v in x]}
        if isinstance(x, dict):
            return {"t": "dict", "items": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in list(x.items())[:10_000]]}
    except Exception:
        pass
    try:
        text = repr(x)[:2000]
    except Exception:
        text = "(no repr)"
    out = {"t": "repr", "type": type(x).__name__, "module": str(getattr(type(x), "__module__", ""))[:100],
           "repr": text}
    try:
        arr = np.asarray(x, dtype=np.float64)
        if arr.size <= MAX_ITEMS:
            out["array"] = encode(arr, depth + 1)
    except Exception:
        pass
    return out


def _raised(exc, fn):
    from ppo_lib.teaching.checks.core import is_placeholder, learner_frame

    try:
        frame = learner_frame(exc)
        lineno, line = frame.lineno, (frame.line or "").strip()
    except Exception:
        lineno, line = None, ""
    try:
        placeholder = bool(is_placeholder(fn, exc))
    except Exception:
        placeholder = False
    try:
        message = str(exc)[:2000]
    except Exception:
        message = "(an exception whose message cannot be read)"
    return {"type": type(exc).__name__[:100], "message": message, "lineno": lineno, "line": line[:300],
            "notimplemented": isinstance(exc, NotImplementedError), "placeholder": placeholder,
            "memory": isinstance(exc, MemoryError)}


def _run_student_cell(step, ns, report):
    """Run the student's exercise cell (if the step has one) in ``ns`` and describe what it left
    under the exercise's name: ``report`` gets cell_error, defined, callable, type and
    library_function. Returns that object (None if the name is undefined)."""
    import linecache

    name = step["name"]
    code = step.get("code")
    if code is not None:
        filename = f"<exercise cell {step['grade_id']}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            exec(compile(code, filename, "exec"), ns)
        except BaseException as exc:  # noqa: BLE001 - the student's cell, whatever it raises
            report["cell_error"] = _raised(exc, None)
    fn = ns.get(name)
    report["defined"] = name in ns
    report["callable"] = callable(fn)
    report["type"] = type(fn).__name__
    if callable(fn):
        report["library_function"] = str(getattr(fn, "__module__", "") or "").startswith("ppo_lib")
    return fn


def _run_exercise(step, ns):
    import copy
    import inspect

    import ppo_lib.teaching.checks as checks

    name, checker = step["name"], getattr(checks, step["checker"])
    report = {"defined": False, "cell_error": None, "callable": False, "type": "", "argnames": [], "cases": [],
              "library_function": False}
    fn = _run_student_cell(step, ns, report)
    if callable(fn):
        try:
            report["argnames"] = [p.name for p in inspect.signature(fn).parameters.values()
                                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except Exception:
            pass
        for case in checker.cases:
            args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
            rec = {"got": None, "raised": None, "args_after": None}
            try:
                rec["got"] = encode(checker.run(fn, *args, **kwargs))
            except BaseException as exc:  # noqa: BLE001
                rec["raised"] = _raised(exc, fn)
            rec["args_after"] = [encode(a) for a in args]
            report["cases"].append(rec)
        # as in the notebook: the name goes on as the checked function or the reference
        try:
            ns[name] = checker.evaluate(fn).fn
        except BaseException:  # noqa: BLE001
            ns[name] = checker.reference
    else:
        ns[name] = checker.reference
    if step.get("after"):  # the checker cell's other lines (the chapter's, not the student's), as the notebook runs them
        try:
            exec(compile(step["after"], f"<checker cell after {step['grade_id']}>", "exec"), ns)
        except BaseException as exc:  # noqa: BLE001
            report["after_error"] = _raised(exc, None)
    return report


def _run_guess(step, ns):
    """A guess exercise: run the student's cell, call their function with no arguments, and report
    its value as data (None while it raises NotImplementedError, as the chapter's cell does); the
    grader checks it in its own process."""
    report = {"defined": False, "cell_error": None, "callable": False, "type": "", "guess": None, "raised": None,
              "library_function": False}
    fn = _run_student_cell(step, ns, report)
    if callable(fn):
        try:
            guess = fn()
        except NotImplementedError:
            guess = None
        except BaseException as exc:  # noqa: BLE001
            report["raised"] = _raised(exc, fn)
            guess = None
        report["guess"] = encode(guess)
    return report


def main():
    sys.path.insert(0, sys.argv[1])
    with open("job.json") as fh:
        job = json.load(fh)
    out = os.fdopen(os.dup(1), "w")
    missing = _confine(job)
    os.environ.pop("PPO_COURSE_STRICT_CHECKS", None)
    result = {"missing_protections": missing, "prelude_errors": [], "exercises": {}}
    # the student's prints go nowhere (never into the result; no file to fill up)
    log = os.open(os.devnull, os.O_WRONLY)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    import warnings

    warnings.simplefilter("ignore")
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass
    ns = {"__name__": "__main__"}
    for step in job["steps"]:
        if step["kind"] == "prelude":
            try:
                exec(compile(step["code"], f"<chapter cells before {step['label']}>", "exec"), ns)
            except BaseException as exc:  # noqa: BLE001
                result["prelude_errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
        elif step["kind"] == "guess":
            result["exercises"][step["grade_id"]] = _run_guess(step, ns)
        else:
            result["exercises"][step["grade_id"]] = _run_exercise(step, ns)
    out.write(SENTINEL + json.dumps(result) + "\n")
    out.flush()
    os._exit(0)  # no atexit handler or thread of the student's runs after the report


if __name__ == "__main__":
    main()
