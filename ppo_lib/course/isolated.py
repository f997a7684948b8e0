"""Isolated, parallel, resumable autograding: each (student, chapter) graded on its own.

What a grade depends on is the student's exercise cells, what they need (the chapter's imports
and definitions before them), and the checkers; not the chapter's training runs. So a
submission is graded without executing the notebook:

1. the grader reads the submission itself (never through a symlink, size-capped, JSON only),
   keeps each solution cell whose nbgrader ``grade_id`` is one of the release's, and ignores
   every other cell and any odd metadata (reported, never fatal);
2. ``sandbox.run_job`` runs those cells, after the release's import/definition statements, in a
   scratch directory with limits (see ``sandbox``); the student's functions run on the
   checker's cases there and their outputs come back as *data*;
3. this process, which never ran student code, compares that data with the reference and the
   catalogue of usual mistakes exactly as ``Exercise.evaluate`` does (same verdict, same
   message), so patching the checker in the student's code changes nothing. A guess exercise
   (chapter 7's bug hunt, chapter 10's diagnosis: a ``GuessCheck``) is the same: the value the
   student's function returns comes back as data and the guess checker judges it here, with the
   record it reads itself.

Each result is kept in ``<course>/isolated/<chapter>/<key>.json`` (keyed by a hash of the
student id, tagged with a hash of the submission): a rerun skips what is graded. The results are
then merged into the course gradebook (``gradebook.db``), ``feedback/``, ``grades.csv``,
``grades_by_exercise.csv`` and ``integrity.csv``, in the order of the student ids, so a serial
and a parallel run write the same files.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import copy
import csv
import dataclasses
import hashlib
import html
import json
import multiprocessing as mp
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

from .grading import CHECK_LINE, nbgrader_meta, write_integrity
from .manifest import REPO_ROOT
from .sandbox import Limits, protections, run_job

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024
RESULTS = "isolated"
# names in a solution that read, run or patch things beyond the exercise: reported, never graded on
SUSPICIOUS = ("_ih", "_oh", "In", "Out", "get_ipython", "open", "exec", "eval", "compile", "__import__",
              "importlib", "subprocess", "os", "sys", "shutil", "socket", "ctypes", "signal", "gc", "inspect",
              "builtins", "__builtins__", "globals", "setattr", "pathlib", "Path", "sqlite3", "multiprocessing",
              "threading", "pickle")


class UnsupportedChapter(ValueError):
    """A chapter with a checker cell that is neither ``name = check_name(name)`` (maybe followed by
    the chapter's own lines) nor a call of one guess checker
    (:class:`~ppo_lib.teaching.checks.core.GuessCheck`): grade it with ``--mode notebook``."""


# ------------------------------------------------------------------ reading notebooks safely

def _src(cell) -> str:
    s = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(s, list):
        return "".join(x for x in s if isinstance(x, str))
    return s if isinstance(s, str) else ""


def read_submission(path: Path) -> tuple[bytes | None, str]:
    """The file's bytes, never through a symlink (of the file or of the student's folders inside
    the course directory), or None and why."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if os.path.islink(path):
            return None, "the submission is a symbolic link: not followed, not graded"
        return None, f"the submission cannot be read ({type(exc).__name__})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "the submission is not a regular file: not graded"
        if st.st_size > MAX_NOTEBOOK_BYTES:
            return None, f"the submission is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB: not graded"
        with os.fdopen(fd, "rb") as fh:
            fd = None
            return fh.read(MAX_NOTEBOOK_BYTES + 1), ""
    finally:
        if fd is not None:
            os.close(fd)


def parse_notebook(raw: bytes) -> tuple[dict | None, str]:
    try:
        nb = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "the submission is not a notebook (not JSON): not graded"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "the submission is not a notebook (no list of cells): not graded"
    return nb, ""


def solution_cells(nb: dict, wanted: set[str]) -> tuple[dict[str, str], list[str]]:
    """``{grade_id: source}`` of the submission's solution cells for the release's exercises, and
    what was odd (bad metadata, duplicates), in words. A cell with odd metadata is skipped, never
    fatal."""
    found, odd = {}, []
    for i, cell in enumerate(nb["cells"], start=1):
        if not isinstance(cell, dict):
            odd.append(f"cell {i} is not a cell ({type(cell).__name__}): ignored")
            continue
        meta = cell.get("metadata")
        if not isinstance(meta, dict) or "nbgrader" not in meta:
            continue
        nbg = meta["nbgrader"]
        if not isinstance(nbg, dict):
            odd.append(f"cell {i}: nbgrader metadata is a {type(nbg).__name__}, not a mapping: ignored")
            continue
        gid = nbg.get("grade_id")
        if not isinstance(gid, str):
            odd.append(f"cell {i}: nbgrader grade_id {str(gid)[:40]!r} is not a name: ignored")
            continue
        if gid not in wanted or cell.get("cell_type") != "code":
            continue
        if not isinstance(cell.get("source"), (str, list)):
            odd.append(f"cell {i} ({gid}): its source is not text: ignored")
            continue
        if gid in found:
            odd.append(f"cell {i}: a second cell with grade_id {gid!r}: ignored (the first is graded)")
            continue
        found[gid] = _src(cell)
    return found, odd


