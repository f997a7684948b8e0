"""The sweep runner (ppo_lib/sweep.py): the same results in this process, on 2 local processes,
resumed after an interruption, and on Ray; a failing job reported, the others finished."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch

from ppo_lib.sweep import Job, JobFailure, Runner, SweepFailed, resume_path, run_jobs


def noisy(seed: int, scale: float = 1.0) -> dict:
    """A trivial seeded job: numpy and torch draws."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    return {"seed": seed, "np": [float(x) for x in rng.normal(size=3) * scale],
            "torch": round(float(torch.randn(4).sum()), 6), "threads": torch.get_num_threads()}


def ppo_two_updates(seed: int) -> dict:
    """PPO on CartPole for two updates (2 x 8 envs x 64 steps) and a short greedy evaluation."""
    import gymnasium as gym

    from ppo_lib.algos import CARTPOLE_FAST_PRESET, PPO, PPOConfig
    from ppo_lib.train import evaluate, train

    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    algo = PPO(env.observation_space, env.action_space, PPOConfig(**CARTPOLE_FAST_PRESET), seed=seed)
    h = train(algo, "CartPole-v1", 2 * 8 * 64, seed=seed, progress=False).history
    return {"seed": seed, "returns": [float(x) for x in h.episode_returns],
            "eval": [float(x) for x in evaluate(algo.policy, "CartPole-v1", 2, seed=10_000 + seed)],
            "param": float(next(algo.policy.parameters()).detach().sum())}


