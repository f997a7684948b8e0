"""The capstone checker (chapter 5) and the Gaussian-policy checker (chapter 7)."""

import math

import pytest
import torch

from ppo_lib.teaching.checks import ALL_EXERCISES, check_gaussian_log_prob_entropy, check_ppo_update
from ppo_lib.teaching.checks.capstone import library_ppo_update
from ppo_lib.teaching.checks.gaussian import reference_gaussian_log_prob_entropy
from ppo_lib.advantages import rollout_advantages
from ppo_lib.losses import approx_kl, clipped_surrogate, normalize, value_loss


def test_both_are_catalogued():
    assert check_ppo_update in ALL_EXERCISES and check_gaussian_log_prob_entropy in ALL_EXERCISES


def written_out_ppo_update(policy, optimizer, rollout, config, generator):
    """The update as a learner would write it, from the chapter's step list (not a call to PPO.update)."""
    actor = policy.actor
    advantages, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                             truncation_as_termination=not config.bootstrap_truncation)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, advantages, targets = rollout.logprobs.flatten(), advantages.flatten(), targets.flatten()
    B, M = obs.shape[0], config.minibatch_size
    fractions, epochs = [], 0
    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        for start in range(0, B - M + 1, M):
            mb = perm[start:start + M]
            dist = actor.distribution(obs[mb])
            ratio = torch.exp(actor.log_prob(dist, actions[mb]) - logp_old[mb])
            adv = normalize(advantages[mb]) if config.normalize_advantages else advantages[mb]
            loss = (-clipped_surrogate(ratio, adv, config.clip_eps)
                    + config.value_coef * value_loss(policy.value(obs[mb]), targets[mb])
                    - config.entropy_coef * actor.entropy(dist).mean())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm or float("inf"))
            optimizer.step()
            fractions.append(((ratio - 1).abs() > config.clip_eps).float().mean().item())
        epochs += 1
        if config.target_kl is not None:
            with torch.no_grad():
                _, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
            if k3 > config.target_kl:
                break
    # the four diagnostics the text names (an empty dict was accepted before; the text asks for them)
    with torch.no_grad():
        _, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
    explained = 1 - (targets - rollout.values.flatten()).var() / targets.var()
    return {"clip_fraction": sum(fractions) / len(fractions), "approx_kl_k3": k3, "epochs": epochs,
            "explained_variance": explained.item()}


def test_capstone_accepts_a_written_out_update():
    result = check_ppo_update.evaluate(written_out_ppo_update)
    assert result.passed, result.message


def test_capstone_catches_each_mistake_with_its_hint():
    assert check_ppo_update.evaluate(library_ppo_update).passed
    for mistake in check_ppo_update.mistakes:
        result = check_ppo_update.evaluate(mistake.impl)
        assert not result.passed and mistake.feedback in result.message, (mistake.name, result.message)


def test_capstone_rejects_a_non_dict():
    def returns_nothing(policy, optimizer, rollout, config, generator):
        library_ppo_update(policy, optimizer, rollout, config, generator)

    result = check_ppo_update.evaluate(returns_nothing)
    assert not result.passed and "dict of diagnostics" in result.message


def test_gaussian_reference_matches_the_formula():
    mean, log_std, a = torch.tensor([[0.3, -1.0]]), torch.tensor([0.2, -0.5]), torch.tensor([[1.0, 0.0]])
    logp, ent = reference_gaussian_log_prob_entropy(mean, log_std, a)
    std = log_std.exp()
    by_hand = (-(a - mean) ** 2 / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(logp, by_hand)
    assert torch.allclose(ent, (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum().reshape(1))


@pytest.mark.parametrize("mistake", check_gaussian_log_prob_entropy.mistakes, ids=lambda m: m.name)
def test_gaussian_catches_each_mistake(mistake):
    result = check_gaussian_log_prob_entropy.evaluate(mistake.impl)
    assert not result.passed and mistake.feedback in result.message
