"""Each demonstration cell's time limit, from what the solution's copy of that cell takes.

Most of a notebook's code cells are the course's own demonstrations, which every
student receives unchanged. One of them hung by a student's function (a loop that
never ends) used to cost the whole cell limit (`Limits.cell_seconds`, 30 s) while
the solution runs it in a fraction of a second. `autograder calibrate ASSIGNMENT
--cells` grades the solution notebook a few times and records, for each code cell
that is the same in `release/` and `solutions/`, the slowest time it took:
`autograder/checks/<id>/cell_seconds.json`. When a submission's cell has exactly
the source of one of those, it gets `CELL_BUDGET_FACTOR` times that time, at least
`CELL_BUDGET_FLOOR` seconds and at most the cell limit; any other cell (the student's own code,
a demonstration the student edited) gets the cell limit.

The factor (10) keeps the hung-function rule sound: a function on the stack of a
cell stopped at its limit gets `remote.SECONDS_AFTER_TIMEOUT` per later call, which
assumes correct code never reaches a limit; only code far slower than the solution
on the same demonstration is stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..course import Assignment
from .intake import AutogradedCells, code_cells, read_notebook
from .options import CELL_BUDGET_FACTOR, CELL_BUDGET_FLOOR
from .session import Cell

MANIFEST = "cell_seconds.json"


def cell_key(source: str) -> str:
    """The key of a cell's (Python) source in the manifest."""
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:24]  # a lone surrogate is code too


@dataclass(frozen=True)
class CellBudgets:
    """The solution's slowest time for each shared cell, by `cell_key`."""

    seconds: dict[str, float] = field(default_factory=dict)

    def limit(self, source: str, *, cell_seconds: float, scale: float = 1.0) -> float | None:
        """The cell's own limit, or None when it has none (it then gets `cell_seconds`). `scale` multiplies the
        solution's time, as `--timing-scale` does every timing threshold on a slower machine."""
        measured = self.seconds.get(cell_key(source))
        if measured is None:
            return None
        return min(cell_seconds, max(CELL_BUDGET_FLOOR, CELL_BUDGET_FACTOR * measured * scale))


def manifest_path(assignment: Assignment) -> Path:
    return assignment.checks_dir / MANIFEST


def load_budgets(assignment: Assignment) -> CellBudgets:
    """The assignment's manifest, or no budgets when it has none (every cell then gets the cell limit)."""
    path = manifest_path(assignment)
    if not path.is_file():
        return CellBudgets()
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return CellBudgets({key: float(entry["seconds"]) for key, entry in cells.items()})


def shared_cells(assignment: Assignment) -> list[Cell]:
    """The code cells students receive unchanged: in the release and, with the same source, in the solutions
    (autograder test cells left out, as grading leaves them out)."""
    release = read_notebook(assignment.release_notebook, max_bytes=2**30)
    solution = read_notebook(assignment.course.solutions_dir(assignment.id) / assignment.notebook_name,
                             max_bytes=2**30)
    tests = AutogradedCells.from_notebook(release)
    solved = {cell.source for cell in code_cells(solution, tests=tests)}
    return [cell for cell in code_cells(release, tests=tests) if cell.source in solved]


def write_budgets(assignment: Assignment, *, cells: list[Cell], times: dict[int, list[float]]) -> Path:
    """The manifest from the solution's cells and their times over several runs ({cell index: seconds of each
    run}), keeping the shared cells only; each time is the slowest run's (of every copy of the same source),
    rounded up to the hundredth."""
    shared = {cell.source for cell in shared_cells(assignment)}
    entries: dict[str, dict] = {}
    for cell in cells:
        runs = times.get(cell.index)
        if runs and cell.source in shared:
            seconds = math.ceil(max(runs) * 100) / 100
            known = entries.get(cell_key(cell.source))
            if known is None or known["seconds"] < seconds:
                entries[cell_key(cell.source)] = {"seconds": seconds, "cell": cell.index, "preview": cell.preview}
    path = manifest_path(assignment)
    document = {"about": "The solution's slowest time per shared cell, written by `autograder calibrate "
                         f"{assignment.id} --cells`; see autograder/grading/budgets.py.", "cells": entries}
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
