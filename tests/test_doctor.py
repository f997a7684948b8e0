"""The doctor reports what breaks RL courses most often, each problem with its fix."""

import subprocess
import sys
from pathlib import Path

import ppo_lib
from ppo_lib.course import diagnose, doctor, load_book

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_checks_everything_and_gives_a_fix_for_each_problem(tmp_path, capsys):
    report = doctor(print_report=True, workspace=tmp_path)  # an empty workspace: a problem
    out = capsys.readouterr().out
    names = [f.name for f in report.findings]
    for name in ("python", "torch", "device", "torch threads", "gymnasium", "jupyterlab", "ipywidgets",
                 "widget frontend", "memory available", "chapters", "your notebooks"):
        assert name in names and name in out
    problem = next(f for f in report.problems if f.name == "your notebooks")
    assert "python3 course.py notebooks" in problem.fix and "fix: " in out
    assert all(f.fix for f in report.problems)


def test_doctor_sees_a_complete_workspace_and_a_mismatched_widget_frontend(tmp_path, monkeypatch):
    from ppo_lib.course import make_workspace

    make_workspace(load_book(), tmp_path)
    report = doctor(print_report=False, workspace=tmp_path)
    assert next(f for f in report.findings if f.name == "your notebooks").ok
    real = diagnose.package_version
    monkeypatch.setattr(diagnose, "package_version", lambda d: "1.1.0" if d == "jupyterlab_widgets" else real(d))
    report = doctor(print_report=False, workspace=tmp_path)
    widget = next(f for f in report.problems if f.name == "widget frontend")
    assert "jupyterlab_widgets 3" in widget.fix


def test_doctor_is_one_call_from_ppo_lib_and_one_command():
    assert callable(ppo_lib.doctor)
    assert "problem" in repr(ppo_lib.doctor(print_report=False))
    proc = subprocess.run([sys.executable, "-m", "ppo_lib.course", "doctor"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert "ppo_lib doctor" in proc.stdout and "torch threads" in proc.stdout, proc.stderr
    assert proc.returncode in (0, 1)
