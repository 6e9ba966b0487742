"""The class report for TAs: one self-contained HTML page from a batch's result files.

    write_class_report(out_dir=Path("autograded/u1_backprop"), assignment="u1_backprop", course_root=root)

collect (result files -> summaries) -> plots (matplotlib -> SVG) -> page (HTML) -> report.html,
written atomically next to the results.
"""

from __future__ import annotations

from pathlib import Path

REPORT = "report.html"


def write_class_report(*, out_dir: Path, assignment: str, course_root: Path | None = None) -> Path:
    """Write `out_dir/report.html` from the result files in `out_dir`; returns its path.

    `course_root` lets the page link each student's nbgrader feedback
    (`<course_root>/feedback/<student>/<assignment>/<notebook>.html`) where it exists.
    """
    from .. import __version__
    from ..grading.store import atomic_write
    from .collect import collect
    from .page import render

    out_dir = Path(out_dir)
    summary = collect(out_dir=out_dir, assignment=assignment, course_root=course_root)
    path = out_dir / REPORT
    atomic_write(path, render(summary, grader_version=__version__))
    return path
