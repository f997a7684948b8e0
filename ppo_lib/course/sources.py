"""Solutions -> chapters: one source of truth.

``solutions/<file>`` holds each chapter with its exercises solved between
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers (nbgrader's syntax, so an
nbgrader export needs no rewriting). ``chapters/<file>`` is made from it by
:func:`strip_solutions`, which puts nbgrader's placeholder in each region.

``chapters/`` is generated, but someone may edit a file there by hand. Sync never
loses such an edit: it remembers the hash of what it last wrote
(``build/sync-stamp.json``), and a chapter file that is neither that nor the new
text is copied to ``build/sync-backups/`` before it is replaced (and the copy is
named in what sync reports).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .manifest import Book, Chapter, ManifestError

BEGIN_MARK = "### BEGIN SOLUTION"
END_MARK = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")


def strip_solutions(text: str, source: str = "<text>") -> str:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region
    (markers included) by nbgrader's placeholder, indented like the marker.

    Raises ``ValueError`` naming the line of an unbalanced or nested marker.
    """
    out: list[str] = []
    open_line = None
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN_MARK:
            if open_line is not None:
                raise ValueError(f"{source}:{lineno}: nested {BEGIN_MARK} (the one at line {open_line} is still open)")
            open_line = lineno
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(f"{indent}{p}\n" for p in PLACEHOLDER)
        elif stripped == END_MARK:
            if open_line is None:
                raise ValueError(f"{source}:{lineno}: {END_MARK} without a {BEGIN_MARK} before it")
            open_line = None
        elif open_line is None:
            out.append(line)
    if open_line is not None:
        raise ValueError(f"{source}:{open_line}: {BEGIN_MARK} is never closed by {END_MARK}")
    return "".join(out)


def chapter_text_from_solution(chapter: Chapter) -> str:
    return strip_solutions(chapter.solution_path.read_text(encoding="utf-8"), str(chapter.solution_path))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp_path(book: Book) -> Path:
    return book.root / "build" / "sync-stamp.json"


def _read_stamp(book: Book) -> dict:
    try:
        data = json.loads(stamp_path(book).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class SyncResult(list):
    """The chapter files that changed (a list of paths, as before), plus the
    backups made of hand-edited files: ``{chapter path: backup path}``."""

    def __init__(self, changed=(), backups=None):
        super().__init__(changed)
        self.backups = dict(backups or {})


def sync_chapters(book: Book, check: bool = False) -> SyncResult:
    """Write ``chapters/<file>`` from ``solutions/<file>``; return the files that
    changed (with ``check=True``, write nothing and only report them).

    A chapter file whose text is not what sync last wrote (per the stamp) was
    edited by hand: it is copied to ``build/sync-backups/`` before being
    replaced, and ``result.backups`` names the copy.
    """
    # validate everything before writing anything
    texts = {}
    for ch in book.chapters:
        if not ch.solution_path.exists():
            raise ManifestError(f"book.yml lists chapter {ch.id}, but {ch.solution_path} does not exist")
        texts[ch.file] = chapter_text_from_solution(ch)
    stamp = _read_stamp(book)
    result = SyncResult()
    for ch in book.chapters:
        text = texts[ch.file]
        current = ch.chapter_path.read_text(encoding="utf-8") if ch.chapter_path.exists() else None
        if current == text:
            continue
        result.append(ch.chapter_path)
        if check:
            continue
        if current is not None and stamp.get(ch.file) != _sha(current):
            backup_dir = book.root / "build" / "sync-backups"
            backup_dir.mkdir(parents=True, exist_ok=True)
            backup = backup_dir / f"{ch.stem}.{time.strftime('%Y%m%d-%H%M%S')}.py"
            n = 1
            while backup.exists():
                backup = backup_dir / f"{ch.stem}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.py"
                n += 1
            backup.write_text(current, encoding="utf-8")
            result.backups[ch.chapter_path] = backup
        ch.chapter_path.parent.mkdir(parents=True, exist_ok=True)
        ch.chapter_path.write_text(text, encoding="utf-8")
    if not check:
        new_stamp = {**stamp, **{ch.file: _sha(texts[ch.file]) for ch in book.chapters}}
        if new_stamp != stamp:
            stamp_path(book).parent.mkdir(parents=True, exist_ok=True)
            stamp_path(book).write_text(json.dumps(new_stamp, indent=1, sort_keys=True) + "\n")
    return result


def unlisted_files(book: Book) -> list[Path]:
    """Chapter or solution text files on disk that book.yml does not list."""
    listed = {ch.file for ch in book.chapters}
    found = []
    for folder in ("chapters", "solutions"):
        for p in sorted((book.root / folder).glob("*.py")):
            if p.name not in listed:
                found.append(p)
    return found
