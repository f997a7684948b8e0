"""Start and stop the course's JupyterLab (through the launcher) for tests."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``python -m ppo_lib.course open --no-browser`` on loopback, stopped by PID."""

    def __init__(self, workspace: Path, log: Path):
        self.port, self.token = free_port(), secrets.token_hex(12)
        self.workspace, self.log_path = workspace, log
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 60.0) -> "LabServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "ppo_lib.course", "open", "--no-browser", f"--port={self.port}",
               f"--token={self.token}", f"--workspace={self.workspace}"]
        # A fresh JupyterLab workspace (open tabs, layout) for every server: no state
        # leaks in from an earlier run or out into the user's ~/.jupyter.
        lab_state = self.workspace.parent / (self.workspace.name + "-lab-state")
        shutil.rmtree(lab_state, ignore_errors=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTERLAB_WORKSPACES_DIR": str(lab_state)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            if self.url is None:
                found = re.search(r"(http://127\.0\.0\.1:\d+/lab/tree/\S+\?token=\S+)", self.log())
                self.url = found.group(1) if found else None
            try:
                with urllib.request.urlopen(self.api("status"), timeout=2) as r:
                    if r.status == 200 and self.url:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{self.log()}")

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/{path}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
