"""From the paths a TA passes to the list of submissions to grade, one per student.

A path is a notebook, a folder of notebooks (one student per notebook, named by
the file), or an nbgrader `submitted/` tree (`<student>/<assignment>/*.ipynb`,
named by the folder). A student folder without a usable notebook still yields a
submission, with the problem stated, so that student gets a result too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


class DiscoveryError(Exception):
    """The paths cannot be turned into a list of submissions (for TAs, English)."""


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path | None
    problem: str | None = None  # set when there is nothing gradable; Spanish, for the student


def student_id(name: str) -> str:
    """A file-system-safe student id."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "student"
    return cleaned[:100]


def discover(paths: list[Path], *, assignment: str, notebook_name: str) -> list[Submission]:
    found: list[Submission] = []
    for path in paths:
        if path.is_file():
            found.append(Submission(student_id(path.stem), path))
        elif path.is_dir():
            found += _from_directory(path, assignment=assignment, notebook_name=notebook_name)
        else:
            raise DiscoveryError(f"{path} does not exist")
    seen: dict[str, Submission] = {}
    for submission in found:
        if submission.student in seen:
            raise DiscoveryError(
                f"two submissions map to student id {submission.student!r}: "
                f"{seen[submission.student].path} and {submission.path}"
            )
        seen[submission.student] = submission
    return sorted(found, key=lambda s: s.student)


def _from_directory(directory: Path, *, assignment: str, notebook_name: str) -> list[Submission]:
    tree = [d for d in sorted(directory.iterdir()) if d.is_dir() and (d / assignment).is_dir()]
    if tree:
        return [_pick(d.name, d / assignment, notebook_name) for d in tree]
    return [Submission(student_id(p.stem), p) for p in sorted(directory.glob("*.ipynb")) if not p.name.startswith(".")]


def _pick(student: str, folder: Path, notebook_name: str) -> Submission:
    """The student's notebook in an nbgrader tree: the released name, else the only one."""
    sid = student_id(student)
    if (folder / notebook_name).is_file():
        return Submission(sid, folder / notebook_name)
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if len(notebooks) == 1:
        return Submission(sid, notebooks[0])
    if not notebooks:
        return Submission(sid, None, problem=f"La entrega no contiene ningún notebook (se esperaba `{notebook_name}`).")
    names = ", ".join(p.name for p in notebooks)
    return Submission(sid, None, problem=(
        f"La entrega contiene varios notebooks ({names}) y ninguno se llama `{notebook_name}`; "
        "no sabemos cuál corregir. Entrega solo el notebook de la tarea."))
