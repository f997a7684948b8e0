"""The checkers of chapter 10 (RLVR): every mistake of the catalogues is flagged with its hint,
correct but unusual implementations pass, and wrong ones written here are rejected."""

import math

import numpy as np
import pytest

from ppo_lib.teaching.checks.rlvr import RLVR_EXERCISES, check_aggregate_loss, check_format_reward, check_pass_at_k
from tests.catalogue import assert_accepted, assert_flagged


@pytest.mark.parametrize("exercise", RLVR_EXERCISES, ids=lambda e: e.name)
def test_the_reference_passes(exercise):
    assert_accepted(exercise, exercise.reference)


@pytest.mark.parametrize("exercise, mistake", [(e, m) for e in RLVR_EXERCISES for m in e.mistakes],
                         ids=lambda x: getattr(x, "name", ""))
def test_every_catalogued_mistake_is_flagged_with_its_hint(exercise, mistake):
    assert_flagged(exercise, mistake.impl, mistake.feedback)


def pass_at_k_comb(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_numpy_chen(n, c, k):
    # the paper's numpy code, as printed
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


def pass_at_k_logs(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - c + 1) - math.lgamma(n - c - k + 1) - math.lgamma(n + 1)
                          + math.lgamma(n - k + 1))


@pytest.mark.parametrize("impl", [pass_at_k_comb, pass_at_k_numpy_chen, pass_at_k_logs])
def test_correct_pass_at_k_variants_pass(impl):
    assert_accepted(check_pass_at_k, impl)


def pass_at_k_off_by_a_little(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k) + 1e-6


def test_wrong_pass_at_k_is_rejected():
    result = check_pass_at_k.evaluate(pass_at_k_off_by_a_little)
    assert not result.passed and "Case:" in result.message
    assert not check_pass_at_k.evaluate(lambda n, c, k: "0.3").passed
    assert not check_pass_at_k.evaluate(lambda n, c, k: True).passed


def aggregate_with_weights(x, m, kind):
    B, L = m.shape
    if kind == "grpo":
        w = m / (B * m.sum(1, keepdim=True))
    elif kind == "dr_grpo":
        w = m / (B * L)
    else:
        w = m / m.sum()
    return (w * x).sum()


def aggregate_loop(x, m, kind):
    B, L = m.shape
    total = x.new_zeros(())
    for i in range(B):
        n_i = int(m[i].sum())
        s = x[i, :n_i].sum()
        total = total + (s / n_i / B if kind == "grpo" else s / (B * L) if kind == "dr_grpo" else s / m.sum())
    return total


@pytest.mark.parametrize("impl", [aggregate_with_weights, aggregate_loop])
def test_correct_aggregations_pass(impl):
    assert_accepted(check_aggregate_loss, impl)


def test_wrong_aggregations_are_rejected_and_unfilled_is_said():
    assert not check_aggregate_loss.evaluate(lambda x, m, k: (x * m).sum()).passed
    assert not check_aggregate_loss.evaluate(lambda x, m, k: float((x * m).sum().detach() / m.sum())).passed

    def placeholder(x, m, k):
        raise NotImplementedError()
    assert check_aggregate_loss.evaluate(placeholder).status == "unfilled"

    def in_place(x, m, k):
        x.mul_(m)
        return aggregate_with_weights(x, m, k)
    assert "in place" in check_aggregate_loss.evaluate(in_place).message


# ---------------------------------------------------------------- the format reward (exercise 10.4)

def format_reward_by_hand(prompt, response):
    # no parse_response: the worked format checked token by token
    from ppo_lib.rlhf import addition as A

    ids = list(response)
    correct = A.verify(prompt, ids)
    if A.EOS_ID not in ids or not ids or ids[0] != A.WORK:
        return correct
    words = [A.VOCAB[i] for i in ids[1:ids.index(A.EOS_ID)]]
    if words.count("so") != 1:
        return correct
    k = words.index("so")
    items = " ".join(words[:k]).split(",")
    ok_number = lambda ws: bool(ws) and all(w in A.DIGITS for w in ws) and (ws[0] != "0" or len(ws) == 1)  # noqa: E731
    complete = bool(words[:k]) and all(ok_number(i.split()) for i in items) and ok_number(words[k + 1:])
    return correct + (0.1 if complete else 0.0)


def test_a_correct_format_reward_written_by_hand_passes():
    assert_accepted(check_format_reward, format_reward_by_hand)


