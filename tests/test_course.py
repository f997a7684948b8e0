"""The course manifest, the solutions -> chapters pipeline, and the notebooks."""

import json
import textwrap
from pathlib import Path

import jupytext
import pytest

from ppo_lib import course
from ppo_lib.course import ManifestError, load_book, strip_solutions

BOOK = load_book()


def test_every_listed_chapter_has_a_chapter_and_a_solution_file():
    for ch in BOOK.chapters:
        assert ch.solution_path.is_file(), f"book.yml lists {ch.file}, but {ch.solution_path} is missing"
        assert ch.chapter_path.is_file(), f"book.yml lists {ch.file}, but {ch.chapter_path} is missing"


def test_no_chapter_or_solution_file_is_missing_from_book_yml():
    assert course.unlisted_files(BOOK) == [], "add these files to book.yml or delete them"


def test_chapters_are_exactly_the_stripped_solutions():
    stale = course.sync_chapters(BOOK, check=True)
    assert stale == [], f"{stale}: out of date; run `python3 course.py sync`"


def _cells(path):
    return jupytext.read(path, fmt="py:percent").cells


@pytest.mark.parametrize("ch", BOOK.chapters, ids=lambda c: c.id)
def test_chapter_and_solution_differ_only_inside_exercise_cells(ch):
    chapter, solution = _cells(ch.chapter_path), _cells(ch.solution_path)
    assert len(chapter) == len(solution)
    n_exercises = 0
    for i, (a, b) in enumerate(zip(chapter, solution)):
        is_exercise = b.metadata.get("nbgrader", {}).get("solution", False)
        n_exercises += is_exercise
        if course.BEGIN_MARK in b.source:
            assert is_exercise, f"{ch.file} cell {i}: solution markers outside an nbgrader solution cell"
            assert "raise NotImplementedError()" in a.source
        else:
            assert a.source == b.source, f"{ch.file} cell {i} differs outside an exercise"
    assert n_exercises >= 1, f"{ch.file}: every chapter has at least one exercise"


@pytest.mark.parametrize("ch", BOOK.chapters, ids=lambda c: c.id)
def test_chapter_states_the_objectives_of_book_yml(ch):
    first = _cells(ch.chapter_path)[0]
    assert first.cell_type == "markdown"
    assert ch.title in first.source
    for objective in ch.objectives:
        assert f"- {objective}" in first.source, f"{ch.file}: objective missing from the first cell: {objective}"


def test_strip_solutions_keeps_indentation_and_everything_outside():
    text = textwrap.dedent("""\
        def f(x):
            '''doc'''
            ### BEGIN SOLUTION
            y = x + 1
            return y
            ### END SOLUTION

        print(f)
        """)
    assert strip_solutions(text) == textwrap.dedent("""\
        def f(x):
            '''doc'''
            # YOUR CODE HERE
            raise NotImplementedError()

        print(f)
        """)


@pytest.mark.parametrize("text, message", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION\n", "without a"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
])
def test_strip_solutions_rejects_unbalanced_markers_with_the_line(text, message):
    with pytest.raises(ValueError, match=message) as info:
        strip_solutions(text, "sol.py")
    assert "sol.py:" in str(info.value)


def _write_book(tmp_path, chapters_yaml):
    (tmp_path / "book.yml").write_text("title: T\nchapters:\n" + textwrap.indent(chapters_yaml, "  "))
    return tmp_path


@pytest.mark.parametrize("entry, message", [
    ("- {id: '1', file: 1_a.py, title: A, budget_s: 10, objectives: [x]}", "must be two digits"),
    ("- {id: '01', file: a.py, title: A, budget_s: 10, objectives: [x]}", "must look like '01_name.py'"),
    ("- {id: '01', file: 01_a.py, title: A, budget_s: -5, objectives: [x]}", "budget_s=-5"),
    ("- {id: '01', file: 01_a.py, title: A, budget_s: 10, objectives: []}", "objectives"),
    ("- {id: '01', file: 01_a.py, title: A, objectives: [x]}", "missing field 'budget_s'"),
    ("- {id: '02', file: 02_a.py, title: A, budget_s: 1, objectives: [x]}\n"
     "- {id: '01', file: 01_b.py, title: B, budget_s: 1, objectives: [x]}", "in order"),
])
def test_bad_manifest_entries_get_clear_errors(tmp_path, entry, message):
    with pytest.raises(ManifestError, match=message):
        load_book(_write_book(tmp_path, entry))


def test_missing_manifest_and_unknown_chapter_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_book(tmp_path)
    with pytest.raises(ManifestError, match="known ids: 00"):
        BOOK.chapter("42")


def test_listed_but_missing_solution_fails_sync(tmp_path):
    book = load_book(_write_book(tmp_path, "- {id: '01', file: 01_a.py, title: A, budget_s: 1, objectives: [x]}"))
    with pytest.raises(ManifestError, match="does not exist"):
        course.sync_chapters(book)


def test_unlisted_chapter_file_is_reported(tmp_path):
    root = _write_book(tmp_path, "- {id: '01', file: 01_a.py, title: A, budget_s: 1, objectives: [x]}")
    (root / "chapters").mkdir()
    (root / "chapters" / "02_stray.py").write_text("# %%\n")
    assert [p.name for p in course.unlisted_files(load_book(root))] == ["02_stray.py"]


def test_workspace_never_overwrites_a_learners_notebook(tmp_path):
    made = course.make_workspace(BOOK, tmp_path)
    assert sorted(p.name for p in made) == sorted(ch.stem + ".ipynb" for ch in BOOK.chapters)
    nb = json.loads(made[0].read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    made[0].write_text("my work")
    assert course.make_workspace(BOOK, tmp_path) == []
    assert made[0].read_text() == "my work"


def test_lab_settings_open_text_files_as_notebooks_and_keep_other_settings(tmp_path):
    path = tmp_path / "share/jupyter/lab/settings/overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}))
    course.install_lab_settings(tmp_path)
    settings = json.loads(path.read_text())
    assert settings["@jupyterlab/apputils-extension:themes"]["theme"] == "JupyterLab Dark"
    viewers = settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"


def test_readme_test_command_is_what_ci_runs():
    root = Path(course.REPO_ROOT)
    ci = (root / ".ci" / "run").read_text()
    readme = (root / "README.md").read_text()
    assert "python3 course.py test" in readme
    assert "exec python3 course.py test" in ci
