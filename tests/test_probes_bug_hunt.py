"""Probe environments catch broken losses in seconds; the bug hunt's PPO is the library's plus one bug."""

import functools

import pytest
import torch

from ppo_lib.algos import PPO, PPOConfig
from ppo_lib.teaching.bug_hunt import BUGS, MYSTERY, BuggyPPO, check_bug_guess, ppo_update_with_bug
from ppo_lib.teaching.checks import check_ppo_update
from ppo_lib.teaching.probes import PROBES, make_probe, run_probe

PROBE_CONFIG = dict(num_envs=4, rollout_steps=64, minibatch_size=64, epochs=4, lr=3e-3, gamma=0.9,
                    gae_lambda=0.95, hidden=(16,))


def make_ppo(observation_space, action_space, **overrides):
    return PPO(observation_space, action_space, PPOConfig(**{**PROBE_CONFIG, **overrides}))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", PROBES)
def test_the_library_ppo_passes_every_probe(name):
    result = run_probe(name, make_ppo)
    assert result.passed, str(result)


def test_a_critic_that_never_learns_fails_the_value_probes():
    frozen_critic = functools.partial(make_ppo, value_coef=0.0)
    assert not run_probe("constant_reward", frozen_critic).passed
    assert not run_probe("two_step", frozen_critic).passed


def test_a_policy_loss_with_the_wrong_sign_fails_the_action_probe():
    def wrong_sign(o, a):
        return BuggyPPO(o, a, PPOConfig(**PROBE_CONFIG), bug="policy loss sign")

    result = run_probe("action_reward", wrong_sign)
    assert not result.passed and result.learned["pi(1|0)"] < 0.5, str(result)


def test_probe_envs_follow_their_definitions():
    env = make_probe("two_step")
    obs, _ = env.reset(seed=0)
    assert obs[0] == 0.0
    obs, r, term, trunc, _ = env.step(0)
    assert (obs[0], r, term) == (1.0, 0.0, False)
    obs, r, term, trunc, _ = env.step(1)
    assert (r, term, trunc) == (1.0, True, False)
    with pytest.raises(ValueError, match="probe"):
        make_probe("no such probe")


def test_the_bug_free_written_out_update_is_the_library_update():
    result = check_ppo_update.evaluate(lambda *args: ppo_update_with_bug(*args, bug="none"))
    assert result.passed, result.message


def test_bug_guess_checker(capsys):
    assert MYSTERY in BUGS and MYSTERY != "none"
    assert check_bug_guess(MYSTERY)
    assert "✓" in capsys.readouterr().out
    for wrong in BUGS:
        if wrong != MYSTERY:
            assert not check_bug_guess(wrong)
            assert "✗" in capsys.readouterr().out
    assert not check_bug_guess(None) and "no guess yet" in capsys.readouterr().out
    assert not check_bug_guess("cosmic rays") and "not one of" in capsys.readouterr().out


def test_bug_guess_checker_is_strict_when_graded(capsys, monkeypatch):
    """Graded in notebook mode (strict), a guess that is not right fails the checker cell; the
    verdict without printing is what the isolated grader uses."""
    from ppo_lib.teaching.checks import ExerciseError

    wrong = next(b for b in BUGS if b != MYSTERY)
    with pytest.raises(ExerciseError, match="not"):
        check_bug_guess(wrong, strict=True)
    with pytest.raises(ExerciseError, match="no guess yet"):
        check_bug_guess(None, strict=True)
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseError):
        check_bug_guess(wrong)
    assert check_bug_guess(MYSTERY) is True
    capsys.readouterr()
    assert [check_bug_guess.evaluate(g).status for g in (MYSTERY, wrong, None, ["a list"])] == \
        ["passed", "wrong", "unfilled", "error"]
    assert capsys.readouterr().out == ""  # evaluate prints nothing
    assert check_bug_guess.guess_function == "bug_guess"


def test_unknown_bug_is_refused():
    with pytest.raises(ValueError, match="bug"):
        BuggyPPO(make_probe("constant_reward").observation_space, make_probe("constant_reward").action_space,
                 PPOConfig(**PROBE_CONFIG), bug="typo")



@pytest.mark.parametrize("entropy_coef, same", [(0.0, True), (0.05, False)])
def test_the_entropy_sign_bug_leaves_no_trace_when_the_entropy_coefficient_is_0(entropy_coef, same):
    # what the checker tells a learner who guesses it in the hunt, whose config has entropy_coef=0
    from ppo_lib.train import train

    env = make_probe("action_reward")
    params = {}
    for bug in ("none", "entropy sign"):
        algo = BuggyPPO(env.observation_space, env.action_space, PPOConfig(**PROBE_CONFIG, entropy_coef=entropy_coef),
                        seed=0, bug=bug)
        train(algo, lambda: make_probe("action_reward"), 512, seed=0, progress=False)
        params[bug] = torch.cat([p.detach().flatten() for p in algo.policy.parameters()])
    assert torch.equal(params["none"], params["entropy sign"]) == same
