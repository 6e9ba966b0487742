"""Result files -> a summary of the class: per student, per graded part, per check.

Reads every `<student>.json` of a batch's output folder that is a result (Gradescope
schema plus our `extra_data`, with `extra_data.student` equal to the file name) and
skips anything else (gradebook.csv, other JSON). Numbers that are missing or not finite
count as unknown, never as a crash: a folder of broken submissions, or of one student,
still summarises.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

TOP_MESSAGES = 3
TIMEOUT_MARKERS = ("excedió el tiempo límite", "no terminó a tiempo", "Se agotó el tiempo total")
SIMILARITY_PAGE = "similarity.html"


@dataclass
class StudentRow:
    """One submission, as the report's student table shows it."""

    student: str
    score: float | None
    max_score: float | None
    status: str  # graded | invalid | error | ...
    seconds: float | None
    result_href: str  # the result file, relative to the report
    feedback_href: str | None = None
    grade_cells: dict[str, float | None] = field(default_factory=dict)
    cell_errors: int = 0
    cell_timeouts: int = 0
    cell_crashes: int = 0
    check_timeouts: int = 0
    restarts: int = 0
    missing_layers: list[str] = field(default_factory=list)
    sandbox_mode: str = ""
    cuda_skipped: int = 0  # checks whose cuda case was skipped
    message: str = ""  # why a submission was not graded (invalid / error), as the student was told
    detail: str = ""  # the grader's traceback or note for staff (ta_detail)

    @property
    def fraction(self) -> float | None:
        if self.score is None or not self.max_score:
            return None
        return self.score / self.max_score

    @property
    def timeouts(self) -> int:
        return self.cell_timeouts + self.check_timeouts


@dataclass
class PartSummary:
    """One graded part (an nbgrader grade cell) over the class."""

    grade_id: str
    max_score: float
    scores: list[float]  # one per submission that has this part and a known score

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def mean_fraction(self) -> float | None:
        mean = self.mean
        return None if mean is None or not self.max_score else mean / self.max_score

    @property
    def full_marks(self) -> int:
        return sum(1 for s in self.scores if self.max_score > 0 and s >= self.max_score - 1e-9)

    @property
    def full_marks_share(self) -> float | None:
        return self.full_marks / len(self.scores) if self.scores and self.max_score > 0 else None


@dataclass
class CheckSummary:
    """One check (or by-hand rule) over the class: how often it failed and with which messages."""

    check: str
    name: str
    grade_id: str
    hidden: bool
    rule: bool
    points: float
    runs: int = 0
    failures: int = 0
    messages: Counter = field(default_factory=Counter)

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.runs if self.runs else None

    def common_messages(self, n: int = TOP_MESSAGES) -> list[tuple[str, int]]:
        return self.messages.most_common(n)


@dataclass
class CellError:
    student: str
    index: int | None
    status: str
    text: str  # "Type: message"
    preview: str = ""


@dataclass
class ClassSummary:
    assignment: str
    out_dir: Path
    students: list[StudentRow]
    parts: list[PartSummary]
    checks: list[CheckSummary]
    cell_errors: list[CellError]
    skipped_files: list[str]
    similarity_href: str | None = None

    @property
    def max_score(self) -> float | None:
        """The most common maximum score (the same for every submission of an assignment)."""
        values = [s.max_score for s in self.students if s.max_score is not None]
        return Counter(values).most_common(1)[0][0] if values else None

    @property
    def scores(self) -> list[float]:
        return [s.score for s in self.students if s.score is not None]

    @property
    def seconds(self) -> list[float]:
        return [s.seconds for s in self.students if s.seconds is not None]

    def count(self, status: str) -> int:
        return sum(1 for s in self.students if s.status == status)


def collect(*, out_dir: Path, assignment: str, course_root: Path | None = None) -> ClassSummary:
    """The class summary of the result files in `out_dir` (links relative to `out_dir`)."""
    notebook_stem = _notebook_stem(course_root, assignment)
    students, parts, checks, cell_errors, skipped = [], {}, {}, [], []
    for path in sorted(out_dir.glob("*.json")):
        data = _load_result(path)
        if data is None:
            skipped.append(path.name)
            continue
        row = _student_row(path, data)
        row.feedback_href = _feedback_href(out_dir, course_root, row.student, assignment, notebook_stem)
        students.append(row)
        _add_parts(parts, data)
        _add_checks(checks, data)
        cell_errors += _cell_errors(row.student, data)
    order = {grade_id: i for i, grade_id in enumerate(parts)}  # checks grouped by part, parts in notebook order
    ordered = sorted(checks.values(), key=lambda c: order.get(c.grade_id, len(order)))
    similarity = out_dir / SIMILARITY_PAGE
    return ClassSummary(assignment, out_dir, students, list(parts.values()), ordered, cell_errors, skipped,
                        SIMILARITY_PAGE if similarity.is_file() else None)


