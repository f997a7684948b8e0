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
    assert n_exercises >= 1 or ch.is_appendix, f"{ch.file}: every chapter (not an appendix) has at least one exercise"


@pytest.mark.parametrize("ch", BOOK.chapters, ids=lambda c: c.id)
def test_no_prose_is_hidden_in_a_code_cell(ch):
    # a missing `# %% [markdown]` marker turns a section into comments at the end of a code cell:
    # its headings and formulas never render
    import re

    for i, cell in enumerate(_cells(ch.solution_path)):
        if cell.cell_type == "code":
            hidden = [line for line in cell.source.splitlines() if re.match(r"#+ +#{1,4} |# *\$\$", line)]
            assert not hidden, f"{ch.solution_path.name} cell {i}: markdown inside a code cell: {hidden[:2]}"


@pytest.mark.parametrize("ch", BOOK.chapters, ids=lambda c: c.id)
def test_chapter_states_the_learner_s_time_of_book_yml(ch):
    assert ch.learner_minutes, f"{ch.file}: book.yml gives no learner_minutes"
    first = _cells(ch.chapter_path)[0].source
    assert f"**Your time:** about {ch.learner_minutes:g} minutes" in first, f"{ch.file}: header and book.yml disagree"
    widgets = "play with the widgets" in first
    assert widgets == ("ipywidgets" in ch.solution_path.read_text() or "_widget(" in ch.solution_path.read_text()), (
        f"{ch.file}: the header's 'play with the widgets' must match whether the chapter has widgets")


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


# -- learner_minutes, points, --only -----------------------------------------------------------


def test_learner_minutes_and_points_are_optional_validated_and_exposed(tmp_path):
    entry = "- {id: '01', file: 01_a.py, title: A, budget_s: 10, objectives: [x]%s}"
    ch = load_book(_write_book(tmp_path, entry % "")).chapters[0]
    assert ch.learner_minutes is None and ch.points_for("any") == course.DEFAULT_POINTS
    ch = load_book(_write_book(tmp_path, entry % ", learner_minutes: 45, points: {ex: 3}")).chapters[0]
    assert ch.learner_minutes == 45.0 and ch.points_for("ex") == 3.0 and ch.points_for("other") == 1.0
    for bad in ("0", "-3", "'an hour'", "true", ".nan"):
        with pytest.raises(ManifestError, match=f"learner_minutes=.*positive number of minutes"):
            load_book(_write_book(tmp_path, entry % f", learner_minutes: {bad}"))
    with pytest.raises(ManifestError, match="points="):
        load_book(_write_book(tmp_path, entry % ", points: -1"))


def test_select_rejects_unknown_ids_and_an_empty_list_naming_the_valid_ids():
    assert [c.id for c in BOOK.select(["01", "00"])] == ["00", "01"]
    assert BOOK.select(None) == BOOK.chapters
    with pytest.raises(ManifestError, match=r"--only 99: no such chapter.*valid ids: 00, 01"):
        BOOK.select(["99"])
    with pytest.raises(ManifestError, match=r"at least one chapter id.*valid ids: 00"):
        BOOK.select([])


def test_book_with_an_unknown_id_touches_nothing_on_disk(tmp_path, capsys):
    from ppo_lib.course.cli import main

    keep = tmp_path / "src" / "mine.txt"
    keep.parent.mkdir()
    keep.write_text("do not delete")
    assert main(["book", "--only", "99", "--out", str(tmp_path)]) == 2
    assert "valid ids: 00" in capsys.readouterr().err
    assert main(["book", "--only", "--out", str(tmp_path)]) == 2
    assert keep.read_text() == "do not delete"


def test_test_command_passes_options_to_pytest(monkeypatch):
    from ppo_lib.course import cli

    seen = {}
    monkeypatch.setattr(cli, "build_test_notebooks", lambda *a, **k: [])
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, cwd: seen.setdefault("cmd", cmd) and 0)
    cli.main(["test", "-k", "x", "-x"])
    assert seen["cmd"][-3:] == ["-k", "x", "-x"]


# -- sync never loses a hand edit ---------------------------------------------------------------


def _sync_book(tmp_path):
    root = _write_book(tmp_path, "- {id: '01', file: 01_a.py, title: A, budget_s: 1, objectives: [x]}")
    (root / "solutions").mkdir()
    (root / "solutions" / "01_a.py").write_text("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n")
    return load_book(root)


def test_sync_backs_up_a_hand_edited_chapter_and_says_where(tmp_path):
    book = _sync_book(tmp_path)
    chapter = book.chapters[0].chapter_path
    first = course.sync_chapters(book)
    assert first == [chapter] and first.backups == {}
    assert "raise NotImplementedError()" in chapter.read_text()
    # a regenerated chapter is replaced silently when the solution changes ...
    book.chapters[0].solution_path.write_text("x = 10\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n")
    second = course.sync_chapters(book)
    assert second == [chapter] and second.backups == {}
    # ... but a hand edit is kept in a backup, named in the result
    chapter.write_text("x = 10\nmy notes\n")
    book.chapters[0].solution_path.write_text("x = 11\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n")
    third = course.sync_chapters(book)
    backup = third.backups[chapter]
    assert backup.read_text() == "x = 10\nmy notes\n"
    assert chapter.read_text().startswith("x = 11")
    assert course.sync_chapters(book) == []


def test_sync_without_a_stamp_never_drops_a_differing_chapter(tmp_path):
    book = _sync_book(tmp_path)
    chapter = book.chapters[0].chapter_path
    chapter.parent.mkdir()
    chapter.write_text("an old or edited chapter\n")
    result = course.sync_chapters(book)
    assert result.backups[chapter].read_text() == "an old or edited chapter\n"


def test_sync_command_names_the_backup(tmp_path, monkeypatch, capsys):
    from ppo_lib.course import cli

    book = _sync_book(tmp_path)
    book.chapters[0].chapter_path.parent.mkdir()
    book.chapters[0].chapter_path.write_text("edited\n")
    monkeypatch.setattr(cli, "load_book", lambda: book)
    assert cli.main(["sync"]) == 0
    out = capsys.readouterr().out
    assert "edited by hand" in out and "sync-backups" in out


def test_the_quick_tier_names_tests_that_exist():
    """`course.py test --quick` runs a named subset: every name in it must still exist."""
    import ast as _ast

    from ppo_lib.course import cli

    root = Path(__file__).resolve().parent.parent
    for target in cli.QUICK_TESTS:
        path, _, name = target.partition("::")
        assert (root / path).is_file(), target
        if name:
            funcs = {n.name for n in _ast.walk(_ast.parse((root / path).read_text())) if isinstance(n, _ast.FunctionDef)}
            assert name in funcs, target
    assert cli.QUICK_CHAPTER in {ch.id for ch in cli.load_book().chapters}
