"""The algorithms of the course. Each adds only its own ``update`` on top of
the shared rollout, advantage and loss pieces."""

from ppo_lib.algos.a2c import A2C, A2CConfig
from ppo_lib.algos.ppo import CARTPOLE_FAST_PRESET, CARTPOLE_PRESET, PENDULUM_PRESET, PPO, PPOConfig, adaptive_kl_beta
from ppo_lib.algos.reinforce import REINFORCE, ReinforceConfig

__all__ = ["A2C", "A2CConfig", "CARTPOLE_FAST_PRESET", "CARTPOLE_PRESET", "PENDULUM_PRESET", "PPO", "PPOConfig", "REINFORCE", "ReinforceConfig",
           "adaptive_kl_beta"]

from ppo_lib.algos.trpo import TRPO, TRPOConfig  # noqa: E402

__all__ += ["TRPO", "TRPOConfig"]
