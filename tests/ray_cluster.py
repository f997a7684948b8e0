"""A real Ray cluster on loopback for the tests and the grading benchmark: a head node and more
nodes (``ray start --block``, one process group each, on 127.0.0.1, each with its own CPUs),
stopped by PID, never by name. Needs the optional extra (``pip install -e '.[ray]'``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
REPO_ROOT = Path(__file__).resolve().parent.parent


class NodeDidNotStart(RuntimeError):
    """The head node died while starting, twice: the machine (its load), not the code under test."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args, log: Path, cpus: int = 1, home: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO_ROOT))
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.Popen([RAY, "start", "--block", f"--num-cpus={cpus}", "--object-store-memory=100000000",
                             "--disable-usage-stats", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (ray start --block then ends its daemons), then SIGKILL
    to whatever of the group is left, and wait until none is."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    deadline = time.time() + 20
    while alive_in_group(proc.pid) and time.time() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    proc.poll()


def alive_in_group(pgid: int) -> list[int]:
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


def _head_up(proc: subprocess.Popen, log: Path, seconds: float) -> bool:
    """The node says "Ray runtime started" within ``seconds`` (False if its process died)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            if "Ray runtime started" in log.read_text():
                return True
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def loopback_cluster(tmp: Path, nodes: int = 2, cpus: int = 1, connect: bool = True):
    """``nodes`` Ray nodes on 127.0.0.1 with ``cpus`` CPUs each, this process connected to them
    (``connect``); yields ``{"address", "head", "workers"}``. Every node is stopped by its PID at
    the end, and an error is raised if a Ray process survived. On a loaded machine the head can
    time out while starting: it is started again once, then :class:`NodeDidNotStart` says so."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    temp_dir = f"/tmp/ray-{os.getpid()}-{free_port()}"
    # Ray 2.60's local ray.init() writes ~/.ray/auth_token, and a node started later with
    # `ray start --address` then presents it to a head that runs without authentication and is
    # refused (InvalidAuthToken). This cluster runs without authentication, so its nodes get a
    # home folder of their own, where no token is.
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    yield from _cluster(tmp, temp_dir, nodes, cpus, connect, home)


def _cluster(tmp: Path, temp_dir: str, nodes: int, cpus: int, connect: bool, home: Path):
    import ray

    head, port = None, None
    for attempt in range(2):
        port = free_port()
        log = tmp / f"head{attempt}.log"
        head = start_node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                           f"--temp-dir={temp_dir}"], log, cpus, home)
        if _head_up(head, log, 120):
            break
        stop_node(head)
    else:
        raise NodeDidNotStart("the Ray head node did not start, twice (on a loaded machine its raylet can give up "
                           "waiting 30 s for its agents): " + log.read_text()[-600:])
    time.sleep(3)
    workers = []
    for k in range(nodes - 1):  # each started again once if it dies starting
        for attempt in range(2):
            log = tmp / f"worker{k}-{attempt}.log"
            proc = start_node([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1"], log, cpus, home)
            if _head_up(proc, log, 120):
                workers.append(proc)
                break
            stop_node(proc)
        else:
            for proc in workers + [head]:
                stop_node(proc)
            shutil.rmtree(temp_dir, ignore_errors=True)
            if "InvalidAuthToken" in log.read_text():  # a configuration error of ours, not the machine's load
                raise RuntimeError(f"Ray node {k + 1} was refused by the head: " + log.read_text()[-600:])
            raise NodeDidNotStart(f"Ray node {k + 1} did not start, twice: " + log.read_text()[-600:])
    try:
        if connect:
            ray.init(address=f"127.0.0.1:{port}", include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
            deadline = time.time() + 90
            while len([n for n in ray.nodes() if n["Alive"]]) < nodes and time.time() < deadline:
                time.sleep(1)
            if len([n for n in ray.nodes() if n["Alive"]]) < nodes:
                raise RuntimeError("not every Ray node joined the cluster")
        yield dict(address=f"127.0.0.1:{port}", head=head, workers=workers)
    finally:
        if connect:
            ray.shutdown()
        for proc in workers + [head]:
            stop_node(proc)
        survivors = [p for proc in workers + [head] for p in alive_in_group(proc.pid)]
        shutil.rmtree(temp_dir, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray processes survived: {survivors}")


def cluster_fixture(tmp: Path, nodes: int = 2, cpus: int = 1):
    """A pytest fixture's body: the loopback cluster, or the test skipped with the reason when the
    machine could not start a Ray node (e.g. overloaded: the raylet gives up waiting 30 s for its
    agents); every assertion of the test still runs whenever the cluster is up."""
    import pytest

    manager = loopback_cluster(tmp, nodes=nodes, cpus=cpus)
    try:
        cluster = manager.__enter__()
    except NodeDidNotStart as exc:
        pytest.skip(f"Ray could not start a node on this machine: {str(exc)[:200]}")
    try:
        yield cluster
    finally:
        manager.__exit__(None, None, None)
