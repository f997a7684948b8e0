"""Hooks for the notebook tests (nbval items under build/notebooks/).

- Exercises in solutions/ must pass their checkers: the kernel of a solution
  notebook runs with PPO_COURSE_STRICT_CHECKS=1, a chapter's with 0 (an
  unfilled exercise there must fall back to the reference and carry on).
- Each notebook's runtime (kernel start + all cells) is measured; the last cell
  fails if the notebook took more than 3x its book.yml budget. The figures are
  written to artifacts/notebook_runtimes.json.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

BUDGET_FACTOR = 3.0
# Chapters 8 and 9 cache their pre-trained and reward models (ppo_lib.rlhf.cache). In a
# test session every notebook kernel shares one cache folder, emptied at the start, so
# the first notebook trains them from scratch and the others load them.
RLHF_CACHE = Path(__file__).parent / "build" / "ppo_cache"
_totals: dict[str, float] = defaultdict(float)
_last_item: dict[str, str] = {}


def _notebook_key(item) -> str | None:
    path = Path(str(item.fspath))
    if path.suffix != ".ipynb":
        return None
    return f"{path.parent.name}/{path.stem}"


def _budget(stem: str) -> float | None:
    from ppo_lib.course import load_book

    for ch in load_book().chapters:
        if ch.stem == stem:
            return ch.budget_s
    return None


def pytest_sessionstart(session):
    import shutil

    shutil.rmtree(RLHF_CACHE, ignore_errors=True)
    os.environ["PPO_COURSE_CACHE"] = str(RLHF_CACHE)  # inherited by nbval's and JupyterLab's kernels


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        key = _notebook_key(item)
        if key:
            _last_item[key] = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    key = _notebook_key(item)
    if key:  # read by the kernel that nbval starts for this notebook
        os.environ["PPO_COURSE_STRICT_CHECKS"] = "1" if key.startswith("solutions/") else "0"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    key = _notebook_key(item)
    if not key:
        return
    _totals[key] += call.stop - call.start
    report = outcome.get_result()
    if call.when == "call" and _last_item.get(key) == item.nodeid and report.passed:
        budget = _budget(Path(key).name)
        if budget is not None and _totals[key] > BUDGET_FACTOR * budget:
            report.outcome = "failed"
            report.longrepr = (f"{key} took {_totals[key]:.1f} s, more than {BUDGET_FACTOR:g} x its "
                               f"book.yml budget of {budget:g} s")


def pytest_terminal_summary(terminalreporter):
    if not _totals:
        return
    terminalreporter.section("notebook runtimes (kernel start + all cells)")
    rows = {}
    for key, seconds in sorted(_totals.items()):
        budget = _budget(Path(key).name)
        rows[key] = {"seconds": round(seconds, 2), "budget_s": budget}
        terminalreporter.write_line(f"{key:40s} {seconds:7.1f} s   (budget {budget:g} s)")
    out = Path(__file__).parent / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "notebook_runtimes.json").write_text(json.dumps(rows, indent=2) + "\n")
