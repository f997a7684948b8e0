"""The course machinery: the book.yml manifest, chapters made from solutions,
notebooks, JupyterLab settings, and the commands behind ``course.py``.

One source of truth: ``solutions/<file>`` holds each chapter with its exercises
solved between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers (nbgrader's
syntax, so an nbgrader export needs no rewriting). ``chapters/<file>`` is made
from it by :func:`strip_solutions`, which puts nbgrader's placeholder in each
region. A test proves the committed chapters equal what the solutions make.

Run as ``python -m ppo_lib.course COMMAND`` (``course.py`` at the repository
root does that after setting up the virtual environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN_MARK = "### BEGIN SOLUTION"
END_MARK = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
# JupyterLab setting that opens jupytext text files as notebooks by default.
LAB_OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook", "markdown": "Jupytext Notebook"}
    },
    # The course runs offline as often as not: no news or update pop-ups.
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}
# Environment variable read by ppo_lib.checks: "1" turns a failed or unfilled
# exercise into an error. The notebook tests set it for solutions/.
STRICT_ENV = "PPO_COURSE_STRICT_CHECKS"


class ManifestError(ValueError):
    """book.yml is malformed or disagrees with the files on disk."""


@dataclasses.dataclass(frozen=True)
class Chapter:
    id: str
    file: str
    title: str
    budget_s: float
    objectives: tuple[str, ...]
    root: Path

    @property
    def stem(self) -> str:
        return Path(self.file).stem

    @property
    def chapter_path(self) -> Path:
        return self.root / "chapters" / self.file

    @property
    def solution_path(self) -> Path:
        return self.root / "solutions" / self.file


@dataclasses.dataclass(frozen=True)
class Book:
    title: str
    author: str
    chapters: tuple[Chapter, ...]
    root: Path

    def chapter(self, key: str) -> Chapter:
        for ch in self.chapters:
            if key in (ch.id, ch.stem, ch.file):
                return ch
        known = ", ".join(ch.id for ch in self.chapters)
        raise ManifestError(f"no chapter {key!r} in book.yml (known ids: {known})")


def load_book(root: Path | str = REPO_ROOT) -> Book:
    """Read and validate ``book.yml``; every error names the field and the chapter."""
    root = Path(root)
    path = root / "book.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found; the course manifest must exist") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must be a mapping with 'title' and 'chapters'")
    for key in ("title", "chapters"):
        if key not in raw:
            raise ManifestError(f"{path}: missing top-level field {key!r}")
    if not isinstance(raw["chapters"], list) or not raw["chapters"]:
        raise ManifestError(f"{path}: 'chapters' must be a non-empty list")
    chapters, seen_ids, seen_files = [], set(), set()
    for i, entry in enumerate(raw["chapters"]):
        where = f"{path}: chapters[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: must be a mapping")
        for key in ("id", "file", "title", "budget_s", "objectives"):
            if key not in entry:
                raise ManifestError(f"{where}: missing field {key!r}")
        cid, file = str(entry["id"]), str(entry["file"])
        where = f"{path}: chapter {cid}"
        if not re.fullmatch(r"\d\d", cid):
            raise ManifestError(f"{where}: id={cid!r}: must be two digits, e.g. '03'")
        if not file.startswith(cid + "_") or not file.endswith(".py"):
            raise ManifestError(f"{where}: file={file!r}: must look like '{cid}_name.py'")
        if cid in seen_ids or file in seen_files:
            raise ManifestError(f"{where}: duplicate id or file {file!r}")
        budget = entry["budget_s"]
        if not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0:
            raise ManifestError(f"{where}: budget_s={budget!r}: must be a positive number of seconds")
        objectives = entry["objectives"]
        if not isinstance(objectives, list) or not objectives or not all(
            isinstance(o, str) and o.strip() for o in objectives
        ):
            raise ManifestError(f"{where}: objectives must be a non-empty list of sentences")
        seen_ids.add(cid)
        seen_files.add(file)
        chapters.append(Chapter(cid, file, str(entry["title"]), float(budget), tuple(objectives), root))
    ids = [c.id for c in chapters]
    if ids != sorted(ids):
        raise ManifestError(f"{path}: chapters must be listed in order of id, got {ids}")
    return Book(str(raw["title"]), str(raw.get("author", "")), tuple(chapters), root)


# --------------------------------------------------------------------------
# Solutions -> chapters
# --------------------------------------------------------------------------


def strip_solutions(text: str, source: str = "<text>") -> str:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region
    (markers included) by nbgrader's placeholder, indented like the marker.

    Raises ``ValueError`` naming the line of an unbalanced or nested marker.
    """
    out: list[str] = []
    open_line = None
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN_MARK:
            if open_line is not None:
                raise ValueError(f"{source}:{lineno}: nested {BEGIN_MARK} (the one at line {open_line} is still open)")
            open_line = lineno
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(f"{indent}{p}\n" for p in PLACEHOLDER)
        elif stripped == END_MARK:
            if open_line is None:
                raise ValueError(f"{source}:{lineno}: {END_MARK} without a {BEGIN_MARK} before it")
            open_line = None
        elif open_line is None:
            out.append(line)
    if open_line is not None:
        raise ValueError(f"{source}:{open_line}: {BEGIN_MARK} is never closed by {END_MARK}")
    return "".join(out)


