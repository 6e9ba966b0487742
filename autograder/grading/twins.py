"""Submissions that would run the very same code are graded once.

A grader sees only a notebook's code cells (their position, Python source and first
line): two submissions with the same cells get the same verdict from the same checks
and seed, whatever their outputs, markdown or file bytes say. In a large class many
students hand in the untouched release or the same file twice, so the batch grades
one of each group (the representative) and gives every twin a copy of that result
under its own name and fingerprint. Copies between students still show up in the
similarity report; this only saves grading time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .discover import Submission
from .intake import AutogradedCells, code_cells, read_notebook


def code_digest(path: Path, *, tests: AutogradedCells, max_bytes: int, grading: str) -> str | None:
    """The digest of what grading `path` would run (with the checks' digest `grading`); None if it is unreadable."""
    try:
        cells = code_cells(read_notebook(path, max_bytes=max_bytes), tests=tests)
    except Exception:  # noqa: BLE001 - any notebook the digest cannot read is graded on its own, which says why
        return None
    payload = json.dumps([grading, [[c.index, c.source, c.preview] for c in cells]], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class TwinGroups:
    to_grade: list[Submission]  # one per distinct code, in the order given
    twins: dict[str, list[Submission]] = field(default_factory=dict)  # by the student graded for them


def group_twins(submissions: list[Submission], *, tests: AutogradedCells, max_bytes: int,
                grading: str) -> TwinGroups:
    """The submissions to grade (one per distinct code, first come first graded) and each one's twins."""
    first: dict[str, Submission] = {}
    groups = TwinGroups([])
    for submission in submissions:
        digest = None
        if submission.path is not None and not submission.problem:
            digest = code_digest(submission.path, tests=tests, max_bytes=max_bytes, grading=grading)
        if digest is None or digest not in first:
            groups.to_grade.append(submission)
            if digest is not None:
                first[digest] = submission
            continue
        groups.twins.setdefault(first[digest].student, []).append(submission)
    return groups


def twin_result(text: str, *, student: str, source: str, fingerprint: str, graded_as: str) -> str:
    """The representative's result file `text` as the result of `student` (whose file has the same code)."""
    data = json.loads(text)
    extra = data["extra_data"]
    extra.update(student=student, source=source, fingerprint=fingerprint, same_code_as=graded_as)
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"
