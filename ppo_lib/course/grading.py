"""Chapters as nbgrader assignments: build the course directory, release,
collect, autograde (strictly), return feedback, export grades.

The course directory (default ``build/nbgrader``) is nbgrader's own layout::

    nbgrader_config.py   written here: timeout, missing cells, feedback without hidden tests
    source/<stem>/<stem>.ipynb      from solutions/<file>: each exercise's checker cell
                                    is an autograded test cell worth its book.yml points
    release/<stem>/<stem>.ipynb     `nbgrader generate_assignment`: what students get
    submitted/<student>/<stem>/     `collect`: `nbgrader zip_collect` from a submissions folder
    autograded/, feedback/          `nbgrader autograde`, `nbgrader generate_feedback`
    gradebook.db                    nbgrader's gradebook (scores are read from it)
    grades.csv                      `nbgrader export`: one row per student and assignment
    grades_by_exercise.csv          one row per student, assignment and exercise
    integrity.csv                   graded cells a student deleted or edited

Grading is strict: each test cell carries hidden lines (removed from the release,
restored by the autograder, removed again from the feedback) that check the
student's own function and raise ``ExerciseError`` with the checker's message
(what was wrong, the case, the hint) when it fails; that cell scores 0 and the
message is the feedback. The visible line still falls back to the reference, so
the graded notebook, like the student's own, runs to the end.
``PYTHONHASHSEED=0`` and the chapters' own seeds make a grade independent of luck.

nbgrader silently restores a graded cell that a student edited, and puts back a
deleted one only with ``add_missing_cells`` (set here); either way the original is
graded, and here each such cell is also *reported*: in ``integrity.csv``, on the
console and in ``grades_by_exercise.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ppo_lib.config import STRICT_ENV

from .manifest import REPO_ROOT, Book, Chapter, ManifestError, load_book
from .notebooks import text_to_notebook

DEFAULT_DIR = REPO_ROOT / "build" / "nbgrader"
# per-cell execution timeout: three times the chapter's CPU budget, plus kernel start
TIMEOUT_FACTOR, TIMEOUT_SLACK = 3.0, 60


def execute_timeout(chapters) -> int:
    return int(max(ch.budget_s for ch in chapters) * TIMEOUT_FACTOR + TIMEOUT_SLACK)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


CHECK_LINE = re.compile(r"^(?P<name>\w+)\s*=\s*(?P<checker>check_\w+)\((?P=name)\)\s*$")
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def strict_test_source(src: str) -> str:
    """The checker cell as an autograded test cell, strict only when graded.

    Students see the cell unchanged (nbgrader removes hidden tests from the
    release), so their notebook falls back to the reference as before. When
    graded, hidden lines around it check the student's own function first and,
    after the usual fallback, raise ``ExerciseError`` with the checker's message
    if it failed: the cell scores 0, its message is the feedback, and the rest of
    the notebook runs on with the reference.
    """
    visible = re.sub(rf"{HIDDEN_BEGIN}.*?{HIDDEN_END}", "", src, flags=re.DOTALL)  # an instructor's own
    code = [ln for ln in visible.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    match = CHECK_LINE.match(code[0].strip()) if len(code) == 1 else None
    if match:
        name, checker = match["name"], match["checker"]
        return (f"{HIDDEN_BEGIN}\n_ppo_graded = {checker}.evaluate({name})\n{HIDDEN_END}\n"
                f"{src.rstrip()}\n"
                f"{HIDDEN_BEGIN}\nif not _ppo_graded.passed:\n"
                f"    from ppo_lib.teaching.checks import ExerciseError\n"
                f"    raise ExerciseError(_ppo_graded.message)\n{HIDDEN_END}\n")
    # any other checker cell: strict while it runs (no fallback if it fails)
    return (f"{HIDDEN_BEGIN}\nimport os as _ppo_os\n_ppo_os.environ[{STRICT_ENV!r}] = '1'\n{HIDDEN_END}\n"
            f"{src.rstrip()}\n"
            f"{HIDDEN_BEGIN}\n_ppo_os.environ[{STRICT_ENV!r}] = '0'\n{HIDDEN_END}\n")


def make_source_notebook(chapter: Chapter, dst: Path) -> list[tuple[str, float]]:
    """``solutions/<file>`` as nbgrader's source notebook; returns the graded
    exercises as ``(test cell grade_id, points)``.

    The checker cell after each solution cell (the first code cell calling a
    ``check_*`` function) becomes a locked, autograded test cell.
    """
    text_to_notebook(chapter.solution_path, dst)
    nb = json.loads(dst.read_text())
    graded, pending = [], None
    for cell in nb["cells"]:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            pending = meta.get("grade_id")
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if pending and cell["cell_type"] == "code" and "check_" in src:
            points = chapter.points_for(pending)
            grade_id = f"{pending}_check"
            cell["source"] = strict_test_source(src)
            cell["metadata"]["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True,
                                            "points": points, "schema_version": 3, "solution": False}
            graded.append((grade_id, points))
            pending = None
    if pending:
        raise ManifestError(f"{chapter.solution_path}: exercise {pending!r} has no checker cell after it")
    if not graded:
        raise ManifestError(f"{chapter.solution_path}: no exercise to grade")
    dst.write_text(json.dumps(nb, indent=1) + "\n")
    return graded


CONFIG = '''\
# Written by `python3 course.py assignments build`; rebuilt each time.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_assignments = {assignments!r}
# nbgrader reads the execution timeout here (older keys are silently ignored);
# three times the largest book.yml budget of these chapters, plus kernel start.
c.Execute.timeout = {timeout}
c.Execute.allow_errors = True
c.Autograde.create_student = True
# a deleted graded cell is put back and graded (and reported in integrity.csv)
c.OverwriteCells.add_missing_cells = True
# feedback never shows what an instructor marked hidden (nbgrader issues 917, 1363)
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "ppo_lib.course.nbgrader_plugins.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
'''


def _env() -> dict:
    env = dict(os.environ)
    # the test cells' hidden lines do the strict check; the notebooks themselves fall back
    # to the reference and run on (an instructor's shell may have set the variable)
    env[STRICT_ENV] = "0"
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("MPLBACKEND", "Agg")
    # nbgrader runs `alembic` (its database migrations) by name: the environment's bin first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def nbgrader(course_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course directory (with the strict, seeded environment)."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    print("+ nbgrader " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, cwd=course_dir, env=_env(), capture_output=True, text=True)
    log = Path(course_dir) / "nbgrader.log"
    with open(log, "a") as fh:
        fh.write(f"$ nbgrader {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    if check and proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed (exit {proc.returncode}); see {log}:\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def build_course(book: Book, course_dir: Path = DEFAULT_DIR, only=None, release: bool = True) -> dict:
    """Write the nbgrader course directory for the chapters (all, or ``only``) and
    run ``generate_assignment``; returns ``{stem: [(grade_id, points), ...]}``."""
    # an appendix is reading matter without exercises: nothing to grade, no assignment
    chapters = [ch for ch in book.select(only) if not ch.is_appendix]
    course_dir = Path(course_dir).expanduser().resolve()
    course_dir.mkdir(parents=True, exist_ok=True)
    graded = {}
    for ch in chapters:
        folder = course_dir / "source" / ch.stem
        shutil.rmtree(folder, ignore_errors=True)
        graded[ch.stem] = make_source_notebook(ch, folder / f"{ch.stem}.ipynb")
    (course_dir / "nbgrader_config.py").write_text(CONFIG.format(
        root=str(course_dir), timeout=execute_timeout(book.chapters),
        assignments=[{"name": ch.stem} for ch in book.chapters if not ch.is_appendix]))
    if release:
        for ch in chapters:
            nbgrader(course_dir, "generate_assignment", ch.stem, "--force")
    return graded


COLLECT_REGEXP = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"


def collect(course_dir: Path, assignment: str, submissions: Path) -> list[str]:
    """Collect ``SUBMISSIONS/<student>/<assignment>.ipynb`` (or
    ``SUBMISSIONS/<student>/<assignment>/<assignment>.ipynb``) into nbgrader's
    ``submitted/<student>/<assignment>/`` with ``nbgrader zip_collect`` (staged in
    ``downloaded/<assignment>/archive/<student>/``); returns the student ids."""
    course_dir = Path(course_dir).expanduser().resolve()
    submissions = Path(submissions).expanduser()
    if not submissions.is_dir():
        raise ValueError(f"--submissions {submissions}: no such folder (expected SUBMISSIONS/<student>/{assignment}.ipynb)")
    archive = course_dir / "downloaded" / assignment / "archive"
    shutil.rmtree(archive, ignore_errors=True)
    students = []
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir()):
        found = [student_dir / f"{assignment}.ipynb", student_dir / assignment / f"{assignment}.ipynb"]
        nb = next((p for p in found if p.is_file()), None)
        if nb is None:
            print(f"warning: {student_dir.name}: no {assignment}.ipynb in {student_dir}", file=sys.stderr)
            continue
        (archive / student_dir.name).mkdir(parents=True)
        shutil.copy2(nb, archive / student_dir.name / f"{assignment}.ipynb")
        students.append(student_dir.name)
    if not students:
        raise ValueError(f"{submissions}: no submission of {assignment} found "
                         f"(expected SUBMISSIONS/<student>/{assignment}.ipynb)")
    nbgrader(course_dir, "zip_collect", assignment, "--force",
             f"--FileNameCollectorPlugin.named_regexp={COLLECT_REGEXP}")
    missing = [s for s in students
               if not (course_dir / "submitted" / s / assignment / f"{assignment}.ipynb").is_file()]
    if missing:
        raise RuntimeError(f"nbgrader zip_collect did not collect {missing}; see {course_dir / 'nbgrader.log'}")
    return students


def integrity_problems(course_dir: Path, assignment: str, student: str) -> list[dict]:
    """Graded (locked) cells of the release that the student's submission deleted or edited."""
    course_dir = Path(course_dir)
    released = json.loads((course_dir / "release" / assignment / f"{assignment}.ipynb").read_text())
    try:
        submitted = json.loads((course_dir / "submitted" / student / assignment / f"{assignment}.ipynb").read_text())
        submitted["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [{"student": student, "assignment": assignment, "cell": "(notebook)",
                 "problem": f"unreadable ({type(exc).__name__})"}]

    def src(cell):
        return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

    by_id = {nbgrader_meta(c).get("grade_id"): c for c in submitted.get("cells", []) if nbgrader_meta(c)}
    problems = []
    for cell in released["cells"]:
        meta = nbgrader_meta(cell)
        if not (meta.get("grade") or meta.get("locked")) or meta.get("solution"):
            continue
        gid = meta["grade_id"]
        mine = by_id.get(gid)
        if mine is None:
            problems.append({"student": student, "assignment": assignment, "cell": gid, "problem": "deleted"})
        elif src(mine).strip() != src(cell).strip():
            problems.append({"student": student, "assignment": assignment, "cell": gid, "problem": "edited"})
    return problems


