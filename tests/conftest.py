"""Shared helpers: course copies, notebook surgery, and grading through the real pipeline.

Grading runs in slot subprocesses (as `autograder grade` does), never inside this
pytest process: the engine runs its own pytest sessions for the checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
    """Checks (and by-hand rules, as `by_hand:<grade cell>`) that did not pass."""
    return {t["extra_data"]["check"] for t in result["tests"] if t["status"] != "passed"}


def checks_of(result: dict) -> list[dict]:
    """The result's check entries, without the by-hand rules' entries."""
    return [t for t in result["tests"] if "rule" not in t["extra_data"]]


@dataclass(frozen=True)
class Shortcut:
    """Right answers through what a by-hand rule forbids (`label`; "" for switching the recording off)."""

    code: str
    label: str
    voids: set[str]


def expect_shortcut_voids(result: dict, shortcut: Shortcut) -> None:
    """Exactly the grade cells in `shortcut.voids` score 0, their rules say why, and their cases computed right."""
    cells = result["extra_data"]["grade_cells"]
    assert {g for g, c in cells.items() if c["score"] == 0} == shortcut.voids
    assert all(c["score"] == c["max_score"] for g, c in cells.items() if g not in shortcut.voids)
    for grade_id in shortcut.voids:
        rule = next(t for t in result["tests"] if t["extra_data"]["check"] == f"by_hand:{grade_id}")
        assert rule["status"] == "failed" and (shortcut.label or "sortear el registro") in rule["output"]
    voided = [t for t in checks_of(result) if t["extra_data"]["grade_id"] in shortcut.voids]
    assert all(t["output"].startswith("Sin puntos") for t in voided)
    ran = [c["outcome"] for t in voided for c in t["extra_data"]["cases"] if c["outcome"] != "skipped"]
    assert set(ran) == {"passed"}, "the shortcut itself is wrong somewhere: it should only break the rule"


@pytest.fixture(scope="session")
def demo_course(tmp_path_factory) -> Course:
    """The engine's fixture course ("demo" assignment), copied and built."""
    course = copy_course(tmp_path_factory.mktemp("fixture") / "course")
    build(course, "demo")
    return course
