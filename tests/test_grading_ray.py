"""Grading on a real two-node Ray cluster on loopback (``--ray ADDRESS``): six made-up students of
chapter 1 graded across both nodes, the second node killed mid-run, and every grade still there
and equal to the local run's. The cluster is started with ``ray start --block`` (one process
group per node) and stopped by PID. Skipped, with the reason, where Ray is not installed or
cannot start a node (an overloaded machine)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")
pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install -e '.[ray]')")

from ppo_lib.course import grading, isolated  # noqa: E402
from ppo_lib.course.sandbox import Limits  # noqa: E402
from tests.ray_cluster import cluster_fixture, stop_node  # noqa: E402
from tests.test_grading import CHAPTER, _cell, _course, _solved, _src  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    for c in cluster_fixture(tmp_path_factory.mktemp("ray"), nodes=2, cpus=1):
        yield dict(address=c["address"], head=c["head"], worker=c["workers"][0])


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
    stop_node(cluster["worker"])  # the second node dies mid-run; its tasks are retried on the head
    t.join(timeout=300)
    assert not t.is_alive()
    results = {r["student"]: r for r in out["results"]}
    assert sorted(results) == [f"s{k}" for k in range(6)]
    assert all(not r["reason"] for r in results.values()), {s: r["reason"] for s, r in results.items()}
    on_local = {r["student"]: r for r in isolated.autograde_isolated(local, CHAPTER, workers=2, limits=Limits(cpu_s=60))}
    assert {s: r["exercises"] for s, r in results.items()} == {s: r["exercises"] for s, r in on_local.items()}
    assert grading.scores(course_dir, CHAPTER) == grading.scores(local, CHAPTER)
    assert [results[f"s{k}"]["exercises"][1]["score"] for k in range(3)] == [3.0, 0.0, 0.0]
