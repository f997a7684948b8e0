"""One name for one idea in every room: the RL core's config and the language-model configs
share their names where the idea is the same, and the old names still work for one release."""

import dataclasses

import pytest

from ppo_lib.algos.ppo import PPOConfig
from ppo_lib.rlhf.dpo import DPOConfig
from ppo_lib.rlhf.grpo import GRPOConfig
from ppo_lib.rlhf.ppo import TokenPPOConfig


def fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


def test_shared_ideas_have_the_core_names():
    shared = {"clip_eps", "gamma", "gae_lambda", "lr", "epochs", "value_coef", "max_grad_norm"}
    assert shared <= fields(PPOConfig) and shared <= fields(TokenPPOConfig)
    assert {"clip_eps", "lr", "epochs", "num_minibatches", "max_grad_norm"} <= fields(GRPOConfig)
    assert "num_minibatches" in fields(TokenPPOConfig) and "minibatch_size" in fields(PPOConfig)  # a count, a size
    old = {"vf_coef", "lam", "minibatches", "value_clip", "kl_coef"}
    for cls in (PPOConfig, TokenPPOConfig, GRPOConfig, DPOConfig):
        assert not old & fields(cls), (cls.__name__, old & fields(cls))


@pytest.mark.parametrize("cls,old,new,value", [(TokenPPOConfig, "vf_coef", "value_coef", 0.3),
                                               (TokenPPOConfig, "lam", "gae_lambda", 0.9),
                                               (TokenPPOConfig, "value_clip", "value_clip_range", 0.5),
                                               (TokenPPOConfig, "minibatches", "num_minibatches", 4),
                                               (GRPOConfig, "minibatches", "num_minibatches", 4)])
def test_old_field_names_work_for_one_release_with_a_warning(cls, old, new, value):
    with pytest.warns(FutureWarning, match=f"'{old}' is now '{new}'"):
        config = cls(**{old: value})
    assert getattr(config, new) == value
    with pytest.warns(FutureWarning):
        assert getattr(config, old) == value
    with pytest.warns(FutureWarning):
        setattr(config, old, value)
    with pytest.raises(TypeError, match=f"both '{old}' .* and '{new}'"), pytest.warns(FutureWarning):
        cls(**{old: value, new: value})


def test_old_class_names_work_for_one_release_with_a_warning():
    import ppo_lib.rlhf.ppo as module

    with pytest.warns(FutureWarning, match="RLHFConfig is now TokenPPOConfig"):
        assert module.RLHFConfig is TokenPPOConfig
    with pytest.warns(FutureWarning, match="RLHFResult is now TokenPPOResult"):
        assert module.RLHFResult is module.TokenPPOResult
    with pytest.raises(AttributeError):
        module.NoSuchThing  # noqa: B018
