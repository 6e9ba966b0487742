"""Running an assignment's checks, in this trusted process, against one submission.

The check modules are imported once (the first collection) and reused by every
later `pytest.main` call in the process (`run_pytest`); each submission gets its own pytest
session with conftest loading disabled, built-in plugins it does not need turned
off, and a `CheckRun` plugin that provides `student` and collects the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ..plugin import CaseOutcome, CheckRun, check_metadata, run_args, run_pytest, title_of
from ..remote import Client, StudentNamespace, Transport
from ..rules import ByHand, RuleVerdict, RuleWatch


class SuiteError(Exception):
    """The checks themselves are broken (for instructors, English)."""


@dataclass(frozen=True)
class CheckInfo:
    """One check function: what it is worth and where it counts."""

    check: str
    title: str
    grade_id: str
    points: float
    hidden: bool
    file: str = ""


class _Collector:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


class CheckSuite:
    """The check files of one assignment."""

    def __init__(self, files: list[Path], *, public_only: bool = False, options: list[str] = ()) -> None:
        self.files = [str(f) for f in files]
        self.rootdir = str(Path(files[0]).parent)
        self.public_only = public_only
        self.options = list(options)
        self.rules: tuple[ByHand, ...] = ()  # known after collect()

    def _args(self, extra: list[str]) -> list[str]:
        flags = ["--ag-public-only"] if self.public_only else []
        return run_args(self.files, self.rootdir, extra=[*flags, *self.options, *extra])

    def collect(self) -> list[CheckInfo]:
        """Import the checks and validate their markers and rules; one entry per check function."""
        collector = _Collector()
        run = CheckRun(lambda: None)
        code = run_pytest(self._args(["--collect-only"]), plugins=[collector, run])
        if run.errors or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            raise SuiteError("the checks could not be collected:\n" + "\n".join(run.errors or [f"exit code {code}"]))
        self.rules = run.rules
        checks: dict[str, CheckInfo] = {}
        for item in collector.items:
            grade_id, points, _ = check_metadata(item)
            name = getattr(item, "originalname", item.name)
            previous = checks.get(name)
            if previous and previous.file != item.path.name:
                raise SuiteError(f"check {name} is defined in both {previous.file} and {item.path.name}")
            checks[name] = CheckInfo(
                check=name, title=title_of(item), grade_id=grade_id, points=points,
                hidden=item.get_closest_marker("hidden") is not None, file=item.path.name,
            )
        return list(checks.values())

    def run(self, transport: Transport, *, cells: list[tuple[str, str]], extra: list[str] = ()) -> SuiteRun:
        """Run every check against the submission behind `transport`; `cells` ((label, Python) in
        notebook order) are what the by-hand rules read."""
        watch = RuleWatch(cells=cells)
        client = Client(transport, watch=watch)
        run = CheckRun(lambda: StudentNamespace(client), watch=watch)
        code = run_pytest(self._args(list(extra)), plugins=[run])
        if run.errors or code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise SuiteError("the check run failed:\n" + "\n".join(run.errors or [f"exit code {code}"]))
        return SuiteRun(run.outcomes, run.verdicts)


@dataclass(frozen=True)
class SuiteRun:
    """What one run of the checks found: a case per check and device, a verdict per by-hand rule."""

    outcomes: list[CaseOutcome]
    verdicts: list[RuleVerdict]
