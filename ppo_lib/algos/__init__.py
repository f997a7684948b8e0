"""The algorithms of the course. Each adds only its own ``update`` on top of
the shared rollout, advantage and loss pieces."""

from ppo_lib.algos.a2c import A2C, A2CConfig
from ppo_lib.algos.reinforce import REINFORCE, ReinforceConfig

__all__ = ["A2C", "A2CConfig", "REINFORCE", "ReinforceConfig"]
