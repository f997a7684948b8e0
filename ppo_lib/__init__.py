"""ppo_lib: the companion library of the PPO course.

Four rooms, one folder each, one module per concept:

- the RL core, at the top (``envs``, ``policies``, ``rollout``, ``advantages``, ``losses``,
  ``normalization``, ``config``, ``algos``, ``runs``, ``train``, ``stats``): what a learner
  imports to train an agent; it imports nothing from the other rooms;
- ``ppo_lib.teaching``: the teaching aids the chapters use (checkers, widgets, animation,
  toy problems, probes, the bug hunt, plots);
- ``ppo_lib.rlhf``: the language models of chapters 8-9;
- ``ppo_lib.course``: the course machinery (manifest, notebooks, launcher, book, grading, doctor).

The chapters import from here, and the tests prove that what a chapter derives and what
the library holds agree.
"""

__version__ = "0.1.0"


def doctor(print_report: bool = True):
    """Check the set-up (Python, torch, gymnasium, JupyterLab, widgets, device,
    threads, memory, notebooks) and print each problem with its fix.

    The course machinery is imported only when called: the RL library itself
    imports nothing from ``ppo_lib.course``.
    """
    from ppo_lib.course.diagnose import doctor as _doctor

    return _doctor(print_report=print_report)
