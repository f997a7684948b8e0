"""Moved to :mod:`ppo_lib.course.book` (the course machinery lives in ``ppo_lib/course/``).

Kept so that ``from ppo_lib import book_html`` still works.
"""

from ppo_lib.course.book import *  # noqa: F401,F403
from ppo_lib.course.book import WIDGET_MIME, build, fetch_vendor, remote_references, write_sources  # noqa: F401
