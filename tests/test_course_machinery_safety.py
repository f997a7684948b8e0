"""The course machinery never destroys or hides a learner's work (issue 19): `book --out DIR` deletes only
what it wrote, the doctor does not say "ok" over an unreadable notebook and its fix for a missing torch
is a command that installs torch, a notebook cut short by a full disk is reported with a fresh copy
beside it, and two `open`s at once never leave JupyterLab's settings half-written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ppo_lib.course import book as book_module
from ppo_lib.course import diagnose, lab, load_book
from ppo_lib.course.notebooks import make_workspace, notebook_problem

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- book --out DIR
def test_book_never_deletes_a_folder_it_did_not_write(tmp_path, monkeypatch):
    mine = tmp_path / "src" / "notes.txt"  # the folder the builder used to delete
    mine.parent.mkdir()
    mine.write_text("mine")
    monkeypatch.setattr(book_module.subprocess, "call", lambda cmd, cwd: 0)  # no jupyter-book run
    with pytest.raises(RuntimeError, match="jupyter-book failed"):  # no HTML came out: said, not hidden
        book_module.build(load_book(), tmp_path, only=["00"], offline_assets=False)
    assert mine.read_text() == "mine"
    sources = tmp_path / book_module.SOURCES_DIR
    assert (sources / book_module.SOURCES_MARKER).is_file() and (sources / "chapters").is_dir()
    # a second build replaces its own sources
    (sources / "stale.txt").write_text("old")
    with pytest.raises(RuntimeError):
        book_module.build(load_book(), tmp_path, only=["00"], offline_assets=False)
    assert not (sources / "stale.txt").exists() and mine.read_text() == "mine"


def test_book_refuses_a_sources_folder_that_is_not_its_own(tmp_path, monkeypatch):
    theirs = tmp_path / book_module.SOURCES_DIR / "thesis.tex"
    theirs.parent.mkdir()
    theirs.write_text("years of work")
    monkeypatch.setattr(book_module.subprocess, "call", lambda cmd, cwd: pytest.fail("must not build"))
    with pytest.raises(FileExistsError, match="was not written by the book builder"):
        book_module.build(load_book(), tmp_path, only=["00"], offline_assets=False)
    assert theirs.read_text() == "years of work"


# ---------------------------------------------------------------- a notebook cut short
def _cut_short(nb: Path, keep: int = 300) -> None:
    nb.write_bytes(nb.read_bytes()[:keep])


def test_a_truncated_notebook_is_reported_and_a_fresh_copy_offered(tmp_path):
    book = load_book()
    make_workspace(book, tmp_path)
    nb = tmp_path / (book.chapters[0].stem + ".ipynb")
    _cut_short(nb)
    before = nb.read_bytes()
    result = make_workspace(book, tmp_path)
    assert list(result) == []  # nothing missing, nothing overwritten
    problem, fresh = result.damaged[nb]
    assert "not valid JSON" in problem and nb.read_bytes() == before
    assert fresh == tmp_path / (book.chapters[0].stem + ".fresh.ipynb") and notebook_problem(fresh) is None
    (tmp_path / book.chapters[1].stem).with_suffix(".ipynb").write_bytes(b"")
    assert "is empty" in make_workspace(book, tmp_path).damaged[(tmp_path / book.chapters[1].stem).with_suffix(".ipynb")][0]


def test_the_notebooks_command_says_so(tmp_path, capsys):
    from ppo_lib.course.cli import main

    book = load_book()
    make_workspace(book, tmp_path)
    _cut_short(tmp_path / (book.chapters[2].stem + ".ipynb"))
    assert main(["notebooks", "--workspace", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 unreadable" in out and "kept as they were" in out
    assert f"{book.chapters[2].stem}.fresh.ipynb" in out and "left as it is" in out


def test_the_doctor_does_not_say_ok_over_an_unreadable_notebook(tmp_path):
    book = load_book()
    make_workspace(book, tmp_path)
    report = diagnose.doctor(print_report=False, workspace=tmp_path)
    assert next(f for f in report.findings if f.name == "notebooks readable").ok
    _cut_short(tmp_path / (book.chapters[3].stem + ".ipynb"))
    report = diagnose.doctor(print_report=False, workspace=tmp_path)
    bad = next(f for f in report.problems if f.name == "notebooks readable")
    assert book.chapters[3].stem in bad.value and "course.py notebooks" in bad.fix and ".fresh.ipynb" in bad.fix


def test_the_doctors_torch_fix_installs_torch_into_the_python_it_runs_in(monkeypatch):
    real = diagnose.package_version
    monkeypatch.setattr(diagnose, "package_version", lambda d: None if d == "torch" else real(d))
    report = diagnose.doctor(print_report=False)
    fix = next(f for f in report.problems if f.name == "torch").fix
    assert f"{sys.executable} -m pip install" in fix and "torch" in fix and "--index-url" in fix


def test_course_setup_reinstalls_a_torch_that_has_gone(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("course_launcher", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    venv = tmp_path / "venv"
    monkeypatch.setattr(course, "VENV", venv)
    monkeypatch.setattr(course, "STAMP", venv / ".ppo-course-installed")
    py = course.venv_python()
    py.parent.mkdir(parents=True)
    py.write_text("")
    course.STAMP.write_text(course.wanted_stamp() + "\n")
    ran = []
    monkeypatch.setattr(course, "run", lambda cmd: ran.append(cmd))
    monkeypatch.setattr(course.subprocess, "call", lambda cmd, **kw: 1)  # `import torch` fails
    course.setup()
    assert any(course.TORCH in cmd for cmd in ran), ran  # before: the stamp matched and nothing ran
    ran.clear()
    site = venv / "lib" / "python3.x" / "site-packages" / "torch"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    course.setup()
    assert ran == []  # torch present and the stamp matches: nothing to do


# ---------------------------------------------------------------- two `open`s at once
def test_two_opens_at_once_never_leave_the_settings_half_written(tmp_path):
    errors, seen = [], []
    overrides = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    stop = threading.Event()

    def writer():
        try:
            for _ in range(150):
                lab.install_lab_settings(tmp_path)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def reader():
        while not stop.is_set():
            if overrides.exists():
                try:
                    seen.append(json.loads(overrides.read_text()))
                except FileNotFoundError:
                    pass
                except ValueError as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors[:3]
    assert seen and all("@jupyterlab/docmanager-extension:plugin" in s for s in seen)
    assert not list(overrides.parent.glob("*.tmp"))


def test_an_unreadable_settings_file_is_kept_aside_not_a_crash(tmp_path, capsys):
    overrides = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text('{"@jupyterlab/docmanager-extension:plugin": {"defaultVi')
    lab.install_lab_settings(tmp_path)
    assert "defaultViewers" in json.loads(overrides.read_text())["@jupyterlab/docmanager-extension:plugin"]
    assert (overrides.parent / "overrides.json.unreadable").read_text().startswith('{"@jupyterlab')
    assert "could not be read" in capsys.readouterr().out


def test_two_processes_install_the_settings_at_once(tmp_path):
    code = ("import sys; from ppo_lib.course.lab import install_lab_settings\n"
            "for _ in range(40): install_lab_settings(sys.argv[1])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    for f in (tmp_path / "share/jupyter/lab/settings/overrides.json", tmp_path / "etc/jupyter/labconfig/page_config.json"):
        json.loads(f.read_text())


def test_the_book_command_says_why_it_left_a_folder_alone(tmp_path, capsys, monkeypatch):
    from ppo_lib.course.cli import main

    theirs = tmp_path / book_module.SOURCES_DIR / "mine.txt"
    theirs.parent.mkdir()
    theirs.write_text("mine")
    monkeypatch.setattr(book_module, "fetch_vendor", lambda cache: (_ for _ in ()).throw(RuntimeError("offline")))
    assert main(["book", "--only", "00", "--out", str(tmp_path)]) == 2
    assert "was not written by the book builder" in capsys.readouterr().err and theirs.read_text() == "mine"
