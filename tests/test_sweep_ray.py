"""A small sweep on a real two-node Ray cluster on loopback (``tests/ray_cluster.py``, as for grading:
started with ``ray start --block`` and stopped by PID): the same results as the local run, with jobs on
both nodes. Skipped, with the reason, where Ray is not installed or cannot start a node (an overloaded
machine)."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install -e '.[ray]')")

from ppo_lib.sweep import Job, run_jobs  # noqa: E402
from tests.ray_cluster import cluster_fixture  # noqa: E402
from tests.test_sweep import noisy, ppo_two_updates  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The grading test's two-node cluster on loopback (one CPU per node)."""
    yield from cluster_fixture(tmp_path_factory.mktemp("ray"), nodes=2, cpus=1)


def ppo_on_node(seed: int) -> dict:
    """``ppo_two_updates`` and the Ray node it ran on (None outside Ray)."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"run": ppo_two_updates(seed), "node": node}


def test_small_sweep_on_two_nodes_equals_local(cluster):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    jobs = [Job(f"ppo/seed={s}", ppo_on_node, {"seed": s}) for s in range(6)] + \
        [Job(f"noisy/seed={s}", noisy, {"seed": s, "scale": 2.0}) for s in range(2)]
    local = run_jobs(jobs, workers=1, stream=io.StringIO())
    on_cluster = run_jobs(jobs, ray=cluster["address"], stream=io.StringIO())
    strip = [r["run"] if "run" in r else r for r in local], [r["run"] if "run" in r else r for r in on_cluster]
    assert strip[0] == strip[1]
    assert all(r["threads"] == 1 for r in on_cluster if "threads" in r)
    nodes = {r["node"] for r in on_cluster if "node" in r}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert nodes == alive and len(nodes) == 2, (nodes, alive)  # both nodes ran some of the jobs
