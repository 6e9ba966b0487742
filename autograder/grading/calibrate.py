"""`autograder calibrate`: how far a notebook's speed ratios sit from each timing threshold.

Grades one notebook `runs` times through the normal pipeline (same isolation, same
timing code) and reports, per timing check, the distribution of the measured ratio
next to its `max_ratio`. Run it on the solution to see the margin a good solution
keeps, and with `--notebook` on a slow variant to see the margin on the other side.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..course import Course
from .batch import grade_batch
from .discover import Submission


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


def calibrate(*, course: Course, assignment: str, notebook: Path, runs: int, options: dict) -> CalibrationReport:
    with tempfile.TemporaryDirectory(prefix="autograder-calibrate-") as tmp:
        submissions = []
        for i in range(runs):
            copy = Path(tmp) / f"run{i:03d}.ipynb"
            shutil.copyfile(notebook, copy)
            submissions.append(Submission(copy.stem, copy))
        report = grade_batch(course=course, assignment=assignment, submissions=submissions,
                             out_dir=Path(tmp) / "out", workers=1, options=options)
    stats: dict[tuple[str, str], TimingStats] = {}
    for result in report.results.values():
        for test in result["tests"]:
            for case in test["extra_data"]["cases"]:
                props = case["properties"]
                if "ratio" in props:
                    key = (test["extra_data"]["check"], case["device"])
                    entry = stats.setdefault(key, TimingStats(key[0], key[1], props["max_ratio"], []))
                    entry.ratios.append(props["ratio"])
    return CalibrationReport(notebook, runs, list(stats.values()))


def format_calibration(report: CalibrationReport) -> str:
    lines = [f"timing ratios of {report.notebook} over {report.runs} runs (student time / reference time)", ""]
    if not report.timings:
        return "\n".join(lines + ["no timing check produced a ratio"])
    lines.append(f"{'check':<40} {'device':<6} {'min':>7} {'median':>7} {'p90':>7} {'max':>7} {'limit':>7} {'margin':>7}")
    for t in report.timings:
        margin = t.max_ratio / max(t.ratios)
        lines.append(f"{t.check:<40} {t.device:<6} {min(t.ratios):>7.2f} {statistics.median(t.ratios):>7.2f} "
                     f"{t.quantile(0.9):>7.2f} {max(t.ratios):>7.2f} {t.max_ratio:>7.1f} {margin:>6.1f}x")
    lines.append("")
    lines.append("margin = limit / worst ratio seen: above 1 the notebook passes, below 1 it fails.")
    return "\n".join(lines)
