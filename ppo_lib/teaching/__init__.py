"""The teaching aids: what the chapters use to teach, on top of the RL core.

- :mod:`~ppo_lib.teaching.checks`: the exercise checkers (crafted cases, mistake catalogues);
- :mod:`~ppo_lib.teaching.widgets`: the pure functions behind each slider, and their views;
- :mod:`~ppo_lib.teaching.animation`: CartPole episodes as an animation;
- :mod:`~ppo_lib.teaching.toy_problems`: small problems with exact answers (bandits, chains, GAE studies);
- :mod:`~ppo_lib.teaching.probes`: probe environments that isolate one part of an agent;
- :mod:`~ppo_lib.teaching.bug_hunt`: a PPO update with one bug switched on;
- :mod:`~ppo_lib.teaching.plots`: learning curves and bands.

They import the RL core (and the checkers of chapters 8-10 import ``ppo_lib.rlhf``), never
the course machinery; the core imports nothing from here (``tests/test_import_graph.py``).
"""
