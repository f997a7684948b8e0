"""The commands behind ``course.py``: ``python -m ppo_lib.course COMMAND``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .manifest import REPO_ROOT, ManifestError, load_book
from .notebooks import build_test_notebooks, describe_damaged, make_workspace
from .sources import sync_chapters
from .lab import install_lab_settings, open_lab


def cmd_sync(args) -> int:
    book = load_book()
    changed = sync_chapters(book, check=args.check)
    for p in changed:
        print(("out of date: " if args.check else "wrote ") + str(p.relative_to(book.root)))
    for p, backup in getattr(changed, "backups", {}).items():
        print(f"note: {p.relative_to(book.root)} had been edited by hand; your version is kept in {backup}")
    if args.check and changed:
        print("run `python3 course.py sync` to regenerate the chapters from solutions/")
        return 1
    return 0


def cmd_notebooks(args) -> int:
    book = load_book()
    made = make_workspace(book, Path(args.workspace).expanduser())
    install_lab_settings()
    damaged = getattr(made, "damaged", {})
    print(f"workspace: {len(made)} new notebook(s) in {args.workspace} "
          f"({len(book.chapters) - len(made) - len(damaged)} kept as they were"
          f"{f', {len(damaged)} unreadable' if damaged else ''})")
    for line in describe_damaged(damaged):
        print(line)
    return 1 if damaged else 0


def cmd_open(args) -> int:
    return open_lab(load_book(), Path(args.workspace).expanduser(), ip=args.ip, port=args.port,
                    token=args.token, no_browser=args.no_browser)


#: ``course.py test --quick``: "does my install work?" in a few minutes: the RL core's fast
#: tests, the checkers, the launcher's doctor, chapter 0 executed, and one real-browser check.
QUICK_TESTS = ("tests/test_advantages.py", "tests/test_envs_rollout.py", "tests/test_checks.py",
               "tests/test_import_graph.py", "tests/test_stats.py", "tests/test_doctor.py",
               "tests/test_browser.py::test_chapter_0_runs_and_the_gamma_slider_redraws_the_plot")
QUICK_CHAPTER = "00"


def cmd_test(args) -> int:
    book = load_book()
    out = book.root / "build" / "notebooks"
    pytest_args = list(args.pytest_args)
    quick = "--quick" in pytest_args
    if quick:
        pytest_args.remove("--quick")
        build_test_notebooks(book, out, kinds=("chapters",), only=[QUICK_CHAPTER])
        targets = [*QUICK_TESTS, str((out / "chapters").relative_to(book.root))]
    else:
        build_test_notebooks(book, out)
        targets = ["tests", str(out.relative_to(book.root))]
    cmd = [sys.executable, "-m", "pytest", *targets,
           "--nbval", "--nbval-current-env", "--nbval-cell-timeout=900", "-p", "no:cacheprovider",
           *pytest_args]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=book.root)


def cmd_book(args) -> int:
    from .book import build

    book = load_book()
    t0 = time.perf_counter()
    try:
        index = build(book, Path(args.out).expanduser(), only=args.only)
    except FileExistsError as exc:  # a folder there that the builder did not write: left alone, said why
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"HTML book written to {index} in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_doctor(args) -> int:
    from .diagnose import doctor

    report = doctor(print_report=True)
    return 1 if report.problems else 0


def cmd_assignments(args) -> int:
    from . import grading, isolated

    if args.action != "build" and args.mode == "isolated":
        return isolated.main(args)
    return grading.main(args)


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number from 1 to 65535 (e.g. 8888)") from None


def parser() -> argparse.ArgumentParser:
    from . import grading

    parser = argparse.ArgumentParser(prog="course.py", description="The PPO course's commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="regenerate chapters/ from solutions/ (hand-edited chapters are backed up)")
    p.add_argument("--check", action="store_true", help="only report chapters that are out of date")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("notebooks", help="make the learner's notebooks in workspace/")
    p.add_argument("--workspace", default=str(REPO_ROOT / "workspace"))
    p.set_defaults(func=cmd_notebooks)
    p = sub.add_parser("open", help="start JupyterLab with chapter 0 open")
    p.add_argument("--no-browser", "--headless", dest="no_browser", action="store_true",
                   help="do not open a browser; just print the URL")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8888, help="port, 1-65535 (default 8888)")
    p.add_argument("--token", default=None, help="access token (default: a random one)")
    p.add_argument("--workspace", default=str(REPO_ROOT / "workspace"))
    p.set_defaults(func=cmd_open)
    p = sub.add_parser("test", help="run every test: library, notebooks, browser, book "
                                    "(--quick: does my install work? a few minutes)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments for pytest")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("book", help="execute every chapter and build the static HTML book")
    p.add_argument("--out", default=str(REPO_ROOT / "build" / "book"))
    p.add_argument("--only", nargs="*", default=None, help="chapter ids to include (default: all)")
    p.set_defaults(func=cmd_book)
    p = sub.add_parser("doctor", help="check the set-up; paste its output when you ask for help")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("assignments", help="nbgrader: release, collect, autograde, feedback, grades CSV")
    grading.add_arguments(p)
    p.set_defaults(func=cmd_assignments)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if argv[:1] == ["test"]:  # everything after `test` goes to pytest, options included (-k, -x, ...)
        args = p.parse_args(["test"])
        args.pytest_args = [a for a in argv[1:] if a != "--"] if argv[1:2] == ["--"] else argv[1:]
    else:
        args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a tool the command ran failed (jupyter-book, nbgrader, npm): its message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