def fails_once(seed: int, marker: str) -> dict:
    """Raises the first time (no marker file yet), succeeds after: an interruption, then a resume."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"interrupted at seed {seed}")
    return noisy(seed)


def always_fails(seed: int) -> dict:
    raise ValueError(f"bad seed {seed}")


def _jobs(with_ppo=True):
    jobs = [Job(f"noisy/seed={s}", noisy, {"seed": s, "scale": 2.0}) for s in range(4)]
    return jobs + ([Job("ppo/seed=0", ppo_two_updates, {"seed": 0})] if with_ppo else [])


@pytest.fixture(scope="module")
def serial():
    return run_jobs(_jobs(), workers=1, stream=io.StringIO())


def test_serial_results_in_order_and_one_thread(serial):
    assert [r["seed"] for r in serial] == [0, 1, 2, 3, 0]
    assert all(r["threads"] == 1 for r in serial[:4])
    assert serial[4]["returns"] and len(serial[4]["eval"]) == 2


def test_two_processes_equal_serial_and_a_failing_job_reported(serial):
    """On 2 processes: the same results; a job that raises is reported with its key, the others finish."""
    jobs = _jobs()
    jobs.insert(1, Job("broken/seed=7", always_fails, {"seed": 7}))
    stream = io.StringIO()
    with Runner(workers=2, stream=stream) as runner:
        results = runner.map(jobs, raise_on_failure=False)
    assert results[:1] + results[2:] == serial
    assert isinstance(results[1], JobFailure) and results[1].key == "broken/seed=7"
    assert results[1].error == "ValueError: bad seed 7" and "always_fails" in results[1].traceback
    text = stream.getvalue()
    assert "FAILED broken/seed=7: ValueError: bad seed 7" in text
    last = text.strip().splitlines()[-1]
    assert "6/6 done, 1 failed" in last and "s/job" in last and "ETA" in last


def test_resumed_after_interruption_equal_serial(serial, tmp_path):
    out = tmp_path / "sweep.json"
    path = resume_path(out)
    assert path.name == "sweep.jobs.jsonl"
    marker = str(tmp_path / "marker")
    jobs = _jobs()
    jobs[2] = Job("noisy/seed=2", fails_once, {"seed": 2, "marker": marker})
    with pytest.raises(SweepFailed, match="noisy/seed=2: RuntimeError: interrupted at seed 2"):
        run_jobs(jobs, workers=1, resume=path, stream=io.StringIO())
    kept = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(kept) == sorted(j.key for j in jobs if j.key != "noisy/seed=2")
    # a cut-off line (the process killed mid-write) is ignored, and that job runs again
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if '"noisy/seed=0"' not in line) + "\n" + '{"key": "noisy/se')
    stream = io.StringIO()
    resumed = run_jobs(jobs, workers=1, resume=path, stream=stream)
    jobs[2] = Job("noisy/seed=2", noisy, {"seed": 2, "scale": 2.0})
    # fails_once's result is noisy(2) with scale 1: compare the rest, and that one to its own function
    assert resumed[:2] + resumed[3:] == serial[:2] + serial[3:]
    assert resumed[2] == noisy(2) | {"threads": 1}
    assert "3/5 kept" in stream.getvalue() and "2 failed" not in stream.getvalue()
    # a third run computes nothing
    again = io.StringIO()
    assert run_jobs(jobs[:2] + jobs[3:], workers=1, resume=path, stream=again) == resumed[:2] + resumed[3:]
    assert "4/4 kept" in again.getvalue()


def test_failing_job_raises_after_the_others_finish(serial):
    jobs = _jobs(with_ppo=False)
    jobs.insert(1, Job("broken/seed=7", always_fails, {"seed": 7}))
    with pytest.raises(SweepFailed, match="1 of 5 jobs failed") as info:
        run_jobs(jobs, workers=1, stream=io.StringIO())
    assert [f.key for f in info.value.failures] == ["broken/seed=7"]
    assert info.value.results[:1] + info.value.results[2:] == serial[:4]


def test_duplicate_keys_refused():
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("a", noisy, {"seed": 0}), Job("a", noisy, {"seed": 1})], stream=io.StringIO())


def test_ray_equal_serial(serial):
    ray = pytest.importorskip("ray", reason="ray is not installed (an optional extra: pip install -e '.[ray]')")
    from ppo_lib.sweep import REPO_ROOT

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    try:
        stream = io.StringIO()
        assert run_jobs(_jobs(), ray="auto", stream=stream) == serial
        assert "5/5 done, 0 failed" in stream.getvalue()
    finally:
        ray.shutdown()


def _fake_sensitivity_run(env_id: str, knob: str, value, seed: int) -> dict:
    """Stands in for a training run (seconds -> nothing): the same fields, a seeded number."""
    rng = np.random.default_rng([seed, len(knob)])
    if knob == "gamma" and seed == 1 and os.environ.get("SWEEP_TEST_FAIL_ONCE") == "1":
        os.environ["SWEEP_TEST_FAIL_ONCE"] = "0"
        raise RuntimeError("interrupted")
    return {"knob": knob, "value": value, "seed": seed, "seconds": 0.0,
            "mean_training_return": round(float(rng.normal()), 1), "final_eval": round(float(rng.normal()), 1)}


def test_sensitivity_script_keeps_other_knobs_and_resumes(tmp_path, monkeypatch, capsys):
    """benchmarks/sensitivity.py on the runner: --knobs still keeps the other knobs' runs, and a sweep
    that failed part-way reruns only what it had not finished (training replaced by a seeded stand-in)."""
    import sys

    import benchmarks.sensitivity as sens

    monkeypatch.setattr(sens, "run", _fake_sensitivity_run)
    out = tmp_path / "sensitivity.json"

    def main(*argv):
        monkeypatch.setattr(sys, "argv", ["sensitivity.py", "--envs", "CartPole-v1", "--seeds", "0", "1",
                                          "--out", str(out), *argv])
        return sens.main()

    main("--knobs", "clip_eps")
    first = json.loads(out.read_text())["tasks"]["CartPole-v1"]
    monkeypatch.setenv("SWEEP_TEST_FAIL_ONCE", "1")
    with pytest.raises(SweepFailed, match="gamma=0.95 seed=1: RuntimeError: interrupted"):
        main("--knobs", "gamma")
    assert len(resume_path(out).read_text().splitlines()) == 5  # the 6 gamma runs but the failed one
    capsys.readouterr()
    main("--knobs", "gamma")
    assert "5/6 kept" in capsys.readouterr().err and not resume_path(out).exists()
    entry = json.loads(out.read_text())["tasks"]["CartPole-v1"]
    assert [r for r in entry["runs"] if r["knob"] == "clip_eps"] == first["runs"]
    gamma = [_fake_sensitivity_run("CartPole-v1", "gamma", v, s) for v in sens.TASKS["CartPole-v1"]["sweeps"]["gamma"]
             for s in (0, 1)]
    assert [r for r in entry["runs"] if r["knob"] == "gamma"] == gamma
    assert [a["knobs"] for a in entry["added_by"]] == [["gamma"]] and entry["complete"] is False
