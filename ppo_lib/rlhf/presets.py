"""Settings for a GPU. A 100k-parameter model is bound by kernel launches on a GPU, so
the GPU preset is wider and deeper and works on larger batches: that is where a GPU
pays off. The CPU settings are the dataclasses' defaults."""

from __future__ import annotations

from ppo_lib.rlhf.model import GPTConfig
from ppo_lib.rlhf.ppo import RLHFConfig
from ppo_lib.rlhf.pretrain import PretrainConfig
from ppo_lib.rlhf.reward_model import RewardConfig


def presets(device: str) -> tuple[PretrainConfig, RewardConfig, dict]:
    """``(pretrain config, reward config, RLHFConfig keyword arguments)`` for ``"cpu"`` or ``"cuda"``."""
    if str(device).startswith("cuda"):
        model = GPTConfig(d_model=256, n_layers=4, n_heads=8)
        return (PretrainConfig(model=model, batch_size=512, steps=800, lr=1e-3),
                RewardConfig(n_pairs=4000, batch_size=256, epochs=8),
                {"batch_size": 512, "minibatches": 4, "lr": 3e-4})
    return PretrainConfig(), RewardConfig(), {}


assert set(presets("cuda")[2]) <= set(RLHFConfig.__dataclass_fields__)
