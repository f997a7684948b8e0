"""Three rooms kept apart, proved on the import graph (read with ``ast``, nothing imported):

- the RL library and the teaching aids (``ppo_lib`` outside ``ppo_lib/course/``)
  import nothing from the course machinery;
- the course machinery (``ppo_lib/course/``) has no import circle;
- the launcher ``course.py`` uses the standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ppo_lib"
# Allowed on purpose: ``ppo_lib.doctor()`` imports the doctor when called (inside the
# function), and ``ppo_lib/book_html.py`` is the old name of ppo_lib.course.book, kept
# for existing imports; both belong to the course machinery, not the RL library.
ALLOWED = {("ppo_lib", "ppo_lib.course.diagnose"), ("ppo_lib.book_html", "ppo_lib.course.book"),
           ("ppo_lib.book_html", "ppo_lib.course")}


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


def _is_course(name: str) -> bool:
    return name == "ppo_lib.course" or name.startswith("ppo_lib.course.")


def test_the_rl_library_imports_nothing_from_the_course_machinery():
    graph = _graph()
    library = [m for m in graph if not _is_course(m)]
    assert "ppo_lib.algos.ppo" in library and "ppo_lib.rlhf" in library and "ppo_lib.advantages" in library
    bad = sorted((m, t) for m in library for t in graph[m] if _is_course(t) and (m, t) not in ALLOWED)
    assert bad == [], f"the RL library must not import the course machinery: {bad}"


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
