"""Points from outcomes, and the output folder: atomic files, tamper repair, gradebook."""

import json

import pytest

from autograder.grading.checks import CheckInfo
from autograder.grading.scoring import grade_cell_scores, score_checks
from autograder.grading.store import ResultStore, atomic_write, crash_result
from autograder.plugin import CaseOutcome, check_score


def case(outcome, device="cpu", check="c"):
    return CaseOutcome(check=check, nodeid=f"x::{check}[{device}]", title="t", grade_id="g", points=2,
                       hidden=False, device=device, outcome=outcome)


@pytest.mark.parametrize("outcomes, expected", [
    (["passed", "skipped"], 2.0),
    (["failed", "skipped"], 0.0),
    (["passed", "passed"], 2.0),
    (["passed", "failed"], 1.0),
    (["skipped"], 0.0),
    ([], 0.0),
])
def test_check_points_split_over_the_device_cases_that_ran(outcomes, expected):
    """Does a skipped cuda case hand its share to cpu, and a failing case lose only its share?"""
    devices = ["cpu", "cuda"]
    assert check_score(2, [case(o, devices[i]) for i, o in enumerate(outcomes)]) == expected


def test_every_expected_check_appears_even_without_outcomes():
    """Does a check that never ran still appear, with zero points?"""
    checks = [CheckInfo("a", "A", "g1", 1.0, False), CheckInfo("b", "B", "g1", 2.0, True),
              CheckInfo("c", "C", "g2", 3.0, False)]
    scores = score_checks(checks, [case("passed", check="a"), case("failed", check="c")])
    assert [s.score for s in scores] == [1.0, 0.0, 0.0]
    assert grade_cell_scores(scores) == {"g1": {"score": 1.0, "max_score": 3.0}, "g2": {"score": 0.0, "max_score": 3.0}}


def test_atomic_write_leaves_no_partial_files(tmp_path):
    """After writing, is there exactly the target file, with the whole text?"""
    atomic_write(tmp_path / "r.json", "x" * 100_000)
    atomic_write(tmp_path / "r.json", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert (tmp_path / "r.json").read_text() == "new"


def test_tampered_results_are_restored_and_reported(tmp_path):
    """If a result file changes after the grader wrote it, is it put back and named?"""
    store = ResultStore(tmp_path)
    store.write("ana", '{"score": 1}\n')
    store.write("bob", '{"score": 2}\n')
    (tmp_path / "ana.json").write_text('{"score": 100}')
    assert store.verify() == ["ana"]
    assert (tmp_path / "ana.json").read_text() == '{"score": 1}\n'


def test_gradebook_has_one_row_per_student_and_one_column_per_grade_cell(tmp_path):
    """Is gradebook.csv built from the result files, skipping malformed ones and ones filed under another name?"""
    store = ResultStore(tmp_path)
    store.write("ana", crash_result(student="ana", assignment="u1", source="", grade_cells={"g1": 2.0, "g2": 3.0},
                                    detail="boom"))
    (tmp_path / "notes.json").write_text("not json")
    (tmp_path / "eve.json").write_text(json.dumps({"score": "lots", "max_score": 5, "extra_data": {
        "student": "eve", "status": "graded", "grade_cells": {"g1": {"score": 99}}}}))
    (tmp_path / "mallory.json").write_text(json.dumps({"score": 5, "max_score": 5, "extra_data": {
        "student": "ana", "status": "graded", "grade_cells": {}}}))
    path = store.write_gradebook(["g1", "g2"])
    assert path.read_text().splitlines() == ["student,g1,g2,total,max_score,status", "ana,0,0,0,5,error"]
    assert json.loads((tmp_path / "ana.json").read_text())["extra_data"]["status"] == "error"


def test_speed_checks_verify_every_timed_answer():
    """Can a function that answers right only some of the time pass a speed check by skipping work?"""
    import torch

    from autograder.checklib import SpeedBudget, compare_speed
    from autograder.errors import CheckFailure

    calls = []

    def sometimes_lazy(x):
        calls.append(1)
        return x * 2 if len(calls) in (1, 6) else torch.zeros_like(x)  # right on the first and the last call

    def verify(result, inputs):
        if not torch.equal(result, inputs[0] * 2):
            raise CheckFailure("wrong")

    with pytest.raises(CheckFailure):
        compare_speed(student=sometimes_lazy, reference=lambda x: x * 2, make_inputs=lambda: (torch.ones(3),),
                      verify=verify, budget=SpeedBudget(max_ratio=1e9, repeats=5), name="f", device="cpu")


def test_one_stalled_first_call_does_not_decide_a_speed_check():
    """A vectorised function whose very first call stalls (cold code pages, a busy CPU) is timed again, not
    judged hopeless on that call alone; one that is slow every time still fails."""
    import time

    import torch

    from autograder.checklib import SpeedBudget, compare_speed
    from autograder.errors import CheckFailure

    calls = []

    def stalls_once(x):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)
        return x * 2

    def verify(result, inputs):
        if not torch.equal(result, inputs[0] * 2):
            raise CheckFailure("wrong")

    def always_slow(x):
        time.sleep(0.05)
        return x * 2

    common = dict(reference=lambda x: x * 2, make_inputs=lambda: (torch.ones(3),), verify=verify,
                  budget=SpeedBudget(max_ratio=40, repeats=3), name="f", device="cpu")
    report = compare_speed(student=stalls_once, **common)
    assert report.ratio < 40 and len(calls) == 5  # the stalled call, one more look, then the 3 repeats
    with pytest.raises(CheckFailure):
        compare_speed(student=always_slow, **common)
