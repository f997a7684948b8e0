"""The static HTML book builds offline and shows the widgets' default figures."""

import re

import pytest

from ppo_lib import book_html
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


def test_book_rejects_unknown_chapter_ids(tmp_path):
    with pytest.raises(ValueError, match="no such chapter"):
        book_html.build(load_book(), tmp_path, only=["99"])
