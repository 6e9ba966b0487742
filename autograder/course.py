"""The course directory: where sources, releases, solutions and checks of each assignment live.

The course root is an nbgrader course directory (it holds `nbgrader_config.py`).
Each assignment `<id>` has one notebook in `source/<id>/`, its checks in
`autograder/checks/<id>/test_*.py`, and after `autograder build` a student notebook
in `release/<id>/` and a solution notebook in `solutions/<id>/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class CourseError(Exception):
    """A problem with the course layout, for instructors and TAs (English)."""


@dataclass(frozen=True)
class GradeCell:
    """An nbgrader autograder test cell: what the student sees as one graded part."""

    grade_id: str
    points: float
    source: str


@dataclass(frozen=True)
class Course:
    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> "Course":
        """The course whose root holds nbgrader_config.py, from `start` (default: cwd) upwards."""
        here = (start or Path.cwd()).resolve()
        for directory in (here, *here.parents):
            if (directory / "nbgrader_config.py").is_file():
                return cls(directory)
        raise CourseError(f"no nbgrader_config.py in {here} or its parents: not a course directory")

    def source_dir(self, assignment: str) -> Path:
        return self.root / "source" / assignment

    def release_dir(self, assignment: str) -> Path:
        return self.root / "release" / assignment

    def solutions_dir(self, assignment: str) -> Path:
        return self.root / "solutions" / assignment

    def checks_dir(self, assignment: str) -> Path:
        return self.root / "autograder" / "checks" / assignment

    def assignments(self) -> list[str]:
        return sorted(p.name for p in (self.root / "source").iterdir() if p.is_dir() and not p.name.startswith("."))

    def assignment(self, assignment: str) -> "Assignment":
        if not self.source_dir(assignment).is_dir():
            known = ", ".join(self.assignments()) or "none"
            raise CourseError(f"unknown assignment {assignment!r} (known: {known})")
        return Assignment(self, assignment)


@dataclass(frozen=True)
class Assignment:
    course: Course
    id: str

    @property
    def source_notebook(self) -> Path:
        return _single_notebook(self.course.source_dir(self.id))

    @property
    def release_notebook(self) -> Path:
        directory = self.course.release_dir(self.id)
        if not directory.is_dir():
            raise CourseError(f"release/{self.id} does not exist: run `autograder build {self.id}` first")
        return _single_notebook(directory)

    @property
    def notebook_name(self) -> str:
        return self.source_notebook.name

    @property
    def checks_dir(self) -> Path:
        return self.course.checks_dir(self.id)

    def check_files(self) -> list[Path]:
        files = sorted(self.checks_dir.glob("test_*.py"))
        if not files:
            raise CourseError(f"no check files (test_*.py) in {self.checks_dir}")
        return files

    def grade_cells(self, notebook: Path | None = None) -> list[GradeCell]:
        """The autograder test cells of a notebook (default: the source), in order."""
        data = json.loads((notebook or self.source_notebook).read_text(encoding="utf-8"))
        cells = []
        for cell in data["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                cells.append(GradeCell(meta["grade_id"], float(meta.get("points", 0)), source))
        return cells


def _single_notebook(directory: Path) -> Path:
    notebooks = sorted(p for p in directory.glob("*.ipynb") if not p.name.startswith("."))
    if len(notebooks) != 1:
        raise CourseError(f"{directory} must hold exactly one notebook, found {len(notebooks)}")
    return notebooks[0]
