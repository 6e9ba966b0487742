"""The nbgrader settings that route autograde and feedback through the isolated grader.

The course's `nbgrader_config.py` calls `use_isolated_grader(c)`; `autograder grade`
applies it again to whatever configuration a course has, so the guarantee does not
depend on that line being there.
"""

from __future__ import annotations

from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades
from traitlets.config import Config, PyFileConfigLoader

from .exporter import FeedbackExporter
from .preprocessor import IsolatedGrade

#: nbgrader's autograde steps with `Execute` (a kernel on the host) replaced by `IsolatedGrade`.
AUTOGRADE_PREPROCESSORS = [IsolatedGrade, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
                           AssignLatePenalties, CheckCellMetadata]


def use_isolated_grader(c: Config) -> None:
    c.Autograde.autograde_preprocessors = AUTOGRADE_PREPROCESSORS
    c.GenerateFeedback.exporter_class = FeedbackExporter


def course_config(root: Path, *, results_dir: Path | None = None) -> Config:
    """The course's nbgrader configuration (its `nbgrader_config.py`), with the isolated grader in place."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    use_isolated_grader(config)
    if results_dir is not None:  # the results of a batch that just ran: take them as they are
        config.IsolatedGrade.results_dir = str(results_dir)
        config.IsolatedGrade.keep_grader_errors = True
    return config