# ------------------------------------------------------------------ the chapter's plan

_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _light_statements(code: str) -> str:
    """Of a release cell: its imports, definitions and constant assignments (no training run)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ""
    kept = []
    for node in tree.body:
        if isinstance(node, _KEEP):
            kept.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                ast.literal_eval(node.value)
                kept.append(node)
            except ValueError:
                pass
    return ast.unparse(ast.Module(body=kept, type_ignores=[])) if kept else ""


def chapter_plan(release_nb: dict) -> dict:
    """From the release (the instructor's file): the graded exercises in order, with the
    statements the chapter runs before each, and the library names it imports."""
    steps, exercises, pending, prelude = [], [], None, []
    library_names = {"ppo_lib"}
    imported = {}  # name in the chapter -> (ppo_lib module, name there)
    for cell in release_nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        meta, code = nbgrader_meta(cell), _src(cell)
        if meta.get("solution"):
            pending = meta["grade_id"]
            steps.append({"kind": "prelude", "label": pending, "code": "\n".join(p for p in prelude if p)})
            prelude = []
            continue
        if meta.get("grade") and pending:
            match, after = _check_line_first(code)
            if match:
                exercises.append({"grade_id": pending, "check_id": meta["grade_id"], "name": match["name"],
                                  "checker": match["checker"], "points": float(meta.get("points", 0))})
                steps.append({"kind": "exercise", "grade_id": pending, "name": match["name"],
                              "checker": match["checker"], "after": after})
            else:  # a checker of a guess (chapter 7's bug hunt, chapter 10's diagnosis), or refused
                checker, module, guesser = _guess_checker(code, imported, meta.get("grade_id"))
                exercises.append({"grade_id": pending, "check_id": meta["grade_id"], "name": guesser,
                                  "checker": checker, "module": module, "kind": "guess",
                                  "points": float(meta.get("points", 0))})
                steps.append({"kind": "guess", "grade_id": pending, "name": guesser})
            pending = None
            continue
        prelude.append(_light_statements(code))
        try:
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ppo_lib"):
                    library_names.update(a.asname or a.name for a in node.names)
                    imported.update({a.asname or a.name: (node.module, a.name) for a in node.names})
                elif isinstance(node, ast.Import):
                    library_names.update((a.asname or a.name).split(".")[0] for a in node.names
                                         if a.name.startswith("ppo_lib"))
        except SyntaxError:
            pass
    library_names = {n for n in library_names if not n.startswith("check_")} | {"ppo_lib"}
    return {"steps": steps, "exercises": exercises, "library_names": sorted(library_names)}


def _check_line_first(code: str):
    """``(match, after)`` for a checker cell whose first statement is ``name = check_name(name)``:
    the match, and the cell's other statements as code (``""`` when there are none; chapter 10's
    format reward prints its cases after the check), which the sandbox runs after the check as the
    notebook does; ``(None, "")`` otherwise."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return None, ""
    if not body:
        return None, ""
    first = ast.get_source_segment(code, body[0]) or ""
    match = CHECK_LINE.match(first.strip()) if "\n" not in first.strip() else None
    if not match:
        return None, ""
    rest = ast.unparse(ast.Module(body=body[1:], type_ignores=[])) if len(body) > 1 else ""
    return match, rest


#: where a guess checker may come from (the grader imports it in its own process)
GUESS_CHECKER_MODULES = ("ppo_lib.teaching.",)


def load_checker(ex: dict):
    """The checker object of one planned exercise, imported in the grader's process: a
    ``check_*`` of ``ppo_lib.teaching.checks``, or a guess checker from ``ex["module"]``."""
    import importlib

    module = ex.get("module") or "ppo_lib.teaching.checks"
    if module != "ppo_lib.teaching.checks" and not module.startswith(GUESS_CHECKER_MODULES):
        raise UnsupportedChapter(f"checker {ex['checker']!r} comes from {module!r}, not from ppo_lib.teaching")
    return getattr(importlib.import_module(module), ex["checker"])


def _guess_checker(code: str, imported: dict, check_id) -> tuple[str, str, str]:
    """``(checker name, its module, the learner's function)`` of a checker cell that checks a
    guess: it calls exactly one ``check_*``, imported by the chapter from ``ppo_lib.teaching``, that
    is a :class:`~ppo_lib.teaching.checks.core.GuessCheck`. Anything else: UnsupportedChapter."""
    from ppo_lib.teaching.checks.core import GuessCheck

    refuse = (f"checker cell {check_id!r} is neither `name = check_name(name)` nor a call of one guess "
              f"checker (a ppo_lib.teaching GuessCheck); grade this chapter with --mode notebook")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        raise UnsupportedChapter(refuse) from None
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")}
    if len(called) != 1 or next(iter(called)) not in imported:
        raise UnsupportedChapter(refuse)
    name = next(iter(called))
    module, attr = imported[name]
    if not module.startswith(GUESS_CHECKER_MODULES):
        raise UnsupportedChapter(refuse)
    import importlib

    checker = getattr(importlib.import_module(module), attr, None)
    if not isinstance(checker, GuessCheck):
        raise UnsupportedChapter(refuse)
    return attr, module, checker.guess_function


