"""Demonstration cells' own time limits: ten times the solution's time for the same cell (grading/budgets.py)."""

import json

import nbformat
import pytest

from autograder.course import Course
from autograder.grading.batch import grade_batch
from autograder.grading.budgets import CellBudgets, cell_key, load_budgets, manifest_path, shared_cells
from autograder.grading.calibrate import calibrate
from autograder.grading.discover import discover
from autograder.grading.options import GradeOptions, Limits
from autograder.grading.store import assignment_digest
from autograder.remote import SECONDS_AFTER_TIMEOUT
from conftest import REPO, build, checks_of, copy_course, grade, run_cli, with_cells, write

HUNG_DOUBLE = "def double(x):\n    while True:\n        pass"
DEMO_CELL = 'print("el doble de 21 es", double(21))'


def test_a_cell_gets_ten_times_the_solutions_time_between_the_floor_and_the_cell_limit():
    """Is a known cell's limit 10x the solution's time (times --timing-scale), at least 5 s and at most the cell
    limit, and does a cell the manifest does not know (the student's own code, an edited demonstration, one with
    a lone surrogate) get none of its own?"""
    budgets = CellBudgets({cell_key("fast()"): 0.02, cell_key("slow()"): 1.5, cell_key("slower()"): 4.0})
    assert budgets.limit("fast()", cell_seconds=30) == 5.0
    assert budgets.limit("slow()", cell_seconds=30) == 15.0
    assert budgets.limit("slower()", cell_seconds=30) == 30.0
    assert budgets.limit("fast()", cell_seconds=3) == 3.0
    assert budgets.limit("slow()", cell_seconds=30, scale=1.5) == 22.5  # --timing-scale, on a slower machine
    assert budgets.limit("fast() ", cell_seconds=30) is None
    assert budgets.limit("mine()", cell_seconds=30) is None
    assert budgets.limit("# \ud800 a lone surrogate", cell_seconds=30) is None  # not valid UTF-8, still code


@pytest.mark.parametrize("assignment", ["u1_backprop", "u2_cnn", "u3_attention", "u4_recsys"])
def test_each_units_manifest_covers_exactly_the_cells_students_receive_unchanged(assignment):
    """Does every unit's cell_seconds.json have an entry for each code cell that is the same in release/ and
    solutions/, and none for other cells? (After editing a demonstration, run `autograder calibrate ID --cells`.)"""
    target = Course(REPO).assignment(assignment)
    expected = {cell_key(cell.source) for cell in shared_cells(target)}
    assert expected, "no shared cells: the comparison would prove nothing"
    assert set(load_budgets(target).seconds) == expected, f"run `autograder calibrate {assignment} --cells`"


