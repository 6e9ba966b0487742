"""`autograder calibrate`: how far a notebook's speed ratios sit from each timing threshold.

Grades one notebook `runs` times through the normal pipeline (same isolation, same
timing code) and reports, per timing check, the distribution of the measured ratio
next to its `max_ratio`. Run it on the solution to see the margin a good solution
keeps, and with `--notebook` on a slow variant to see the margin on the other side.
It also reports each code cell's slowest time; with `--cells` these become the
demonstration cells' own limits (budgets.py).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..course import Course
from .batch import grade_batch
from .discover import Submission
from .intake import AutogradedCells, code_cells, read_notebook
from .session import Cell

CELLS_SHOWN = 12


@dataclass
class TimingStats:
    check: str
    device: str
    max_ratio: float
    ratios: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.ratios)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class CalibrationReport:
    notebook: Path
    runs: int
    timings: list[TimingStats]
    cell_seconds: dict[int, list[float]]  # cell index -> its time in each run
    cells: list[Cell]  # the notebook's code cells, as graded


def calibrate(*, course: Course, assignment: str, notebook: Path, runs: int, options: dict) -> CalibrationReport:
    with tempfile.TemporaryDirectory(prefix="autograder-calibrate-") as tmp:
        submissions = []
        original = json.loads(notebook.read_text(encoding="utf-8"))
        for i in range(runs):
            copy = Path(tmp) / f"run{i:03d}.ipynb"
            copy.write_text(json.dumps(numbered(original, i)), encoding="utf-8")
            submissions.append(Submission(copy.stem, copy))
        report = grade_batch(course=course, assignment=assignment, submissions=submissions,
                             out_dir=Path(tmp) / "out", workers=1, options=options)
    stats: dict[tuple[str, str], TimingStats] = {}
    cell_seconds: dict[int, list[float]] = {}
    for result in report.results.values():
        for cell in result["extra_data"]["cells"]:
            cell_seconds.setdefault(cell["index"], []).append(cell["seconds"])
        for test in result["tests"]:
            for case in test["extra_data"]["cases"]:
                props = case["properties"]
                if "ratio" in props:
                    key = (test["extra_data"]["check"], case["device"])
                    entry = stats.setdefault(key, TimingStats(key[0], key[1], props["max_ratio"], []))
                    entry.ratios.append(props["ratio"])
    target = course.assignment(assignment)
    tests = AutogradedCells.from_notebook(read_notebook(target.release_notebook, max_bytes=2**30))
    cells = code_cells(read_notebook(notebook, max_bytes=2**30), tests=tests)
    return CalibrationReport(notebook, runs, list(stats.values()), cell_seconds, cells)


def numbered(notebook: dict, run: int) -> dict:
    """The notebook with a last cell `# run N`: each copy has its own code, so each is graded (identical copies
    would be graded once, as twins: grading/twins.py)."""
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": f"# run {run}"}
    return {**notebook, "cells": [*notebook["cells"], cell]}


def format_calibration(report: CalibrationReport) -> str:
    lines = [f"timing ratios of {report.notebook} over {report.runs} runs (student time / reference time)", ""]
    if not report.timings:
        return "\n".join(lines + ["no timing check produced a ratio", "", format_cells(report)])
    lines.append(f"{'check':<40} {'device':<6} {'min':>7} {'median':>7} {'p90':>7} {'max':>7} {'limit':>7} {'margin':>7}")
    for t in report.timings:
        margin = t.max_ratio / max(t.ratios)
        lines.append(f"{t.check:<40} {t.device:<6} {min(t.ratios):>7.2f} {statistics.median(t.ratios):>7.2f} "
                     f"{t.quantile(0.9):>7.2f} {max(t.ratios):>7.2f} {t.max_ratio:>7.1f} {margin:>6.1f}x")
    lines.append("")
    lines.append("margin = limit / worst ratio seen: above 1 the notebook passes, below 1 it fails.")
    return "\n".join(lines + ["", format_cells(report)])


def format_cells(report: CalibrationReport) -> str:
    """Each code cell's slowest and median time over the runs, slowest cells first."""
    lines = [f"code cells over {report.runs} runs (seconds; the slowest {CELLS_SHOWN}):",
             f"{'cell':>5} {'median':>7} {'max':>7}  first line"]
    ranked = sorted(report.cells, key=lambda c: -max(report.cell_seconds.get(c.index, [0.0])))
    for cell in ranked[:CELLS_SHOWN]:
        runs = report.cell_seconds.get(cell.index)
        if runs:
            lines.append(f"{cell.index:>5} {statistics.median(runs):>7.2f} {max(runs):>7.2f}  {cell.preview}")
    total = sum(max(runs) for runs in report.cell_seconds.values())
    lines.append(f"all cells: {total:.2f} s at most per run")
    return "\n".join(lines)