def _load_result(path: Path) -> dict | None:
    """The result in `path`, or None if the file is not a result of the student it is named after."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("extra_data"), dict):
        return None
    if data["extra_data"].get("student") != path.stem or "score" not in data:
        return None
    return data


def _number(value) -> float | None:
    """A finite number, or None (missing, NaN, infinite, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _student_row(path: Path, data: dict) -> StudentRow:
    extra = data["extra_data"]
    isolation = _dict(extra.get("isolation"))
    cells = [c for c in _list(extra.get("cells")) if isinstance(c, dict)]
    tests = [t for t in _list(data.get("tests")) if isinstance(t, dict)]
    status = str(extra.get("status", "unknown"))
    row = StudentRow(
        student=path.stem, score=_number(data.get("score")), max_score=_number(data.get("max_score")),
        status=status, seconds=_number(data.get("execution_time")), result_href=quote(path.name),
        grade_cells={g: _number(_dict(c).get("score")) for g, c in _dict(extra.get("grade_cells")).items()},
        cell_errors=sum(1 for c in cells if c.get("status") == "error"),
        cell_timeouts=sum(1 for c in cells if c.get("status") == "timeout"),
        cell_crashes=sum(1 for c in cells if c.get("status") == "crashed"),
        restarts=int(_number(extra.get("worker_restarts")) or 0),
        missing_layers=[str(m) for m in _list(isolation.get("missing"))],
        sandbox_mode=str(isolation.get("mode", "")),
    )
    for test in tests:
        cases = [c for c in _list(_dict(test.get("extra_data")).get("cases")) if isinstance(c, dict)]
        if any(c.get("device") == "cuda" and c.get("outcome") == "skipped" for c in cases):
            row.cuda_skipped += 1
        row.check_timeouts += sum(1 for c in cases if c.get("outcome") == "failed"
                                  and any(m in str(c.get("ta_detail", "")) for m in TIMEOUT_MARKERS))
    if status != "graded":
        row.message = _first_lines(str(data.get("output") or ""))
        row.detail = str(extra.get("ta_detail") or "").strip()
    return row


def _first_lines(text: str, n: int = 3) -> str:
    """The first lines of a result's feedback text, without its score line."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("**Puntaje")]
    return "\n".join(lines[:n])


def _add_parts(parts: dict[str, PartSummary], data: dict) -> None:
    for grade_id, cell in _dict(data["extra_data"].get("grade_cells")).items():
        cell = _dict(cell)
        part = parts.get(grade_id)
        if part is None:
            part = parts[grade_id] = PartSummary(grade_id, _number(cell.get("max_score")) or 0.0, [])
        score = _number(cell.get("score"))
        if score is not None:
            part.scores.append(score)


def _add_checks(checks: dict[str, CheckSummary], data: dict) -> None:
    for test in _list(data.get("tests")):
        if not isinstance(test, dict):
            continue
        extra = _dict(test.get("extra_data"))
        tags = _list(test.get("tags"))
        check_id = str(extra.get("check") or test.get("name") or "?")
        summary = checks.get(check_id)
        if summary is None:
            summary = checks[check_id] = CheckSummary(
                check=check_id, name=str(test.get("name", check_id)),
                grade_id=str(extra.get("grade_id") or (tags[0] if tags else "")),
                hidden=bool(extra.get("hidden")), rule="rule" in extra or "by_hand" in tags,
                points=_number(test.get("max_score")) or 0.0)
        summary.runs += 1
        if test.get("status") != "passed":
            summary.failures += 1
            summary.messages[_failure_message(test, extra)] += 1


def _failure_message(test: dict, extra: dict) -> str:
    """What a failed check told the student, reduced to one line so that the same failure groups together.

    That is the first failed device case's message (hidden checks included: this page is
    for staff), or the entry's first line (a voided part, a rule, a check that did not
    run). Where the check itself crashed in the grader, the exception's last line is added.
    """
    lines = [line.strip() for line in str(test.get("output") or "").splitlines() if line.strip()]
    failed = [line.split("✘:", 1)[1].strip() for line in lines if "✘:" in line]
    message = failed[0] if failed else next(
        (line for line in lines if not line.startswith("- ") or "✘" in line), lines[0] if lines else "(no message)")
    for case in _list(extra.get("cases")):
        detail = str(_dict(case).get("ta_detail") or "")
        if _dict(case).get("outcome") == "failed" and detail.startswith("Traceback"):
            last = [line for line in detail.splitlines() if line.strip()][-1].strip()
            return f"{message} [grader: {last}]"
    return message


def _cell_errors(student: str, data: dict) -> list[CellError]:
    errors = []
    for cell in _list(data["extra_data"].get("cells")):
        if not isinstance(cell, dict) or cell.get("status") in ("ok", None):
            continue
        error = _dict(cell.get("error"))
        kind = str(error.get("type") or cell.get("status"))
        message = str(error.get("message") or "").strip()
        index = cell.get("index")
        errors.append(CellError(student, index if isinstance(index, int) else None, str(cell.get("status")),
                                f"{kind}: {message}" if message else kind, str(cell.get("preview") or "")))
    return errors


def _notebook_stem(course_root: Path | None, assignment: str) -> str | None:
    """The assignment notebook's name without `.ipynb`, or None if the course cannot tell."""
    if course_root is None:
        return None
    from ..course import Course, CourseError

    try:
        return Path(Course(Path(course_root)).assignment(assignment).notebook_name).stem
    except (CourseError, OSError):
        return None


def _feedback_href(out_dir: Path, course_root: Path | None, student: str, assignment: str,
                   notebook_stem: str | None) -> str | None:
    """The student's feedback page, relative to the report, if it exists.

    Pages follow nbgrader's layout `feedback/<student>/<assignment>/<notebook>.html`, under
    the results folder (pages written straight from result files) or under the course
    root (nbgrader's own feedback directory); the first found wins.
    """
    roots = [Path(out_dir)] + ([Path(course_root)] if course_root is not None else [])
    for root in roots:
        folder = root / "feedback" / student / assignment
        if notebook_stem is not None:
            found = folder / f"{notebook_stem}.html"
            found = found if found.is_file() else None
        else:
            pages = sorted(folder.glob("*.html")) if folder.is_dir() else []
            found = pages[0] if pages else None
        if found is not None:
            relative = os.path.relpath(found.resolve(), Path(out_dir).resolve())
            return "/".join(quote(part) for part in Path(relative).parts)
    return None
