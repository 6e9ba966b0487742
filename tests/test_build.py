"""`autograder build`: deterministic, in sync with source/, no leaks, points that add up."""

import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, build, copy_course, run_cli

COURSE_ASSIGNMENTS = ("u1_backprop", "u2_cnn", "u3_attention", "u4_recsys")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_building_twice_changes_nothing(demo_course):
    """Is the build deterministic: a second run leaves every byte of release/ and solutions/ as it was?"""
    before = tree(demo_course.root / "release") | tree(demo_course.root / "solutions")
    build(demo_course, "demo")
    assert tree(demo_course.root / "release") | tree(demo_course.root / "solutions") == before


@pytest.mark.slow
def test_committed_release_and_solutions_match_source(tmp_path):
    """Would rebuilding the course from source/ reproduce the committed release/, solutions/ and runtime wheel
    exactly?"""
    course = copy_course(tmp_path / "course", source=REPO, assignments=COURSE_ASSIGNMENTS)
    build(course)
    for folder in ("release", "solutions"):
        for assignment in COURSE_ASSIGNMENTS:
            fresh, committed = course.root / folder / assignment, REPO / folder / assignment
            assert tree(fresh) == tree(committed), (
                f"{folder}/{assignment} is out of date: run `autograder build {assignment}` and commit")
    for wheel in (course.root / "release" / "dist").glob("*.whl"):  # the student runtime (runtime_package.py)
        assert wheel.read_bytes() == (REPO / "release" / "dist" / wheel.name).read_bytes(), (
            f"release/dist/{wheel.name} is out of date: run `autograder build` and commit")


@pytest.mark.parametrize("assignment", COURSE_ASSIGNMENTS)
def test_release_holds_no_solution_code_and_no_hidden_check(assignment):
    """Does no solution line and no hidden check (file or name) appear anywhere in the committed release?"""
    source = json.loads((REPO / "source" / assignment / f"{assignment}.ipynb").read_text())
    cells = ["".join(cell["source"]) for cell in source["cells"]]
    solution = r"BEGIN SOLUTION(.*?)END SOLUTION"
    given = {line.strip() for cell in cells for line in re.sub(solution, "", cell, flags=re.S).splitlines()}
    solution_lines = [line.strip() for cell in cells for region in re.findall(solution, cell, re.S)
                      for line in region.splitlines()[1:-1] if len(line.strip()) > 8 and line.strip() not in given]
    assert solution_lines
    release = REPO / "release" / assignment
    notebook = json.loads((release / f"{assignment}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert not [line for line in solution_lines if line in code]
    hidden_file = (REPO / "autograder" / "checks" / assignment / "test_hidden.py").read_text()
    hidden_names = re.findall(r"^def (test_\w+)", hidden_file, re.M)
    assert hidden_names
    everything = "\n".join(p.read_text(errors="replace") for p in release.rglob("*") if p.is_file())
    assert not [name for name in hidden_names if name in everything]
    assert not list(release.rglob("test_hidden.py"))


def test_solutions_keep_the_code_and_drop_hidden_tests(demo_course):
    """Do the published solutions carry the solution code, unexecuted, without hidden tests?"""
    notebook = json.loads((demo_course.root / "solutions" / "demo" / "demo.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "return 2 * x" in code
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
    assert (demo_course.root / "solutions" / "demo" / "autograder" / "checks" / "demo" / "test_public.py").exists()


def test_release_carries_the_public_checks_byte_for_byte(demo_course):
    """Are the released public checks the very files that grade?"""
    released = demo_course.root / "release" / "demo" / "autograder" / "checks" / "demo"
    assert filecmp.cmp(released / "test_public.py", demo_course.checks_dir("demo") / "test_public.py", shallow=False)
    assert json.loads((released / "points.json").read_text()) == {
        "counter": {"points": 2.0, "public": 1.0}, "double": {"points": 2.0, "public": 1.0}}


def test_points_that_do_not_add_up_stop_the_build_naming_both(tmp_path):
    """If a grade cell's points differ from its checks', does the build stop and name the cell and checks?"""
    course = copy_course(tmp_path / "course")
    path = course.root / "source" / "demo" / "demo.ipynb"
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "double":
            cell["metadata"]["nbgrader"]["points"] = 5
    path.write_text(json.dumps(notebook))
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode == 2
    assert "grade cell 'double'" in done.stderr and "source/demo/demo.ipynb" in done.stderr
    assert "worth 5 points" in done.stderr and "add up to 2" in done.stderr
    assert "test_double_matches_two_x" in done.stderr and "test_double_keeps_shape_and_dtype" in done.stderr
    assert not (course.root / "release" / "demo").exists()


@pytest.mark.parametrize("old, new, message", [
    ('grade_id("counter")', 'grade_id("countr")', "'countr', which is no grade cell"),
    ("@pytest.mark.points(1)\ndef test_counter_adds", "def test_counter_adds",
     "test_counter_adds: needs @pytest.mark.points"),
], ids=["unknown-grade-cell", "missing-points"])
def test_checks_with_bad_markers_stop_the_build_naming_the_check(tmp_path, old, new, message):
    """Does a check pointing at a missing grade cell, or without points, stop the build by name?"""
    course = copy_course(tmp_path / "course")
    checks = course.checks_dir("demo") / "test_public.py"
    assert old in checks.read_text()
    checks.write_text(checks.read_text().replace(old, new))
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode == 2 and message in done.stderr


def test_unknown_assignments_are_reported(demo_course):
    """Does a typo in the assignment id give a clear error listing the known ones?"""
    done = run_cli("--course", str(demo_course.root), "build", "dmeo")
    assert done.returncode == 2 and "unknown assignment 'dmeo'" in done.stderr and "demo" in done.stderr


SELF_CONTAINED = """
import json, sys
notebook = json.load(open(sys.argv[1]))
setup = next(c for c in notebook["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "setup")
exec("".join(setup["source"]), {})
import autograder, importlib
assert autograder.__file__.startswith(sys.argv[2]), autograder.__file__
for name in ("test_public", "common"):
    importlib.import_module(f"autograder.checks.{sys.argv[3]}.{name}")
print("ok")
"""


@pytest.mark.parametrize("assignment", COURSE_ASSIGNMENTS)
def test_the_release_runs_its_setup_and_public_checks_with_only_its_own_files(assignment, tmp_path):
    """With only the released folder (no installed grader), do the setup cell and the public check modules
    import, all from the vendored runtime?"""
    folder = tmp_path / assignment
    shutil.copytree(REPO / "release" / assignment, folder, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", SELF_CONTAINED, str(folder / f"{assignment}.ipynb"),
                           str(folder / "autograder"), assignment], capture_output=True, text=True, cwd=folder,
                          env={"PYTHONPATH": str(folder), "MPLBACKEND": "Agg"}, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