def chapter_text_from_solution(chapter: Chapter) -> str:
    return strip_solutions(chapter.solution_path.read_text(encoding="utf-8"), str(chapter.solution_path))


def sync_chapters(book: Book, check: bool = False) -> list[Path]:
    """Write ``chapters/<file>`` from ``solutions/<file>``; return the files that
    changed (with ``check=True``, write nothing and only report them)."""
    changed = []
    for ch in book.chapters:
        if not ch.solution_path.exists():
            raise ManifestError(f"book.yml lists chapter {ch.id}, but {ch.solution_path} does not exist")
        text = chapter_text_from_solution(ch)
        current = ch.chapter_path.read_text(encoding="utf-8") if ch.chapter_path.exists() else None
        if current != text:
            changed.append(ch.chapter_path)
            if not check:
                ch.chapter_path.parent.mkdir(parents=True, exist_ok=True)
                ch.chapter_path.write_text(text, encoding="utf-8")
    return changed


def unlisted_files(book: Book) -> list[Path]:
    """Chapter or solution text files on disk that book.yml does not list."""
    listed = {ch.file for ch in book.chapters}
    found = []
    for folder in ("chapters", "solutions"):
        for p in sorted((book.root / folder).glob("*.py")):
            if p.name not in listed:
                found.append(p)
    return found


# --------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------


def text_to_notebook(src: Path, dst: Path) -> Path:
    """Convert a jupytext percent file into an .ipynb (no outputs)."""
    import jupytext

    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.get("jupytext", {}).pop("formats", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dst, fmt="ipynb")
    return dst


def build_test_notebooks(book: Book, out_dir: Path, kinds=("chapters", "solutions"), only=None) -> list[Path]:
    """Make fresh notebooks for the notebook tests: ``out_dir/<kind>/<stem>.ipynb``."""
    made = []
    for kind in kinds:
        folder = out_dir / kind
        if folder.exists():
            shutil.rmtree(folder)
        for ch in book.chapters:
            if only and ch.id not in only:
                continue
            src = ch.chapter_path if kind == "chapters" else ch.solution_path
            made.append(text_to_notebook(src, folder / (ch.stem + ".ipynb")))
    return made


def make_workspace(book: Book, workspace: Path) -> list[Path]:
    """The learner's own copies: ``workspace/<stem>.ipynb`` for each chapter.

    A notebook that already exists is the learner's work and is never
    overwritten; delete it to start that chapter afresh.
    """
    made = []
    for ch in book.chapters:
        dst = workspace / (ch.stem + ".ipynb")
        if not dst.exists():
            made.append(text_to_notebook(ch.chapter_path, dst))
    return made


