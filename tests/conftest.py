"""Shared helpers: course copies, notebook surgery, and grading through the real pipeline.

Grading runs in slot subprocesses (as `autograder grade` does), never inside this
pytest process: the engine runs its own pytest sessions for the checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.course import Course
from autograder.grading.batch import grade_batch
from autograder.grading.discover import discover
from autograder.grading.options import GradeOptions, Limits

REPO = Path(__file__).resolve().parents[1]
FIXTURE_COURSE = REPO / "tests" / "fixtures" / "course"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`autograder ARGS...` in a subprocess, as a TA would run it."""
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def copy_course(target: Path, *, source: Path = FIXTURE_COURSE, assignments: tuple[str, ...] = ()) -> Course:
    """A course directory under `target`: the fixture course, or the repo's own course files."""
    if source == REPO:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "nbgrader_config.py", target)
        for assignment in assignments:
            shutil.copytree(REPO / "source" / assignment, target / "source" / assignment)
            shutil.copytree(REPO / "autograder" / "checks" / assignment, target / "autograder" / "checks" / assignment,
                            ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return Course(target)


def build(course: Course, *assignments: str) -> subprocess.CompletedProcess:
    done = run_cli("--course", str(course.root), "build", *assignments)
    assert done.returncode == 0, done.stderr
    return done


def with_cells(notebook: Path, *sources: str) -> nbformat.NotebookNode:
    """The notebook with extra code cells at the end (students add cells; the last definition wins)."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def grade(course: Course, assignment: str, paths: list[Path], out: Path, *, workers: int = 2,
          seed: int = 1234, **limits) -> dict[str, dict]:
    """Grade through the batch pipeline; returns the result JSON per student."""
    target = course.assignment(assignment)
    submissions = discover(paths, assignment=assignment, notebook_name=target.notebook_name)
    options = GradeOptions(limits=Limits(**limits), seed=seed, devices=("cpu", "cuda"))
    report = grade_batch(course=course, assignment=assignment, submissions=submissions, out_dir=out,
                         workers=workers, options=options.to_dict(), progress=False)
    return {row.student: json.loads((out / f"{row.student}.json").read_text()) for row in report.rows}


def failing_checks(result: dict) -> set[str]:
    return {t["extra_data"]["check"] for t in result["tests"] if t["status"] != "passed"}


@pytest.fixture(scope="session")
def demo_course(tmp_path_factory) -> Course:
    """The engine's fixture course ("demo" assignment), copied and built."""
    course = copy_course(tmp_path_factory.mktemp("fixture") / "course")
    build(course, "demo")
    return course