def autograde(course_dir: Path, assignment: str, students=None, timeout: int | None = None) -> list[dict]:
    """Integrity check, then ``nbgrader autograde`` for each submitted student;
    returns the integrity problems (also written to integrity.csv)."""
    course_dir = Path(course_dir).expanduser().resolve()
    submitted = course_dir / "submitted"
    students = students or sorted(p.name for p in submitted.glob("*") if (p / assignment).is_dir())
    if not students:
        raise ValueError(f"{submitted}: no submission of {assignment}; run "
                         f"`python3 course.py assignments collect --submissions DIR` first")
    problems = []
    for student in students:
        problems += integrity_problems(course_dir, assignment, student)
    for p in problems:
        print(f"REPORT: {p['student']}, {p['assignment']}: graded cell {p['cell']!r} was {p['problem']} "
              f"by the student; the original was put back and graded. Check this submission by hand.",
              file=sys.stderr)
    write_integrity(course_dir, assignment, students, problems)
    extra = [f"--Execute.timeout={timeout}"] if timeout else []
    # one nbgrader process for every student (its start-up is paid once)
    nbgrader(course_dir, "autograde", assignment, "--force", *extra,
             *[f"--CourseDirectory.student_id={s}" for s in students[:1] if len(students) == 1])
    return problems


