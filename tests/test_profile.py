"""`autograder grade --profile`: where a batch's time went, summed from the result files."""

from autograder.grading.profile import format_profile, profile


def _result(cells: list[float], checks: dict[str, list[float]], total: float) -> dict:
    return {"execution_time": total,
            "extra_data": {"cells": [{"seconds": s} for s in cells]},
            "tests": [{"name": n, "extra_data": {"check": n, "cases": [{"seconds": s} for s in cases]}}
                      for n, cases in checks.items()]}


def test_profile_splits_time_into_cells_each_check_and_the_rest():
    """Cells, every check's cases (summed over devices and submissions) and the remainder add up to the total."""
    results = {"a": _result([1.0, 0.5], {"train": [3.0, 1.0], "shape": [0.25]}, total=6.0),
               "b": _result([0.5], {"train": [2.0], "shape": [0.25]}, total=3.5)}
    found = profile(results, wall_seconds=7.0, slots=2)
    assert (found.total, found.cells, found.checks) == (9.5, 2.0, {"train": 6.0, "shape": 0.5})
    assert found.other == 1.0
    text = format_profile(found)
    lines = text.splitlines()
    assert "2 submission(s), 2 slot(s)" in lines[0]
    assert [line.split()[0] for line in lines[4:6]] == ["checks", "train"]  # the costliest check first
    assert lines[-1].split()[-3:] == ["1.0", "0.50", "11%"]


def test_profile_of_results_without_timings_is_zero_not_a_crash():
    """A grader-error result (no cells, no cases, odd values) counts as zero time."""
    found = profile({"x": {"execution_time": None, "extra_data": {}, "tests": [{"name": "t"}]}},
                    wall_seconds=0.0, slots=1)
    assert (found.total, found.cells, found.checks_total, found.other) == (0.0, 0.0, 0.0, 0.0)
    assert "0%" in format_profile(found)
