"""Every chapter the isolated mode grades: its solved release gets full marks and its untouched
release none, with every checker's outputs sent back as data and compared outside the sandbox
(tensors with gradients, dicts, the PPO update of chapter 5, the language-model pieces of 8).
Chapters 7 and 10 (the bug hunt's and the diagnosis's checker cells are not
``name = check_name(name)``) are refused with the reason. 1.5 to 3.5 minutes on 2 shared cores."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("nbgrader")

from ppo_lib.course import grading, isolated, load_book  # noqa: E402
from ppo_lib.course.sandbox import Limits  # noqa: E402
from tests.test_grading import _solved  # noqa: E402

UNSUPPORTED = {"07_implementation_details", "10_rlvr"}


def test_every_chapter_solved_full_marks_untouched_none(tmp_path):
    book = load_book()
    course_dir = tmp_path / "nbgrader"
    grading.build_course(book, course_dir)
    graded, unsupported = {}, set()
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
        try:
            results = isolated.autograde_isolated(course_dir, ch.stem, workers=2, limits=Limits(cpu_s=60),
                                                  progress=False)
        except isolated.UnsupportedChapter as exc:
            # the bug hunt (7) and the diagnosis (10) check a guess, not a function: notebook mode only
            assert ch.stem in UNSUPPORTED and "--mode notebook" in str(exc), (ch.stem, str(exc))
            unsupported.add(ch.stem)
            continue
        by = {r["student"]: r for r in results}
        graded[ch.stem] = len(by["solved"]["exercises"])
        assert [e["status"] for e in by["solved"]["exercises"]] == ["passed"] * graded[ch.stem], \
            [e["message"] for e in by["solved"]["exercises"]]
        assert {e["status"] for e in by["untouched"]["exercises"]} == {"unfilled"}
        assert not by["solved"]["reason"] and not by["untouched"]["reason"]
    assert unsupported == UNSUPPORTED and len(graded) == len(gradable) - len(UNSUPPORTED)
    assert sum(graded.values()) == 25  # chapters 1-6, 8 and 9 (8: exercise 8.6, the PPO iteration, and 8.7, the diagnosis, included)