def install_lab_settings(prefix: Path | str = sys.prefix) -> Path:
    """Make JupyterLab open jupytext .py/.md files as notebooks (merged into
    ``<prefix>/share/jupyter/lab/settings/overrides.json``)."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in LAB_OVERRIDES.items():
        current = settings.setdefault(plugin, {})
        for key, value in values.items():
            if isinstance(value, dict):
                current.setdefault(key, {}).update(value)
            else:
                current[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def cmd_sync(args) -> int:
    book = load_book()
    changed = sync_chapters(book, check=args.check)
    for p in changed:
        print(("out of date: " if args.check else "wrote ") + str(p.relative_to(book.root)))
    if args.check and changed:
        print("run `python3 course.py sync` to regenerate the chapters from solutions/")
        return 1
    return 0


def cmd_notebooks(args) -> int:
    book = load_book()
    made = make_workspace(book, Path(args.workspace))
    install_lab_settings()
    print(f"workspace: {len(made)} new notebook(s) in {args.workspace} "
          f"({len(book.chapters) - len(made)} kept as they were)")
    return 0


def cmd_open(args) -> int:
    book = load_book()
    workspace = Path(args.workspace).resolve()
    make_workspace(book, workspace)
    install_lab_settings()
    first = workspace / (book.chapters[0].stem + ".ipynb")
    token = args.token or secrets.token_hex(16)
    root_dir = book.root if first.is_relative_to(book.root) else workspace
    url = f"http://{args.ip}:{args.port}/lab/tree/{first.relative_to(root_dir).as_posix()}?token={token}"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        f"--ServerApp.root_dir={root_dir}", f"--ip={args.ip}", f"--port={args.port}",
        f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
    ]
    if args.no_browser:
        cmd.append("--no-browser")
    else:
        cmd.append(str(first))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    print(f"Opening the course: chapter {book.chapters[0].id} '{book.chapters[0].title}'")
    print(f"    {url}")
    print("Stop the server with Ctrl+C.", flush=True)
    proc = subprocess.Popen(cmd, cwd=book.root)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 130


def cmd_test(args) -> int:
    book = load_book()
    out = book.root / "build" / "notebooks"
    build_test_notebooks(book, out)
    cmd = [sys.executable, "-m", "pytest", "tests", str(out.relative_to(book.root)),
           "--nbval", "--nbval-current-env", "--nbval-cell-timeout=900", "-p", "no:cacheprovider",
           *args.pytest_args]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=book.root)


def cmd_book(args) -> int:
    from ppo_lib import book_html

    book = load_book()
    t0 = time.perf_counter()
    index = book_html.build(book, Path(args.out), only=args.only)
    print(f"HTML book written to {index} in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="course.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="regenerate chapters/ from solutions/")
    p.add_argument("--check", action="store_true", help="only report chapters that are out of date")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("notebooks", help="make the learner's notebooks in workspace/")
    p.add_argument("--workspace", default=str(REPO_ROOT / "workspace"))
    p.set_defaults(func=cmd_notebooks)
    p = sub.add_parser("open", help="start JupyterLab with chapter 0 open")
    p.add_argument("--no-browser", "--headless", dest="no_browser", action="store_true",
                   help="do not open a browser; just print the URL")
    p.add_argument("--ip", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--token", default=None, help="access token (default: a random one)")
    p.add_argument("--workspace", default=str(REPO_ROOT / "workspace"))
    p.set_defaults(func=cmd_open)
    p = sub.add_parser("test", help="run every test: library, notebooks, browser, book")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments for pytest")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("book", help="execute every chapter and build the static HTML book")
    p.add_argument("--out", default=str(REPO_ROOT / "build" / "book"))
    p.add_argument("--only", nargs="*", default=None, help="chapter ids to include (default: all)")
    p.set_defaults(func=cmd_book)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"]:  # everything after `test` goes to pytest, options included (-k, -x, ...)
        args = parser.parse_args(["test"])
        args.pytest_args = [a for a in argv[1:] if a != "--"] if argv[1:2] == ["--"] else argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
