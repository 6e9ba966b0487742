"""Grading submissions one after another in this trusted process.

A `Grader` owns the collected checks and a zygote; `grade()` takes one submission
from file to `SubmissionResult`, and `serve()` does so for a slot's stream of jobs,
keeping the checks' pytest session open between them. Whatever goes wrong (a
malformed file, a worker that dies, a bug in a check) ends as a result with a clear
message, never as an exception that could stop the batch.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, replace
from typing import Callable, Iterable, TypeVar

from ..course import Assignment
from ..errors import WorkerLost
from .budgets import CellBudgets, load_budgets
from .checks import CheckSuite, RunChecks
from .discover import Submission
from .intake import InvalidSubmission, AutogradedCells, code_cells, read_notebook
from .memory import memory_ceiling
from .results import STATUS_ERROR, STATUS_GRADED, STATUS_INVALID, SubmissionResult
from .options import GradeOptions
from .doctor import plan_for, secrets_of, verify
from .sandbox import SandboxError, ZygoteHandle, cpu_for, pin_to_cpu, worker_uid_for
from .scoring import score_checks
from .session import SubmissionSession

#: Below this much memory per slot (memory.py) a restart re-runs the cells instead of forking the worker after them.
SNAPSHOT_MIN_MEMORY = 2 * 2**30


def snapshots_allowed(*, pid_namespace: bool, cuda: bool, ceiling: int | None, slots: int = 1) -> bool:
    """Whether a restart may fork the worker after its cells: only where the worker is PID 1 of its own PID
    namespace (everything a child leaves behind stays below the fork server), a fork has no GPU to share, and
    this slot's share of the memory (`slots` grade side by side) has room for the template beside its fork.
    An unknown ceiling (no /proc/meminfo) counts as too small."""
    return (pid_namespace and not cuda and ceiling is not None
            and ceiling // max(1, slots) >= SNAPSHOT_MIN_MEMORY)


GRADER_ERROR = (
    "No se pudo corregir tu entrega por un error del corrector (no es culpa de tu código). "
    "Los docentes volverán a corregirla."
)


J = TypeVar("J")


class Grader:
    def __init__(self, assignment: Assignment, *, options: GradeOptions, slot: int = 0, slots: int = 1) -> None:
        import torch

        self.assignment = assignment
        self.options = options
        self.cpu = cpu_for(slot)
        cuda = "cuda" in options.devices and torch.cuda.is_available()
        # The zygote preloads on another core while this process imports the checks, then both pin.
        plan = plan_for(assignment, mode=options.sandbox, hidden=list(options.hidden_paths), limits=options.limits,
                        cuda=cuda)
        self.zygote = ZygoteHandle(threads=options.threads, cuda=cuda, limits=options.limits,
                                   worker_uid=worker_uid_for(slot), plan=plan, cpu=self.cpu)
        import torch._dynamo  # noqa: F401  (imported by the first optimizer step: 1.8 s, paid here once)

        torch.set_num_threads(options.threads)
        self.suite = CheckSuite(assignment.check_files(), public_only=options.public_only,
                                options=options.pytest_options())
        release = read_notebook(assignment.release_notebook, max_bytes=2**30)
        self.tests = AutogradedCells.from_notebook(release)
        self.budgets = load_budgets(assignment) if options.cell_budgets else CellBudgets()
        # Feedback follows the notebook: grade cells in order, public checks before hidden ones.
        order = {cell.grade_id: i for i, cell in enumerate(assignment.grade_cells(assignment.release_notebook))}
        ranked = sorted(enumerate(self.suite.collect()),
                        key=lambda pair: (order.get(pair[1].grade_id, len(order)), pair[1].hidden, pair[0]))
        self.checks = [check for _, check in ranked]
        self.zygote.wait_ready()
        pin_to_cpu(self.cpu)
        try:
            self.isolation = verify(self.zygote, secrets=secrets_of(assignment, list(options.hidden_paths)),
                                    limits=options.limits)
        except BaseException:
            self.zygote.close()
            raise
        self.snapshots = snapshots_allowed(pid_namespace=bool(self.isolation.layers.get("pid_namespace")),
                                           cuda=cuda, ceiling=memory_ceiling(), slots=slots)

    def close(self) -> None:
        self.zygote.close()

    def serve(self, jobs: Iterable[tuple[J, Submission]], *, deliver: Callable[[J, SubmissionResult], None]) -> None:
        """Grade each job's submission and `deliver` its result, in order, the checks running in one pytest session
        for as long as it serves (`CheckSuite.serve`): a grader error, which may have left it in an unknown state,
        closes it and the next submission opens another. Where no session starts, each submission is graded as
        `grade` does, so each gets its result, however the checks failed."""
        pending = iter(jobs)

        def work(run_checks: RunChecks) -> bool:
            """Whether every job was graded."""
            for job, submission in pending:
                result = self.grade(submission, run_checks=run_checks)
                deliver(job, result)
                if result.status == STATUS_ERROR:
                    return False
            return True

        while True:
            served = self.suite.serve(work)
            if not served.started:
                for job, submission in pending:
                    deliver(job, self.grade(submission))
                return
            if served.value:
                return

    def grade(self, submission: Submission, *, run_checks: RunChecks | None = None) -> SubmissionResult:
        """One submission's result; its checks run through `run_checks` (from `CheckSuite.serve`), or in a pytest
        session of their own."""
        started = time.monotonic()
        result = SubmissionResult(
            student=submission.student, assignment=self.assignment.id,
            source=str(submission.path) if submission.path else "", status=STATUS_GRADED,
            scores=score_checks(self.checks, []), limits=asdict(self.options.limits), seed=self.options.seed,
        )
        try:
            if submission.problem:
                raise InvalidSubmission(submission.problem)
            notebook = read_notebook(submission.path, max_bytes=self.options.limits.notebook_bytes)
            cell_seconds = self.options.limits.cell_seconds
            cells = [replace(cell, limit=self.budgets.limit(cell.source, cell_seconds=cell_seconds,
                                                             scale=self.options.timing_scale))
                     for cell in code_cells(notebook, tests=self.tests)]
            self._run(cells, result, run_checks or self.suite.run)
        except InvalidSubmission as exc:
            result.status, result.message = STATUS_INVALID, str(exc)
            result.scores = score_checks(self.checks, [])
        except Exception:
            result.status, result.message = STATUS_ERROR, GRADER_ERROR
            result.ta_detail = traceback.format_exc()
            result.scores = score_checks(self.checks, [])
        result.seconds = time.monotonic() - started
        return result

    def _run(self, cells: list, result: SubmissionResult, run_checks: RunChecks) -> None:
        session = SubmissionSession(self.zygote, cells, limits=self.options.limits, snapshots=self.snapshots)
        try:
            try:
                session.ensure_worker()
            except WorkerLost:
                pass  # every check will say why; the cell records say where
            run = run_checks(session, cells=[(f"celda {c.index}", c.source) for c in cells])
        finally:
            session.close()
            result.cells = [session.records[i] for i in sorted(session.records)]
            result.output = "".join(session.output)
            result.output_dropped = session.output_dropped
            result.restarts = session.restarts
            result.layers = {**self.isolation.to_dict(), "worker": session.layers}
        if session.sandbox_failure:
            raise SandboxError(session.sandbox_failure)
        result.scores = score_checks(self.checks, run.outcomes, run.verdicts)
        result.rules = run.verdicts
