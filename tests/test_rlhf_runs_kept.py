"""Nothing trained is lost (the library's one pattern, ppo_lib.runs): Ctrl+C or an error in
pre-training or reward-model training keeps the model so far, and a failed cache write (a full
disk) warns, leaves no temporary file and still returns the trained model."""

from __future__ import annotations

import pytest
import torch

from ppo_lib.rlhf import cache, pretrain as pretrain_module, reward_model as reward_module
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain
from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model

SMALL = PretrainConfig(n_texts=256, steps=6, batch_size=16)


def _fail_at(monkeypatch, module, name, call: int, error):
    original = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_ctrl_c_in_pretraining_returns_the_model_so_far_and_caches_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    _fail_at(monkeypatch, pretrain_module, "lm_loss", 4, KeyboardInterrupt())
    result = pretrain(SMALL, progress=False)
    assert result.interrupted and len(result.losses) == 3 and not result.model.training
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # the partial model is not cached


def test_an_error_in_pretraining_carries_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    _fail_at(monkeypatch, pretrain_module, "lm_loss", 3, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom") as info:
        pretrain(SMALL, progress=False)
    partial = info.value.partial_result
    assert len(partial.losses) == 2 and isinstance(partial.model, torch.nn.Module)
    assert "partial_result" in "".join(getattr(info.value, "__notes__", []))


def test_ctrl_c_in_reward_model_training_returns_a_centred_model(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    sft = pretrain(SMALL, progress=False, use_cache=False)
    _fail_at(monkeypatch, reward_module, "bradley_terry_loss", 3, KeyboardInterrupt())
    result = train_reward_model(sft, RewardConfig(n_pairs=64, epochs=2, batch_size=16), progress=False)
    assert result.interrupted and len(result.losses) == 2 and result.bias_shift != 0.0
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # the partial model is not cached


def test_a_full_disk_while_caching_warns_and_keeps_the_trained_model(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(cache.torch, "save", full_disk)
    with pytest.warns(RuntimeWarning, match="could not cache the sft model .* returned all the same"):
        result = pretrain(SMALL, progress=False)
    assert len(result.losses) == SMALL.steps and not result.interrupted
    assert not any(p.is_file() for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))  # no .tmp left


def test_the_reward_model_cache_key_covers_the_sft_weights(monkeypatch, tmp_path):
    """A reward model cached for one SFT model is never returned for the same settings with other
    weights (an SFT model trained further, or edited, by hand)."""
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    sft = pretrain(SMALL, progress=False, use_cache=False)
    config = RewardConfig(n_pairs=32, epochs=1, batch_size=16)
    first = train_reward_model(sft, config, progress=False)
    again = train_reward_model(sft, config, progress=False)
    assert not first.from_cache and again.from_cache
    with torch.no_grad():
        next(sft.model.parameters()).add_(0.01)  # the same settings, other weights
    edited = train_reward_model(sft, config, progress=False)
    assert not edited.from_cache


def test_an_unknown_preset_device_is_an_error_not_the_cpu_preset():
    from ppo_lib.rlhf.presets import presets

    assert presets("cpu")[0] == PretrainConfig() and presets("cuda:1")[1].n_pairs == 4000
    with pytest.raises(ValueError, match=r"device='tpu': allowed: 'cpu', 'cuda' or 'cuda:N'"):
        presets("tpu")
