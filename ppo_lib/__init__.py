"""ppo_lib: the companion library of the PPO course.

One module per concept of the course; the chapters import from here, and the
tests prove that what a chapter derives and what the library holds agree.
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