def write_integrity(course_dir: Path, assignment: str, students, problems) -> None:
    path = course_dir / "integrity.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh)
                    if not (r["assignment"] == assignment and r["student"] in students)]
    rows += problems
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["student", "assignment", "cell", "problem"])
        w.writeheader()
        w.writerows(rows)


def feedback(course_dir: Path, assignment: str) -> list[Path]:
    """``nbgrader generate_feedback``: ``feedback/<student>/<assignment>/<assignment>.html``."""
    course_dir = Path(course_dir).expanduser().resolve()
    nbgrader(course_dir, "generate_feedback", assignment, "--force")
    return sorted((course_dir / "feedback").glob(f"*/{assignment}/*.html"))


def scores(course_dir: Path, assignment: str) -> dict:
    """Per-exercise scores from nbgrader's gradebook:
    ``{student: {test cell grade_id: (score, max_score)}}``."""
    from nbgrader.api import Gradebook

    course_dir = Path(course_dir).expanduser().resolve()
    out = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        for sub in gb.assignment_submissions(assignment):
            nb = gb.find_submission_notebook(assignment, assignment, sub.student.id)
            out[sub.student.id] = {g.cell.name: (g.score, g.max_score) for g in nb.grades if g.cell.name.endswith("_check")}
    return out


def export(course_dir: Path) -> tuple[Path, Path]:
    """``nbgrader export`` to grades.csv, and grades_by_exercise.csv from the gradebook."""
    course_dir = Path(course_dir).expanduser().resolve()
    nbgrader(course_dir, "export", "--to=grades.csv")
    flagged = {}
    if (course_dir / "integrity.csv").exists():
        with open(course_dir / "integrity.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                flagged[(r["student"], r["assignment"], r["cell"])] = r["problem"]
    from nbgrader.api import Gradebook

    path = course_dir / "grades_by_exercise.csv"
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb, open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "assignment", "exercise", "score", "max_score", "report"])
        for assignment in gb.assignments:
            for sub in gb.assignment_submissions(assignment.name):
                for nb in sub.notebooks:
                    for g in nb.grades:
                        report = flagged.get((sub.student.id, assignment.name, g.cell.name), "")
                        w.writerow([sub.student.id, assignment.name, g.cell.name, g.score, g.max_score,
                                    f"graded cell {report} by the student" if report else ""])
    return course_dir / "grades.csv", path


