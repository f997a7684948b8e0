"""The capstone checker (chapter 5) and the Gaussian-policy checker (chapter 7)."""

import copy
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


# ---------------------------------------------------------------- issue 19: the classes, one test each
from ppo_lib.teaching.checks import capstone as capstone_module  # noqa: E402


def test_capstone_state_never_decides_a_verdict():
    """Fresh objects for every call: no gradient left by the warm-up, a rollout collected by the warmed-up
    policy, and Adam's state copied (load_state_dict keeps the tensors it is given: the first run used to move
    the snapshot's moments, and every later run started elsewhere)."""
    policy, optimizer, rollout, config, generator = capstone_module.fresh_objects({}, 0)
    assert all(p.grad is None for p in policy.parameters())
    with torch.no_grad():
        logp = policy.actor.log_prob(policy.actor.distribution(rollout.obs.flatten(0, 1)), rollout.actions.flatten(0, 1))
    assert torch.allclose(logp, rollout.logprobs.flatten(), atol=1e-5)  # the stored log-probs are this policy's
    snapshot = copy.deepcopy(capstone_module.snapshot(0, 40)[3])
    first = check_ppo_update.evaluate(written_out_ppo_update)
    check_ppo_update.evaluate(check_ppo_update.mistakes[1].impl)
    second = check_ppo_update.evaluate(written_out_ppo_update)
    assert first.passed and second.passed
    after = capstone_module.snapshot(0, 40)[3]
    for k, v in snapshot["state"].items():
        assert all(torch.equal(v[n], after["state"][k][n]) for n in v if isinstance(v[n], torch.Tensor))


def _mistake(name):
    return next(m for m in check_ppo_update.mistakes if m.name == name)


@pytest.mark.parametrize("name, words", [
    ("no entropy bonus", "the policy loss differs"),
    ("value loss not halved", "weighted differently"),
    ("no gradient clipping", "the gradient clipping differs"),
    ("clipping at 0", "every gradient is 0"),
    ("one epoch", "differs in the epochs"),
    ("no early stopping", "differs in the early stop"),
    ("early stop per minibatch", "in the middle of an epoch"),
    ("incomplete minibatch kept", "drops the incomplete last minibatch"),
    ("gamma and lambda fixed", "both the policy loss and the value loss differ"),
    ("explained variance after the fit", "the diagnostics differ: 'explained_variance'"),
    ("epochs off by one", "the diagnostics differ: 'epochs'"),
])
def test_capstone_rejections_name_the_part_and_give_the_hint(name, words):
    mistake = _mistake(name)
    message = check_ppo_update.evaluate(mistake.impl).message
    assert words in message and f"Hint: {mistake.feedback}" in message, message
    if "optimizer step" in message:  # a gradient difference says how the gradients were taken
        assert "p.grad when optimizer.step() is called" in message


def test_capstone_missing_diagnostics_are_named_truly():
    def without_kl(policy, optimizer, rollout, config, generator):
        info = library_ppo_update(policy, optimizer, rollout, config, generator)
        del info["approx_kl_k3"]
        return info

    message = check_ppo_update.evaluate(without_kl).message
    assert "has no key 'approx_kl_k3'" in message and "'clip_fraction'" in message  # and it lists the keys it has


def test_capstone_runs_the_next_cells_use_of_the_diagnostics():
    def text_epochs(policy, optimizer, rollout, config, generator):
        info = library_ppo_update(policy, optimizer, rollout, config, generator)
        return {**info, "epochs": f"{info['epochs']:.0f} epochs"}

    message = check_ppo_update.evaluate(text_epochs).message
    assert "next cell" in message and "math.isfinite" in message


def test_capstone_sees_an_input_changed_in_place():
    def aliasing(policy, optimizer, rollout, config, generator):
        advantages, _ = rollout_advantages(rollout, config.gamma, config.gae_lambda)
        rollout.values += 0 * advantages  # no change of value...
        rollout.rewards.mul_(1.5)  # ...this one is
        return library_ppo_update(policy, optimizer, rollout, config, generator)

    message = check_ppo_update.evaluate(aliasing).message
    assert "changed its input rollout.rewards in place" in message


def test_gaussian_every_input_is_watched_and_the_entropy_needs_its_gradient():
    def changes_log_std(mean, log_std, actions):
        out = reference_gaussian_log_prob_entropy(mean, log_std.clone(), actions)
        log_std.mul_(1.0).add_(0.5)
        return out

    assert "changed its input `log_std`" in check_gaussian_log_prob_entropy.evaluate(changes_log_std).message

    def entropy_number(mean, log_std, actions):
        logp, ent = reference_gaussian_log_prob_entropy(mean, log_std, actions)
        return logp, ent.detach()

    message = check_gaussian_log_prob_entropy.evaluate(entropy_number).message
    assert "gradient of sum(entropy) w.r.t. log_std" in message and "Hint:" in message


def test_gaussian_runs_the_next_cell():
    def numpy_out(mean, log_std, actions):
        logp, ent = reference_gaussian_log_prob_entropy(mean, log_std, actions)
        return logp.detach().numpy(), ent.detach().numpy()

    message = check_gaussian_log_prob_entropy.evaluate(numpy_out).message
    assert "next cell" in message and "10 000" in message


def test_capstone_an_optimizer_of_ones_own_is_named():
    def own_adam(policy, optimizer, rollout, config, generator):
        return library_ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=config.lr), rollout, config,
                                  generator)

    message = check_ppo_update.evaluate(own_adam).message
    assert "yet the parameters moved" in message and "not one of your own" in message


def test_gaussian_one_value_instead_of_a_pair_is_said_so():
    def only_log_prob(mean, log_std, actions):
        return reference_gaussian_log_prob_entropy(mean, log_std, actions)[0]

    message = check_gaussian_log_prob_entropy.evaluate(only_log_prob).message
    assert "expected a pair (log_prob, entropy)" in message and "missing from" not in message
