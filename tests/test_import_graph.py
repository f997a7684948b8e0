"""The library's four rooms kept apart, proved on the import graph (read with ``ast``,
nothing imported):

- the RL core (``ppo_lib/*.py``, ``ppo_lib/algos/``) imports nothing from the other three
  rooms: the teaching aids (``ppo_lib/teaching/``), the language models (``ppo_lib/rlhf/``)
  and the course machinery (``ppo_lib/course/``);
- the teaching aids and the language models import the core, never the course machinery,
  and the language models never import the teaching aids;
- the course machinery has no import circle;
- the launcher ``course.py`` uses the standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ppo_lib"
# Allowed on purpose: ``ppo_lib.doctor()`` imports the doctor when called (inside the
# function): it belongs to the course machinery, not the RL core.
ALLOWED = {("ppo_lib", "ppo_lib.course.diagnose")}
# Old paths of moved modules (one release of ``ppo_lib._moved.alias``): they name their new
# home as a string and import nothing themselves.
MOVED = {"ppo_lib.checks", "ppo_lib.widgets", "ppo_lib.animation", "ppo_lib.toy_problems", "ppo_lib.probes",
         "ppo_lib.bug_hunt", "ppo_lib.plots", "ppo_lib.book_html", "ppo_lib._moved"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """ppo_lib modules that ``name`` imports, anywhere in the file (functions included)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the deepest ppo_lib module the name refers to (a submodule, or the package)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _in(package: str, name: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_course(name: str) -> bool:
    return _in("ppo_lib.course", name)


def _room(name: str) -> str:
    for room in ("course", "teaching", "rlhf"):
        if _in(f"ppo_lib.{room}", name):
            return room
    return "moved" if name in MOVED else "core"


def test_the_tree_shows_four_rooms():
    rooms = {}
    for name in _graph():
        rooms.setdefault(_room(name), set()).add(name)
    assert {"ppo_lib.algos.ppo", "ppo_lib.advantages", "ppo_lib.losses", "ppo_lib.train", "ppo_lib.envs",
            "ppo_lib.rollout", "ppo_lib.policies", "ppo_lib.normalization", "ppo_lib.config"} <= rooms["core"]
    assert {"ppo_lib.teaching.checks", "ppo_lib.teaching.widgets", "ppo_lib.teaching.animation",
            "ppo_lib.teaching.toy_problems", "ppo_lib.teaching.probes", "ppo_lib.teaching.bug_hunt",
            "ppo_lib.teaching.plots"} <= rooms["teaching"]
    assert "ppo_lib.rlhf.grpo" in rooms["rlhf"] and "ppo_lib.course.grading" in rooms["course"]
    # the old paths hold nothing but the alias
    for name in MOVED - {"ppo_lib._moved"}:
        path = _modules()[name]
        assert "alias(__name__" in path.read_text(), f"{path} should only re-export its new home"


def test_the_core_imports_nothing_from_the_other_rooms():
    graph = _graph()
    bad = sorted((m, t) for m, ts in graph.items() if _room(m) == "core" for t in ts
                 if _room(t) not in ("core", "moved") and (m, t) not in ALLOWED)
    assert bad == [], f"the RL core must not import the teaching aids, rlhf/ or course/: {bad}"
    moved = sorted((m, t) for m, ts in graph.items() if _room(m) != "moved" for t in ts if _room(t) == "moved")
    assert moved == [], f"the library itself must use the new paths, not the old ones: {moved}"


def test_teaching_aids_and_language_models_never_import_the_course_machinery():
    graph = _graph()
    bad = sorted((m, t) for m, ts in graph.items() if _room(m) in ("teaching", "rlhf") for t in ts
                 if _room(t) == "course")
    assert bad == [], f"teaching/ and rlhf/ must not import course/: {bad}"
    back = sorted((m, t) for m, ts in graph.items() if _room(m) == "rlhf" for t in ts if _room(t) == "teaching")
    assert back == [], f"rlhf/ is a library: it must not import the teaching aids: {back}"


def test_the_course_machinery_has_no_import_circle():
    graph = _graph()
    course = {m: {t for t in ts if _is_course(t)} for m, ts in graph.items() if _is_course(m)}
    assert {"ppo_lib.course.manifest", "ppo_lib.course.sources", "ppo_lib.course.notebooks", "ppo_lib.course.lab",
            "ppo_lib.course.book", "ppo_lib.course.grading", "ppo_lib.course.diagnose",
            "ppo_lib.course.cli"} <= set(course)
    # the package's __init__ re-exports its modules; none of them may import the package back
    back = sorted(m for m, ts in course.items() if m != "ppo_lib.course" and "ppo_lib.course" in ts)
    assert back == [], f"these modules import ppo_lib.course itself (a circle through __init__): {back}"
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in course.get(m, ()):
            if t == "ppo_lib.course":
                continue
            if state.get(t) == 1:
                raise AssertionError(f"import circle: {' -> '.join(stack + [m, t])}")
            if not state.get(t):
                visit(t, stack + [m])
        state[m] = 2

    for m in course:
        if not state.get(m):
            visit(m, [])


def test_the_launcher_uses_only_the_standard_library():
    tree = ast.parse((ROOT / "course.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    assert names - set(sys.stdlib_module_names) - {"__future__"} == set()


def test_old_import_paths_still_work_with_one_warning_each():
    """A learner's workspace notebook from before the move keeps running (one release)."""
    import subprocess

    code = r'''
import importlib, warnings
warnings.simplefilter("always")
moves = {"ppo_lib.checks": "ppo_lib.teaching.checks", "ppo_lib.checks.core": "ppo_lib.teaching.checks.core",
         "ppo_lib.widgets": "ppo_lib.teaching.widgets", "ppo_lib.animation": "ppo_lib.teaching.animation",
         "ppo_lib.toy_problems": "ppo_lib.teaching.toy_problems", "ppo_lib.probes": "ppo_lib.teaching.probes",
         "ppo_lib.bug_hunt": "ppo_lib.teaching.bug_hunt", "ppo_lib.plots": "ppo_lib.teaching.plots"}
for old, new in moves.items():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = importlib.import_module(old)
    assert got is importlib.import_module(new), old
    msgs = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    # a package warns once; its submodules were aliased with it and do not warn again
    want = 0 if old == "ppo_lib.checks.core" else 1
    assert len(msgs) == want and all(new in m for m in msgs), (old, msgs)
from ppo_lib.checks import check_gae
from ppo_lib.teaching.checks import check_gae as new_check_gae
assert check_gae is new_check_gae
print("ok")
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_private_name_is_imported_across_modules():
    """A leading underscore means "this module's own": another module that needs the name gets a
    public one (the library, its tests, the benchmarks and the chapters alike)."""
    bad = []
    for root in ("ppo_lib", "tests", "benchmarks", "solutions"):
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            modules = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ppo_lib")):
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
                        else:
                            modules.add(alias.asname or alias.name)
                elif isinstance(node, ast.Import):
                    modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("ppo_lib")}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                        and node.attr.startswith("_") and not node.attr.startswith("__")):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert bad == [], "private names used across modules:\n" + "\n".join(bad)
