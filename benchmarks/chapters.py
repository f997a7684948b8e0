"""Runtime and peak memory of every chapter, executed as a learner gets it.

    .venv/bin/python benchmarks/chapters.py            # all chapters of book.yml
    .venv/bin/python benchmarks/chapters.py --only 05 06

Each chapter (exercises unfilled) runs top to bottom in a fresh kernel; the
figures are its wall time and the kernel's peak resident set (VmHWM from
/proc, Linux only). Prints a table against the book.yml budgets and writes
results/chapters.json with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header, write  # noqa: E402
from ppo_lib.course import load_book, text_to_notebook  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "chapters.json"


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_chapter(ch, workdir: Path) -> dict:
    path = text_to_notebook(ch.chapter_path, workdir / f"{ch.stem}.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        peak = peak_rss_mb(pid)
    nbformat.write(nb, path)  # executed, with its outputs
    return {"id": ch.id, "title": ch.title, "seconds": round(time.perf_counter() - t0, 1),
            "budget_s": ch.budget_s, "peak_rss_mb": round(peak, 0) if peak else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--keep", default=None, help="a folder to keep the executed notebooks in")
    args = p.parse_args()
    book = load_book()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ch in book.chapters:
            if args.only and ch.id not in args.only:
                continue
            # a folder of its own per chapter: nothing cached by one (chapters 8-9 cache their
            # models in .ppo_cache/ next to the notebook) makes another look faster than it is
            workdir = Path(args.keep or tmp) / ch.stem
            workdir.mkdir(parents=True, exist_ok=True)
            row = run_chapter(ch, workdir)
            rows.append(row)
            print(f"{row['id']} {row['title']:42s} {row['seconds']:6.1f} s (budget {row['budget_s']:g} s)   "
                  f"peak kernel memory {row['peak_rss_mb']} MB", flush=True)
    if args.only and OUT.exists():  # keep the other chapters' rows; replace these
        import json

        old = {r["id"]: r for r in json.loads(OUT.read_text())["chapters"]}
        old.update({r["id"]: dict(r, measured=header()["date"]) for r in rows})
        rows = [old[k] for k in sorted(old)]
    total = sum(r["seconds"] for r in rows)
    print(f"all chapters: {total:.0f} s; largest kernel {max((r['peak_rss_mb'] or 0) for r in rows):.0f} MB")
    record = {**header(), "chapters": rows, "total_seconds": round(total, 1)}
    write(record, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
