"""The `autograder` command as TAs and students use it."""

import shutil

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_check_prints_public_feedback_in_spanish(demo_course, tmp_path):
    """Does `autograder check` grade one notebook in isolation and print only the public checks?"""
    notebook = tmp_path / "demo.ipynb"
    shutil.copy(demo_course.release_dir("demo") / "demo.ipynb", notebook)
    done = run_cli("--course", str(demo_course.root), "check", str(notebook))
    assert done.returncode == 0, done.stderr
    assert "Parte «double»: 0 de 1 puntos" in done.stdout
    assert "todavía no está implementada" in done.stdout
    assert "casos borde" not in done.stdout  # the hidden check's title


def test_grade_reports_missing_paths_and_unknown_assignments(demo_course, tmp_path):
    """Do a path that does not exist and an unknown assignment fail fast with a clear message?"""
    done = run_cli("--course", str(demo_course.root), "grade", "demo", str(tmp_path / "nope"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = run_cli("--course", str(demo_course.root), "grade", "u9", str(tmp_path))
    assert done.returncode == 2 and "unknown assignment 'u9'" in done.stderr


def test_grade_says_when_there_is_nothing_to_grade(demo_course, tmp_path):
    """Does an empty folder give a message instead of an empty gradebook?"""
    done = run_cli("--course", str(demo_course.root), "grade", "demo", str(tmp_path))
    assert done.returncode == 2 and "no submissions found" in done.stderr


def test_commands_outside_a_course_explain_themselves(tmp_path):
    """Run outside a course directory, does the CLI say what it looked for?"""
    done = run_cli("build", cwd=tmp_path)
    assert done.returncode == 2 and "nbgrader_config.py" in done.stderr