# --------------------------------------------------------------------------
# `course.py assignments ...`
# --------------------------------------------------------------------------


def add_arguments(p) -> None:
    p.add_argument("action", nargs="?", default="build",
                   choices=["build", "collect", "autograde", "feedback", "export", "grade"],
                   help="build: course directory + release (default); collect: from --submissions; "
                        "autograde; feedback; export: grades CSV; grade: collect+autograde+feedback+export")
    p.add_argument("--only", nargs="*", default=None, help="chapter ids (default: every chapter)")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help=f"nbgrader course directory (default {DEFAULT_DIR})")
    p.add_argument("--submissions", default=None,
                   help="folder of SUBMISSIONS/<student>/<assignment>.ipynb (for collect and grade)")
    p.add_argument("--mode", choices=["isolated", "notebook"], default="isolated",
                   help="isolated (default): each submission's exercise cells checked in a sandbox of its own, "
                        "in parallel, resumable; notebook: nbgrader executes each whole notebook, serially, "
                        "with the grader's rights (no sandbox)")
    p.add_argument("--workers", type=int, default=None,
                   help="submissions graded at once (isolated mode; default: the number of cores)")
    p.add_argument("--timeout", type=float, default=None,
                   help="isolated mode: seconds of CPU per submission, all its processes together (default 120; "
                        "the wall-clock limit is 3 times this)")
    p.add_argument("--memory", type=int, default=None,
                   help="isolated mode: address-space limit per submission in MB (default 4096)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="isolated mode: grade on a Ray cluster (auto: the running one; or HOST:PORT) instead of "
                        "local processes; needs the optional extra `ray`")
    p.add_argument("--regrade", action="store_true",
                   help="isolated mode: grade again what an earlier run already graded")


def prepare(args):
    """The book, the course directory, the released chapters asked for and whether they were
    named (checks shared by both grading modes)."""
    book = load_book()
    course_dir = Path(args.dir).expanduser().resolve()
    chapters = [ch for ch in book.select(args.only) if not ch.is_appendix]  # an appendix has nothing to grade
    if not (course_dir / "nbgrader_config.py").exists():
        raise ValueError(f"{course_dir}: no nbgrader course here; run `python3 course.py assignments build` first")
    if args.action in ("collect", "grade") and not args.submissions:
        raise ValueError("--submissions DIR is needed (DIR/<student>/<assignment>.ipynb)")
    explicit = args.only is not None
    released = [c for c in chapters if (course_dir / "release" / c.stem).exists()]
    if explicit and len(released) < len(chapters):
        missing = [c.id for c in chapters if c not in released]
        raise ValueError(f"chapters {', '.join(missing)} are not released in {course_dir}; "
                         f"run `python3 course.py assignments build --only {' '.join(missing)}` first")
    return book, course_dir, released, explicit


def main(args) -> int:
    """``course.py assignments ... --mode notebook`` (and ``build``): nbgrader runs each notebook."""
    if args.action == "build":
        book = load_book()
        course_dir = Path(args.dir).expanduser().resolve()
        graded = build_course(book, course_dir, [ch.id for ch in book.select(args.only)])
        for stem, cells in graded.items():
            print(f"{stem}: {len(cells)} graded exercise(s), {sum(p for _, p in cells):g} points -> "
                  f"{course_dir / 'release' / stem / (stem + '.ipynb')}")
        return 0
    book, course_dir, released, explicit = prepare(args)
    for ch in released:
        try:
            if args.action in ("collect", "grade"):
                print(f"{ch.stem}: collected {', '.join(collect(course_dir, ch.stem, Path(args.submissions)))}")
            if args.action in ("autograde", "grade"):
                autograde(course_dir, ch.stem, timeout=execute_timeout([ch]))
            if args.action in ("feedback", "grade"):
                for f in feedback(course_dir, ch.stem):
                    print(f"feedback: {f}")
        except ValueError as exc:
            if explicit:  # asked for by name: an error; otherwise skip chapters nobody handed in
                raise
            print(f"{ch.stem}: skipped ({exc})")
    if args.action in ("export", "grade"):
        for f in export(course_dir):
            print(f"grades: {f}")
    return 0
