"""The student's side: `check("...")` inside a real Jupyter kernel, with only the released files."""

import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

ASSIGNMENT = "u1_backprop"


def run_in_kernel(notebook_path, folder, tmp_path):
    """Execute a notebook the way a student would: in the folder they downloaded, errors allowed."""
    workdir = tmp_path / "student"
    shutil.copytree(REPO / folder / ASSIGNMENT, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.read(notebook_path, as_version=4)
    # Last, so the checks run first: `import autograder` in a notebook counts as tampering with the rules.
    nb.cells.append(nbformat.v4.new_code_cell("import autograder\nprint(autograder.__file__)"))
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb, workdir


def text_of(cell) -> str:
    """What a cell showed: printed text or the Markdown it displayed."""
    return "".join(o.get("text", "") or o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))


def graded_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


@pytest.mark.slow
def test_the_solution_passes_its_public_checks_in_the_notebook(tmp_path):
    """Run from a kernel, do all public checks pass with the released runtime (not an installed one)?"""
    nb, workdir = run_in_kernel(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", "solutions", tmp_path)
    assert text_of(nb.cells[-1]).startswith(str(workdir / "autograder"))
    cells = graded_cells(nb)
    assert len(cells) == 9
    for cell in cells:
        output = text_of(cell)
        assert "Comprobaciones públicas de" in output and "✘" not in output, output
        assert not [o for o in cell.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_the_release_says_what_is_missing_without_stopping_the_notebook(tmp_path):
    """On the empty release, does each check cell explain, in Spanish, without raising?"""
    nb, _ = run_in_kernel(REPO / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", "release", tmp_path)
    for cell in graded_cells(nb):
        assert "todavía no está implementada" in text_of(cell)
        assert not [o for o in cell.outputs if o.output_type == "error"]
    linear = text_of(graded_cells(nb)[0])
    assert "Puntos de estas comprobaciones públicas: **0 de 3**." in linear
    assert "comprobaciones ocultas que valen 1 punto(s) más" in linear


def test_check_does_nothing_while_grading():
    """While grading (AUTOGRADER_GRADING=1), is `check` a silent no-op inside the worker?"""
    code = ("import os\nos.environ['AUTOGRADER_GRADING'] = '1'\n"
            "from autograder.selfcheck import make_check\n"
            "print(repr(make_check('u1_backprop')('linear')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "release" / ASSIGNMENT)})
    assert done.stdout == "None\n" and done.returncode == 0
