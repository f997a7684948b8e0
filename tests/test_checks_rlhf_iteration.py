"""Chapter 8's exercise 8.6 (one PPO iteration on tokens, rollout to update): the checker accepts a
written-out iteration in every configuration, rejects each catalogued mistake with its hint, and its
verdict does not depend on what it ran before; the library's ``ppo_iteration`` is what ``train_ppo``
runs. The isolated grader sees the same verdicts (the record travels as data)."""

import pytest
import torch

from ppo_lib.losses import clipped_surrogate, clipped_value_loss
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.kl import kl_per_token
from ppo_lib.rlhf.model import generate
from ppo_lib.rlhf.ppo import token_values
from ppo_lib.rlhf.reward_model import score
from ppo_lib.rlhf.token_advantages import masked_whiten, per_token_rewards, token_gae
from ppo_lib.teaching.checks import ALL_EXERCISES, check_ppo_iteration
from ppo_lib.teaching.checks.rlhf_iteration import CASES, MISTAKES, learner_style_iteration


def gather_logprobs(logits, tokens, prompt_len):
    logp = torch.log_softmax(logits[:, prompt_len - 1:-1], dim=-1)
    return logp.gather(-1, tokens[:, prompt_len:].unsqueeze(-1)).squeeze(-1)


def written_out(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng):
    """The iteration as a learner writes it from the exercise's text (not learner_style_iteration)."""
    P = lang.PROMPT_LEN
    prompts = lang.TASK.sample_prompts(rng, config.batch_size)
    gen = generate(policy, prompts, temperature=config.temperature, generator=generator)
    tokens, mask = gen.tokens, gen.mask
    with torch.no_grad():
        old_logp = gather_logprobs(policy(tokens), tokens, P) * mask
        ref_logp = gather_logprobs(ref(tokens), tokens, P) * mask
        old_values = token_values(value_model, tokens, P) * mask
        scores = torch.where(gen.has_eos, score(reward_model, tokens, P),
                             torch.tensor(config.missing_eos_score))
    rewards = per_token_rewards(kl_per_token(old_logp, ref_logp, config.kl_estimator), scores, mask, beta)
    advantages, returns = token_gae(rewards, old_values, mask, config.gamma, config.gae_lambda)
    if config.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    params = list(policy.parameters()) + list(value_model.parameters())
    fractions, value_losses = [], []
    for _ in range(config.epochs):
        seed = int(rng.integers(2**31))
        perm = torch.randperm(config.batch_size, generator=torch.Generator().manual_seed(seed))
        for idx in perm.chunk(config.num_minibatches):
            m = mask[idx] > 0
            ratio = (gather_logprobs(policy(tokens[idx]), tokens[idx], P) - old_logp[idx]).exp()
            policy_loss = -clipped_surrogate(ratio[m], advantages[idx][m], config.clip_eps)
            v = token_values(value_model, tokens[idx], P)
            v_loss = clipped_value_loss(v[m], old_values[idx][m], returns[idx][m], config.value_clip_range)
            optimizer.zero_grad()
            (policy_loss + config.value_coef * v_loss).backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            fractions.append(((ratio[m] - 1).abs() > config.clip_eps).float().mean().item())
            value_losses.append(v_loss.item())
    return {"rewards": rewards, "advantages": advantages, "returns": returns,
            "clip_fraction": sum(fractions) / len(fractions), "value_loss": sum(value_losses) / len(value_losses)}


def test_it_is_catalogued():
    assert check_ppo_iteration in ALL_EXERCISES


def test_the_checker_accepts_a_written_out_iteration_in_every_configuration():
    result = check_ppo_iteration.evaluate(written_out)
    assert result.passed, result.message
    assert check_ppo_iteration.evaluate(learner_style_iteration).passed


