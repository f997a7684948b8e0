"""Moved to :mod:`ppo_lib.teaching.widgets` (the teaching aids live in ``ppo_lib/teaching/``)."""

from ppo_lib._moved import alias

alias(__name__, "ppo_lib.teaching.widgets")
