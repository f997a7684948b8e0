"""Chapters as nbgrader assignments, end to end and offline: release chapter 1,
collect three made-up students' submissions, autograde strictly, return feedback,
export grades; the scores are read from nbgrader's gradebook.

- alice hands in the solved notebook: full marks;
- bob hands in the release untouched: zero on every exercise, and it still runs;
- carol flips the sign of the REINFORCE loss (a mistake in the checker's catalogue)
  and also edits a graded cell: she loses exactly that exercise's points, her
  feedback quotes the checker's hint, and the edited cell is reported.
An instructor's hidden test never reaches the students.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from ppo_lib.course import grading, load_book
from ppo_lib.course.sources import BEGIN_MARK, END_MARK

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "01_reinforce"
SECRET = "HIDDEN-TEST-SECRET-7f3a"
POINTS = {"reward_to_go": 2, "reinforce_loss": 3}


def _course(tmp: Path):
    """A one-chapter course (chapter 1 of the real one) with per-exercise points and
    an instructor's hidden test in the second checker cell."""
    (tmp / "solutions").mkdir(parents=True)
    text = (ROOT / "solutions" / f"{CHAPTER}.py").read_text()
    check = "reinforce_loss = check_reinforce_loss(reinforce_loss)\n"
    assert check in text
    text = text.replace(check, check + f"### BEGIN HIDDEN TESTS\nassert '{SECRET}'\n### END HIDDEN TESTS\n", 1)
    (tmp / "solutions" / f"{CHAPTER}.py").write_text(text)
    ch = load_book(ROOT).chapter("01")
    (tmp / "book.yml").write_text(json.dumps({
        "title": "T", "chapters": [{"id": "01", "file": ch.file, "title": ch.title, "budget_s": ch.budget_s,
                                    "objectives": list(ch.objectives), "points": POINTS}]}))
    return load_book(tmp)


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _solved(source_nb: dict, release_nb: dict) -> dict:
    """The release notebook with every solution cell filled in as the solution does."""
    answers = {c["metadata"]["nbgrader"]["grade_id"]: _src(c) for c in source_nb["cells"]
               if c["metadata"].get("nbgrader", {}).get("solution")}
    nb = json.loads(json.dumps(release_nb))
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in answers[meta["grade_id"]].splitlines(keepends=True)
                     if ln.strip() not in (BEGIN_MARK, END_MARK)]
            cell["source"] = "".join(lines)
    return nb


def _cell(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    t0 = time.perf_counter()
    tmp = tmp_path_factory.mktemp("nbgrader")
    book = _course(tmp / "course")
    course_dir = tmp / "nbgrader"
    cells = grading.build_course(book, course_dir)
    release_path = course_dir / "release" / CHAPTER / f"{CHAPTER}.ipynb"
    release = json.loads(release_path.read_text())
    source = json.loads((course_dir / "source" / CHAPTER / f"{CHAPTER}.ipynb").read_text())

    subs = tmp / "submissions"
    alice = _solved(source, release)
    bob = release
    carol = _solved(source, release)
    loss = _cell(carol, "reinforce_loss")
    loss["source"] = _src(loss).replace("return -(logprobs * weights.detach()).mean()",
                                        "return (logprobs * weights.detach()).mean()")
    assert "return (logprobs" in loss["source"]
    check = _cell(carol, "reward_to_go_check")
    check["source"] = "reward_to_go = reward_to_go  # I don't need the checker\n"
    for name, nb in {"alice": alice, "bob": bob, "carol": carol}.items():
        (subs / name).mkdir(parents=True)
        (subs / name / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))

    assert sorted(grading.collect(course_dir, CHAPTER, subs)) == ["alice", "bob", "carol"]
    t1 = time.perf_counter()
    problems = grading.autograde(course_dir, CHAPTER, timeout=grading.execute_timeout([book.chapter("01")]))
    autograde_seconds = time.perf_counter() - t1
    feedback = grading.feedback(course_dir, CHAPTER)
    exports = grading.export(course_dir)
    print(f"\nnbgrader pipeline for {CHAPTER}: {time.perf_counter() - t0:.0f} s")
    return dict(course_dir=course_dir, cells=cells, release=release, problems=problems, feedback=feedback,
                autograde_seconds=autograde_seconds,
                exports=exports, scores=grading.scores(course_dir, CHAPTER))


def test_every_exercise_is_a_test_cell_worth_its_book_yml_points(graded):
    assert graded["cells"] == {CHAPTER: [("reward_to_go_check", 2.0), ("reinforce_loss_check", 3.0)]}
    config = (graded["course_dir"] / "nbgrader_config.py").read_text()
    assert "c.Execute.timeout = 330" in config  # 3 x the 90 s budget + 60 s


def test_release_has_no_solutions_and_no_hidden_tests(graded):
    text = json.dumps(graded["release"])
    assert "raise NotImplementedError()" in text
    assert "weights.detach()).mean()" not in text
    assert SECRET not in text


