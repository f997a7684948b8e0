"""Isolated grading (``course.py assignments ... --mode isolated``) of chapter 1 against hostile and
broken submissions: each ends with the right grade for everyone, and nothing leaks or changes.

One class is collected and graded once (two workers, tight limits); each test reads one outcome.
The course lives in a folder every user can enter, so that what the sandbox hides (the course
directory with the gradebook and the source notebooks, the solutions) is hidden by the sandbox
and not merely by the test's private temporary folder.
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")

from ppo_lib.course import grading, isolated  # noqa: E402
from ppo_lib.course.sandbox import Limits, is_root, protections  # noqa: E402

from tests.test_grading import CHAPTER, SECRET, _cell, _course, _solved, _src  # noqa: E402

LIMITS = Limits(wall_s=60, cpu_s=8, memory_mb=1536, processes=16)
RTG_SOLUTION = '''def reward_to_go(rewards, dones, gamma):
    rewards = np.asarray(rewards, dtype=float)
    out = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        out[t] = running
    return out
'''
WRONG_RTG = "def reward_to_go(rewards, dones, gamma):\n    return np.zeros(len(rewards))\n"
ODD_NAMES = ["...", ".hidden", "a b;$(touch pwned)'\""]


def _attacks(course_dir: Path, solutions: Path, drop: Path) -> dict[str, tuple[str, dict]]:
    """student -> (reward_to_go cell, expected {exercise: score}); reinforce_loss stays solved."""
    c, d = str(course_dir), str(drop)
    full, rtg0 = {"reward_to_go_check": 2.0, "reinforce_loss_check": 3.0}, {"reward_to_go_check": 0.0,
                                                                          "reinforce_loss_check": 3.0}
    ran = lambda who: f"open({d + '/' + who!r} + '-ran', 'w').write('x')\n"  # noqa: E731 - proof the attack ran
    return {
        "patch_checker": (ran("patch_checker") + WRONG_RTG + (
            "import ppo_lib.teaching.checks.core as core, ppo_lib.teaching.checks as checks\n"
            "core.CheckResult.passed = property(lambda self: True)\n"
            "core.Exercise.evaluate = lambda self, fn: core.CheckResult(self.name, 'passed', 'ok', fn)\n"
            "core.compare = lambda *a, **k: None\n"
            "checks.check_reward_to_go.compare = lambda *a, **k: None\n"), rtg0),
        "print_history": (ran("print_history") + (
            "def reward_to_go(rewards, dones, gamma):\n"
            "    g = globals()\n"
            "    raise ValueError(repr([g.get('_ih'), g.get('In'), g.get('_oh')]))\n"), rtg0),
        "read_source": (ran("read_source") + (
            "def reward_to_go(rewards, dones, gamma):\n"
            "    text = ''\n"
            f"    for p in [{c + '/source/' + CHAPTER + '/' + CHAPTER + '.ipynb'!r}, {c + '/gradebook.db'!r}]:\n"
            "        try:\n"
            "            text += open(p, 'rb').read().decode('latin-1')\n"
            "        except Exception as exc:\n"
            "            text += repr(exc)\n"
            "    raise ValueError(text)\n"), rtg0),
        "exec_solution": (ran("exec_solution") + (
            f"src = open({str(solutions / (CHAPTER + '.py'))!r}).read()\n"
            "start = src.index('def reward_to_go')\n"
            "exec(src[start:src.index('# %%', start)])\n"), rtg0),
        "write_gradebook": (ran("write_gradebook") + WRONG_RTG + (
            "import sqlite3\n"
            f"db = sqlite3.connect({c + '/gradebook.db'!r})\n"
            "db.execute('UPDATE grade SET auto_score = 99')\n"
            "db.commit()\n"), rtg0),
        "daemon": (ran("daemon") + RTG_SOLUTION + (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(3)\n"
            f"        open({d + '/daemon-survived'!r}, 'w').write('x')\n"
            "        import sqlite3\n"
            f"        sqlite3.connect({c + '/gradebook.db'!r}).execute('UPDATE grade SET auto_score = 99').connection.commit()\n"
            "    os._exit(0)\n"), full),
        "rewrite_others": (ran("rewrite_others") + RTG_SOLUTION + (
            "import glob\n"
            f"for p in glob.glob({c + '/submitted/*/*/*.ipynb'!r}) + glob.glob({c + '/feedback/*/*/*.html'!r}) + "
            f"glob.glob({c + '/' + isolated.RESULTS + '/*/*.json'!r}):\n"
            "    try:\n"
            "        open(p, 'w').write('{}')\n"
            "    except Exception:\n"
            "        pass\n"), full),
        "append_config": (ran("append_config") + RTG_SOLUTION + (
            "try:\n"
            f"    open({c + '/nbgrader_config.py'!r}, 'a').write('\\nimport os; os.system(\"touch /tmp/pwned\")\\n')\n"
            "except Exception:\n"
            "    pass\n"), full),
        "reference_only": ("def reward_to_go(rewards, dones, gamma):\n"
                           "    return library_reward_to_go(rewards, dones, gamma).numpy()\n", full),
        "memory_hog": ("blob = bytearray(20 * 2**30)\n" + RTG_SOLUTION, rtg0),
    }


BROKEN_ZERO = {"reward_to_go_check": 0.0, "reinforce_loss_check": 0.0}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = Path(tempfile.mkdtemp(prefix="ppo-grading-test-", dir="/tmp"))
    os.chmod(base, 0o755)  # everyone may enter: only the sandbox hides the course from student code
    drop = base / "drop"
    drop.mkdir()
    os.chmod(drop, 0o777)  # where an attack that ran leaves its mark
    book = _course(base / "course")
    for p in [base / "course", base / "course" / "solutions"]:
        os.chmod(p, 0o755)
    os.chmod(base / "course" / "solutions" / f"{CHAPTER}.py", 0o644)
    course_dir = base / "nbgrader"
    grading.build_course(book, course_dir)
    release = json.loads((course_dir / "release" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    source = json.loads((course_dir / "source" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    solved = _solved(source, release)

    subs = base / "submissions"
    expected, notebooks = {}, {}
    notebooks["alice"], expected["alice"] = solved, {"reward_to_go_check": 2.0, "reinforce_loss_check": 3.0}
    notebooks["bob"], expected["bob"] = release, dict(BROKEN_ZERO)
    carol = json.loads(json.dumps(solved))
    loss = _cell(carol, "reinforce_loss")
    loss["source"] = _src(loss).replace("return -(logprobs", "return (logprobs")
    _cell(carol, "reward_to_go_check")["source"] = "reward_to_go = reward_to_go  # I don't need the checker\n"
    notebooks["carol"], expected["carol"] = carol, {"reward_to_go_check": 2.0, "reinforce_loss_check": 0.0}
    for name, (code, exp) in _attacks(course_dir, base / "course" / "solutions", drop).items():
        nb = json.loads(json.dumps(solved))
        _cell(nb, "reward_to_go")["source"] = code
        notebooks[name], expected[name] = nb, exp
    odd = json.loads(json.dumps(solved))
    odd["cells"].insert(1, {"cell_type": "code", "metadata": {"nbgrader": "oops"}, "source": "x = 1", "outputs": [],
                            "execution_count": None})
    odd["cells"].insert(2, {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": 7, "solution": True}},
                            "source": "y = 2", "outputs": [], "execution_count": None})
    odd["cells"].insert(3, {"cell_type": "markdown", "metadata": ["not", "a", "mapping"], "source": "hi"})
    odd["cells"].insert(4, "not a cell")
    notebooks["bad_metadata"], expected["bad_metadata"] = odd, {"reward_to_go_check": 2.0, "reinforce_loss_check": 3.0}
    other = json.loads(json.dumps(solved))
    for cell in other["cells"]:
        meta = cell["metadata"].get("nbgrader")
        if meta:
            meta["grade_id"] = meta["grade_id"].replace("reward_to_go", "td_errors").replace(
                "reinforce_loss", "bootstrap_values")
    notebooks["other_chapter"], expected["other_chapter"] = other, dict(BROKEN_ZERO)
    for name, code in {"fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                       "ignore_sigint": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n"}.items():
        nb = json.loads(json.dumps(solved))
        _cell(nb, "reward_to_go")["source"] = code
        notebooks[name], expected[name] = nb, dict(BROKEN_ZERO)
    for name in ODD_NAMES:
        notebooks[name], expected[name] = solved, {"reward_to_go_check": 2.0, "reinforce_loss_check": 3.0}
    for name, nb in notebooks.items():
        (subs / name).mkdir(parents=True)
        (subs / name / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
    (subs / "not_json").mkdir()
    (subs / "not_json" / f"{CHAPTER}.ipynb").write_text("{ this is not a notebook")
    expected["not_json"] = dict(BROKEN_ZERO)
    (subs / "symlink_file").mkdir()
    os.symlink(course_dir / "source" / CHAPTER / f"{CHAPTER}.ipynb", subs / "symlink_file" / f"{CHAPTER}.ipynb")
    expected["symlink_file"] = dict(BROKEN_ZERO)
    os.symlink(subs / "alice", subs / "symlink_folder")
    expected["symlink_folder"] = dict(BROKEN_ZERO)

    collected, refused = isolated.collect_safely(course_dir, CHAPTER, subs)
    config_before = (course_dir / "nbgrader_config.py").read_bytes()
    t0 = time.perf_counter()
    results = isolated.autograde_isolated(course_dir, CHAPTER, workers=2, limits=LIMITS,
                                          hide=[base / "course" / "solutions"])
    seconds = time.perf_counter() - t0
    graded_at = time.time()
    exports = isolated.export_isolated(course_dir)
    print(f"\nisolated grading of {len(results)} chapter-1 submissions, 2 workers: {seconds:.1f} s")
    yield dict(base=base, course_dir=course_dir, subs=subs, drop=drop, collected=collected, refused=refused,
               results={r["student"]: r for r in results}, expected=expected, exports=exports,
               config_before=config_before, graded_at=graded_at, limits=LIMITS)
    shutil.rmtree(base, ignore_errors=True)


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _feedback(g, student):
    return (g["course_dir"] / "feedback" / student / CHAPTER / f"{CHAPTER}.html").read_text()


def test_every_collected_student_has_the_right_grade_in_every_output(graded):
    g = graded
    assert sorted(g["collected"]) == sorted(g["expected"])
    scores = grading.scores(g["course_dir"], CHAPTER)
    got = {s: {k: v[0] for k, v in ex.items()} for s, ex in scores.items()}
    assert got == g["expected"]
    rows = {r["student_id"]: r for r in _csv(g["exports"][0])}
    assert sorted(rows) == sorted(g["expected"])
    for s, exp in g["expected"].items():
        assert float(rows[s]["score"]) == sum(exp.values()), s
        assert _feedback(g, s).count("<h2>") == 2
    by_ex = _csv(g["exports"][1])
    assert len(by_ex) == 2 * len(g["expected"])


@pytest.mark.parametrize("student,reason", [
    ("not_json", "not JSON"), ("other_chapter", "none of 01_reinforce's exercise cells"),
    ("symlink_file", "symbolic link"), ("symlink_folder", "symbolic link"),
    ("fork_bomb", "CPU time limit"), ("ignore_sigint", "CPU time limit")])
def test_a_broken_submission_scores_zero_with_its_reason(graded, student, reason):
    res = graded["results"][student]
    assert reason in res["reason"]
    assert html.escape(reason) in _feedback(graded, student)
    row = next(r for r in _csv(graded["exports"][0]) if r["student_id"] == student)
    assert reason in row["reason"] and float(row["score"]) == 0


def test_the_verdict_cannot_be_patched_from_the_students_code(graded):
    assert (graded["drop"] / "patch_checker-ran").exists(), "the patching code did run"
    ex = graded["results"]["patch_checker"]["exercises"][0]
    assert ex["status"] == "wrong" and ex["score"] == 0 and "expected" in ex["message"]


@pytest.mark.parametrize("student", ["print_history", "read_source", "exec_solution", "symlink_file"])
def test_nothing_hidden_reaches_the_feedback(graded, student):
    page = _feedback(graded, student)
    assert SECRET not in page and "BEGIN HIDDEN" not in page and "BEGIN SOLUTION" not in page
    assert "SQLite format" not in page
    if student != "symlink_file":
        assert (graded["drop"] / f"{student}-ran").exists()
    if is_root() and student != "symlink_file":  # the course directory and the solutions are not even there for the student's code
        assert "PermissionError" in page or "FileNotFoundError" in page or "NameError" in page or \
            student == "print_history"


def test_no_leak_anywhere_in_the_outputs(graded):
    for path in list((graded["course_dir"] / "feedback").rglob("*.html")) + list(graded["exports"]):
        assert SECRET not in path.read_text(errors="replace"), path


def test_gradebook_config_and_other_students_are_untouched(graded):
    g = graded
    for who in ("write_gradebook", "rewrite_others", "append_config", "daemon"):
        assert (g["drop"] / f"{who}-ran").exists(), who
    assert (g["course_dir"] / "nbgrader_config.py").read_bytes() == g["config_before"]
    alice = json.loads((g["course_dir"] / "submitted" / "alice" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    assert alice["cells"], "alice's submission is intact"
    assert "2 / 2" in _feedback(g, "alice") and "3 / 3" in _feedback(g, "alice")
    with sqlite3.connect(g["course_dir"] / "gradebook.db") as db:
        assert db.execute("SELECT count(*) FROM grade WHERE auto_score = 99").fetchone()[0] == 0


def test_no_process_of_a_submission_outlives_its_grading(graded):
    time.sleep(max(0.0, graded["graded_at"] + 4.5 - time.time()))  # the daemon wakes 3 s after it forked
    assert not (graded["drop"] / "daemon-survived").exists()
    with sqlite3.connect(graded["course_dir"] / "gradebook.db") as db:
        assert db.execute("SELECT count(*) FROM grade WHERE auto_score = 99").fetchone()[0] == 0
    if is_root():
        from ppo_lib.course.sandbox import SANDBOX_UID_BASE, processes_of_uid

        # every slot no job holds now (its lock taken here, so none starts) has no process left; a
        # slot another grader on this machine holds at this moment is that grader's, not ours
        import fcntl

        folder = Path(tempfile.gettempdir()) / f"ppo-grading-slots-{os.getuid()}"
        idle = []
        try:
            for k in range(16):
                fh = open(folder / f"{k}.lock", "w")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    idle.append((k, fh))
                except BlockingIOError:
                    fh.close()
            assert idle and all(not processes_of_uid(SANDBOX_UID_BASE + k) for k, _ in idle), \
                {k: processes_of_uid(SANDBOX_UID_BASE + k) for k, _ in idle}
        finally:
            for _, fh in idle:
                fh.close()


def test_a_memory_hog_loses_only_that_exercise(graded):
    ex = graded["results"]["memory_hog"]["exercises"]
    assert "MemoryError" in ex[0]["message"] and ex[1]["score"] == 3.0


def test_suspicious_and_reference_only_submissions_are_flagged(graded):
    rows = _csv(graded["course_dir"] / "integrity.csv")
    flagged = {(r["student"], r["cell"]): r["problem"] for r in rows}
    assert "library's own code" in flagged[("reference_only", "reward_to_go")]
    assert graded["results"]["reference_only"]["exercises"][0]["score"] == 2.0
    for who in ("patch_checker", "read_source", "exec_solution", "write_gradebook", "daemon"):
        assert "suspicious code" in flagged.get((who, "reward_to_go"), "") or \
               "library's own code" in flagged.get((who, "reward_to_go"), ""), who
    assert flagged[("carol", "reward_to_go_check")] == "edited"
    assert any(r["student"] == "bad_metadata" and r["cell"] == "(metadata)" for r in rows)
    assert not any(r["student"] == "alice" for r in rows)


def test_a_rerun_skips_what_is_graded_and_serial_equals_parallel(graded, tmp_path):
    g = graded
    copy = tmp_path / "serial"
    shutil.copytree(g["course_dir"], copy, symlinks=True)
    t0 = time.perf_counter()
    again = isolated.autograde_isolated(copy, CHAPTER, workers=1, limits=g["limits"])
    assert time.perf_counter() - t0 < 20, "nothing regraded"
    assert {r["student"]: r["exercises"] for r in again} == {s: r["exercises"] for s, r in g["results"].items()}
    some = ["alice", "bob", "carol", "bad_metadata", "not_json", "...", "reference_only"]
    serial = isolated.autograde_isolated(copy, CHAPTER, students=some, workers=1, limits=g["limits"], regrade=True)
    par = {s: g["results"][s] for s in some}
    for r in serial:
        assert r["exercises"] == par[r["student"]]["exercises"], r["student"]
        assert r["integrity"] == par[r["student"]]["integrity"], r["student"]
        assert r["reason"] == par[r["student"]]["reason"]
        assert (copy / "feedback" / r["student"] / CHAPTER / f"{CHAPTER}.html").read_bytes() == \
            (g["course_dir"] / "feedback" / r["student"] / CHAPTER / f"{CHAPTER}.html").read_bytes()
    assert (copy / "integrity.csv").read_bytes() == (g["course_dir"] / "integrity.csv").read_bytes()


def test_the_sandbox_says_what_it_protects():
    p = protections()
    assert p["limits (CPU, memory, processes, file size)"]
    assert p["separate user id (cannot write the course, gradebook or other students)"] == is_root()


def test_the_command_grades_in_isolation_and_resumes(graded, tmp_path, capsys):
    from ppo_lib.course.cli import main

    copy = tmp_path / "cli"
    shutil.copytree(graded["course_dir"], copy, symlinks=True)
    (copy / "grades.csv").unlink()
    assert main(["assignments", "autograde", "--only", "01", "--dir", str(copy), "--workers", "2",
                 "--timeout", "8", "--memory", "1536"]) == 0
    err = capsys.readouterr().err
    assert f"{len(graded['expected'])} already graded (kept), 0 to grade" in err
    assert main(["assignments", "export", "--dir", str(copy)]) == 0
    rows = {r["student_id"]: r for r in _csv(copy / "grades.csv")}
    assert sorted(rows) == sorted(graded["expected"])
    assert all(float(rows[s]["score"]) == sum(e.values()) for s, e in graded["expected"].items())


def test_the_same_user_mode_still_grades_and_ends_every_process(graded, tmp_path):
    """What a grader that is not root gets (forced here): the grades are right and a detached
    process is still ended (it is re-parented to the grader, a child subreaper)."""
    copy = tmp_path / "same-user"
    shutil.copytree(graded["course_dir"], copy, symlinks=True)
    drop = Path(tempfile.mkdtemp(prefix="ppo-same-user-", dir="/tmp"))
    try:
        code = (RTG_SOLUTION + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                f"        time.sleep(2)\n        open({str(drop / 'survived')!r}, 'w').write('x')\n    os._exit(0)\n")
        nb = json.loads((copy / "submitted" / "alice" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
        _cell(nb, "reward_to_go")["source"] = code
        (copy / "submitted" / "zed" / CHAPTER).mkdir(parents=True)
        (copy / "submitted" / "zed" / CHAPTER / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
        limits = Limits(wall_s=60, cpu_s=8, memory_mb=1536, processes=16, separate_user=False)
        res = {r["student"]: r for r in isolated.autograde_isolated(copy, CHAPTER, students=["alice", "bob", "zed"],
                                                                      workers=1, limits=limits, regrade=True)}
        assert [e["score"] for e in res["alice"]["exercises"]] == [2.0, 3.0]
        assert [e["score"] for e in res["bob"]["exercises"]] == [0.0, 0.0]
        assert [e["score"] for e in res["zed"]["exercises"]] == [2.0, 3.0]
        assert any("left" in p["problem"] for p in res["zed"]["integrity"])
        time.sleep(3)
        assert not (drop / "survived").exists()
    finally:
        shutil.rmtree(drop, ignore_errors=True)
