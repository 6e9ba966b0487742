"""Malformed submissions: each one gets its own result with a message a student understands, and the batch goes on.

One batch holds every kind of broken input next to an honest notebook, half of it
as loose files and half inside a class `.zip` with one folder per student, as an
LMS exports it.
"""

import json
import shutil
import zipfile

import nbformat
import pytest

from conftest import checks_of, grade, with_cells, write
from autograder.grading.archive import unpacked

pytestmark = pytest.mark.slow


def notebook_json(release, mutate) -> str:
    data = json.loads(release.read_text())
    mutate(data)
    return json.dumps(data)


def build_class(demo_course, root):
    """Loose files in `flat/` and student folders inside `class.zip`; returns both paths."""
    release = demo_course.release_dir("demo") / "demo.ipynb"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    flat = root / "flat"
    flat.mkdir()
    (flat / "empty.ipynb").write_bytes(b"")
    (flat / "binary.ipynb").write_bytes(bytes(range(256)) * 4)
    (flat / "truncated.ipynb").write_text(solution.read_text()[:300])
    (flat / "not_a_notebook.ipynb").write_text('{"name": "tarea", "answers": [1, 2]}')
    (flat / "bad_utf8.ipynb").write_bytes(solution.read_bytes().replace(b"double", b"doub\xffle", 1))
    (flat / "script.py").write_text("def double(x):\n    return 2 * x\n")
    (flat / "nbformat3.ipynb").write_text(json.dumps({
        "nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""},
        "worksheets": [{"cells": [{"cell_type": "code", "input": "def double(x):\n    return 2 * x",
                                   "outputs": [], "language": "python", "metadata": {}}], "metadata": {}}]}))
    write(with_cells(solution, "def broken(:\n    pass", "x = (", "def double(x):\n    return 2 * x"),
          flat / "syntax_errors.ipynb")
    write(with_cells(solution, "%matplotlib inline\n!rm -rf /\n%%time\nz = 1", "%%bash\necho hola",
                     "!pip install torch"), flat / "magics.ipynb")
    huge = with_cells(solution)
    huge.cells[-1].outputs = [nbformat.v4.new_output("stream", text="x" * (30 * 2**20))]
    write(huge, flat / "huge_outputs.ipynb")
    many = with_cells(solution, *[f"v{i} = {i}" for i in range(3000)])
    write(many, flat / "thousands_of_cells.ipynb")
    (flat / "duplicated_ids.ipynb").write_text(notebook_json(solution, lambda d: [
        c.__setitem__("id", "same") for c in d["cells"]]))
    (flat / "r_kernel.ipynb").write_text(notebook_json(solution, lambda d: d["metadata"].__setitem__(
        "kernelspec", {"name": "ir", "language": "R", "display_name": "R"})))
    (flat / "tests_deleted.ipynb").write_text(notebook_json(solution, lambda d: d.__setitem__("cells", [
        c for c in d["cells"] if not c.get("metadata", {}).get("nbgrader", {}).get("grade")])))

    def edit_tests(d):
        for c in d["cells"]:
            if c.get("metadata", {}).get("nbgrader", {}).get("grade"):
                c["source"] = "def double(x):\n    return x\nprint('todo bien, 100 puntos')"
    (flat / "tests_edited.ipynb").write_text(notebook_json(solution, edit_tests))
    (flat / "renamed.ipynb").write_text(notebook_json(solution, lambda d: [
        c.__setitem__("source", "".join(c["source"]).replace("def double", "def duplicate")) for c in d["cells"]]))
    shutil.copy(solution, flat / "honest.ipynb")
    shutil.copy(solution, flat / "honest_twin.ipynb")

    lms = root / "lms"
    (lms / "export" / "Ana Perez_101_assignsubmission_file_").mkdir(parents=True)
    shutil.copy(solution, lms / "export" / "Ana Perez_101_assignsubmission_file_" / "demo.ipynb")
    (lms / "export" / "Beto_102_assignsubmission_file_" / "deep" / "er").mkdir(parents=True)
    shutil.copy(solution, lms / "export" / "Beto_102_assignsubmission_file_" / "deep" / "er" / "mi_tarea.ipynb")
    (lms / "export" / "Caro_103_assignsubmission_file_").mkdir(parents=True)
    (lms / "export" / "Caro_103_assignsubmission_file_" / "tarea.py").write_text("x = 1\n")
    (lms / "export" / "Dani_104_assignsubmission_file_").mkdir(parents=True)
    for name in ("v1.ipynb", "v2.ipynb"):
        shutil.copy(release, lms / "export" / "Dani_104_assignsubmission_file_" / name)
    archive = root / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(lms.rglob("*")):
            zf.write(path, path.relative_to(lms))
    return flat, archive


