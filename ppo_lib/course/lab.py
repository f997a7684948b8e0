"""JupyterLab for the course: its settings, and the server ``course.py open`` starts."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .manifest import Book
from .notebooks import default_file_mode, describe_damaged, make_workspace


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and one rename: a reader
    (another ``course.py open`` starting at the same moment, or JupyterLab) sees the old file or the new
    one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path) -> dict:
    """The settings in ``path`` ({} when absent). One that cannot be read (cut short by a crash or a full disk
    before writes were atomic) is kept aside as ``<name>.unreadable`` and replaced, with a warning."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
        problem = f"holds {type(data).__name__}, not an object"
    except (ValueError, OSError) as exc:
        problem = str(exc)
    aside = path.with_name(path.name + ".unreadable")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another `open` has just replaced it: read its version
        return _read_json(path)
    print(f"warning: {path} could not be read ({problem}); it is kept as {aside} and written anew", flush=True)
    return {}

# JupyterLab setting that opens jupytext text files as notebooks by default.
LAB_OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook", "markdown": "Jupytext Notebook"}
    },
    # The course runs offline as often as not: no news or update pop-ups.
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


# nbgrader (an instructor's tool, installed for `course.py assignments`) brings
# JupyterLab panels and server extensions a learner does not need: they stay off
# in the course's JupyterLab (instructors grade with `course.py assignments`).
DISABLED_LAB_EXTENSIONS = {"@jupyter/nbgrader": True}
NBGRADER_SERVER_EXTENSIONS = ("formgrader", "validate_assignment", "assignment_list", "course_list")


def install_lab_settings(prefix: Path | str = sys.prefix) -> Path:
    """Make JupyterLab open jupytext .py/.md files as notebooks (merged into
    ``<prefix>/share/jupyter/lab/settings/overrides.json``), and keep nbgrader's
    panels out of it (``<prefix>/etc/jupyter/labconfig/page_config.json``)."""
    page = Path(prefix) / "etc" / "jupyter" / "labconfig" / "page_config.json"
    config = _read_json(page)
    disabled = config.setdefault("disabledExtensions", {})
    if isinstance(disabled, dict) and any(disabled.get(k) is not v for k, v in DISABLED_LAB_EXTENSIONS.items()):
        disabled.update(DISABLED_LAB_EXTENSIONS)
        write_atomically(page, json.dumps(config, indent=2) + "\n")
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings = _read_json(path)
    for plugin, values in LAB_OVERRIDES.items():
        current = settings.setdefault(plugin, {})
        for key, value in values.items():
            if isinstance(value, dict):
                current.setdefault(key, {}).update(value)
            else:
                current[key] = value
    write_atomically(path, json.dumps(settings, indent=2) + "\n")
    return path


def check_ip(ip: str) -> str:
    """An address JupyterLab can listen on: an IP address or a name that resolves."""
    if not isinstance(ip, str) or not ip.strip():
        raise ValueError(f"--ip {ip!r}: give an address to listen on, e.g. 127.0.0.1 (this machine only) "
                         f"or 0.0.0.0 (every interface)")
    try:
        ipaddress.ip_address(ip)
        return ip
    except ValueError:
        pass
    try:
        socket.getaddrinfo(ip, None)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"--ip {ip!r}: not an IP address and not a host name this machine can resolve; "
                         f"use e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    return ip


def check_port(port, ip: str = "127.0.0.1") -> int:
    """A port from 1 to 65535 that is free on ``ip`` (tried by binding it)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port {port!r}: must be a whole number from 1 to 65535 (e.g. 8888)")
    infos = socket.getaddrinfo(ip, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            raise ValueError(f"--port {port}: could not listen on {ip}:{port} ({exc.strerror or exc}); "
                             f"is another server using it? Choose another port, e.g. --port {port + 1 if port < 65535 else 8888}") from None
    return port


def open_lab(book: Book, workspace: Path, ip: str = "127.0.0.1", port: int = 8888, token: str | None = None,
             no_browser: bool = False) -> int:
    """Start JupyterLab on chapter 0 and wait for it; Ctrl+C stops it quietly."""
    ip = check_ip(ip)
    port = check_port(port, ip)
    workspace = Path(workspace).resolve()
    for line in describe_damaged(make_workspace(book, workspace).damaged):
        print(line, flush=True)
    install_lab_settings()
    first = workspace / (book.chapters[0].stem + ".ipynb")
    token = token or secrets.token_hex(16)
    root_dir = book.root if first.is_relative_to(book.root) else workspace
    url = f"http://{ip}:{port}/lab/tree/{first.relative_to(root_dir).as_posix()}?token={token}"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        f"--ServerApp.root_dir={root_dir}", f"--ip={ip}", f"--port={port}",
        f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
        # Ctrl+C stops the server at once, without the "Shutdown this server (y/[n])?" question
        "--ServerApp.answer_yes=True",
        *[f"--ServerApp.jpserver_extensions=nbgrader.server_extensions.{e}=False" for e in NBGRADER_SERVER_EXTENSIONS],
    ]
    if no_browser:
        cmd.append("--no-browser")
    else:
        cmd.append(str(first))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    print(f"Opening the course: chapter {book.chapters[0].id} '{book.chapters[0].title}'")
    print(f"    {url}")
    print("Stop the server with Ctrl+C.", flush=True)
    proc = subprocess.Popen(cmd, cwd=book.root)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # the server got the same Ctrl+C (same process group) and is shutting down
        try:
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # it did not get it: ask it to stop
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("\nThe course server has stopped. Your notebooks are saved in " + str(workspace), flush=True)
        return 0
