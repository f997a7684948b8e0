"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The networks in these tests are tiny: one intra-op thread is as fast, and stays
    fast when other processes load the CPUs (two spinning threads then slow torch
    down ~50x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def rlhf_sft(tmp_path_factory):
    """The default pre-trained tiny GPT (chapters 8-9), trained once per test session."""
    from ppo_lib.rlhf.pretrain import pretrain

    return pretrain(progress=False, use_cache=False)


@pytest.fixture(scope="session")
def rlhf_reward(rlhf_sft):
    """The default reward model on the default SFT model, trained once per test session."""
    from ppo_lib.rlhf.reward_model import train_reward_model

    return train_reward_model(rlhf_sft, progress=False, use_cache=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a seeded learning test of a minute or more (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def rlvr_sft(tmp_path_factory):
    """Chapter 10's SFT model on the addition task (rlvr_presets), trained once per test session."""
    from ppo_lib.rlhf.presets import rlvr_presets
    from ppo_lib.rlhf.pretrain import pretrain

    task, pre, _ = rlvr_presets("cpu")
    return pretrain(pre, device="cpu", progress=False, use_cache=False, task=task)
