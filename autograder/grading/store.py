"""The output folder: one result file per student, written atomically, and the gradebook CSV.

Only the batch coordinator writes here. It keeps the bytes it wrote and checks
them again at the end of the batch, restoring any file that changed meanwhile.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from .. import __version__
from .budgets import manifest_path

GRADEBOOK = "gradebook.csv"


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def result_path(out_dir: Path, student: str) -> Path:
    return out_dir / f"{student}.json"


def grading_digest(files: list[Path], *, public_only: bool) -> str:
    """What the verdicts depend on besides the submission: the checks, the release, the grader, the scope."""
    digest = hashlib.sha256(f"{__version__}\0{public_only}\0".encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def assignment_digest(assignment, *, public_only: bool) -> str:
    """`grading_digest` of an assignment: its check files, its release notebook and its cells' time limits."""
    budgets = [path for path in [manifest_path(assignment)] if path.is_file()]
    return grading_digest([*assignment.check_files(), assignment.release_notebook, *budgets],
                          public_only=public_only)


def fingerprint(path: Path | None, problem: str | None, *, grading: str) -> str:
    """A submission's content (or its stated problem) together with the grading digest."""
    digest = hashlib.sha256(grading.encode() + b"\0")
    try:
        digest.update(path.read_bytes() if path else (problem or "").encode())
    except OSError as exc:
        digest.update(f"unreadable: {exc.strerror}".encode())
    return digest.hexdigest()


#: A temporary file older than this was left by a write cut short (a write takes milliseconds); a younger one
#: may belong to another run writing into the same folder right now.
STALE_TMP_SECONDS = 60.0
FINISHED = ("graded", "invalid")  # a grader error is graded again by the next run


def stored_result(out_dir: Path, student: str, fingerprint: str, *,
                  statuses: tuple[str, ...] = FINISHED) -> dict | None:
    """The result file of `student` in `out_dir` if it graded this very fingerprint with one of `statuses`."""
    try:
        data = json.loads(result_path(out_dir, student).read_text(encoding="utf-8"))
        extra = data["extra_data"]
        if (extra["student"] == student and extra.get("fingerprint") == fingerprint
                and extra["status"] in statuses and isinstance(extra["grade_cells"], dict)
                and all(isinstance(data[k], (int, float)) for k in ("score", "max_score"))):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


class ResultStore:
    """Writes results and remembers them, to detect and undo tampering."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.written: dict[str, str] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for leftover in out_dir.glob(".*.tmp"):  # a write cut short by a kill: never a result
            try:
                if now - leftover.stat().st_mtime > STALE_TMP_SECONDS:
                    leftover.unlink(missing_ok=True)
            except OSError:
                pass

    def finished(self, student: str, fingerprint: str) -> dict | None:
        """The stored result of `student` if it graded this very fingerprint (not a grader error)."""
        return stored_result(self.out_dir, student, fingerprint)

    def write(self, student: str, text: str) -> Path:
        path = result_path(self.out_dir, student)
        atomic_write(path, text)
        self.written[student] = text
        return path

    def verify(self) -> list[str]:
        """Rewrite every result file that no longer holds what was written; returns their students."""
        restored = []
        for student, text in self.written.items():
            path = result_path(self.out_dir, student)
            try:
                current = path.read_text(encoding="utf-8")
            except OSError:
                current = None
            if current != text:
                atomic_write(path, text)
                restored.append(student)
        return restored

    def write_gradebook(self, grade_ids: list[str]) -> Path:
        """gradebook.csv from every result file in the folder: one row per student."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["student", *grade_ids, "total", "max_score", "status"])
        for path in sorted(self.out_dir.glob("*.json")):
            row = _gradebook_row(path, grade_ids)
            if row is not None:
                writer.writerow(row)
        path = self.out_dir / GRADEBOOK
        atomic_write(path, buffer.getvalue())
        return path


def _gradebook_row(path: Path, grade_ids: list[str]) -> list[str] | None:
    """A gradebook row from one result file, or None if the file is not a result of this student."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        extra = data["extra_data"]
        if extra["student"] != path.stem:
            return None
        cells = extra["grade_cells"]
        return [path.stem, *(f"{float(cells[g]['score']):g}" if g in cells else "0" for g in grade_ids),
                f"{float(data['score']):g}", f"{float(data['max_score']):g}", str(extra["status"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def crash_result(*, student: str, assignment: str, source: str, grade_cells: dict[str, float],
                 detail: str) -> str:
    """A result for a submission whose grading process died (not the student's fault)."""
    max_score = sum(grade_cells.values())
    data = {
        "score": 0.0,
        "max_score": max_score,
        "output": ("No se pudo corregir tu entrega por un error del corrector (no es culpa de tu código). "
                   "Los docentes volverán a corregirla."),
        "visibility": "visible",
        "tests": [],
        "extra_data": {
            "student": student, "assignment": assignment, "source": source, "status": "error",
            "grade_cells": {g: {"score": 0.0, "max_score": m} for g, m in grade_cells.items()},
            "grader_version": __version__, "ta_detail": detail,
        },
    }
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"
