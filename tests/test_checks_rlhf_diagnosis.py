"""Chapter 8's diagnosis (exercise 8.7): the checker accepts the right verdicts, rejects the usual
confusions with their hints, says run by run what is wrong, and is gradable in isolated mode (the
checker cell is ``diagnosis = check_rlhf_diagnosis(diagnosis)``); the results file shows each run's
signature, and the signatures tell the runs apart."""

import json
from pathlib import Path

import pytest

from ppo_lib.teaching.checks import ALL_EXERCISES, check_rlhf_diagnosis
from ppo_lib.teaching.checks.rlhf_diagnosis import RUN_IDS, VERDICTS, answer_key, diagnosis_curves, signature_holds

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "rlhf_diagnosis.json"


def test_it_is_catalogued_and_the_ids_hide_three_different_runs():
    assert check_rlhf_diagnosis in ALL_EXERCISES
    assert sorted(RUN_IDS.values()) == ["collapsed", "hacked", "healthy"]
    assert sorted(answer_key().values()) == sorted(VERDICTS)


def test_the_right_verdicts_pass():
    key = answer_key()
    assert check_rlhf_diagnosis.evaluate(lambda: dict(key)).passed


@pytest.mark.parametrize("mistake", check_rlhf_diagnosis.mistakes, ids=lambda m: m.name)
def test_each_confusion_is_rejected_with_its_hint(mistake):
    result = check_rlhf_diagnosis.evaluate(mistake.impl)
    assert result.status == "wrong" and mistake.feedback in result.message
    assert "1 of 3 right" in result.message  # two swapped, one right


def test_the_reply_goes_run_by_run():
    key = answer_key()
    rid = next(iter(key))
    wrong = next(v for v in VERDICTS if v != key[rid])
    result = check_rlhf_diagnosis.evaluate(lambda: {rid: wrong})
    assert result.status == "wrong"
    assert f"✗ run {rid}: not {wrong!r}" in result.message and VERDICTS[wrong] in result.message
    assert all(f"○ run {r}: no verdict yet" in result.message for r in key if r != rid)
    assert "is not one of the verdicts" in check_rlhf_diagnosis.evaluate(lambda: {rid: "broken"}).message
    assert "no run is called W" in check_rlhf_diagnosis.evaluate(lambda: {**key, "W": "healthy"}).message
    assert "must return a dict" in check_rlhf_diagnosis.evaluate(lambda: "X: healthy").message


def test_unfilled_falls_back():
    def diagnosis():
        raise NotImplementedError()

    assert check_rlhf_diagnosis.evaluate(diagnosis).status == "unfilled"


def test_the_isolated_grader_gives_the_same_verdicts():
    """The checker cell is `diagnosis = check_rlhf_diagnosis(diagnosis)`: the guess runs in the grading
    sandbox, comes back as data, and gets the notebook's verdict and message outside it."""
    from ppo_lib.course.isolated import judge
    from ppo_lib.course.sandbox import Limits, run_job

    key = answer_key()
    swapped = check_rlhf_diagnosis.mistakes[0].impl()
    for guess in (key, swapped):
        code = f"def diagnosis():\n    return {guess!r}\n"
        steps = [{"kind": "exercise", "grade_id": "diagnosis", "name": "diagnosis", "checker": "check_rlhf_diagnosis",
                  "code": code}]
        run = run_job({"steps": steps, "hide": []}, Limits(cpu_s=60))
        assert not run["reason"], run
        status, message = judge(check_rlhf_diagnosis, run["report"]["exercises"]["diagnosis"])
        assert message == check_rlhf_diagnosis.evaluate(lambda: dict(guess)).message
        assert status == ("passed" if guess == key else "wrong")


def test_the_results_file_shows_each_runs_signature_and_they_tell_the_runs_apart():
    record = json.loads(RESULTS.read_text())
    assert set(record["runs"]) == set(RUN_IDS.values()) and "command" in record
    assert signature_holds(record) == {"healthy": True, "hacked": True, "collapsed": True}
    runs = record["runs"]
    for a, b in (("healthy", "hacked"), ("hacked", "collapsed"), ("collapsed", "healthy")):
        swapped = {**record, "runs": {**runs, a: runs[b], b: runs[a]}}
        assert not all(signature_holds(swapped).values()), (a, b)
    assert set(diagnosis_curves(record)) == set(RUN_IDS)
