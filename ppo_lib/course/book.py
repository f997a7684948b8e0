"""The static HTML book, built offline from book.yml with jupyter-book 1.x.

jupyter-book 2 (mystmd) downloads its theme at build time, so it cannot build
offline; 1.x (Sphinx) can. Every chapter is executed during the build. Widgets
show their default figure: each LiveFigure offers a PNG beside its widget view,
and the book ranks the PNG first (``nb_mime_priority_overrides``).

The pages render offline too: what a page would load from the web when it is
opened (MathJax, require.js, the widget renderer, the Font Awesome stylesheet of
matplotlib's animation player) is taken from npm packages at build time, kept in
a cache (``build/vendor``, or ``PPO_COURSE_VENDOR``), and served from the
build's own ``_static/vendor/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from .manifest import Book, ManifestError
from .notebooks import text_to_notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# npm package -> the files of it the pages use (paths inside the package)
VENDORED = {
    "mathjax@3.2.2": ["es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/"],
    "requirejs@2.3.8": ["require.js"],
    "@jupyter-widgets/html-manager@1.0.15": ["dist/embed-amd.js"],
    "font-awesome@4.7.0": ["css/font-awesome.min.css", "fonts/"],
}
MATHJAX = "vendor/mathjax/es5/tex-mml-chtml.js"
REQUIRE = "vendor/requirejs/require.js"
WIDGETS = "vendor/html-manager/dist/embed-amd.js"
FONT_AWESOME = "vendor/font-awesome/css/font-awesome.min.css"
_REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)["']""",
                     re.IGNORECASE)


def _folder(package: str) -> str:
    name = package.rsplit("@", 1)[0]
    return {"@jupyter-widgets/html-manager": "html-manager"}.get(name, name)


def vendor_cache(book: Book) -> Path:
    return Path(os.environ.get("PPO_COURSE_VENDOR", book.root / "build" / "vendor"))


