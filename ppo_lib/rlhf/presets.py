"""Settings for a GPU. A 100k-parameter model is bound by kernel launches on a GPU, so
the GPU preset is wider and deeper and works on larger batches: that is where a GPU
pays off. The CPU settings are the dataclasses' defaults."""

from __future__ import annotations

from ppo_lib.rlhf.model import GPTConfig
from ppo_lib.rlhf.ppo import TokenPPOConfig
from ppo_lib.rlhf.pretrain import PretrainConfig
from ppo_lib.rlhf.reward_model import RewardConfig


def presets(device: str) -> tuple[PretrainConfig, RewardConfig, dict]:
    """``(pretrain config, reward config, TokenPPOConfig keyword arguments)`` for ``"cpu"`` or ``"cuda"``
    (``"cuda:N"`` too); any other name is an error, not a silent CPU preset."""
    name = str(device)
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device={device!r}: allowed: 'cpu', 'cuda' or 'cuda:N' (the preset's sizes are for a "
                         f"CPU or a CUDA GPU)")
    if name.startswith("cuda"):
        model = GPTConfig(d_model=256, n_layers=4, n_heads=8)
        return (PretrainConfig(model=model, batch_size=512, steps=800, lr=1e-3),
                RewardConfig(n_pairs=4000, batch_size=256, epochs=8),
                {"batch_size": 512, "num_minibatches": 4, "lr": 3e-4})
    return PretrainConfig(), RewardConfig(), {}


assert set(presets("cuda")[2]) <= set(TokenPPOConfig.__dataclass_fields__)


# --------------------------------------------------------------------------
# Chapter 10: RL with verifiable rewards on the addition task (../shared/RLVR.md)
# --------------------------------------------------------------------------

# each variant is a set of switches of the one GRPO trainer
GRPO_VARIANTS: dict[str, dict] = {
    "grpo": {},                                                            # Shao et al. 2024
    "dr_grpo": {"loss_aggregation": "dr_grpo", "baseline": "mean"},        # Liu et al. 2025
    "dapo_loss": {"loss_aggregation": "dapo"},                             # Yu et al. 2025, the loss alone
    "dapo": {"loss_aggregation": "dapo", "clip_eps_high": 0.28, "dynamic_sampling": True},  # + clip-higher, filter
    "gspo": {"ratio_level": "sequence", "clip_eps": 3e-4, "clip_eps_high": 4e-4},  # Zheng et al. 2025
    "rloo": {"baseline": "rloo"},                                          # Ahmadian et al. 2024 (no KL here)
}


def rlvr_presets(device: str = "cpu"):
    """``(task, pretrain config, GRPOConfig keyword arguments)`` of the addition task: RLVR.md's
    settings (SFT: 1000 steps x 64, lr 2e-3; GRPO: G 8 x 16 prompts, 2 epochs x 2 minibatches,
    lr 1e-4, no KL as TRL's default, 150 iterations, sampling with a key/value cache)."""
    from ppo_lib.rlhf.addition import TASK

    width = {"d_model": 256, "n_layers": 4, "n_heads": 8} if str(device).startswith("cuda") else {}
    pre = PretrainConfig(n_texts=64_000, steps=1000, batch_size=64, lr=2e-3, model=GPTConfig.for_task(TASK, **width))
    grpo = {"group_size": 8, "prompts_per_iteration": 16, "beta": 0.0, "kl": "none", "lr": 1e-4, "iterations": 150,
            "epochs": 2, "num_minibatches": 2, "kv_cache": True}
    return TASK, pre, grpo
