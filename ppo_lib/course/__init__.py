"""The course machinery, kept apart from the RL library: the book.yml manifest,
chapters made from solutions, notebooks, JupyterLab, the HTML book, nbgrader
assignments, the doctor, and the commands behind ``course.py``.

One module per concern, imported in this order (no module imports one below it)::

    manifest   book.yml: chapters, budgets, learner_minutes, points
    sources    solutions/ -> chapters/ (sync, hand-edit backups)
    notebooks  .ipynb from the text files: workspace/, the test notebooks
    lab        JupyterLab settings and the server of `course.py open`
    book       the static HTML book (jupyter-book 1.x), offline assets
    grading    nbgrader: the course directory, release, collect, autograde, feedback, CSV
    sandbox    one submission's code in a sandbox (limits, own user, namespaces), its outputs as data
    isolated   grading each (student, chapter) in the sandbox, in parallel, resumable; merged outputs
    diagnose   the doctor: what breaks RL courses most often, each problem with its fix
    cli        `python -m ppo_lib.course COMMAND`

The RL library (``ppo_lib`` outside this package) imports nothing from here; a test
walks the import graph to keep it so. The names below are re-exported so that
``from ppo_lib.course import REPO_ROOT, load_book, text_to_notebook`` and the like
keep working.
"""

from .manifest import DEFAULT_POINTS, REPO_ROOT, Book, Chapter, ManifestError, load_book
from .sources import (BEGIN_MARK, END_MARK, PLACEHOLDER, SyncResult, chapter_text_from_solution,
                      strip_solutions, sync_chapters, unlisted_files)
from .notebooks import KERNELSPEC, build_test_notebooks, make_workspace, text_to_notebook
from .lab import LAB_OVERRIDES, check_ip, check_port, install_lab_settings
from .diagnose import doctor

from ppo_lib.config import STRICT_ENV


def main(argv=None) -> int:
    from .cli import main as _main

    return _main(argv)


__all__ = [
    "REPO_ROOT", "DEFAULT_POINTS", "Book", "Chapter", "ManifestError", "load_book",
    "BEGIN_MARK", "END_MARK", "PLACEHOLDER", "SyncResult", "strip_solutions", "chapter_text_from_solution",
    "sync_chapters", "unlisted_files", "KERNELSPEC", "text_to_notebook", "build_test_notebooks",
    "make_workspace", "LAB_OVERRIDES", "install_lab_settings", "check_ip", "check_port", "STRICT_ENV",
    "doctor", "main",
]