def _names_used(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_]\w*", code))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.name.split(".")[0] for a in node.names)
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
    return names


def static_flags(code: str, library_names) -> list[str]:
    """What a solution cell uses that an exercise does not need, in words (for integrity.csv)."""
    used = _names_used(code)
    flags = []
    lib = sorted(used & set(library_names))
    if lib:
        flags.append(f"uses the library's own code ({', '.join(lib)}): may only return the reference; check by hand")
    odd = sorted(used & set(SUSPICIOUS))
    if odd:
        flags.append(f"suspicious code ({', '.join(odd)}): check by hand")
    return flags


# ------------------------------------------------------------------ the verdict (never in the student's process)

class _Raised(Exception):
    """A student's function raised this (reported as data) on a case."""


class _Opaque:
    """A value the student's process could only describe: its repr, and its float-array view if any."""

    def __init__(self, d):
        self._repr, self._array = d.get("repr", "?"), d.get("array")
        self.__class__ = type(str(d.get("type", "object"))[:80] or "object", (_Opaque,), {})
        if self._array is not None:
            self._array = decode(self._array)

    def __repr__(self):
        return self._repr

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        if self._array is None:
            raise TypeError("not a number or an array")
        return np.asarray(self._array, dtype=dtype)


def decode(d):
    """Data from ``_sandbox_child.encode`` back to values (numpy arrays, torch tensors, containers)."""
    import numpy as np

    if not isinstance(d, dict):
        return None
    t = d.get("t")
    if t == "v":
        return d.get("v") if d.get("v") in (None, True, False) else None
    if t == "int":
        try:
            return int(str(d.get("v"))[:5000])
        except ValueError:
            return None
    if t == "float":
        v = d.get("v")
        return float(v) if isinstance(v, (int, float)) else None
    if t == "str":
        return str(d.get("v"))
    if t == "inputchanged":
        from ppo_lib.teaching.checks.core import InputChanged

        return InputChanged(str(d.get("name")))
    if t in ("tensor", "ndarray"):
        shape = [int(s) for s in d.get("shape", [])]
        data = d.get("data", [])
        if t == "ndarray":
            return np.asarray(data, dtype=np.dtype(str(d.get("dtype")))).reshape(shape)
        import torch

        dtype = getattr(torch, str(d.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            return None
        x = torch.tensor(data, dtype=dtype).reshape(shape)
        if d.get("grad") and x.is_floating_point():
            x.requires_grad_(True)
        return x
    if t == "npscalar":
        return np.dtype(str(d.get("dtype"))).type(d.get("v"))
    if t == "dataclass":
        # only a checker's own record types, rebuilt from their fields (never an arbitrary class)
        import importlib

        from ppo_lib.course._sandbox_child import CHECKER_DATA_MODULES

        module, name = str(d.get("module")), str(d.get("name"))
        if not module.startswith(CHECKER_DATA_MODULES):
            return None
        cls = getattr(importlib.import_module(module), name, None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None
        fields = d.get("fields") if isinstance(d.get("fields"), dict) else {}
        names = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != names:
            return None
        return cls(**{k: decode(v) for k, v in fields.items()})
    if t in ("tuple", "list"):
        items = [decode(v) for v in d.get("items", [])]
        return tuple(items) if t == "tuple" else items
    if t == "dict":
        out = {}
        for pair in d.get("items", []):
            try:
                out[decode(pair[0])] = decode(pair[1])
            except (TypeError, IndexError):
                pass
        return out
    return _Opaque(d)


def _raised_text(r: dict) -> tuple[str, bool]:
    where = ""
    if r.get("lineno") is not None:
        where = f" (line {r['lineno']}: `{r['line']}`)" if r.get("line") else f" (line {r['lineno']})"
    extra = ("\n  (your function raises NotImplementedError for this input: finish it, or remove "
             "the `raise` line)" if r.get("notimplemented") else "")
    return f"{r.get('type')}: {r.get('message')}{where}{extra}", bool(r.get("memory"))


def judge(exercise, rep: dict | None) -> tuple[str, str]:
    """``(status, message)`` of one exercise from what the student's process reported, computed as
    ``Exercise.evaluate`` computes it (the comparison and the mistakes run here)."""
    import contextlib
    import io
    import warnings

    import numpy as np

    from ppo_lib.teaching.checks.core import InputChanged, same_input

    ex = exercise
    fallback = (f"The notebook goes on with the library's reference version "
                f"(`{ex.reference_name}`), so you can read on.")
    if rep is None:
        return "error", f"✗ {ex.name}: not graded: the grading process did not report this exercise.\n{fallback}"
    if not rep.get("callable"):
        if rep.get("cell_error"):
            text, _ = _raised_text(rep["cell_error"])
            return "error", f"✗ {ex.name}: your exercise cell raised an error.\n  {text}\n{fallback}"
        if not rep.get("defined"):
            return "error", f"✗ {ex.name}: your notebook does not define this exercise's function.\n{fallback}"
        return "error", f"✗ {ex.name}: expected a function, got {rep.get('type')}.\n{fallback}"
    cases = rep.get("cases") or []
    if len(cases) != len(ex.cases):
        return "error", f"✗ {ex.name}: not graded: the grading process reported {len(cases)} cases, not {len(ex.cases)}."

    def outputs():
        outs = []
        for case, rec in zip(ex.cases, cases):
            if rec.get("raised"):
                outs.append(_Raised())
                continue
            got, after = decode(rec.get("got")), [decode(a) for a in (rec.get("args_after") or [])]
            outs.append(got)
            if isinstance(got, InputChanged) or any(not same_input(a, b) for a, b in zip(case.args, after)):
                return None
        return outs

    def diagnose():
        with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            mine = outputs()
            if mine is None:
                return None
            for mistake in ex.mistakes:
                theirs = ex._outputs(mistake.impl)
                if theirs is None:
                    continue
                if all(isinstance(b, Exception) or (not isinstance(a, Exception) and ex._matches(a, b))
                       for a, b in zip(theirs, mine)):
                    return mistake.feedback
            return None

    for i, (case, rec) in enumerate(zip(ex.cases, cases), start=1):
        if rec.get("raised"):
            r = rec["raised"]
            if i == 1 and r.get("notimplemented") and r.get("placeholder"):
                return "unfilled", (f"○ {ex.name}: not filled in yet. Replace `raise NotImplementedError()` "
                                    f"with your code and run the cell again.\n{fallback}")
            text, _ = _raised_text(r)
            return "error", (f"✗ {ex.name}: case {i} of {len(ex.cases)} raised an error.\n"
                             f"  Case: {case.describe}\n  {text}\n{fallback}")
        got = decode(rec.get("got"))
        expected = ex.run(ex.reference, *copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        try:
            problem = ex.compare(expected, got)
        except Exception as exc:
            from ppo_lib.teaching.checks.core import show_value, describe_returned

            problem = (f"could not read what your function returned ({describe_returned(got)}: "
                       f"{show_value(got)}): {type(exc).__name__}: {exc}")
        input_changed = isinstance(got, InputChanged)
        if problem is None:
            after = [decode(a) for a in (rec.get("args_after") or [])]
            modified = [k for k, (a, b) in enumerate(zip(case.args, after)) if not same_input(a, b)]
            if modified:
                input_changed = True
                names = rep.get("argnames") or []
                k = modified[0]
                arg = f"argument {k + 1}, `{names[k]}`" if k < len(names) else f"argument {k + 1}"
                problem = f"the answer is right, but your function changed its input ({arg}); work on a copy instead"
        if problem is not None:
            hint = None if input_changed else diagnose()
            lines = [f"✗ {ex.name}: not right yet (case {i} of {len(ex.cases)}).",
                     f"  Case: {case.describe}", f"  {problem}"]
            if hint:
                lines.append(f"  Hint: {hint}")
            lines.append(fallback)
            return "wrong", "\n".join(lines)
    if rep.get("after_error"):  # the checker cell's own lines after the check failed on this function
        text, _ = _raised_text(rep["after_error"])
        return "error", (f"✗ {ex.name}: all {len(ex.cases)} cases pass, but the checker cell's lines after the "
                         f"check raised an error with your function.\n  {text}")
    return "passed", (f"✓ {ex.name}: all {len(ex.cases)} cases pass. Well done: "
                      f"the notebook now uses your function.")


def judge_guess(checker, rep: dict | None) -> tuple[str, str]:
    """``(status, message)`` of a guess exercise: the value the student's function returned,
    carried out of the sandbox as data, checked here by ``checker.evaluate`` with the checker's
    own context (read from the library's files, never from the student's process), as the
    notebook's checker cell checks it."""
    name = checker.guess_function
    if rep is None:
        return "error", f"✗ {checker.name}: not graded: the grading process did not report this exercise."
    if not rep.get("callable"):
        if rep.get("cell_error"):
            text, _ = _raised_text(rep["cell_error"])
            return "error", f"✗ {checker.name}: your exercise cell raised an error.\n  {text}"
        if not rep.get("defined"):
            return "error", f"✗ {checker.name}: your notebook does not define `{name}()`."
        return "error", f"✗ {checker.name}: `{name}` should be a function, got {rep.get('type')}."
    if rep.get("raised"):
        text, _ = _raised_text(rep["raised"])
        return "error", f"✗ {checker.name}: `{name}()` raised an error.\n  {text}"
    result = checker.evaluate(decode(rep.get("guess")), *checker.context())
    return result.status, result.message


# ------------------------------------------------------------------ one submission

def student_key(student: str) -> str:
    """A file name for any student id (``...``, ``.hidden``, shell characters)."""
    return hashlib.sha256(student.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def grade_one(task: dict) -> dict:
    """Grade one (student, chapter): ``task`` holds the submission's bytes (read by the grader
    before any student code ran), the chapter's plan and the limits. Runs in a worker process
    that never executes student code itself."""
    t0 = time.perf_counter()
    plan, student, assignment = task["plan"], task["student"], task["assignment"]
    result = {"student": student, "assignment": assignment, "sha256": task["sha256"], "reason": "",
              "exercises": [], "integrity": [], "seconds": 0.0, "mode": "isolated"}

    def flag(cell, problem):
        result["integrity"].append({"student": student, "assignment": assignment, "cell": cell, "problem": problem})

    def zero(status, message):
        for ex in plan["exercises"]:
            result["exercises"].append({"check_id": ex["check_id"], "score": 0.0, "max_score": ex["points"],
                                        "status": status, "message": message})

    for p in task.get("integrity_pre", []):
        flag(p["cell"], p["problem"])
    if task.get("reason"):
        result["reason"] = task["reason"]
        zero("not graded", task["reason"])
        flag("(notebook)", task["reason"])
        result["seconds"] = time.perf_counter() - t0
        return result
    nb, reason = parse_notebook(task["raw"].encode("latin-1"))
    if nb is None:
        result["reason"] = reason
        zero("not graded", reason)
        flag("(notebook)", reason)
        result["seconds"] = time.perf_counter() - t0
        return result
    wanted = {ex["grade_id"] for ex in plan["exercises"]}
    cells, odd = solution_cells(nb, wanted)
    for text in odd:
        flag("(metadata)", text)
    if not cells:
        result["reason"] = (f"none of {assignment}'s exercise cells is in this notebook "
                            f"(another chapter, or the cells' nbgrader metadata was removed): not graded")
        flag("(notebook)", result["reason"])
        zero("not graded", result["reason"])
        result["seconds"] = time.perf_counter() - t0
        return result
    for gid, code in cells.items():
        for text in static_flags(code, plan["library_names"]):
            flag(gid, text)
    steps = []
    for step in plan["steps"]:
        step = dict(step)
        if step["kind"] in ("exercise", "guess"):
            step["code"] = cells.get(step["grade_id"])
        steps.append(step)
    run = run_job({"steps": steps, "hide": task.get("hide", [])}, Limits(**task["limits"]))
    report = run["report"] or {}
    if run["reason"]:
        result["reason"] = run["reason"]
        flag("(sandbox)", run["reason"])
    if run["leftover"]:
        flag("(sandbox)", f"left {run['leftover']} process(es) running after grading: all were killed")
    reports = report.get("exercises") if isinstance(report.get("exercises"), dict) else {}
    for ex in plan["exercises"]:
        exercise = load_checker(ex)
        rep = reports.get(ex["grade_id"]) if run["report"] is not None else None
        if rep is not None and not isinstance(rep, dict):
            rep = None
        if rep is None and run["reason"]:
            status, message = "error", f"✗ {exercise.name}: scored 0: {run['reason']}."
        else:
            try:
                status, message = (judge_guess if ex.get("kind") == "guess" else judge)(exercise, rep)
            except Exception as exc:  # odd data from the student's process: 0, said in words
                status, message = "error", f"✗ {exercise.name}: what your function returned could not be read ({type(exc).__name__})."
        if rep and rep.get("library_function"):
            flag(ex["grade_id"], "the function is the library's own (defined in ppo_lib): check by hand")
        result["exercises"].append({"check_id": ex["check_id"], "score": ex["points"] if status == "passed" else 0.0,
                                    "max_score": ex["points"], "status": status, "message": message})
    result["seconds"] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------ the class

def _worker_init():
    import torch

    torch.set_num_threads(1)


def _not_graded(task, reason):
    return {"student": task["student"], "assignment": task["assignment"], "sha256": task["sha256"],
            "reason": reason, "integrity": [], "seconds": 0.0, "mode": "isolated",
            "exercises": [{"check_id": ex["check_id"], "score": 0.0, "max_score": ex["points"],
                           "status": "not graded", "message": reason} for ex in task["plan"]["exercises"]]}


def _grade_in_worker(task):
    try:
        return grade_one(task)
    except Exception as exc:  # a bug of ours on one submission never withholds the others
        return _not_graded(task, f"grader error: {type(exc).__name__}: {exc}")


def _grade_on_ray(todo, address: str, keep) -> None:
    """Each submission a Ray task (one CPU; retried elsewhere if its node dies). The nodes need
    this repository and its environment at the same paths (or a runtime_env that ships them)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install -e '.[ray]' (an optional extra)") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    try:
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_grade_in_worker)
        pending = {remote.remote(t): t for t in todo}
        n = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception:  # the task failed after its retries: 0 with the reason, never a stop
                    res = None
                n += 1
                keep(n, task, res)
    finally:
        if started:
            ray.shutdown()


def hidden_paths(course_dir: Path, extra=()) -> list[str]:
    """What the student's process must not see: the course directory and every solutions folder
    we know of."""
    paths = [Path(course_dir), REPO_ROOT / "solutions", Path(sys.prefix).resolve().parent / "solutions", *extra]
    out = []
    for p in paths:
        p = str(Path(p).resolve())
        if p not in out and os.path.exists(p):
            out.append(p)
    return out


def collected_students(course_dir: Path, assignment: str) -> list[str]:
    submitted = Path(course_dir) / "submitted"
    if not submitted.is_dir():
        return []
    return sorted(e.name for e in os.scandir(submitted)
                  if (e.is_dir(follow_symlinks=False) or e.is_symlink()))


def _task(course_dir: Path, assignment: str, student: str, plan: dict, limits: Limits, release: dict,
          hide=()) -> dict:
    folder = Path(course_dir) / "submitted" / student
    path = folder / assignment / f"{assignment}.ipynb"
    reason = ""
    if os.path.islink(folder) or os.path.islink(folder / assignment):
        raw, reason = None, "the submission folder is a symbolic link: not followed, not graded"
    else:
        raw, reason = read_submission(path)
    digest = hashlib.sha256(raw or reason.encode()).hexdigest()
    pre = edited_graded_cells(release, raw, student, assignment) if raw is not None else []
    return {"student": student, "assignment": assignment, "raw": raw.decode("latin-1") if raw is not None else None,
            "reason": reason, "sha256": digest, "plan": plan, "limits": dataclasses.asdict(limits),
            "hide": hidden_paths(course_dir, hide), "integrity_pre": pre}


def edited_graded_cells(release: dict, raw: bytes, student: str, assignment: str) -> list[dict]:
    """Graded (locked) cells of the release the submission deleted or edited (as
    ``grading.integrity_problems``, from the bytes already read, and robust to odd metadata)."""
    nb, _ = parse_notebook(raw)
    if nb is None:
        return []
    by_id = {}
    for c in nb["cells"]:
        meta = c.get("metadata") if isinstance(c, dict) else None
        nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
        gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
        if isinstance(gid, str):
            by_id.setdefault(gid, c)
    problems = []
    for cell in release["cells"]:
        meta = nbgrader_meta(cell)
        if not (meta.get("grade") or meta.get("locked")) or meta.get("solution"):
            continue
        mine = by_id.get(meta["grade_id"])
        if mine is None:
            problems.append({"student": student, "assignment": assignment, "cell": meta["grade_id"], "problem": "deleted"})
        elif _src(mine).strip() != _src(cell).strip():
            problems.append({"student": student, "assignment": assignment, "cell": meta["grade_id"], "problem": "edited"})
    return problems


def _progress(done, total, failures, seconds, t0, workers):
    elapsed = time.perf_counter() - t0
    per = elapsed / done if done else 0.0
    eta = per * (total - done)
    print(f"\rgraded {done}/{total}  failures {failures}  {per:.1f} s/submission  ETA {eta:.0f} s   ",
          end="" if done < total else "\n", file=sys.stderr, flush=True)


def autograde_isolated(course_dir: Path, assignment: str, students=None, workers: int | None = None,
                       limits: Limits = Limits(), regrade: bool = False, progress: bool = True,
                       hide=(), ray_address: str | None = None) -> list[dict]:
    """Grade every collected student of ``assignment`` in isolation, ``workers`` at a time, skip
    those already graded (same submission), then merge everything into the course outputs.
    Returns the results in student order."""
    course_dir = Path(course_dir).expanduser().resolve()
    release = json.loads((course_dir / "release" / assignment / f"{assignment}.ipynb").read_text())
    plan = chapter_plan(release)
    students = list(students) if students else collected_students(course_dir, assignment)
    if not students:
        raise ValueError(f"{course_dir / 'submitted'}: no submission of {assignment}; run "
                         f"`python3 course.py assignments collect --submissions DIR` first")
    if os.geteuid() == 0:
        os.chmod(course_dir, 0o700)  # the sandbox user cannot even list it
    config = course_dir / "nbgrader_config.py"
    config_before = config.read_bytes() if config.exists() else None
    results_dir = course_dir / RESULTS / assignment
    results_dir.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for s in students:
        task = _task(course_dir, assignment, s, plan, limits, release, hide)
        kept = results_dir / f"{student_key(s)}.json"
        if not regrade and kept.exists():
            try:
                old = json.loads(kept.read_text())
                if old.get("sha256") == task["sha256"] and old.get("student") == s:
                    results[s] = old
                    continue
            except ValueError:
                pass
        todo.append(task)
    if progress and results:
        print(f"{assignment}: {len(results)} already graded (kept), {len(todo)} to grade", file=sys.stderr)
    workers = max(1, int(workers or os.cpu_count() or 1))
    t0, failures = time.perf_counter(), 0

    def keep(n, task, res):
        nonlocal failures
        if res is None:  # the worker (or the Ray node) died: that submission scores 0 with the reason
            res = _not_graded(task, "grader worker failed")
        failures += bool(res["reason"])
        results[res["student"]] = res
        if not res["reason"].startswith("grader"):  # our own failure is retried by the next run
            tmp = results_dir / f".{student_key(res['student'])}.tmp"
            tmp.write_text(json.dumps(res))
            os.replace(tmp, results_dir / f"{student_key(res['student'])}.json")
        if progress:
            _progress(n, len(todo), failures, 0, t0, workers)

    if todo and ray_address:
        _grade_on_ray(todo, ray_address, keep)
    elif todo:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                    initializer=_worker_init) as pool:
            futures = {pool.submit(_grade_in_worker, t): t for t in todo}
            for n, fut in enumerate(cf.as_completed(futures), start=1):
                try:
                    res = fut.result()
                except Exception:
                    res = None
                keep(n, futures[fut], res)
    if config_before is not None and (not config.exists() or config.read_bytes() != config_before):
        config.write_bytes(config_before)
        print(f"REPORT: {config} was changed during grading; the original was put back", file=sys.stderr)
    ordered = [results[s] for s in sorted(results) if s in set(students)]
    merge(course_dir, assignment, ordered)
    return ordered


# ------------------------------------------------------------------ outputs

def merge(course_dir: Path, assignment: str, results: list[dict]) -> None:
    """Results into gradebook.db, integrity.csv and feedback/ (in student order)."""
    import warnings

    from nbgrader.api import Gradebook

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        # nbgrader's add_submission builds its rows before adding them: SQLAlchemy warns, harmlessly
        warnings.filterwarnings("ignore", message=".*not in session.*")
        for res in results:
            s = res["student"]
            gb.update_or_create_student(s)
            try:
                gb.find_submission(assignment, s)
            except Exception:  # nbgrader's MissingEntry
                gb.add_submission(assignment, s)
            for ex in res["exercises"]:
                try:
                    grade = gb.find_grade(ex["check_id"], assignment, assignment, s)
                except Exception:
                    continue
                grade.auto_score = float(ex["score"])
            gb.db.commit()
    problems = [p for r in results for p in r["integrity"]]
    for p in problems:
        print(f"REPORT: {p['student']!r}, {p['assignment']}: {p['cell']}: {p['problem']}", file=sys.stderr)
    _write_integrity_sorted(course_dir, assignment, [r["student"] for r in results], problems)
    for res in results:
        write_feedback(course_dir, res)


def _write_integrity_sorted(course_dir: Path, assignment: str, students, problems) -> None:
    """integrity.csv with this run's rows replacing the same students' old ones, in (assignment,
    student) order, so that any order of grading writes the same file."""
    write_integrity(course_dir, assignment, students, problems)
    path = Path(course_dir) / "integrity.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: (r["assignment"], r["student"]))  # stable: a student's own rows keep their order
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["student", "assignment", "cell", "problem"])
        w.writeheader()
        w.writerows(rows)


def write_feedback(course_dir: Path, res: dict) -> Path:
    folder = Path(course_dir) / "feedback" / res["student"] / res["assignment"]
    for p in (folder.parent.parent, folder.parent, folder):  # a planted link is removed, never followed
        if p.is_symlink():
            p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    score = sum(e["score"] for e in res["exercises"])
    total = sum(e["max_score"] for e in res["exercises"])
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(res['assignment'])}</title></head>",
             f"<body><h1>{html.escape(res['assignment'])}: {score:g} / {total:g}</h1>"]
    if res["reason"]:
        parts.append(f"<p><b>Not graded normally:</b> {html.escape(res['reason'])}</p>")
    for e in res["exercises"]:
        parts.append(f"<h2>{html.escape(e['check_id'])}: {e['score']:g} / {e['max_score']:g} ({html.escape(e['status'])})</h2>"
                     f"<pre>{html.escape(e['message'])}</pre>")
    parts.append("</body></html>\n")
    path = folder / f"{res['assignment']}.html"
    tmp = folder / f".{res['assignment']}.html.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.write_text("".join(parts))
    os.replace(tmp, path)
    return path


def kept_results(course_dir: Path, assignment: str) -> list[dict]:
    out = []
    for path in sorted((Path(course_dir) / RESULTS / assignment).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return sorted(out, key=lambda r: r["student"])


def feedback_isolated(course_dir: Path, assignment: str) -> list[Path]:
    """feedback/<student>/<assignment>/<assignment>.html again from the kept results."""
    return [write_feedback(Path(course_dir).expanduser().resolve(), r) for r in kept_results(course_dir, assignment)]


def export_isolated(course_dir: Path) -> tuple[Path, Path]:
    """grades.csv (one row per student and chapter, with the reason when one was not graded) and
    grades_by_exercise.csv, from every kept result."""
    course_dir = Path(course_dir).expanduser().resolve()
    flagged = {}
    if (course_dir / "integrity.csv").exists():
        with open(course_dir / "integrity.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                flagged.setdefault((r["student"], r["assignment"], r["cell"]), []).append(r["problem"])
    rows = []
    for path in sorted((course_dir / RESULTS).glob("*/*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except ValueError:
            continue
    rows.sort(key=lambda r: (r["assignment"], r["student"]))
    grades, by_ex = course_dir / "grades.csv", course_dir / "grades_by_exercise.csv"
    with open(grades, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["assignment", "student_id", "score", "max_score", "reason"])
        for r in rows:
            w.writerow([r["assignment"], r["student"], sum(e["score"] for e in r["exercises"]),
                        sum(e["max_score"] for e in r["exercises"]), r["reason"]])
    with open(by_ex, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "assignment", "exercise", "score", "max_score", "report"])
        for r in rows:
            for e in r["exercises"]:
                gid = e["check_id"][:-len("_check")] if e["check_id"].endswith("_check") else e["check_id"]
                reports = flagged.get((r["student"], r["assignment"], e["check_id"]), []) + \
                    flagged.get((r["student"], r["assignment"], gid), [])
                w.writerow([r["student"], r["assignment"], e["check_id"], e["score"], e["max_score"],
                            "; ".join(reports)])
    return grades, by_ex


def collect_safely(course_dir: Path, assignment: str, submissions: Path) -> tuple[list[str], list[str]]:
    """Copy ``SUBMISSIONS/<student>/<assignment>.ipynb`` (or ``.../<assignment>/<assignment>.ipynb``)
    into ``submitted/<student>/<assignment>/`` for every student folder, whatever its name, never
    through a symbolic link (one is recorded as a link to /dev/null, which the grader reports and
    never follows). Returns (collected student ids, lines saying what was refused)."""
    course_dir = Path(course_dir).expanduser().resolve()
    submissions = Path(submissions).expanduser()
    if not submissions.is_dir():
        raise ValueError(f"--submissions {submissions}: no such folder (expected SUBMISSIONS/<student>/{assignment}.ipynb)")
    collected, refused = [], []
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        name, folder = entry.name, Path(entry.path)
        if entry.is_symlink():
            raw, reason = None, "the student folder is a symbolic link: not followed"
        elif not entry.is_dir(follow_symlinks=False):
            continue
        else:
            inner = folder / assignment
            candidates = [folder / f"{assignment}.ipynb"]
            if not os.path.islink(inner):
                candidates.append(inner / f"{assignment}.ipynb")
            found = next((c for c in candidates if os.path.lexists(c)), None)
            if found is None:
                continue  # no submission of this chapter from this student
            raw, reason = read_submission(found)
        dest = course_dir / "submitted" / name / assignment
        if os.path.islink(dest.parent) or os.path.islink(dest):
            raise RuntimeError(f"{dest}: a symbolic link inside the course directory")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{assignment}.ipynb"
        if os.path.lexists(target):
            target.unlink()
        if raw is None:
            refused.append(f"{name!r}: {reason}")
            os.symlink("/dev/null", target)
        else:
            target.write_bytes(raw)
        collected.append(name)
    if not collected:
        raise ValueError(f"{submissions}: no submission of {assignment} found "
                         f"(expected SUBMISSIONS/<student>/{assignment}.ipynb)")
    return collected, refused


# ------------------------------------------------------------------ `course.py assignments ...`

def main(args) -> int:
    """collect / autograde / feedback / export / grade with each submission graded in a sandbox."""
    from .grading import prepare

    book, course_dir, released, explicit = prepare(args)
    limits = Limits()
    if args.timeout:
        limits = Limits(wall_s=3 * float(args.timeout), cpu_s=int(args.timeout), memory_mb=limits.memory_mb)
    if args.memory:
        limits = Limits(wall_s=limits.wall_s, cpu_s=limits.cpu_s, memory_mb=int(args.memory))
    if args.action in ("autograde", "grade"):
        weak = [k for k, ok in protections().items() if not ok]
        if weak:
            print("warning: on this machine the sandbox cannot provide: " + "; ".join(weak)
                  + " (run the grader as root, or in a container per worker; see the README)", file=sys.stderr)
    failed = []
    for ch in released:
        try:
            if args.action in ("collect", "grade"):
                got, refused = collect_safely(course_dir, ch.stem, Path(args.submissions))
                print(f"{ch.stem}: collected {len(got)} submission(s)")
                for line in refused:
                    print(f"{ch.stem}: refused {line}", file=sys.stderr)
            if args.action in ("autograde", "grade"):
                t0 = time.perf_counter()
                results = autograde_isolated(course_dir, ch.stem, workers=args.workers, limits=limits,
                                             regrade=args.regrade, hide=[book.root / "solutions"],
                                             ray_address=args.ray)
                bad = [r for r in results if r["reason"]]
                print(f"{ch.stem}: {len(results)} submission(s) graded in {time.perf_counter() - t0:.1f} s"
                      + (f"; {len(bad)} scored 0 for a stated reason (see grades.csv)" if bad else ""))
            if args.action == "feedback":
                for f in feedback_isolated(course_dir, ch.stem):
                    print(f"feedback: {f}")
        except UnsupportedChapter as exc:
            failed.append(ch.stem)
            print(f"{ch.stem}: not graded in isolated mode: {exc}", file=sys.stderr)
        except ValueError as exc:
            if explicit:
                raise
            print(f"{ch.stem}: skipped ({exc})")
    if args.action in ("export", "grade"):
        for f in export_isolated(course_dir):
            print(f"grades: {f}")
    return 1 if failed else 0
