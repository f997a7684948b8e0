"""How every training loop of the library keeps its run when it stops: one pattern, one
callback contract, for :func:`ppo_lib.train.train` and every trainer of ``ppo_lib.rlhf``.

- **Ctrl+C** (JupyterLab's stop button) ends the run quietly: the result so far is returned
  with ``result.interrupted`` True.
- **Any other error** re-raises with the result so far attached as ``error.partial_result``
  (and a note saying so): nothing trained is lost.
- **The callback** ``callback(history)`` is called after every update (an iteration, a step)
  with the run's history so far; it returns ``True`` to stop after this update, ``False`` or
  ``None`` to go on. Anything else (a list, a string, a number) is a ``TypeError``: a
  callback that meant to stop must not be ignored silently.

A loop uses :func:`check_callback` at its entry, wraps its body in :func:`keep_run`, and asks
:func:`callback_says_stop` after each update.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Callable

import numpy as np


def check_callback(callback) -> Callable | None:
    """The callback as the loops call it, ``callback(history)``, or a clear ``TypeError``.

    A callback of the old ``rlhf`` form ``callback(step, history)`` (two required arguments)
    still works for one release, with a warning; ``step`` is the 0-based update index.
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback={callback!r}: must be None or a function callback(history) -> bool | None")
    try:
        params = [p for p in inspect.signature(callback).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):  # a builtin without a signature: call it as documented
        return callback
    if len(params) == 2:
        warnings.warn("callback(step, history) is the old form: write callback(history) (the step is "
                      "len(history) - 1 in the language-model histories); the old form goes in the next release",
                      FutureWarning, stacklevel=3)

        def old_form(history, _cb=callback):
            return _cb(len(history) - 1, history)

        return old_form
    return callback


def callback_says_stop(callback: Callable | None, history) -> bool:
    """Ask the (checked) callback after an update: True means stop now."""
    if callback is None:
        return False
    answer = callback(history)
    if answer is not None and not isinstance(answer, (bool, np.bool_)):
        raise TypeError(f"callback returned {answer!r} (a {type(answer).__name__}); allowed: True to "
                        f"stop, False or None to go on")
    return bool(answer)


@contextlib.contextmanager
def keep_run(result, finish: Callable[[], None] | None = None, on_interrupt: Callable[[], str] | None = None,
             finished: Callable[[], int] | None = None):
    """Wrap a training loop so that its ``result`` survives any stop (see the module doc).

    ``finish()`` runs however the loop ends (close a progress bar, record the time);
    ``on_interrupt()`` returns a line printed on Ctrl+C; ``finished()`` counts the finished
    updates, for the note added to an error.
    """
    try:
        yield
    except KeyboardInterrupt:
        result.interrupted = True
        if on_interrupt is not None:
            print(on_interrupt())
    except Exception as exc:
        exc.partial_result = result
        if hasattr(exc, "add_note"):
            done = f"{finished()} finished updates" if finished is not None else "what was trained"
            exc.add_note(f"The run so far ({done}) is in `error.partial_result` (a {type(result).__name__}).")
        raise
    finally:
        if finish is not None:
            finish()
