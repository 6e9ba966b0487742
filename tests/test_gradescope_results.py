"""Our result files mapped to Gradescope's results.json (fast; the container runs are in test_gradescope.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from conftest import REPO

from autograder.gradescope.results import (MAX_TEST_OUTPUT_CHARS, clip, dumps, failure_result, to_gradescope)

SCHEMA = json.loads((REPO / "tests" / "fixtures" / "gradescope_results.schema.json").read_text())


def ours(*, output: str = "bien") -> dict:
    """A result file as `autograder grade` writes it: a by-hand rule, a public and a hidden check."""
    def test(name, grade_id, score, hidden, status="passed"):
        return {"name": name, "score": score, "max_score": 2.0, "status": status, "output": output,
                "visibility": "after_due_date" if hidden else "visible", "tags": [grade_id],
                "extra_data": {"check": name, "grade_id": grade_id, "hidden": hidden,
                               "cases": [{"device": "cpu", "outcome": status, "seconds": 0.01, "properties": {},
                                          "ta_detail": "secreto"}]}}
    rule = {"name": "Regla a mano", "score": 0.0, "max_score": 0.0, "status": "passed", "output": "Se cumple.",
            "visibility": "visible", "tags": ["linear", "by_hand"],
            "extra_data": {"check": "by_hand:linear", "grade_id": "linear", "hidden": False, "cases": []}}
    return {"score": 2.0, "max_score": 6.0, "execution_time": 3.2, "output": "**Puntaje: 2 de 6.**",
            "output_format": "md", "test_output_format": "md", "test_name_format": "md", "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [rule, test("a", "linear", 2.0, False), test("b", "linear", 0.0, True, "failed"),
                      test("c", "relu", 0.0, False, "failed")],
            "extra_data": {"student": "x", "status": "graded", "grade_cells": {"linear": {"score": 2, "max_score": 4}},
                           "cells": [{"index": 1, "status": "error", "seconds": 0.1, "output": "mucho texto",
                                      "error": {"type": "NameError", "message": "m", "traceback": "t"}}],
                           "output": "salida del alumno", "isolation": {"mode": "auto", "missing": []}}}


def test_a_result_maps_to_gradescopes_schema():
    """Is the mapped file valid, without our top-level max_score, with tests numbered part by part?"""
    mapped = to_gradescope(ours())
    jsonschema.validate(mapped, SCHEMA)
    assert "max_score" not in mapped and mapped["extra_data"]["max_score"] == 6.0
    assert [t["number"] for t in mapped["tests"]] == ["1.1", "1.2", "1.3", "2.1"]
    assert mapped["execution_time"] == 4 and isinstance(mapped["execution_time"], int)


def test_hidden_checks_follow_the_courses_choice():
    tests = to_gradescope(ours())["tests"]
    assert [t["visibility"] for t in tests] == ["visible", "visible", "after_due_date", "visible"]
    tests = to_gradescope(ours(), hidden_visibility="hidden")["tests"]
    assert tests[2]["visibility"] == "hidden"
    with pytest.raises(ValueError):
        to_gradescope(ours(), hidden_visibility="nunca")


def test_nothing_a_student_should_not_see_or_that_is_bulky_is_kept():
    """Are TA details of each case, the captured output and the cells' output left out?"""
    text = dumps(to_gradescope(ours()))
    assert "secreto" not in text and "salida del alumno" not in text and "mucho texto" not in text
    assert '"NameError"' in text


def test_long_outputs_are_clipped_with_a_note():
    mapped = to_gradescope(ours(output="x" * 100_000))
    assert all(len(t["output"]) <= MAX_TEST_OUTPUT_CHARS for t in mapped["tests"])
    assert "salida recortada" in mapped["tests"][1]["output"]
    assert clip("corto", 10) == "corto"


def test_a_failure_is_a_valid_zero():
    data = failure_result("Algo salió mal.", detail="Traceback ...")
    jsonschema.validate(data, SCHEMA)
    assert data["score"] == 0 and "Algo salió mal." in data["output"]
    with pytest.raises(ValueError):
        dumps({**data, "max_score": 1})


def test_run_autograder_writes_a_result_even_without_a_bundle(tmp_path):
    """With no gradescope.json at all, does the run still write a zero-score results.json in Spanish?"""
    done = subprocess.run([sys.executable, "-P", "-m", "autograder.gradescope.run", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "results" / "results.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["score"] == 0 and "error del corrector" in data["output"]
    assert "gradescope.json" in data["extra_data"]["ta_detail"]
