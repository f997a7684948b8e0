"""Every chapter the isolated mode grades: its solved release gets full marks and its untouched
release none, with every checker's outputs sent back as data and compared outside the sandbox
(tensors with gradients, dicts, the PPO update of chapter 5, the language-model pieces of 8, and
the guesses of chapter 7's bug hunt and chapter 10's diagnosis). 2 to 4 minutes on 2 shared cores.

The guess exercises get the same verdict in both modes: for right, wrong, missing, odd and
raising guesses, the isolated grade (the guess carried out of the sandbox as data and checked in
the grader's process) equals what notebook mode's strict test cell does with the same function
(the cell raises, 0 points, or not, full points). The one exception is on purpose: a guess
that is a str subclass claiming to equal every answer fools the checker in the student's own
kernel (notebook mode) but not the isolated grader, which receives only its characters."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("nbgrader")

from ppo_lib.config import STRICT_ENV  # noqa: E402
from ppo_lib.course import grading, isolated, load_book  # noqa: E402
from ppo_lib.course.sandbox import Limits  # noqa: E402
from tests.test_grading import _solved  # noqa: E402

GUESS_CHAPTERS = {"07_implementation_details": "bug_hunt", "10_rlvr": "diagnosis"}


def test_every_chapter_solved_full_marks_untouched_none(tmp_path):
    book = load_book()
    course_dir = tmp_path / "nbgrader"
    grading.build_course(book, course_dir)
    graded = {}
    gradable = [ch for ch in book.chapters if not ch.is_appendix]  # an appendix has no exercise, no assignment
    assert not (course_dir / "release" / "11_where_next").exists()
    for ch in gradable:
        release = json.loads((course_dir / "release" / ch.stem / f"{ch.stem}.ipynb").read_text())
        source = json.loads((course_dir / "source" / ch.stem / f"{ch.stem}.ipynb").read_text())
        subs = tmp_path / "subs" / ch.stem
        for name, nb in {"solved": _solved(source, release), "untouched": release}.items():
            (subs / name).mkdir(parents=True)
            (subs / name / f"{ch.stem}.ipynb").write_text(json.dumps(nb))
        isolated.collect_safely(course_dir, ch.stem, subs)
        results = isolated.autograde_isolated(course_dir, ch.stem, workers=2, limits=Limits(cpu_s=60),
                                              progress=False)
        by = {r["student"]: r for r in results}
        graded[ch.stem] = len(by["solved"]["exercises"])
        assert [e["status"] for e in by["solved"]["exercises"]] == ["passed"] * graded[ch.stem], \
            [e["message"] for e in by["solved"]["exercises"]]
        assert {e["status"] for e in by["untouched"]["exercises"]} == {"unfilled"}
        assert not by["solved"]["reason"] and not by["untouched"]["reason"]
    assert len(graded) == len(gradable)
    assert graded["07_implementation_details"] == 4 and graded["10_rlvr"] == 4
    assert graded["08_rlhf_ppo"] == 7  # 8.6, the PPO iteration, and 8.7, the diagnosis, included
    assert sum(graded.values()) == 33  # 25 in chapters 1-6, 8 and 9; 4 each in 7 and 10


def _with_guess(release: dict, grade_id: str, code: str) -> dict:
    nb = json.loads(json.dumps(release))
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    cell["source"] = code
    return nb


def _notebook_mode_passes(test_cell: str, student_cell: str, context: dict) -> bool:
    """What notebook mode does with the checker cell as nbgrader runs it (hidden strict lines and
    all): the cell raises (0 points) or not (full points)."""
    ns = dict(context)
    exec(student_cell, ns)
    before = os.environ.get(STRICT_ENV)
    try:
        exec(test_cell, ns)
        return True
    except Exception:
        return False
    finally:
        if before is None:
            os.environ.pop(STRICT_ENV, None)
        else:
            os.environ[STRICT_ENV] = before


def test_guess_exercises_same_verdict_as_notebook_mode(tmp_path):
    from ppo_lib.teaching.bug_hunt import MYSTERY
    from ppo_lib.teaching.checks.rlvr import DIAGNOSIS_RECORD, DIAGNOSIS_RUNS, RUN_CAUSE, load_diagnosis

    right = {rid: RUN_CAUSE[name] for rid, name in DIAGNOSIS_RUNS.items()}
    wrong_one = {**right, "A": next(c for c in set(RUN_CAUSE.values()) if c != right["A"])}
    guesses = {
        "07_implementation_details": {
            "right": f"def bug_guess():\n    return {MYSTERY!r}\n",
            "wrong": "def bug_guess():\n    return 'entropy sign'\n",
            "unknown": "def bug_guess():\n    return 'cosmic rays'\n",
            "unhashable": "def bug_guess():\n    return ['early stop on the wrong KL']\n",
            "raises": "def bug_guess():\n    return 1 / 0\n",
            "undefined": "guess = 'early stop on the wrong KL'\n",
            "sneaky": ("class S(str):\n    def __eq__(self, o): return o != ''\n    __hash__ = str.__hash__\n"
                       "def bug_guess():\n    return S('none')\n"),
        },
        "10_rlvr": {
            "right": f"def diagnosis():\n    return {right!r}\n",
            "wrong": f"def diagnosis():\n    return {wrong_one!r}\n",
            "not_a_dict": "def diagnosis():\n    return 'healthy'\n",
            "raises": "def diagnosis():\n    raise KeyError('A')\n",
            "undefined": "x = 1\n",
        },
    }
    book = load_book()
    course_dir = tmp_path / "nbgrader"
    grading.build_course(book, course_dir, only=list(GUESS_CHAPTERS))
    for stem, gid in GUESS_CHAPTERS.items():
        release = json.loads((course_dir / "release" / stem / f"{stem}.ipynb").read_text())
        source = json.loads((course_dir / "source" / stem / f"{stem}.ipynb").read_text())
        test_cell = "".join(next(c for c in source["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id")
                                 == f"{gid}_check")["source"])
        subs = tmp_path / "subs" / stem
        for student, code in guesses[stem].items():
            (subs / student).mkdir(parents=True)
            (subs / student / f"{stem}.ipynb").write_text(json.dumps(_with_guess(release, gid, code)))
        isolated.collect_safely(course_dir, stem, subs)
        results = isolated.autograde_isolated(course_dir, stem, students=list(guesses[stem]), workers=2,
                                              limits=Limits(cpu_s=60), progress=False)
        context = ({"check_bug_guess": __import__("ppo_lib.teaching.bug_hunt", fromlist=["x"]).check_bug_guess}
                   if stem.startswith("07") else
                   {"check_diagnosis": __import__("ppo_lib.teaching.checks.rlvr", fromlist=["x"]).check_diagnosis,
                    "diag": load_diagnosis(DIAGNOSIS_RECORD)})
        for res in results:
            ex = next(e for e in res["exercises"] if e["check_id"] == f"{gid}_check")
            notebook = _notebook_mode_passes(test_cell, guesses[stem][res["student"]], context)
            if res["student"] == "sneaky":  # the one difference, on purpose: see below
                assert notebook and ex["score"] == 0, (ex["message"], notebook)
                continue
            assert (ex["score"] == ex["max_score"] > 0) == notebook == (res["student"] == "right"), \
                (stem, res["student"], ex["status"], ex["message"], notebook)
            assert ex["status"] == "passed" if res["student"] == "right" else ex["status"] in ("wrong", "error")
        by = {r["student"]: r for r in results}
        msg = {s: next(e for e in by[s]["exercises"] if e["check_id"] == f"{gid}_check")["message"] for s in by}
        if stem.startswith("07"):
            assert "not 'entropy sign'" in msg["wrong"] and "entropy_coef is 0" in msg["wrong"]
            assert "not one of the candidates" in msg["unknown"]
            # a str whose == always says yes fools notebook mode (the checker runs in the student's
            # kernel) but not the isolated grader: only its characters leave the sandbox
            assert "not 'none'" in msg["sneaky"]
        else:
            assert "✗ run A" in msg["wrong"] and "4 of 5 right" in msg["wrong"]
            assert "expected a dict" in msg["not_a_dict"]
        assert "ZeroDivisionError" in msg.get("raises", "ZeroDivisionError") or "KeyError" in msg["raises"]
        assert "does not define `" in msg["undefined"]
