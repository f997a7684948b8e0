"""ppo_lib: the companion library of the PPO course.

One module per concept of the course; the chapters import from here, and the
tests prove that what a chapter derives and what the library holds agree.
"""

__version__ = "0.1.0"
