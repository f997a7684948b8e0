"""binder/ stays consistent with pyproject.toml."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _binder_lines():
    return [ln.strip() for ln in (ROOT / "binder/requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_binder_installs_every_runtime_and_course_dependency_with_the_same_specifier():
    project = _pyproject()
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["course"]]
    binder = {Requirement(ln).name: Requirement(ln) for ln in _binder_lines() if not ln.startswith("-")}
    for req in wanted:
        assert req.name in binder, f"binder/requirements.txt lacks {req.name} (pyproject: {req})"
        if req.name != "torch":
            assert binder[req.name].specifier == req.specifier, f"{req.name}: {binder[req.name]} vs {req}"
    extra = set(binder) - {r.name for r in wanted}
    assert not extra, f"binder/requirements.txt has packages pyproject does not: {extra}"


def test_binder_torch_is_a_cpu_build_within_the_pyproject_range():
    lines = _binder_lines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch_line = next(ln for ln in lines if ln.startswith("torch"))
    version = re.fullmatch(r"torch==([\d.]+)\+cpu", torch_line)
    assert version, f"{torch_line}: pin a +cpu build"
    pyproject_torch = next(Requirement(r) for r in _pyproject()["dependencies"] if r.startswith("torch"))
    assert version.group(1) in pyproject_torch.specifier


def test_binder_post_build_makes_the_notebooks_and_the_lab_setting():
    post = (ROOT / "binder/postBuild").read_text()
    assert post.startswith("#!/bin/bash")
    assert "pip install --no-deps -e ." in post
    assert "python -m ppo_lib.course notebooks" in post
    assert (ROOT / "binder/postBuild").stat().st_mode & 0o111, "postBuild must be executable"