def test_the_degenerate_response_that_was_over_rewarded_is_named():
    from ppo_lib.rlhf import addition as A

    def marker_bonus(p, r):  # the bonus for ':' first, whatever follows
        return A.verify(p, r) + (0.1 if r[0] == A.WORK else 0.0)
    message = check_format_reward.evaluate(marker_bonus).message
    assert "over-rewarded: expected 0, got 0.1" in message and "the scratchpad marker alone" in message
    assert "Writing ':' costs nothing" in message
    result = check_format_reward.evaluate(lambda p, r: "1.1")
    assert not result.passed and "expected a number" in result.message


def test_the_reference_gives_degenerate_responses_nothing():
    from ppo_lib.teaching.checks.rlvr import FORMAT_BONUS, reference_format_reward

    got = [reference_format_reward(*case.args) for case in check_format_reward.cases]
    assert got[:4] == [1 + FORMAT_BONUS, 1.0, FORMAT_BONUS, 0.0]
    assert all(g == 0.0 for g in got[4:]) and len(got) >= 10


# ---------------------------------------------------------------- the diagnosis (exercise 10.3)

def _record():
    from pathlib import Path

    from ppo_lib.teaching.checks.rlvr import load_diagnosis

    return load_diagnosis(Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "rlvr_diagnosis.json")


def test_the_diagnosis_right_answer_passes_and_each_wrong_name_says_why(capsys):
    from ppo_lib.teaching.checks.rlvr import CAUSES, DIAGNOSIS_RUNS, RUN_CAUSE, SIGNATURE, check_diagnosis

    record = _record()
    right = {rid: RUN_CAUSE[name] for rid, name in DIAGNOSIS_RUNS.items()}
    assert sorted(right.values()) == sorted(CAUSES)
    assert check_diagnosis(right, record)
    assert "5 of 5 right" in capsys.readouterr().out
    for rid in DIAGNOSIS_RUNS:
        for cause in CAUSES:
            if cause == right[rid]:
                continue
            assert not check_diagnosis({**right, rid: cause}, record)
            out = capsys.readouterr().out
            assert f"✗ run {rid}: not {cause!r}: {SIGNATURE[cause]}; but run {rid}: accuracy" in out
            assert "4 of 5 right" in out
    assert not check_diagnosis(None, record) and "no guess yet" in capsys.readouterr().out
    assert not check_diagnosis({"A": "bad luck"}, record) and "is not one of the causes" in capsys.readouterr().out
    assert not check_diagnosis({"A": ["healthy"]}, record) and "is not one of the causes" in capsys.readouterr().out
    assert not check_diagnosis("healthy", record) and "expected a dict" in capsys.readouterr().out


def test_the_logged_runs_show_what_the_signatures_say():
    from ppo_lib.teaching.checks.rlvr import diagnosis_curves, DIAGNOSIS_RUNS

    record = _record()
    assert record["command"].endswith("benchmarks/rlvr_diagnosis.py") and record["date"][:4] >= "2026"
    assert all(len(r["history"]["accuracy"]) == record["settings"]["iterations"] for r in record["runs"].values())
    h = {DIAGNOSIS_RUNS[rid]: v for rid, v in diagnosis_curves(record).items()}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    healthy, hard, cold, fmt, lr = (h[k] for k in ("healthy", "too_hard", "cold", "format", "lr_high"))
    assert mean(healthy["accuracy"][-10:]) > healthy["accuracy"][0] + 0.4 and max(healthy["kl"]) < 2
    assert all(x == 1.0 for x in hard["all_wrong"]) and all(x == 0.0 for x in hard["kl"])
    assert mean(hard["well_formed"]) > 0.9 and mean(hard["distinct"]) > 0.6
    assert mean(cold["distinct"][:5]) < 0.3 and mean(cold["zero_variance"]) > 0.9 and max(cold["kl"]) > 10
    assert mean(fmt["well_formed"]) < 0.02 and all(x == 0.0 for x in fmt["kl"]) and mean(fmt["distinct"]) > 0.6
    assert lr["accuracy"][0] == healthy["accuracy"][0] and mean(lr["accuracy"][-10:]) < 0.15
    assert max(lr["kl"][:5]) > 2 * max(healthy["kl"][:5]) and mean(lr["all_wrong"][-10:]) > 0.5