def test_scores_from_the_gradebook(graded):
    scores = graded["scores"]
    print("\nscores (score, max) per exercise:", json.dumps(scores, indent=1))
    assert scores["alice"] == {"reward_to_go_check": (2.0, 2.0), "reinforce_loss_check": (3.0, 3.0)}
    assert scores["bob"] == {"reward_to_go_check": (0.0, 2.0), "reinforce_loss_check": (0.0, 3.0)}
    assert scores["carol"] == {"reward_to_go_check": (2.0, 2.0), "reinforce_loss_check": (0.0, 3.0)}


def test_the_untouched_release_still_runs_to_the_end(graded):
    nb = json.loads((graded["course_dir"] / "autograded" / "bob" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "every cell of the autograded notebook ran"
    # only the two test cells fail; every other cell ran on with the reference versions
    failed = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in code
              if any(o["output_type"] == "error" for o in c.get("outputs", []))]
    assert failed == ["reward_to_go_check", "reinforce_loss_check"]


def test_feedback_has_the_checkers_hint_and_nothing_hidden(graded):
    by_student = {p.parts[-3]: p.read_text() for p in graded["feedback"]}
    assert sorted(by_student) == ["alice", "bob", "carol"]
    carol = by_student["carol"]
    assert "ExerciseError" in carol and "the sign is flipped" in carol and "Case:" in carol
    assert "not filled in yet" in by_student["bob"]
    for page in by_student.values():
        assert SECRET not in page and "BEGIN HIDDEN TESTS" not in page and "_ppo_graded" not in page


def test_an_edited_graded_cell_is_reported(graded):
    assert graded["problems"] == [{"student": "carol", "assignment": CHAPTER, "cell": "reward_to_go_check",
                                   "problem": "edited"}]
    grades_csv, by_exercise = graded["exports"]
    with open(grades_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["student_id"] for r in rows) == ["alice", "bob", "carol"]
    with open(by_exercise, newline="") as fh:
        flagged = [r for r in csv.DictReader(fh) if r["report"]]
    assert [(r["student"], r["exercise"]) for r in flagged] == [("carol", "reward_to_go_check")]


def test_a_deleted_graded_cell_is_reported(graded, tmp_path):
    course_dir = tmp_path / "course"
    shutil.copytree(graded["course_dir"] / "release", course_dir / "release")
    nb = json.loads(json.dumps(graded["release"]))
    nb["cells"] = [c for c in nb["cells"]
                   if c["metadata"].get("nbgrader", {}).get("grade_id") != "reinforce_loss_check"]
    dest = course_dir / "submitted" / "dave" / CHAPTER
    dest.mkdir(parents=True)
    (dest / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
    assert grading.integrity_problems(course_dir, CHAPTER, "dave") == [
        {"student": "dave", "assignment": CHAPTER, "cell": "reinforce_loss_check", "problem": "deleted"}]


def test_the_command_says_what_to_do_first(tmp_path, capsys):
    from ppo_lib.course.cli import main

    assert main(["assignments", "autograde", "--dir", str(tmp_path)]) == 2
    assert "assignments build" in capsys.readouterr().err
    (tmp_path / "nbgrader_config.py").write_text("")
    assert main(["assignments", "collect", "--only", "01", "--dir", str(tmp_path)]) == 2
    assert "--submissions DIR is needed" in capsys.readouterr().err
    assert main(["assignments", "autograde", "--only", "01", "--dir", str(tmp_path)]) == 2
    assert "not released" in capsys.readouterr().err
    assert main(["assignments", "build", "--only", "99", "--dir", str(tmp_path)]) == 2
    assert "valid ids: 00" in capsys.readouterr().err


def test_isolated_grading_gives_the_same_grades_without_running_the_chapter(graded, tmp_path):
    """The same three submissions graded both ways: nbgrader executing each whole notebook (the
    fixture) and ``--mode isolated`` (only the exercise cells, in a sandbox, verdict outside it)."""
    from ppo_lib.course import isolated

    course_dir = tmp_path / "isolated"
    shutil.copytree(graded["course_dir"], course_dir, symlinks=True,
                    ignore=shutil.ignore_patterns("autograded", "feedback", "grades*.csv", "integrity.csv"))
    t0 = time.perf_counter()
    results = isolated.autograde_isolated(course_dir, CHAPTER, workers=1)
    per_submission = (time.perf_counter() - t0) / len(results)
    print(f"\nisolated: {per_submission:.1f} s per submission (one worker, pool start included); "
          f"nbgrader executing the notebook: {graded['autograde_seconds'] / 3:.0f} s per submission")
    assert grading.scores(course_dir, CHAPTER) == graded["scores"]
    ours = [{k: p[k] for k in ("student", "assignment", "cell", "problem")} for r in results for p in r["integrity"]]
    assert ours == graded["problems"]
    carol = next(r for r in results if r["student"] == "carol")["exercises"][1]["message"]
    assert "the sign is flipped" in carol and "Case:" in carol
    assert per_submission < graded["autograde_seconds"] / 3
