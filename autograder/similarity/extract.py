"""The graded code of a notebook, per part, and what the release already gives.

The parts are the release's nbgrader solution cells (`metadata.nbgrader.solution`),
named by their `grade_id`, plus an `other` bucket. A student's cell goes to the part
whose `grade_id` it keeps (Jupyter keeps cell metadata); a cell without one goes to
the part whose functions or classes it defines (a student who pasted the code into a
fresh notebook), else to `other`. The autograder test cells and cells left exactly
as the release gives them are skipped. Reading is
defensive: anything wrong with the file is a reason (English, for the instructor),
never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .normalize import defined_functions, module_names

OTHER = "other"
MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_CELL_CHARS = 200_000


class Unreadable(Exception):
    """A notebook whose code cannot be read; the message says why (English)."""


@dataclass(frozen=True)
class Cell:
    """A code cell as the student wrote it: its position in the notebook (1-based) and source."""

    position: int
    source: str


@dataclass(frozen=True)
class Layout:
    """What the release says about the parts: their order, their functions, the names and code it gives."""

    parts: tuple[str, ...]  # solution cells' grade_ids in notebook order, then OTHER
    owners: dict[str, str]  # a function or class the release defines in a solution cell -> its part
    given: frozenset[str]  # module-level names the release binds (kept as written when normalising)
    tests: frozenset[str]  # normalised sources of the autograder test cells
    unchanged: frozenset[str]  # normalised sources of the release's other code cells (a cell left as given)
    code: dict[str, list[Cell]] = field(default_factory=dict)  # the release's own code, per part


def load(path: Path) -> dict:
    """A notebook's JSON, or Unreadable with the reason."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise Unreadable(f"{size / 2**20:.0f} MiB notebook (limit {MAX_NOTEBOOK_BYTES // 2**20} MiB)")
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise Unreadable(f"cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise Unreadable("JSON, but not a notebook")
    cells = data.get("cells")
    if cells is None and isinstance(data.get("worksheets"), list):  # nbformat 3
        cells = [c for sheet in data["worksheets"] if isinstance(sheet, dict)
                 for c in sheet.get("cells", []) if isinstance(c, dict)]
        for cell in cells:
            cell.setdefault("source", cell.get("input", ""))
    if not isinstance(cells, list):
        raise Unreadable("JSON, but not a notebook (no list of cells)")
    return {"cells": [c for c in cells if isinstance(c, dict)]}


def source_of(cell: dict) -> str | None:
    """The cell's source text, or None when the cell is malformed."""
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        source = "".join(source)
    if not isinstance(source, str):
        return None
    return source[:MAX_CELL_CHARS]


def nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _is_test(cell: dict) -> bool:
    meta = nbgrader(cell)
    return meta.get("grade") is True and meta.get("solution") is not True


def _flat(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def layout(release: Path) -> Layout:
    """The parts of the assignment from its release notebook."""
    try:
        notebook = load(release)
    except Unreadable as exc:
        raise Unreadable(f"release notebook {release}: {exc}") from None
    parts: list[str] = []
    owners: dict[str, str] = {}
    given: set[str] = set()
    tests: set[str] = set()
    unchanged: set[str] = set()
    code: dict[str, list[Cell]] = {}
    for position, cell in enumerate(notebook["cells"], start=1):
        source = source_of(cell)
        if cell.get("cell_type") != "code" or source is None:
            continue
        if _is_test(cell):
            tests.add(_flat(source))
            continue
        given |= module_names(source)
        unchanged.add(_flat(source))
        meta = nbgrader(cell)
        part = meta.get("grade_id") if meta.get("solution") is True else None
        if isinstance(part, str) and part and part != OTHER:
            if part not in parts:
                parts.append(part)
            for name in defined_functions(source):
                owners.setdefault(name, part)
        else:
            part = OTHER
        code.setdefault(part, []).append(Cell(position, source))
    return Layout(tuple(parts) + (OTHER,), owners, frozenset(given), frozenset(tests), frozenset(unchanged), code)


def student_parts(notebook: dict, plan: Layout) -> dict[str, list[Cell]]:
    """The student's code cells per part (parts without code are left out)."""
    found: dict[str, list[Cell]] = {}
    for position, cell in enumerate(notebook["cells"], start=1):
        if cell.get("cell_type") != "code" or _is_test(cell):
            continue
        source = source_of(cell)
        if source is None or not source.strip():
            continue
        flat = _flat(source)
        if flat in plan.tests or flat in plan.unchanged:  # nothing of the student's own
            continue
        grade_id = nbgrader(cell).get("grade_id")
        if isinstance(grade_id, str) and grade_id in plan.parts:
            part = grade_id
        else:
            owners = {plan.owners[name] for name in defined_functions(source) if name in plan.owners}
            part = owners.pop() if len(owners) == 1 else OTHER
        found.setdefault(part, []).append(Cell(position, source))
    return found
