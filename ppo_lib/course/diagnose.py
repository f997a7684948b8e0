"""The doctor: what breaks RL courses most often, each problem with its fix.

    python3 course.py doctor          # in a terminal
    import ppo_lib; ppo_lib.doctor()  # in a notebook cell

Paste its output when you ask for help.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from .manifest import REPO_ROOT, ManifestError, load_book
from .notebooks import notebook_problem

MIN_MEMORY_GB = 2.0


@dataclasses.dataclass
class Finding:
    name: str
    value: str
    ok: bool = True
    fix: str = ""


@dataclasses.dataclass
class Report:
    findings: list

    @property
    def problems(self) -> list:
        return [f for f in self.findings if not f.ok]

    def __str__(self) -> str:
        lines = ["ppo_lib doctor", "--------------"]
        width = max(len(f.name) for f in self.findings)
        for f in self.findings:
            lines.append(f"{'ok ' if f.ok else 'XX '} {f.name:<{width}}  {f.value}")
            if not f.ok:
                lines.append(f"{'':4}{'':<{width}}  fix: {f.fix}")
        n = len(self.problems)
        lines.append("No problem found." if n == 0 else f"{n} problem(s) found; each has its fix above.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<doctor report: {len(self.problems)} problem(s); print() it to read it>"


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str | None) -> int | None:
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _available_memory_gb() -> float | None:
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # a container's limit (cgroup v2), e.g. Binder's 2 GB
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            room = int(limit) - used
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return None if avail is None else avail / 2**30


def _package(findings, dist, module, need_major, fix):
    v = package_version(dist)
    if v is None:
        findings.append(Finding(module, "not installed", False, fix))
    elif need_major is not None and _major(v) not in need_major:
        findings.append(Finding(module, v, False, fix))
    else:
        findings.append(Finding(module, v))
    return v


def collect(root: Path | str = REPO_ROOT, workspace: Path | str | None = None) -> Report:
    """Run every check; never raises."""
    reinstall = "python3 course.py setup (or: .venv/bin/pip install -e \".[course,dev,book]\")"
    f: list[Finding] = []
    py = platform.python_version()
    f.append(Finding("python", f"{py} ({sys.executable})", sys.version_info >= (3, 10),
                     "install Python 3.10 or newer and run `python3 course.py open` with it"))
    # torch: version, build, device, threads
    tv = package_version("torch")
    if tv is None:
        f.append(Finding("torch", "not installed", False, torch_install_fix()))
    else:
        try:
            import torch

            cuda = torch.version.cuda
            f.append(Finding("torch", f"{tv} ({'CUDA ' + cuda if cuda else 'CPU'} build)"))
            if torch.cuda.is_available():
                device = f"cuda ({torch.cuda.get_device_name(0)})"
            elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                device = "mps (Apple GPU); the course runs on the CPU"
            else:
                device = "cpu"
            f.append(Finding("device", device))
            threads, cpus = torch.get_num_threads(), _cpus()
            f.append(Finding("torch threads", f"{threads} (CPUs available to this process: {cpus})",
                             threads <= cpus,
                             f"more threads than CPUs slows everything down: torch.set_num_threads({cpus}) "
                             f"or export OMP_NUM_THREADS={cpus} before starting"))
        except Exception as exc:  # a broken install must not break the doctor
            f.append(Finding("torch", f"{tv}, but `import torch` fails: {type(exc).__name__}: {exc}", False,
                             f"reinstall it: .venv/bin/pip install --force-reinstall {('torch==' + tv)} "
                             f"(PPO_COURSE_TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build)"))
    _package(f, "gymnasium", "gymnasium", {1}, "the course needs gymnasium 1.x (its autoreset API): " + reinstall)
    _package(f, "jupyterlab", "jupyterlab", {4}, "the course needs JupyterLab 4: " + reinstall)
    iw = _package(f, "ipywidgets", "ipywidgets", {8}, "the widgets need ipywidgets 8: " + reinstall)
    jw = package_version("jupyterlab_widgets")
    wanted = {8: 3, 7: 1}.get(_major(iw))
    if jw is None:
        f.append(Finding("widget frontend", "jupyterlab_widgets not installed", False,
                         "sliders will show as text ('Loading widget...'): " + reinstall))
    else:
        ok = wanted is None or _major(jw) == wanted
        f.append(Finding("widget frontend", f"jupyterlab_widgets {jw} (ipywidgets {iw})", ok,
                         f"ipywidgets {iw} needs jupyterlab_widgets {wanted}.x: .venv/bin/pip install "
                         f"\"jupyterlab_widgets=={wanted}.*\", then reload the JupyterLab page"))
    mem = _available_memory_gb()
    if mem is None:
        f.append(Finding("memory available", "unknown (no /proc/meminfo)"))
    else:
        f.append(Finding("memory available", f"{mem:.1f} GB", mem >= MIN_MEMORY_GB,
                         f"chapters 8-9 need about {MIN_MEMORY_GB:g} GB: close other programs or notebooks "
                         f"(Kernel > Shut Down All Kernels)"))
    # the chapters' notebooks
    root = Path(root)
    try:
        book = load_book(root)
    except ManifestError as exc:
        f.append(Finding("book.yml", str(exc), False, "restore book.yml (git checkout book.yml)"))
        return Report(f)
    missing = [ch.file for ch in book.chapters if not ch.chapter_path.exists()]
    f.append(Finding("chapters", f"{len(book.chapters) - len(missing)} of {len(book.chapters)} in {root / 'chapters'}",
                     not missing, f"missing {', '.join(missing)}: python3 course.py sync (or git checkout chapters/)"))
    ws = Path(workspace) if workspace else root / "workspace"
    absent = [ch.stem + ".ipynb" for ch in book.chapters if not (ws / (ch.stem + ".ipynb")).exists()]
    f.append(Finding("your notebooks", f"{len(book.chapters) - len(absent)} of {len(book.chapters)} in {ws}",
                     not absent, f"missing {', '.join(absent)}: python3 course.py notebooks "
                                 f"(makes only the missing ones; yours are never overwritten)"))
    damaged = {}
    for ch in book.chapters:
        nb = ws / (ch.stem + ".ipynb")
        if nb.exists():
            problem = notebook_problem(nb)
            if problem is not None:
                damaged[nb.name] = problem
    if damaged:
        first = next(iter(damaged))
        f.append(Finding("notebooks readable", "; ".join(f"{n} {p}" for n, p in damaged.items()), False,
                         f"python3 course.py notebooks writes a fresh copy beside each ({first[:-6]}.fresh.ipynb) "
                         f"and leaves yours as it is; open the fresh one, or delete {first} and run it again"))
    else:
        f.append(Finding("notebooks readable", f"every notebook in {ws} is a readable notebook"))
    return Report(f)


def _in_course_venv(root: Path = REPO_ROOT) -> bool:
    venv = Path(os.environ.get("PPO_COURSE_VENV", root / ".venv"))
    try:
        return Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        return False


def torch_install_fix(root: Path = REPO_ROOT) -> str:
    """A command that installs torch into the Python the doctor runs in (a CPU build)."""
    requirement = os.environ.get("PPO_COURSE_TORCH", "torch==2.13.0")
    index = os.environ.get("PPO_COURSE_TORCH_INDEX", "") or "https://download.pytorch.org/whl/cpu"
    direct = f'{sys.executable} -m pip install --index-url {index} "{requirement}"'
    if _in_course_venv(root):
        return f"python3 course.py setup (it reinstalls torch when it is missing), or directly: {direct}"
    return f"{direct} (this Python is not the course's .venv; `python3 course.py setup` installs into .venv)"


def doctor(print_report: bool = True, root: Path | str = REPO_ROOT, workspace=None) -> Report:
    """Check the set-up and print each problem with its fix; returns the report
    (``report.problems`` lists what is wrong)."""
    report = collect(root, workspace)
    if print_report:
        print(report, flush=True)
    return report
