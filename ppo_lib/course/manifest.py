"""book.yml, the one manifest of the course: chapters in order, with their
title, objectives, CPU budget and (optionally) the learner's time and the
points of each exercise when the chapter is graded as an nbgrader assignment.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# Points of one exercise in an nbgrader assignment, unless book.yml says otherwise
# (top-level `points_per_exercise`, or a chapter's `points`: a number for all its
# exercises, or a mapping from an exercise's grade_id to its points).
DEFAULT_POINTS = 1.0


class ManifestError(ValueError):
    """book.yml is malformed or disagrees with the files on disk."""


def _positive_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


@dataclasses.dataclass(frozen=True)
class Chapter:
    id: str
    file: str
    title: str
    budget_s: float
    objectives: tuple[str, ...]
    root: Path
    # the learner's time for the chapter (reading, exercises), not the CPU budget
    learner_minutes: float | None = None
    # points per exercise: one number for all, or grade_id -> points
    points: float | tuple[tuple[str, float], ...] = DEFAULT_POINTS

    @property
    def stem(self) -> str:
        return Path(self.file).stem

    @property
    def is_appendix(self) -> bool:
        """An appendix (its title starts with "Appendix") is reading matter: it may have no exercise."""
        return self.title.startswith("Appendix")

    @property
    def chapter_path(self) -> Path:
        return self.root / "chapters" / self.file

    @property
    def solution_path(self) -> Path:
        return self.root / "solutions" / self.file

    def points_for(self, grade_id: str, default: float = DEFAULT_POINTS) -> float:
        """Points of the exercise ``grade_id`` in this chapter's assignment."""
        if isinstance(self.points, tuple):
            return dict(self.points).get(grade_id, default)
        return float(self.points)


@dataclasses.dataclass(frozen=True)
class Book:
    title: str
    author: str
    chapters: tuple[Chapter, ...]
    root: Path

    def chapter(self, key: str) -> Chapter:
        for ch in self.chapters:
            if key in (ch.id, ch.stem, ch.file):
                return ch
        known = ", ".join(ch.id for ch in self.chapters)
        raise ManifestError(f"no chapter {key!r} in book.yml (known ids: {known})")

    def select(self, only) -> tuple[Chapter, ...]:
        """The chapters named in ``only`` (ids, stems or files), in book order.

        ``None`` means every chapter; an empty list or an unknown id is an error
        that names the valid ids (nothing is built by mistake).
        """
        if only is None:
            return self.chapters
        only = [str(o) for o in only]
        known = ", ".join(ch.id for ch in self.chapters)
        if not only:
            raise ManifestError(f"--only needs at least one chapter id (valid ids: {known})")
        unknown = [o for o in only if not any(o in (ch.id, ch.stem, ch.file) for ch in self.chapters)]
        if unknown:
            raise ManifestError(f"--only {' '.join(unknown)}: no such chapter in book.yml (valid ids: {known})")
        return tuple(ch for ch in self.chapters if {ch.id, ch.stem, ch.file} & set(only))


def _points(value, where: str):
    if _positive_number(value):
        return float(value)
    if isinstance(value, dict) and value and all(
            isinstance(k, str) and _positive_number(v) for k, v in value.items()):
        return tuple((k, float(v)) for k, v in value.items())
    raise ManifestError(f"{where}: points={value!r}: must be a positive number, or a mapping "
                        f"from an exercise's grade_id to a positive number")


def load_book(root: Path | str = REPO_ROOT) -> Book:
    """Read and validate ``book.yml``; every error names the field and the chapter."""
    root = Path(root)
    path = root / "book.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found; the course manifest must exist") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must be a mapping with 'title' and 'chapters'")
    for key in ("title", "chapters"):
        if key not in raw:
            raise ManifestError(f"{path}: missing top-level field {key!r}")
    if not isinstance(raw["chapters"], list) or not raw["chapters"]:
        raise ManifestError(f"{path}: 'chapters' must be a non-empty list")
    default_points = raw.get("points_per_exercise", DEFAULT_POINTS)
    if not _positive_number(default_points):
        raise ManifestError(f"{path}: points_per_exercise={default_points!r}: must be a positive number")
    chapters, seen_ids, seen_files = [], set(), set()
    for i, entry in enumerate(raw["chapters"]):
        where = f"{path}: chapters[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: must be a mapping")
        for key in ("id", "file", "title", "budget_s", "objectives"):
            if key not in entry:
                raise ManifestError(f"{where}: missing field {key!r}")
        cid, file = str(entry["id"]), str(entry["file"])
        where = f"{path}: chapter {cid}"
        if not re.fullmatch(r"\d\d", cid):
            raise ManifestError(f"{where}: id={cid!r}: must be two digits, e.g. '03'")
        if not file.startswith(cid + "_") or not file.endswith(".py"):
            raise ManifestError(f"{where}: file={file!r}: must look like '{cid}_name.py'")
        if cid in seen_ids or file in seen_files:
            raise ManifestError(f"{where}: duplicate id or file {file!r}")
        budget = entry["budget_s"]
        if not _positive_number(budget):
            raise ManifestError(f"{where}: budget_s={budget!r}: must be a positive number of seconds")
        minutes = entry.get("learner_minutes")
        if minutes is not None and not _positive_number(minutes):
            raise ManifestError(f"{where}: learner_minutes={minutes!r}: must be a positive number of "
                                f"minutes (the learner's time, not the CPU budget budget_s)")
        points = _points(entry.get("points", default_points), where)
        objectives = entry["objectives"]
        if not isinstance(objectives, list) or not objectives or not all(
            isinstance(o, str) and o.strip() for o in objectives
        ):
            raise ManifestError(f"{where}: objectives must be a non-empty list of sentences")
        seen_ids.add(cid)
        seen_files.add(file)
        chapters.append(Chapter(cid, file, str(entry["title"]), float(budget), tuple(objectives), root,
                                None if minutes is None else float(minutes), points))
    ids = [c.id for c in chapters]
    if ids != sorted(ids):
        raise ManifestError(f"{path}: chapters must be listed in order of id, got {ids}")
    return Book(str(raw["title"]), str(raw.get("author", "")), tuple(chapters), root)