@pytest.fixture(scope="module")
def batch(demo_course, tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed")
    flat, archive = build_class(demo_course, root)
    with unpacked([flat, archive]) as paths:
        return grade(demo_course, "demo", paths, root / "out", workers=2, call_seconds=3, cell_seconds=5,
                     check_seconds=20)


INVALID = {
    "empty": "vacío",
    "binary": "UTF-8",
    "truncated": "incompleto o dañado",
    "not_a_notebook": "no es un notebook",
    "bad_utf8": "UTF-8",
    "script": "script de Python (.py)",
    "r_kernel": "kernel de R",
    "Caro_103_assignsubmission_file": "ningún notebook (contiene: tarea.py)",
    "Dani_104_assignsubmission_file": "varios notebooks",
}


@pytest.mark.parametrize("student, message", INVALID.items(), ids=list(INVALID))
def test_unusable_files_get_a_zero_result_that_says_why(batch, student, message):
    """Does each unusable submission get a result of 0, status invalid, and a reason in Spanish?"""
    result = batch[student]
    assert result["score"] == 0 and result["extra_data"]["status"] == "invalid"
    assert message in result["output"]
    assert [t["score"] for t in result["tests"]] == [0.0] * len(result["tests"]) and result["tests"]


@pytest.mark.parametrize("student", ["honest", "honest_twin", "nbformat3", "syntax_errors", "magics",
                                     "huge_outputs", "thousands_of_cells", "duplicated_ids", "tests_deleted",
                                     "tests_edited", "Ana_Perez_101_assignsubmission_file",
                                     "Beto_102_assignsubmission_file"])
def test_odd_but_gradable_notebooks_are_graded_on_their_code(batch, student):
    """Are notebooks with odd cells, outputs, ids or layouts graded like any other (tests from the grader only)?"""
    result = batch[student]
    assert result["extra_data"]["status"] == "graded"
    expected = {"nbformat3": 2, "syntax_errors": 4, "tests_edited": 4}.get(student, 4)
    assert result["score"] == expected, result["output"]


def test_syntax_errors_and_magics_are_reported_per_cell(batch):
    """Is a syntax error shown at its cell, and does a shell escape run nothing?"""
    cells = batch["syntax_errors"]["extra_data"]["cells"]
    assert sum(c["status"] == "error" and c["error"]["type"] == "SyntaxError" for c in cells) == 2
    notes = [n for c in batch["magics"]["extra_data"]["cells"] for n in c["notes"]]
    assert any("!" in n or "rm" in n or "pip" in n for n in notes)


def test_a_missing_graded_function_is_named(batch):
    """When `double` is renamed, does the feedback name the missing function?"""
    result = batch["renamed"]
    assert result["score"] == 2  # the counter's points only
    double = [t for t in checks_of(result) if t["extra_data"]["grade_id"] == "double"]
    assert double and all("no define `double`" in t["output"] for t in double)


def test_the_same_submission_gets_the_same_verdicts(batch):
    """Do two copies of one notebook in a batch get the same score and the same verdict per check?"""
    verdicts = [[(t["extra_data"]["check"], t["status"]) for t in batch[s]["tests"]] for s in ("honest", "honest_twin")]
    assert verdicts[0] == verdicts[1]
    assert batch["honest"]["score"] == batch["honest_twin"]["score"]
