"""Moved to :mod:`ppo_lib.course.book` (the course machinery lives in ``ppo_lib/course/``)."""

from ppo_lib._moved import alias

alias(__name__, "ppo_lib.course.book")
