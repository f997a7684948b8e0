"""Old import paths that keep working for one release after a module moved.

``ppo_lib`` shows its four rooms as folders (the RL core at the top, the teaching aids
in ``ppo_lib/teaching/``, the language models in ``ppo_lib/rlhf/``, the course machinery
in ``ppo_lib/course/``). A learner's ``workspace/`` notebook is never overwritten, so an
old ``import ppo_lib.widgets`` must still work: the module at the old path calls
:func:`alias` and *becomes* the moved module (the same object, so classes, checkers and
caches are shared), after one ``FutureWarning`` that says where it went.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make ``old`` (being imported now) the module ``new``, its submodules included."""
    module = importlib.import_module(new)
    warnings.warn(f"{old} moved to {new}: import it from there (the old name goes in the next release)",
                  FutureWarning, stacklevel=3)
    sys.modules[old] = module
    # a package's submodules too, so that `import old.sub` is `new.sub`, never a second copy
    for name, mod in list(sys.modules.items()):
        if name.startswith(new + "."):
            sys.modules[old + name[len(new):]] = mod
