"""Running an assignment's checks, in this trusted process, against submissions.

The check modules are imported once (the first collection) and reused by every
later `pytest.main` call in the process (`run_pytest`), with conftest loading
disabled, built-in plugins it does not need turned off, and a `CheckRun` plugin that
provides `student` and collects the outcomes. `CheckSuite.run` gives one submission a
session of its own; `CheckSuite.serve` keeps one session open, collected once, and
runs the same items again for each submission that a grading slot hands it (pytest's
run protocol re-initialises an item's fixtures every time; each submission's run
ends by tearing every fixture down, module-scoped ones included).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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

    def serve(self, work: Callable[[RunChecks], object]) -> Served:
        """`work(run_checks)` inside one pytest session over the collected checks: each `run_checks(transport,
        cells=...)` runs every check against one submission, as `run` does, without a session's set-up and
        collection (about a tenth of a second). `work` is not called when the session does not get that far (the
        checks failed to collect); an exception of `work`'s own comes out of `serve` once the session is closed.
        A `run_checks` that raises `SuiteError` leaves the session's state unknown: `work` should return then."""
        serving = _Serving(work)
        run_pytest(self._args([]), plugins=[serving, serving.run])
        if serving.error is not None:
            raise serving.error
        return Served(serving.started, serving.value)


RunChecks = Callable[..., "SuiteRun"]


@dataclass(frozen=True)
class Served:
    """What `CheckSuite.serve` did: whether `work` ran, and what it returned."""

    started: bool
    value: object = None


class _Serving:
    """The plugin behind `CheckSuite.serve`: pytest's run loop, replaced by `work`."""

    def __init__(self, work: Callable[[RunChecks], object]) -> None:
        self.work = work
        self.run = CheckRun(lambda: None)
        self.started = False
        self.value: object = None
        self.error: BaseException | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if self.run.errors or session.testsfailed:  # a check file that failed to collect: nothing runs
            return True
        items = list(session.items)

        def run_checks(transport: Transport, *, cells: list[tuple[str, str]]) -> SuiteRun:
            watch = RuleWatch(cells=cells)
            client = Client(transport, watch=watch)
            self.run.begin(lambda: StudentNamespace(client), watch=watch)
            for item in items:
                item.user_properties.clear()  # a speed check's ratio is recorded per run
            try:
                for i, item in enumerate(items):
                    item.ihook.pytest_runtest_protocol(item=item,
                                                       nextitem=items[i + 1] if i + 1 < len(items) else None)
                self.run.conclude()
            except Exception as exc:  # a check's own failures end as outcomes: this is the machinery's
                self.run.watch = None  # nothing left to judge when the session closes
                raise SuiteError("the check run failed:\n" + traceback.format_exc()) from exc
            return SuiteRun(self.run.outcomes, self.run.verdicts)

        self.started = True
        try:
            self.value = self.work(run_checks)
        except BaseException as exc:  # pytest would swallow it as an internal error
            self.error = exc
        return True


@dataclass(frozen=True)
class SuiteRun:
    """What one run of the checks found: a case per check and device, a verdict per by-hand rule."""

    outcomes: list[CaseOutcome]
    verdicts: list[RuleVerdict]
