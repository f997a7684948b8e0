"""Chapter 8's section 7 (issue 20, depth): the prompt-dependent gold, the labeller who likes
length, reward-model ensembles (Coste et al. 2023), and PPO's critic start. Analytic where possible:
known values on hand-built strings and fixed scores, and every argument error."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ppo_lib.rlhf import cache
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf import reward_model as reward_module
from ppo_lib.rlhf.model import GPTConfig, ScalarModel
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain
from ppo_lib.rlhf.reward_model import (EnsembleScalarModel, RewardConfig, RewardEnsemble, combine_scores,
                                       preference_probability, sample_pairs, score, train_reward_model)

SMALL = PretrainConfig(n_texts=256, steps=6, batch_size=16)
SMALL_RM = RewardConfig(n_pairs=32, epochs=1, batch_size=16)


# ---------------------------------------------------------------- the prompt-dependent gold

@pytest.mark.parametrize("response, subject, gold", [
    ("very good ! <eos>", "movie", 1.25),            # any praise suits a movie
    ("very good ! <eos>", "food", 1.25),             # good is apt for food
    ("very good ! <eos>", "staff", 0.25 * 1.25),     # but faint praise for the staff
    ("nice . <eos>", "staff", 1.0),
    ("fun . <eos>", "food", 0.25),
    ("not nice . <eos>", "food", -0.25),             # negating faint praise: faintly negative
    ("really really awful . <eos>", "staff", -1.5),  # negative adjectives as before
    ("ok . <eos>", "movie", 0.0),
    ("great and nice ! <eos>", "staff", (0.25 + 1.0) / 2),
    ("great and nice ! <eos>", "food", (1.0 + 0.25) / 2),
    ("great and nice ! <eos>", "movie", 1.0),
])
def test_prompted_gold_known_values(response, subject, gold):
    assert lang.gold_reward(response, subject) == pytest.approx(gold)


def test_prompted_gold_keeps_invalid_score_and_default_gold_unchanged():
    assert lang.gold_reward("good good . <eos>", "movie") == lang.INVALID_SCORE
    for text in ("very good ! <eos>", "fun and not rude . <eos>", "really ok but bad ! <eos>"):
        assert lang.gold_reward(text) == lang.gold_reward(text, None)
    # the range is the same on every subject: the apt praise reaches MAX_GOLD
    for subject, apt in lang.APT_ADJECTIVES.items():
        assert lang.gold_reward(f"very really {apt[0]} ! <eos>", subject) == lang.MAX_GOLD


def test_prompt_subject_and_the_batched_prompted_gold():
    assert lang.prompt_subject("the food was") == "food"
    assert lang.prompt_subject(lang.encode_prompt("the staff is")) == "staff"
    prompts = torch.tensor([lang.encode_prompt("the movie was"), lang.encode_prompt("the staff is")])
    responses = lang.to_batch([["fun", ".", "<eos>"], ["fun", ".", "<eos>"]]).tokens[:, :lang.MAX_RESPONSE_LEN]
    assert lang.prompted_gold_rewards(prompts, responses).tolist() == [1.0, 0.25]
    assert lang.PROMPTED_TASK.gold_scores(prompts, responses).tolist() == [1.0, 0.25]
    assert lang.TASK.gold_scores(prompts, responses).tolist() == [1.0, 1.0]  # the default ignores the prompt


def test_prompted_gold_argument_errors():
    with pytest.raises(ValueError, match="subject='car'.*movie, food, staff"):
        lang.gold_reward("good . <eos>", "car")
    with pytest.raises(ValueError, match="adjective='tasty'"):
        lang.polarity("tasty", "food")
    with pytest.raises(ValueError, match="exactly one subject"):
        lang.prompt_subject("the was")
    with pytest.raises(ValueError, match="one prompt per response"):
        lang.prompted_gold_rewards(torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 16, dtype=torch.long))


# ---------------------------------------------------------------- the labeller who likes length

def test_preference_probability_formula():
    ga, gb = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.5, 0.0, 1.0])
    la, lb = torch.tensor([6, 10, 4]), torch.tensor([4, 4, 14])
    p = preference_probability(ga, gb, 0.25, la, lb, 0.05)
    expect = [1 / (1 + math.exp(-(g1 - g2 + 0.05 * (l1 - l2)) / 0.25))
              for g1, g2, l1, l2 in zip(ga.tolist(), gb.tolist(), la.tolist(), lb.tolist())]
    assert p.tolist() == pytest.approx(expect)
    assert p[1] > 0.5  # equal gold: the longer one is more likely preferred
    assert preference_probability(ga, gb, 0.25).tolist() == pytest.approx(torch.sigmoid((ga - gb) / 0.25).tolist())


def test_preference_probability_errors():
    g = torch.zeros(2)
    with pytest.raises(ValueError, match="needs length_a and length_b"):
        preference_probability(g, g, 0.25, length_bias=0.1)
    with pytest.raises(ValueError, match="label_temperature=0"):
        preference_probability(g, g, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        preference_probability(g, torch.zeros(3))
    with pytest.raises(ValueError, match="length_bias"):
        RewardConfig(length_bias=2.0)


@pytest.fixture(scope="module")
def small_sft():
    return pretrain(SMALL, progress=False, use_cache=False)


def test_length_biased_labels_prefer_the_longer_response(small_sft):
    """With a strong length bias and a cold labeller, the chosen response is the longer one (or as long)
    in nearly every pair; without it, length decides nothing."""
    strong = sample_pairs(small_sft.model, 200, seed=1, label_temperature=0.01, length_bias=1.0)
    plain = sample_pairs(small_sft.model, 200, seed=1, label_temperature=0.01)
    P, eos = lang.PROMPT_LEN, lang.EOS_ID
    length = lambda t: reward_module.eos_positions(t, P, eos) - P + 1  # noqa: E731
    assert (length(strong.chosen) >= length(strong.rejected)).float().mean() > 0.95
    assert (length(plain.chosen) >= length(plain.rejected)).float().mean() < 0.9


def test_the_default_reward_cache_key_is_unchanged(small_sft, monkeypatch, tmp_path):
    """length_bias 0 is left out of the key, so caches made before the option existed still hit."""
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    seen = []
    monkeypatch.setattr(cache, "load", lambda kind, settings: seen.append(settings) or None)
    train_reward_model(small_sft, SMALL_RM, progress=False)
    train_reward_model(small_sft, dataclasses.replace(SMALL_RM, length_bias=0.05), progress=False)
    assert "length_bias" not in seen[0]["reward"] and seen[1]["reward"]["length_bias"] == 0.05


# ---------------------------------------------------------------- ensembles (Coste et al. 2023)

SCORES = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])  # 3 members, 2 responses


def test_combine_scores_on_fixed_scores():
    assert combine_scores(SCORES, "min").tolist() == [1.0, 0.0]
    assert combine_scores(SCORES, "mean").tolist() == [2.0, 2.0]
    var = [2 / 3, 8 / 3]  # population variance over the 3 members
    assert combine_scores(SCORES, "uwo", 0.5).tolist() == pytest.approx([2 - 0.5 * var[0], 2 - 0.5 * var[1]])
    assert combine_scores(SCORES, "mean_minus_std", 2.0).tolist() == pytest.approx(
        [2 - 2 * math.sqrt(var[0]), 2 - 2 * math.sqrt(var[1])])
    assert combine_scores(SCORES, "uwo", 0.0).tolist() == [2.0, 2.0]


def test_combine_scores_errors():
    with pytest.raises(ValueError, match="mode='max'.*'mean', 'min', 'uwo', 'mean_minus_std'"):
        combine_scores(SCORES, "max")
    with pytest.raises(ValueError, match="coef=-1"):
        combine_scores(SCORES, "uwo", -1)
    with pytest.raises(ValueError, match="at least 2"):
        combine_scores(SCORES[:1], "min")


def test_ensemble_model_is_the_combination_of_its_members_at_eos():
    torch.manual_seed(0)
    members = [ScalarModel(GPTConfig()) for _ in range(3)]
    for m in members:
        torch.nn.init.normal_(m.head.weight)
    tokens = lang.to_batch([["<bos>", "the", "food", "was", "good", ".", "<eos>"],
                            ["<bos>", "the", "staff", "is", "not", "rude", "!", "<eos>"]]).tokens
    each = torch.stack([score(m, tokens) for m in members])
    with torch.no_grad():
        for mode in ("min", "uwo", "mean"):
            combined = score(EnsembleScalarModel(members, mode, 1.0), tokens)
            assert torch.allclose(combined, combine_scores(each, mode, 1.0))


def test_reward_ensemble_errors(small_sft):
    rm = train_reward_model(small_sft, SMALL_RM, progress=False, use_cache=False)
    with pytest.raises(ValueError, match="at least 2"):
        RewardEnsemble([rm])
    with pytest.raises(TypeError, match=r"members\[1\].*ScalarModel"):
        RewardEnsemble([rm, rm.model])
    with pytest.raises(ValueError, match="mode='worst'"):
        RewardEnsemble([rm, rm], mode="worst")


def test_ppo_trains_against_an_ensemble_with_either_critic_start(small_sft):
    rms = [train_reward_model(small_sft, dataclasses.replace(SMALL_RM, seed=s), progress=False, use_cache=False)
           for s in (0, 1)]
    ensemble = RewardEnsemble(rms, mode="min")
    config = TokenPPOConfig(iterations=1, batch_size=4)
    run = train_ppo(small_sft, ensemble, config, progress=False)
    # the critic started as a copy of the first member (then took one iteration of updates)
    assert isinstance(run.value_model, ScalarModel) and len(run.history.proxy) == 1
    fresh = train_ppo(small_sft, rms[0], config, progress=False, critic_init="sft")
    assert isinstance(fresh.value_model, ScalarModel)
    with pytest.raises(ValueError, match="critic_init='value'.*'reward_model', 'sft'"):
        train_ppo(small_sft, rms[0], config, progress=False, critic_init="value")


def test_critic_init_sft_starts_from_a_zero_head(small_sft, monkeypatch):
    """The value model handed to the loop: the reward model's copy by default, the SFT trunk with a zero
    head with critic_init='sft'."""
    rm = train_reward_model(small_sft, SMALL_RM, progress=False, use_cache=False)
    from ppo_lib.rlhf import ppo as ppo_module

    starts = []
    original = ppo_module.trainable_copy
    monkeypatch.setattr(ppo_module, "trainable_copy", lambda m: starts.append(m) or original(m))
    config = TokenPPOConfig(iterations=1, batch_size=4)
    train_ppo(small_sft, rm, config, progress=False)
    assert starts[1] is rm.model
    train_ppo(small_sft, rm, config, progress=False, critic_init="sft")
    head = starts[3].head
    assert float(head.weight.abs().sum() + head.bias.abs().sum()) == 0.0
    trunk, sft_trunk = starts[3].trunk.state_dict(), small_sft.model.trunk.state_dict()
    assert all(torch.equal(trunk[k], sft_trunk[k]) for k in sft_trunk)
