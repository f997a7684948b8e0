"""Notebooks made from the jupytext text files: the learner's workspace and the
fresh copies the notebook tests execute."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .manifest import Book

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def text_to_notebook(src: Path, dst: Path) -> Path:
    """Convert a jupytext percent file into an .ipynb (no outputs)."""
    import jupytext

    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.get("jupytext", {}).pop("formats", None)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # written beside and renamed: a full disk or a crash leaves the old file (or none), never half of one
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            jupytext.write(nb, fh, fmt="ipynb")  # to an open file: the same bytes as to the path
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def default_file_mode() -> int:
    """The mode a plain open() would give a new file under the current umask (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def notebook_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable notebook (empty, cut short, not JSON, no cells), or None."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not raw.strip():
        return f"is empty ({len(raw)} bytes): probably cut short when the disk was full"
    try:
        nb = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is not valid JSON ({exc}; {len(raw)} bytes): probably cut short when the disk was full"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return "is JSON but not a notebook (no list of cells)"
    return None


class WorkspaceResult(list):
    """The notebooks made (a list, as before), and ``damaged``: {a learner's notebook that cannot be read:
    (what is wrong, the fresh copy written beside it)}."""

    damaged: dict

    def __init__(self, made=(), damaged=None):
        super().__init__(made)
        self.damaged = dict(damaged or {})


def fresh_copy_path(notebook: Path) -> Path:
    return Path(notebook).with_name(Path(notebook).stem + ".fresh.ipynb")


def build_test_notebooks(book: Book, out_dir: Path, kinds=("chapters", "solutions"), only=None) -> list[Path]:
    """Make fresh notebooks for the notebook tests: ``out_dir/<kind>/<stem>.ipynb``."""
    made = []
    for kind in kinds:
        folder = Path(out_dir) / kind
        if folder.exists():
            shutil.rmtree(folder)
        for ch in book.chapters:
            if only and ch.id not in only:
                continue
            src = ch.chapter_path if kind == "chapters" else ch.solution_path
            made.append(text_to_notebook(src, folder / (ch.stem + ".ipynb")))
    return made


def make_workspace(book: Book, workspace: Path) -> WorkspaceResult:
    """The learner's own copies: ``workspace/<stem>.ipynb`` for each chapter.

    A notebook that already exists is the learner's work and is never
    overwritten; delete it to start that chapter afresh. One that cannot be read
    (empty or cut short, e.g. by a full disk) is not silently "kept": it stays as it is
    (what it holds may still be rescued by hand), a fresh copy is written beside it
    (``<stem>.fresh.ipynb``) and the result's ``damaged`` says so.
    """
    made, damaged = [], {}
    for ch in book.chapters:
        dst = Path(workspace) / (ch.stem + ".ipynb")
        if not dst.exists():
            made.append(text_to_notebook(ch.chapter_path, dst))
            continue
        problem = notebook_problem(dst)
        if problem is not None:
            fresh = fresh_copy_path(dst)
            text_to_notebook(ch.chapter_path, fresh)
            damaged[dst] = (problem, fresh)
    return WorkspaceResult(made, damaged)


def describe_damaged(damaged: dict) -> list[str]:
    """One line per damaged notebook: what is wrong and what to do."""
    return [f"warning: {nb} {problem}. It is left as it is; a fresh copy of the chapter is in {fresh} "
            f"(open that one, or delete {nb.name} and run `python3 course.py notebooks` to make it anew)"
            for nb, (problem, fresh) in damaged.items()]
