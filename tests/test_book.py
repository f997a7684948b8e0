"""The static HTML book builds offline, shows the widgets' default figures, and
renders offline: it loads no script or stylesheet from the web."""

import re

import pytest

from ppo_lib.course import book as book_html
from ppo_lib.course import load_book

pytestmark = pytest.mark.book


def test_book_builds_chapter_0_with_executed_outputs_and_the_widget_figure(tmp_path):
    book = load_book()
    index = book_html.build(book, tmp_path, only=["00"])
    assert index.exists()
    intro = (index.parent / "intro.html").read_text()
    assert book.title in intro
    for objective in book.chapter("00").objectives:
        assert objective.split("'")[0][:40] in intro
    page = (index.parent / "chapters" / "00_welcome.html").read_text()
    assert "Chapter 0" in page
    # outputs are there: the book executed the chapter
    assert "random policy over 100 episodes: mean length" in page
    assert re.search(r"The trip is worth it for gamma &gt;= 0\.9\d\d", page)
    # the gamma widget shows its default figure as an image, not an empty widget
    widget_cell = page.index('<span class="n">gamma_widget</span>')
    next_cell = page.index('<span class="n">gammas</span>', widget_cell)
    assert "<img" in page[widget_cell:next_cell], "the widget's default PNG is missing from the page"
    # the CartPole animation is embedded (matplotlib's JS player)
    assert "anim" in page and "Animation" in page
    # offline: every script, stylesheet, image and frame comes from the build itself
    html = index.parent
    assert book_html.remote_references(html) == {}
    scripts = re.findall(r'<script[^>]*src="([^"?]+)', page)
    for local in ("../_static/vendor/mathjax/es5/tex-mml-chtml.js", "../_static/vendor/requirejs/require.js",
                  "../_static/vendor/html-manager/dist/embed-amd.js"):
        assert scripts.count(local) == 1, (local, scripts)
    assert scripts.index("../_static/vendor/requirejs/require.js") < scripts.index(
        "../_static/vendor/html-manager/dist/embed-amd.js")
    assert (html / "_static/vendor/mathjax/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
    for path in ("requirejs/require.js", "html-manager/dist/embed-amd.js", "font-awesome/css/font-awesome.min.css"):
        assert (html / "_static/vendor" / path).is_file(), path
    assert page.count("_static/vendor/font-awesome/css/font-awesome.min.css") == 1  # the animation's icons


def test_book_rejects_unknown_chapter_ids_before_touching_the_disk(tmp_path):
    mine = tmp_path / "src" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(ValueError, match=r"no such chapter.*valid ids: 00"):
        book_html.build(load_book(), tmp_path, only=["99"])
    with pytest.raises(ValueError, match="at least one chapter id"):
        book_html.build(load_book(), tmp_path, only=[])
    assert mine.read_text() == "mine"


def test_remote_references_finds_cdn_scripts_and_stylesheets(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.example/x.js"></script>'
                                     '<link rel="stylesheet" href="//cdn.example/y.css">'
                                     '<script src="_static/local.js"></script><a href="https://example.org">ok</a>')
    assert book_html.remote_references(tmp_path) == {"a.html": ["//cdn.example/y.css", "https://cdn.example/x.js"]}


def test_the_old_module_name_still_works():
    import sys

    sys.modules.pop("ppo_lib.book_html", None)
    with pytest.warns(FutureWarning, match="ppo_lib.book_html moved to ppo_lib.course.book"):
        from ppo_lib import book_html as old

    assert old.build is book_html.build
