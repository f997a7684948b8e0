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
