"""Submissions that run the same code are graded once, and every student still gets their own result."""

import json

import nbformat
import pytest

from autograder.grading.batch import _Batch, _progress
from autograder.grading.discover import Submission
from autograder.grading.intake import AutogradedCells, read_notebook
from autograder.grading.store import ResultStore, crash_result
from autograder.grading.twins import code_digest, group_twins
from conftest import grade, with_cells, write


@pytest.fixture
def notebooks(demo_course, tmp_path):
    """The release, the solution, and variants of each that change only what grading does not run, or code."""
    release = demo_course.release_dir("demo") / "demo.ipynb"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    ran = nbformat.read(solution, as_version=4)
    for cell in ran.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="salida\n")]
            cell.execution_count = 7
        else:
            cell.source += "\n\nMis notas."
    ran.metadata["kernelspec"] = {"name": "otro", "display_name": "Otro"}
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "garbage.ipynb").write_text("{ no es json")
    return {
        "release_a": write(nbformat.read(release, as_version=4), folder / "release_a.ipynb"),
        "release_b": write(nbformat.read(release, as_version=4), folder / "release_b.ipynb"),
        "solution": write(nbformat.read(solution, as_version=4), folder / "solution.ipynb"),
        "solution_ran": write(ran, folder / "solution_ran.ipynb"),
        "solution_edited": write(with_cells(solution, "x = 1  # una celda más"), folder / "solution_edited.ipynb"),
        "garbage": folder / "garbage.ipynb",
    }


def digest(demo_course, path):
    tests = AutogradedCells.from_notebook(read_notebook(demo_course.release_dir("demo") / "demo.ipynb",
                                                        max_bytes=2**30))
    return code_digest(path, tests=tests, max_bytes=2**30, grading="checks-v1")


def test_the_digest_sees_code_and_only_code(demo_course, notebooks):
    """Do outputs, execution counts, markdown and notebook metadata leave the digest alone, while one more code
    cell changes it, and does an unreadable file get no digest (it is graded on its own)?"""
    assert digest(demo_course, notebooks["solution"]) == digest(demo_course, notebooks["solution_ran"])
    assert digest(demo_course, notebooks["release_a"]) == digest(demo_course, notebooks["release_b"])
    assert digest(demo_course, notebooks["solution"]) != digest(demo_course, notebooks["solution_edited"])
    assert digest(demo_course, notebooks["solution"]) != digest(demo_course, notebooks["release_a"])
    assert digest(demo_course, notebooks["garbage"]) is None


def test_twins_follow_their_first_occurrence_and_keep_the_order(demo_course, notebooks):
    """Is each distinct code graded once, first come first graded, with the later copies as its twins?"""
    tests = AutogradedCells.from_notebook(read_notebook(demo_course.release_dir("demo") / "demo.ipynb",
                                                        max_bytes=2**30))
    subs = [Submission(name, path, None) for name, path in notebooks.items()]
    subs.append(Submission("missing", None, "No se encontró el notebook."))
    groups = group_twins(subs, tests=tests, max_bytes=2**30, grading="checks-v1")
    assert [s.student for s in groups.to_grade] == ["release_a", "solution", "solution_edited", "garbage",
                                                    "missing"]
    assert {k: [s.student for s in v] for k, v in groups.twins.items()} == {"release_a": ["release_b"],
                                                                     "solution": ["solution_ran"]}


@pytest.mark.slow
def test_a_batch_grades_identical_code_once_and_writes_every_result(demo_course, notebooks, tmp_path):
    """In a batch, do twins get the representative's verdict under their own name and fingerprint, marked as such,
    with a row in the gradebook, while distinct code is graded itself?"""
    out = tmp_path / "out"
    results = grade(demo_course, "demo", [notebooks["release_a"].parent], out, workers=1)
    assert set(results) == set(notebooks)
    assert results["solution_ran"]["extra_data"]["same_code_as"] == "solution"
    assert results["release_b"]["extra_data"]["same_code_as"] == "release_a"
    for twin, first in (("solution_ran", "solution"), ("release_b", "release_a")):
        mine, theirs = results[twin], results[first]
        assert mine["score"] == theirs["score"] and mine["tests"] == theirs["tests"]
        assert mine["extra_data"]["student"] == twin and mine["extra_data"]["source"].endswith(f"{twin}.ipynb")
    # a twin's fingerprint is its own file's (the resume check of the next run reads it)
    assert results["solution_ran"]["extra_data"]["fingerprint"] != results["solution"]["extra_data"]["fingerprint"]
    assert results["solution"]["score"] == results["solution"]["max_score"] > 0
    assert results["release_a"]["score"] == 0
    for own in ("solution", "release_a", "solution_edited", "garbage"):
        assert "same_code_as" not in results[own]["extra_data"]
    assert results["solution_edited"]["score"] == results["solution"]["score"]
    assert results["garbage"]["extra_data"]["status"] == "invalid"
    gradebook = (out / "gradebook.csv").read_text().splitlines()
    assert len(gradebook) == 1 + len(notebooks)

    again = grade(demo_course, "demo", [notebooks["release_a"].parent], out, workers=1)  # resumes: nothing regraded
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)


def coordinator(out, twins):
    """The batch's bookkeeping alone (no slot processes): `twins` maps each graded student to their copies."""
    batch = object.__new__(_Batch)
    batch.assignment, batch.store, batch.grade_cells = "demo", ResultStore(out), {"part": 2.0}
    batch.results, batch.rows, batch.pending = {}, [], []
    batch.twins = {first: [Submission(t, out / f"{t}.ipynb", None) for t in copies] for first, copies in twins.items()}
    batch.fingerprints = {t: f"print-{t}" for copies in twins.values() for t in copies}
    batch.bar = _progress(0, enabled=False)
    return batch


def done_message(student, status, score):
    text = crash_result(student=student, assignment="demo", source="", grade_cells={"part": 2.0}, detail="")
    data = json.loads(text)
    data["score"], data["extra_data"]["status"] = score, status
    return {"student": student, "text": json.dumps(data), "status": status, "score": score, "max_score": 2.0,
            "seconds": 1.0, "restarts": 0, "cell_errors": 0}


def test_a_grader_error_sends_the_twins_back_in_line_instead_of_copying_it(tmp_path):
    """A grader error says nothing of the code: when the graded copy ends in one (an `error` result from its slot,
    or the `grader_error` the coordinator records when its slot died twice), does each twin go back in line to be
    graded on its own, with no copy of that error written, while a real verdict is copied to its twins?"""
    out = tmp_path / "out"
    batch = coordinator(out, {"a": ["a2", "a3"], "b": ["b2"], "c": ["c2"]})
    batch.done(done_message("a", "error", 0.0))
    assert [s.student for s in batch.pending] == ["a2", "a3"]
    assert set(batch.results) == {"a"} and not (out / "a2.json").exists()

    batch.grader_error(Submission("b", out / "b.ipynb", None), "the grading process died twice")
    assert [s.student for s in batch.pending] == ["a2", "a3", "b2"]
    assert not (out / "b2.json").exists()

    batch.done(done_message("c", "graded", 2.0))
    copy = json.loads((out / "c2.json").read_text())
    assert copy["score"] == 2.0 and copy["extra_data"]["same_code_as"] == "c"
    assert copy["extra_data"]["fingerprint"] == "print-c2"
    assert [s.student for s in batch.pending] == ["a2", "a3", "b2"] and batch.twins == {}
