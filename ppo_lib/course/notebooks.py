"""Notebooks made from the jupytext text files: the learner's workspace and the
fresh copies the notebook tests execute."""

from __future__ import annotations

import shutil
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
    jupytext.write(nb, dst, fmt="ipynb")
    return dst


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


def make_workspace(book: Book, workspace: Path) -> list[Path]:
    """The learner's own copies: ``workspace/<stem>.ipynb`` for each chapter.

    A notebook that already exists is the learner's work and is never
    overwritten; delete it to start that chapter afresh.
    """
    made = []
    for ch in book.chapters:
        dst = Path(workspace) / (ch.stem + ".ipynb")
        if not dst.exists():
            made.append(text_to_notebook(ch.chapter_path, dst))
    return made
