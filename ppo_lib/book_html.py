"""The static HTML book, built offline from book.yml with jupyter-book 1.x.

jupyter-book 2 (mystmd) downloads its theme at build time, so it cannot build
offline; 1.x (Sphinx) can. Every chapter is executed during the build. Widgets
show their default figure: each LiveFigure offers a PNG beside its widget view,
and the book ranks the PNG first (``nb_mime_priority_overrides``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ppo_lib.course import Book, text_to_notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def write_sources(book: Book, src: Path, only=None) -> list[str]:
    """Write _config.yml, _toc.yml, intro.md and one notebook per chapter into ``src``."""
    if src.exists():
        shutil.rmtree(src)
    (src / "chapters").mkdir(parents=True)
    chapters = [ch for ch in book.chapters if not only or ch.id in only]
    if not chapters:
        raise ValueError(f"--only {only}: no such chapter ids in book.yml")
    for ch in chapters:
        text_to_notebook(ch.chapter_path, src / "chapters" / (ch.stem + ".ipynb"))
    timeout = int(max(ch.budget_s for ch in chapters) * 3 + 60)
    config = {
        "title": book.title,
        "author": book.author,
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "force", "timeout": timeout, "allow_errors": False},
        "html": {"use_repository_button": False, "use_issues_button": False},
        "sphinx": {"config": {
            # A static page cannot run widgets: show the PNG each LiveFigure carries.
            "nb_mime_priority_overrides": [["html", WIDGET_MIME, None]],
            "html_show_copyright": False,
        }},
    }
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": f"chapters/{ch.stem}"} for ch in chapters]}
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    lines = [f"# {book.title}", "",
             "A hands-on course that builds Proximal Policy Optimization from first principles. "
             "These pages were executed when the book was built; the live widgets are shown "
             "with their default setting. Open the notebooks in JupyterLab "
             "(`python3 course.py open`) to move the sliders.", ""]
    for ch in chapters:
        lines += [f"## {ch.id} {ch.title}", "", f"About {ch.budget_s:g} s on a 2-core CPU. You will be able to:", ""]
        lines += [f"- {o}" for o in ch.objectives] + [""]
    (src / "intro.md").write_text("\n".join(lines))
    return [ch.stem for ch in chapters]


def build(book: Book, out: Path, only=None) -> Path:
    """Build the book into ``out``; return the path of its index.html."""
    out = Path(out).resolve()
    src = out / "src"
    stems = write_sources(book, src, only)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
           "--path-output", str(out), "--warningiserror", "--keep-going"]
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=book.root)
    html = out / "_build" / "html"
    missing = [s for s in stems if not (html / "chapters" / f"{s}.html").exists()]
    if code != 0 or missing:
        raise RuntimeError(f"jupyter-book failed (exit {code}); chapters without HTML: {missing or 'none'}; "
                           f"see the log above and {html / 'reports'}")
    return html / "index.html"
