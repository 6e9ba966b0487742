"""One pytest session serving many submissions (`CheckSuite.serve`, `Grader.serve`): each submission's run is the
run it would have had in a session of its own, and a broken session never costs another submission its result."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from autograder.grading.checks import CheckSuite, SuiteError
from autograder.grading.discover import Submission
from autograder.grading.grader import Grader
from autograder.grading.results import STATUS_ERROR, STATUS_GRADED, SubmissionResult
from autograder.remote import LocalTransport

CHECKS = r'''
from pathlib import Path

import pytest
import torch
from autograder.rules import ByHand, Forbidden

BY_HAND = [ByHand("double", names=("double",), forbid=(Forbidden("`+`", "", ops=frozenset({"add"})),),
                  instead="multiplica por 2")]


@pytest.fixture(scope="module")
def table():
    with open(Path(__file__).with_suffix(".log"), "a") as log:  # set up once per submission's run
        log.write("set up\n")
    yield {}


@pytest.mark.grade_id("double")
@pytest.mark.points(1)
def test_double(student, table):
    """double"""
    assert "seen" not in table, "a module fixture outlived its run"
    table["seen"] = True
    assert float(student.double(torch.tensor(3.0))) == 6.0, "double(3) != 6"


@pytest.mark.grade_id("double")
@pytest.mark.points(1)
def test_records_one_property(student, request):
    """one property per run"""
    request.node.user_properties.append(("ratio", 1.0))
    assert len(request.node.user_properties) == 1, "properties piled up"
'''


@pytest.fixture
def suite(tmp_path) -> CheckSuite:
    """The probe checks in a module of their own: pytest keeps an imported module by name, and the log its
    fixture writes is beside its file."""
    (tmp_path / "checks").mkdir()
    path = tmp_path / "checks" / f"test_serve_probe_{uuid.uuid4().hex}.py"
    path.write_text(textwrap.dedent(CHECKS))
    return CheckSuite([path])


def namespace(source: str) -> dict:
    scope: dict = {}
    exec(source, scope)  # noqa: S102 (the test's own code)
    return scope


def outcomes(run) -> dict[str, str]:
    return {case.check: case.outcome for case in run.outcomes}


def test_each_submission_in_a_served_session_gets_its_own_run(suite):
    """Graded one after another in one session, does each submission get its own outcomes and rule verdict, its
    own module fixtures and user properties, as a session of its own gives it?"""
    sources = ["def double(x):\n    return 2 * x", "def double(x):\n    return x + 1",
               "def double(x):\n    return x + x", "def double(x):\n    return 2 * x"]

    def work(run_checks):
        return [run_checks(LocalTransport(namespace(source)), cells=[("celda 1", source)]) for source in sources]

    served = suite.serve(work)
    assert served.started
    runs = served.value
    assert [outcomes(run)["test_double"] for run in runs] == ["passed", "failed", "passed", "passed"]
    assert all(outcomes(run)["test_records_one_property"] == "passed" for run in runs)
    assert [[v.status for v in run.verdicts] for run in runs] == [["passed"], ["violated"], ["violated"], ["passed"]]
    alone = suite.run(LocalTransport(namespace(sources[2])), cells=[("celda 1", sources[2])])
    assert outcomes(alone) == outcomes(runs[2]) and alone.verdicts == runs[2].verdicts
    assert Path(suite.files[0]).with_suffix(".log").read_text() == "set up\n" * (len(sources) + 1)


def test_a_session_whose_checks_do_not_collect_never_starts_its_work(tmp_path):
    """When a check file cannot be imported, is `work` left uncalled (so the caller grades another way)?"""
    path = tmp_path / "test_broken_probe.py"
    path.write_text("def test_x(:\n    pass\n")
    called = []
    served = CheckSuite([path]).serve(lambda run_checks: called.append(run_checks))
    assert not served.started and called == []


def test_an_exception_of_the_work_comes_out_once_the_session_is_closed(suite):
    """Does an error of the caller's (a slot whose coordinator went away) come out of `serve`, not vanish into
    pytest's internal-error report?"""
    def work(run_checks):
        raise BrokenPipeError("the coordinator left")

    with pytest.raises(BrokenPipeError):
        suite.serve(work)


class FakeSuite:
    """`CheckSuite.serve`'s contract, scripted: sessions that fail to start, or hand out a `run_checks`."""

    def __init__(self, starts: list[bool]) -> None:
        self.starts = starts
        self.sessions = 0

    def serve(self, work):
        from autograder.grading.checks import Served

        started = self.starts[min(self.sessions, len(self.starts) - 1)]
        self.sessions += 1
        if not started:
            return Served(False)
        session = self.sessions
        return Served(True, work(lambda transport, *, cells: session))


def scripted_grader(suite: FakeSuite, errors: set[str]) -> tuple[Grader, list]:
    """A Grader whose `grade` records which session (or none) graded each submission, failing the named ones."""
    grader = object.__new__(Grader)
    grader.suite = suite
    graded = []

    def grade(submission: Submission, *, run_checks=None) -> SubmissionResult:
        session = run_checks(None, cells=[]) if run_checks else None
        graded.append((submission.student, session))
        status = STATUS_ERROR if submission.student in errors else STATUS_GRADED
        return SubmissionResult(student=submission.student, assignment="demo", source="", status=status, scores=[])

    grader.grade = grade
    return grader, graded


def jobs(*names: str):
    return [(name, Submission(name, Path(f"{name}.ipynb"), None)) for name in names]


def test_a_grader_error_closes_the_session_and_the_next_submission_opens_another():
    """After a submission whose grading failed inside the checks' machinery, does the next one get a fresh session,
    and does every submission get exactly one result, in order?"""
    grader, graded = scripted_grader(FakeSuite([True]), errors={"b"})
    delivered = []
    grader.serve(jobs("a", "b", "c", "d"), deliver=lambda job, result: delivered.append((job, result.status)))
    assert graded == [("a", 1), ("b", 1), ("c", 2), ("d", 2)]
    assert delivered == [("a", "graded"), ("b", "error"), ("c", "graded"), ("d", "graded")]


def test_where_no_session_starts_each_submission_is_graded_on_its_own():
    """When the checks' session does not start, is every submission still graded (each in a session of its own,
    which says why) instead of being dropped?"""
    grader, graded = scripted_grader(FakeSuite([True, False]), errors={"a"})
    delivered = []
    grader.serve(jobs("a", "b", "c"), deliver=lambda job, result: delivered.append(job))
    assert graded == [("a", 1), ("b", None), ("c", None)]
    assert delivered == ["a", "b", "c"]


@pytest.mark.parametrize("where", ["report", "verdicts"])
def test_a_run_whose_machinery_fails_raises_suite_error(suite, monkeypatch, where):
    """Does a failure of the run's own machinery, not of a check (a report hook in the middle of the items, or the
    by-hand rules' judge at the end), come out of `run_checks` as `SuiteError`, so that the grader gives that
    submission an error result and closes the session, and does the session then close cleanly?"""
    from autograder.plugin import CheckRun
    from autograder.rules import RuleWatch

    def broken(*args, **kwargs):
        raise RuntimeError("the machinery broke")

    monkeypatch.setattr(*((CheckRun, "_record") if where == "report" else (RuleWatch, "verdicts")), broken)

    def work(run_checks):
        with pytest.raises(SuiteError, match="the machinery broke"):
            run_checks(LocalTransport(namespace("def double(x):\n    return 2 * x")), cells=[("celda 1", "")])
        return True

    assert suite.serve(work).value is True
