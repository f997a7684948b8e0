"""Grading on a real two-node Ray cluster on loopback (``--ray ADDRESS``): six made-up students of
chapter 1 graded across both nodes, the second node killed mid-run, and every grade still there
and equal to the local run's. The cluster is started with ``ray start --block`` (one process
group per node) and stopped by PID. Skipped, with the reason, where Ray is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")
pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install -e '.[ray]')")

from ppo_lib.course import grading, isolated  # noqa: E402
from ppo_lib.course.sandbox import Limits  # noqa: E402
from tests.test_grading import CHAPTER, _cell, _course, _solved, _src  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(args, log: Path) -> subprocess.Popen:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(isolated.REPO_ROOT))
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--object-store-memory=100000000",
                             "--disable-usage-stats", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (ray start --block then ends its daemons), then SIGKILL
    to whatever of the group is left, and wait until none is."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    deadline = time.time() + 20
    while _pgid_alive(proc.pid) and time.time() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    proc.poll()


def _pgid_alive(pgid: int) -> list[int]:
    """Processes of the group still running (zombies aside: only their exit status is left)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    temp_dir = f"/tmp/ray-{os.getpid()}"
    head = _node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                  f"--temp-dir={temp_dir}"], tmp / "head.log")
    time.sleep(8)
    worker = _node([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1"], tmp / "worker.log")
    import ray

    ray.init(address=f"127.0.0.1:{port}", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(isolated.REPO_ROOT)}})
    deadline = time.time() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
        time.sleep(1)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2, (tmp / "worker.log").read_text()[-2000:]
    yield dict(address=f"127.0.0.1:{port}", head=head, worker=worker)
    ray.shutdown()
    _stop(worker)
    _stop(head)
    assert not _pgid_alive(head.pid) and not _pgid_alive(worker.pid), "a Ray process survived"
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_six_students_across_two_nodes_one_killed_mid_run(cluster, tmp_path):
    book = _course(tmp_path / "course")
    course_dir = tmp_path / "nbgrader"
    grading.build_course(book, course_dir)
    release = json.loads((course_dir / "release" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    source = json.loads((course_dir / "source" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    solved = _solved(source, release)
    sign = json.loads(json.dumps(solved))
    loss = _cell(sign, "reinforce_loss")
    loss["source"] = _src(loss).replace("return -(logprobs", "return (logprobs")
    kinds = [solved, release, sign]
    subs = tmp_path / "subs"
    for k in range(6):
        (subs / f"s{k}").mkdir(parents=True)
        (subs / f"s{k}" / f"{CHAPTER}.ipynb").write_text(json.dumps(kinds[k % 3]))
    isolated.collect_safely(course_dir, CHAPTER, subs)
    local = tmp_path / "local"
    shutil.copytree(course_dir, local, symlinks=True)

    out = {}

    def run():
        out["results"] = isolated.autograde_isolated(course_dir, CHAPTER, limits=Limits(cpu_s=60),
                                                     ray_address=cluster["address"])

    t = threading.Thread(target=run)
    t.start()
    kept = course_dir / isolated.RESULTS / CHAPTER
    deadline = time.time() + 120
    while time.time() < deadline and len(list(kept.glob("*.json"))) < 1:
        time.sleep(0.2)
    _stop(cluster["worker"])  # the second node dies mid-run; its tasks are retried on the head
    t.join(timeout=300)
    assert not t.is_alive()
    results = {r["student"]: r for r in out["results"]}
    assert sorted(results) == [f"s{k}" for k in range(6)]
    assert all(not r["reason"] for r in results.values()), {s: r["reason"] for s, r in results.items()}
    on_local = {r["student"]: r for r in isolated.autograde_isolated(local, CHAPTER, workers=2, limits=Limits(cpu_s=60))}
    assert {s: r["exercises"] for s, r in results.items()} == {s: r["exercises"] for s, r in on_local.items()}
    assert grading.scores(course_dir, CHAPTER) == grading.scores(local, CHAPTER)
    assert [results[f"s{k}"]["exercises"][1]["score"] for k in range(3)] == [3.0, 0.0, 0.0]
