"""`course.py open --no-browser` serves JupyterLab with chapter 0 ready."""

import json
import shutil
import urllib.request

import pytest

from ppo_lib.course import load_book
from tests.lab import ROOT, LabServer


@pytest.fixture
def server():
    workspace = ROOT / "build" / "test-workspace-launcher"
    shutil.rmtree(workspace, ignore_errors=True)
    lab = LabServer(workspace, ROOT / "artifacts" / "launcher-lab.log").start()
    yield lab
    lab.stop()
    assert lab.proc.poll() is not None, "the server must be stopped"


def test_open_prints_the_url_of_chapter_0_and_serves_it(server):
    first = load_book().chapters[0]
    assert server.url.endswith(f"/lab/tree/build/test-workspace-launcher/{first.stem}.ipynb?token={server.token}")
    with urllib.request.urlopen(server.api(f"contents/build/test-workspace-launcher/{first.stem}.ipynb")) as r:
        model = json.load(r)
    assert model["type"] == "notebook"
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    with urllib.request.urlopen(server.url) as r:  # the lab page itself, with the token
        assert r.status == 200
    # the chapter text files open as notebooks (the jupytext default viewer)
    settings_url = (f"http://127.0.0.1:{server.port}/lab/api/settings/"
                    f"@jupyterlab/docmanager-extension:plugin?token={server.token}")
    with urllib.request.urlopen(settings_url) as r:
        settings = json.load(r)
    # overrides.json replaces the schema's defaults (the user's own settings still win)
    defaults = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert defaults["python"] == "Jupytext Notebook", defaults


# -- misuse of the launcher: a clear error, before anything starts --------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tests.lab import free_port  # noqa: E402


def _open(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ppo_lib.course", "open", "--no-browser", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port 70000: must be a whole number from 1 to 65535"),
    (["--port", "0"], "--port 0: must be a whole number from 1 to 65535"),
    (["--port", "-1"], "--port -1: must be a whole number from 1 to 65535"),
    (["--port", "http"], "'http': must be a whole number from 1 to 65535"),
    (["--ip", "999.1.1.1"], "--ip '999.1.1.1': not an IP address"),
    (["--ip", ""], "--ip '': give an address"),
])
def test_open_rejects_a_bad_port_or_ip_without_printing_a_url(args, message, tmp_path):
    proc = _open(*args, f"--workspace={tmp_path}")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "http://" not in proc.stdout and "Traceback" not in proc.stderr


def test_open_says_when_the_port_is_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _open(f"--port={port}", f"--workspace={tmp_path}")
    assert proc.returncode == 2
    assert f"could not listen on 127.0.0.1:{port}" in proc.stderr and "another port" in proc.stderr
    assert "http://" not in proc.stdout


def test_ctrl_c_stops_the_server_quietly(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ppo_lib.course", "open", "--no-browser", f"--port={port}",
                             "--token=t0k", f"--workspace={tmp_path}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            # a terminal's Ctrl+C: the default disposition, even where this test runs with SIGINT
                            # ignored (a job started with & by a shell without job control inherits SIG_IGN)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t0k", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError("the server did not start")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in the terminal does: the whole group
        out, _ = proc.communicate(timeout=60)  # the launcher gives up on the server after ~15 s
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert "(y/[n])" not in out
    assert "The course server has stopped" in out