def test_the_cases_vary_every_switch_the_text_names():
    seen = {}
    for case in CASES:
        for k, v in case.args[0].items():
            seen.setdefault(k, set()).add(v)
    for switch in ("beta", "clip_eps", "value_clip_range", "value_coef", "gamma", "gae_lambda", "whiten_advantages",
                   "num_minibatches", "max_grad_norm", "kl_estimator", "missing_eos_score", "epochs"):
        assert switch in seen, switch
    assert 0.0 in seen["beta"] and False in seen["whiten_advantages"]
    assert any(c.args[0].get("batch_size", 12) % c.args[0].get("num_minibatches", 2) for c in CASES)
    assert any(len(c.args) > 2 for c in CASES)  # a beta argument that is not config.beta


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_each_mistake_is_rejected_with_its_hint(mistake):
    result = check_ppo_iteration.evaluate(mistake.impl)
    assert result.status == "wrong", (mistake.name, result.message)
    assert mistake.feedback in result.message, (mistake.name, result.message)


@pytest.mark.parametrize("name, part", [("ratio against the reference", "the policy loss differs"),
                                        ("value loss unclipped", "the value loss differs"),
                                        ("KL sign", "the rewards differ"),
                                        ("whitening over padding", "the advantages differ"),
                                        ("returns from whitened advantages", "the returns differ"),
                                        ("no gradient clipping", "the gradient clipping differs"),
                                        ("fixed-size slices", "both losses differ: they share the minibatch"),
                                        ("reference moved", "the reference's weights changed")])
def test_the_message_says_which_part_differs(name, part):
    mistake = next(m for m in MISTAKES if m.name == name)
    assert part in check_ppo_iteration.evaluate(mistake.impl).message


def test_the_verdict_does_not_depend_on_what_the_checker_ran_before():
    first = check_ppo_iteration.evaluate(written_out)
    for mistake in MISTAKES[:3]:
        check_ppo_iteration.evaluate(mistake.impl)
    again = check_ppo_iteration.evaluate(written_out)
    assert first.passed and again.passed and first.message == again.message


def test_a_wrong_answer_that_matches_no_mistake_gets_no_hint():
    def scaled_rewards(*args):
        out = written_out(*args)
        out["rewards"] = out["rewards"] * 1.01
        return out

    result = check_ppo_iteration.evaluate(scaled_rewards)
    assert result.status == "wrong" and "the rewards differ" in result.message and "Hint:" not in result.message


def test_unfilled_falls_back_to_the_library():
    def ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng):
        raise NotImplementedError()

    result = check_ppo_iteration.evaluate(ppo_iteration)
    assert result.status == "unfilled" and result.fn is check_ppo_iteration.reference


def test_the_isolated_grader_gives_the_same_verdicts():
    """The student's cell runs in the grading sandbox, its record comes back as data, the verdict is made
    outside: the same message as in the notebook, for a right answer and for a usual mistake."""
    import inspect

    from ppo_lib.course.isolated import judge
    from ppo_lib.course.sandbox import Limits, run_job

    header = inspect.getsource(inspect.getmodule(written_out)).split("\n\n\ndef written_out")[0]
    prelude = header.split('"""', 2)[2]  # the imports and gather_logprobs, without the module docstring
    right = inspect.getsource(written_out).replace("def written_out(", "def ppo_iteration(")
    wrong = right.replace("* mask\n        old_values", "* mask\n        ref_logp = ref_logp * 0 + old_logp\n        old_values")
    assert wrong != right
    for code, status in ((right, "passed"), (wrong, "wrong")):
        steps = [{"kind": "prelude", "label": "ppo_iteration", "code": prelude},
                 {"kind": "exercise", "grade_id": "ppo_iteration", "name": "ppo_iteration",
                  "checker": "check_ppo_iteration", "code": code}]
        run = run_job({"steps": steps, "hide": []}, Limits(cpu_s=120))
        assert not run["reason"], run
        got_status, message = judge(check_ppo_iteration, run["report"]["exercises"]["ppo_iteration"])
        assert got_status == status, message
        if status == "wrong":
            assert "the rewards differ" in message and "Hint: the KL is measured against the frozen" in message