def fetch_vendor(cache: Path) -> Path:
    """Unpack the npm packages of VENDORED into ``cache`` (once; ``npm pack`` needs
    the npm registry only the first time). Returns ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    for package, files in VENDORED.items():
        dest = cache / _folder(package)
        done = dest / ".complete"
        if done.exists() and done.read_text() == package:
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"the offline book needs {package} from npm, and npm is not installed "
                               f"(Debian: apt-get install npm); or unpack the package into {dest}")
        tmp = cache / "_download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        out = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(tmp.glob("*.tgz"))
        if out.returncode != 0 or not tarballs:
            raise RuntimeError(f"npm pack {package} failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and any(m.name == f"package/{f}" or (f.endswith("/") and m.name.startswith(f"package/{f}"))
                                             for f in files)]
            for m in members:
                target = dest / m.name.removeprefix("package/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh)
        shutil.rmtree(tmp, ignore_errors=True)
        missing = [f for f in files if not (dest / f).exists()]
        if missing:
            raise RuntimeError(f"{package}: the package lacks {missing}")
        done.write_text(package)
    return cache


#: the file that marks a sources folder as written by :func:`write_sources` (and so ours to replace)
SOURCES_MARKER = ".ppo-course-book-sources"
#: the folder under ``--out`` where :func:`build` writes the book's sources
SOURCES_DIR = "_book_sources"


def write_sources(book: Book, src: Path, only=None, vendor: Path | None = None) -> list[str]:
    """Write _config.yml, _toc.yml, intro.md and one notebook per chapter into ``src``.

    ``src`` is replaced only when an earlier call wrote it (it holds :data:`SOURCES_MARKER`); a folder
    that is not ours is never deleted: a ``FileExistsError`` says so and names it."""
    chapters = book.select(only)  # validates before anything on disk is touched
    src = Path(src)
    if src.exists():
        if not (src / SOURCES_MARKER).is_file():
            raise FileExistsError(f"{src} exists and was not written by the book builder (no {SOURCES_MARKER} "
                                  f"in it): it is left as it is. Move it, or choose another --out folder")
        shutil.rmtree(src)
    (src / "chapters").mkdir(parents=True)
    (src / SOURCES_MARKER).write_text("written by ppo_lib.course.book.write_sources; replaced on every build\n")
    for ch in chapters:
        text_to_notebook(ch.chapter_path, src / "chapters" / (ch.stem + ".ipynb"))
    timeout = int(max(ch.budget_s for ch in chapters) * 3 + 60)
    sphinx = {
        # A static page cannot run widgets: show the PNG each LiveFigure carries.
        "nb_mime_priority_overrides": [["html", WIDGET_MIME, None]],
        "html_show_copyright": False,
    }
    if vendor is not None:
        # Not the source's `_static/`: jupyter-book adds every .js/.css found there to every
        # page. Sphinx copies `vendor_static/` into the build's `_static/` all the same.
        shutil.copytree(vendor, src / "vendor_static" / "vendor",
                        ignore=shutil.ignore_patterns(".complete", "_download"))
        sphinx.update({
            "html_static_path": ["vendor_static"],
            "mathjax_path": MATHJAX,  # relative: served from _static/
            "nb_ipywidgets_js": {REQUIRE: {}, WIDGETS: {}},
        })
    config = {
        "title": book.title,
        "author": book.author,
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "force", "timeout": timeout, "allow_errors": False},
        "html": {"use_repository_button": False, "use_issues_button": False},
        "sphinx": {"config": sphinx},
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
        when = f"About {ch.budget_s:g} s on a 2-core CPU"
        if ch.learner_minutes:
            when = f"About {ch.learner_minutes:g} minutes of your time ({ch.budget_s:g} s on a 2-core CPU)"
        lines += [f"## {ch.id} {ch.title}", "", f"{when}. You will be able to:", ""]
        lines += [f"- {o}" for o in ch.objectives] + [""]
    (src / "intro.md").write_text("\n".join(lines))
    return [ch.stem for ch in chapters]


def remote_references(html_dir: Path) -> dict[str, list[str]]:
    """Scripts, stylesheets, images and frames that pages under ``html_dir`` load
    from the web: ``{page: [url, ...]}`` (empty when the book is self-contained)."""
    found = {}
    for page in sorted(Path(html_dir).rglob("*.html")):
        urls = _REMOTE.findall(page.read_text(encoding="utf-8", errors="replace"))
        if urls:
            found[str(page.relative_to(html_dir))] = sorted(set(urls))
    return found


def _localise_pages(html: Path) -> None:
    """Point what notebook outputs load from the web (matplotlib's animation player
    links Font Awesome from a CDN) at the vendored copies."""
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        depth = len(page.relative_to(html).parts) - 1
        local = "../" * depth + "_static/" + FONT_AWESOME
        new = re.sub(r"(?:https?:)?//[^\"']*/font-awesome/[\d.]+/css/font-awesome(?:\.min)?\.css", local, text)
        if new != text:
            page.write_text(new, encoding="utf-8")


def build(book: Book, out: Path, only=None, offline_assets: bool = True) -> Path:
    """Build the book into ``out``; return the path of its index.html.

    Everything is validated before anything under ``out`` is touched.
    """
    if not isinstance(book, Book):
        raise TypeError(f"book: expected the Book from load_book(), got {type(book).__name__}")
    book.select(only)  # unknown ids, or none: an error naming the valid ids, before touching the disk
    vendor = None
    if offline_assets:
        try:
            vendor = fetch_vendor(vendor_cache(book))
        except RuntimeError as exc:  # no npm, or no registry: build anyway, and say what it means
            print(f"warning: {exc}\nwarning: building the book without its offline assets: its pages will "
                  f"load MathJax, require.js and the widget renderer from the web when opened", flush=True)
            offline_assets = False
    out = Path(out).expanduser().resolve()
    src = out / SOURCES_DIR  # never out/src: a learner's own folder of that name was deleted once
    stems = write_sources(book, src, only, vendor)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
           "--path-output", str(out), "--warningiserror", "--keep-going"]
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=book.root)
    html = out / "_build" / "html"
    missing = [s for s in stems if not (html / "chapters" / f"{s}.html").exists()]
    if code != 0 or missing:
        raise RuntimeError(f"jupyter-book failed (exit {code}); chapters without HTML: {missing or 'none'}; "
                           f"see the log above and {html / 'reports'}")
    if offline_assets:
        _localise_pages(html)
    return html / "index.html"


__all__ = ["build", "write_sources", "SOURCES_DIR", "SOURCES_MARKER", "remote_references", "fetch_vendor", "ManifestError"]