@pytest.fixture(scope="module")
def course_with_a_demo(tmp_path_factory):
    """The fixture course with a demonstration cell that calls the student's `double`, and its manifest written
    by `autograder calibrate demo --cells`."""
    course = copy_course(tmp_path_factory.mktemp("budgets") / "course")
    source = course.source_dir("demo") / "demo.ipynb"
    notebook = nbformat.read(source, as_version=4)
    demo = nbformat.v4.new_code_cell(DEMO_CELL)
    demo.metadata["nbgrader"] = {"grade": False, "grade_id": "double_demo", "locked": True, "schema_version": 3,
                                 "solution": False}
    position = next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id")
                    == "double_code")
    notebook.cells.insert(position + 1, demo)
    nbformat.write(notebook, source)
    build(course, "demo")
    done = run_cli("--course", str(course.root), "calibrate", "demo", "--cells", "--runs", "2", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "wrote autograder/checks/demo/cell_seconds.json" in done.stdout
    return course


@pytest.mark.slow
def test_calibrate_grades_every_run_not_one_for_all(course_with_a_demo):
    """Are the runs of `calibrate` each graded (identical copies would be graded once, as twins), so every
    cell has one time per run?"""
    target = course_with_a_demo.assignment("demo")
    notebook = course_with_a_demo.solutions_dir("demo") / "demo.ipynb"
    options = GradeOptions(limits=Limits(), seed=1, cell_budgets=False).to_dict()
    report = calibrate(course=course_with_a_demo, assignment=target.id, notebook=notebook, runs=2, options=options)
    assert report.cells and all(len(report.cell_seconds[cell.index]) == 2 for cell in report.cells)
    assert any(len(set(report.cell_seconds[cell.index])) == 2 for cell in report.cells)  # not one copied result


@pytest.mark.slow
def test_calibrate_writes_the_shared_cells_and_their_times(course_with_a_demo):
    """Does `calibrate --cells` record the setup and demonstration cells (shared by release and solutions) with
    the time each took, and leave out the cells the student writes?"""
    manifest = json.loads((course_with_a_demo.checks_dir("demo") / "cell_seconds.json").read_text())
    previews = {entry["preview"] for entry in manifest["cells"].values()}
    assert DEMO_CELL in previews and any(p.startswith("try:") for p in previews)
    assert not any(p.startswith(("def double", "class Counter")) for p in previews)
    assert all(0 <= entry["seconds"] < 5 for entry in manifest["cells"].values())


@pytest.mark.slow
def test_a_demonstration_hung_by_the_students_function_stops_at_its_own_limit(course_with_a_demo, tmp_path):
    """When the student's `double` hangs the course's demonstration cell, is that cell stopped after 5 s (the
    floor: the solution runs it in milliseconds) with a message that says why, while a cell the student wrote
    keeps the whole cell limit, and `--no-cell-budgets` gives the demonstration the cell limit again?"""
    solution = course_with_a_demo.solutions_dir("demo") / "demo.ipynb"
    hung = nbformat.read(solution, as_version=4)
    next(c for c in hung.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "double_code").source = HUNG_DOUBLE
    paths = [write(hung, tmp_path / "subs" / "hung_demo.ipynb"),
             write(with_cells(solution, "while True:\n    pass"), tmp_path / "subs" / "hung_own.ipynb")]
    results = grade(course_with_a_demo, "demo", paths, tmp_path / "out", cell_seconds=8, call_seconds=30)

    demo = next(c for c in results["hung_demo"]["extra_data"]["cells"] if c["preview"] == DEMO_CELL)
    assert demo["status"] == "timeout" and demo["limit"] == 5.0
    assert 4.5 < demo["seconds"] < 7.5
    assert "Esta celda tenía 5 s: es una demostración del curso" in demo["error"]["message"]
    double = [t for t in checks_of(results["hung_demo"]) if t["extra_data"]["grade_id"] == "double"]
    assert double and all(t["status"] == "failed" for t in double)
    assert all(f"esta vez tuvo {SECONDS_AFTER_TIMEOUT:g} s" in t["output"] for t in double)  # hung in the demo

    own = results["hung_own"]["extra_data"]["cells"][-1]
    assert own["status"] == "timeout" and own["limit"] == 8.0 and own["seconds"] >= 7.5
    assert "Cada celda tiene hasta 8 s." in own["error"]["message"]
    assert results["hung_own"]["score"] == results["hung_own"]["max_score"]

    options = GradeOptions(limits=Limits(cell_seconds=8, call_seconds=30), seed=1, cell_budgets=False)
    submissions = discover(paths[:1], assignment="demo", notebook_name="demo.ipynb")
    grade_batch(course=course_with_a_demo, assignment="demo", submissions=submissions, out_dir=tmp_path / "off",
                workers=1, options=options.to_dict(), progress=False)
    off = json.loads((tmp_path / "off" / "hung_demo.json").read_text())
    demo = next(c for c in off["extra_data"]["cells"] if c["preview"] == DEMO_CELL)
    assert demo["status"] == "timeout" and demo["limit"] == 8.0 and demo["seconds"] >= 7.5


@pytest.mark.slow
def test_a_new_calibration_changes_what_resumed_batches_compare(course_with_a_demo):
    """Is the manifest part of the assignment's digest, so results graded under other cell limits are graded
    again when a batch resumes?"""
    target = course_with_a_demo.assignment("demo")
    manifest = manifest_path(target)
    before, text = assignment_digest(target, public_only=False), manifest.read_text()
    try:
        manifest.write_text(text.replace('"seconds": ', '"seconds": 1', 1))
        assert assignment_digest(target, public_only=False) != before
    finally:
        manifest.write_text(text)
    assert assignment_digest(target, public_only=False) == before
