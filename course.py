#!/usr/bin/env python3
"""The PPO course: one entry point for learners, instructors and CI.

    python3 course.py open [--no-browser]   set up, then start JupyterLab on chapter 0
    python3 course.py test [PYTEST ARGS]    set up, then run every test (--quick: a few minutes)
    python3 course.py book                  set up, then build the static HTML book
    python3 course.py setup                 only create/update the virtual environment
    python3 course.py doctor                set up, then check it: paste its output when asking for help
    python3 course.py assignments [ACTION]  nbgrader: build/release, collect, autograde, feedback, export
    python3 course.py sync [--check]        regenerate chapters/ from solutions/ (authors)

Set-up needs nothing but Python >= 3.10 (this file uses only the standard
library). It creates ``.venv`` when there is none, installs torch *first and
explicitly* (so that pip never resolves a bare ``torch`` to a multi-GB CUDA
build), then the project with its extras. It re-installs when pyproject.toml
changes. Environment variables:

    PPO_COURSE_VENV         where the virtual environment lives (default: .venv)
    PPO_COURSE_TORCH        the torch requirement (default: torch==2.13.0)
    PPO_COURSE_TORCH_INDEX  a package index for torch, e.g. the CPU-only index
                            https://download.pytorch.org/whl/cpu
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("PPO_COURSE_VENV", ROOT / ".venv"))
TORCH = os.environ.get("PPO_COURSE_TORCH", "torch==2.13.0")
TORCH_INDEX = os.environ.get("PPO_COURSE_TORCH_INDEX", "")
EXTRAS = "course,dev,book,grading"
STAMP = VENV / ".ppo-course-installed"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def wanted_stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{TORCH}|{TORCH_INDEX}|{EXTRAS}".encode())
    return digest.hexdigest()


def torch_present() -> bool:
    """torch's package folder is in the venv (a look at the disk, not an import: this runs before every
    command). The stamp alone would hide a torch uninstalled since, and `setup` would then do nothing."""
    patterns = ("Lib/site-packages/torch/__init__.py",) if os.name == "nt" else \
        ("lib/python*/site-packages/torch/__init__.py",)
    return any(any(VENV.glob(p)) for p in patterns)


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code != 0:
        sys.exit(f"course.py: set-up step failed (exit {code}): {' '.join(cmd)}")


def setup() -> Path:
    if sys.version_info < (3, 10):
        sys.exit(f"course.py: Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    py = venv_python()
    if STAMP.exists() and STAMP.read_text().strip() == wanted_stamp() and py.exists() and torch_present():
        return py
    t0 = time.perf_counter()
    if not py.exists():
        print(f"Creating the virtual environment {VENV} ...", flush=True)
        run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    has_torch = subprocess.call([str(py), "-c", "import torch"], stderr=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL) == 0
    if not has_torch:
        # torch first, explicitly: a bare `torch` requirement would pull a CUDA build.
        run(pip + ([f"--index-url={TORCH_INDEX}"] if TORCH_INDEX else []) + [TORCH])
    run(pip + ["-e", f".[{EXTRAS}]"])
    STAMP.write_text(wanted_stamp() + "\n")
    print(f"Set-up done in {time.perf_counter() - t0:.0f} s.", flush=True)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    py = setup()
    if argv[0] == "setup":
        return 0
    child = subprocess.Popen([str(py), "-m", "ppo_lib.course", *argv], cwd=ROOT)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl+C reached the command too (same process group): let it stop in its own way
            continue


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ncourse.py: interrupted", file=sys.stderr)
        sys.exit(130)
