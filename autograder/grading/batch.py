"""Grading a whole class: N slot processes, a progress bar, result files and a summary.

The coordinator (this module) never imports torch or runs checks: it discovers
submissions, hands them to slots, writes each result file atomically as soon as it
arrives, and at the end checks that no file was altered, writes gradebook.csv and
returns the summary. A slot that dies costs at most one retry of its submission;
if that dies too, the student gets a grader-error result (not a zero for their code).
With `cluster`, the slots are Dask workers instead (cluster.py); the rest is the same.
"""

from __future__ import annotations

import json
import os
import selectors
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..course import Course
from ..worker.limits import hide_from_inspection
from .discover import Submission
from .intake import AutogradedCells, read_notebook
from .store import ResultStore, assignment_digest, crash_result, fingerprint
from .twins import group_twins, twin_result

if TYPE_CHECKING:
    from .cluster import ClusterSpec

SLOT_START_SECONDS = 300.0
JOB_MARGIN_SECONDS = 120.0  # a slot enforces the submission budget itself; this catches a stuck slot
MAX_REPLACEMENTS = 10


class BatchError(Exception):
    """The batch cannot run at all (for TAs, English)."""


@dataclass
class BatchRow:
    student: str
    score: float
    max_score: float
    status: str
    seconds: float
    restarts: int = 0
    cell_errors: int = 0
    kept: bool = False  # finished by an earlier run
    twin_of: str = ""  # graded once with this student's submission, which has the same code


@dataclass
class BatchReport:
    assignment: str
    out_dir: Path
    rows: list[BatchRow]
    gradebook: Path | None
    seconds: float
    restored: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    isolation: dict = field(default_factory=dict)


class _Slot:
    """One slot process and the job it is working on."""

    def __init__(self, index: int, config: dict) -> None:
        jobs_read, self._jobs_write = os.pipe()
        self._replies_read, replies_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "autograder.grading.slot",
             "--jobs-fd", str(jobs_read), "--replies-fd", str(replies_write)],
            pass_fds=(jobs_read, replies_write), stdin=subprocess.DEVNULL,
        )
        os.close(jobs_read)
        os.close(replies_write)
        self.jobs = os.fdopen(self._jobs_write, "w", encoding="utf-8", buffering=1)
        self.replies = os.fdopen(self._replies_read, "r", encoding="utf-8")
        self.index = index
        self.ready = False
        self.current: Submission | None = None
        self.assigned_at = 0.0
        self._send({**config, "slot": index})

    def _send(self, message: dict) -> None:
        self.jobs.write(json.dumps(message) + "\n")
        self.jobs.flush()

    def assign(self, submission: Submission, fingerprint: str) -> None:
        self.current = submission
        self.assigned_at = time.monotonic()
        self._send({"student": submission.student, "path": str(submission.path) if submission.path else None,
                    "problem": submission.problem, "fingerprint": fingerprint})

    def read(self) -> dict | None:
        """The next message, or None once the slot is gone (a line cut short means it died writing)."""
        line = self.replies.readline()
        if not line.endswith("\n"):
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def finish(self) -> None:
        """No more jobs: the slot ends once its current one is done."""
        try:
            self.jobs.close()
        except OSError:
            pass

    def close(self) -> None:
        self.finish()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.replies.close()


def grade_batch(*, course: Course, assignment: str, submissions: list[Submission], out_dir: Path,
                workers: int, options: dict, progress: bool = True, force: bool = False,
                cluster: ClusterSpec | None = None) -> BatchReport:
    """Grade `submissions` with `workers` slots, or on the Dask `cluster`; results go to `out_dir`.

    A submission whose result in `out_dir` graded the same content with the same checks
    is kept, not graded again, unless `force`: re-running a batch that was killed
    finishes it. A folder that cannot be written stops the batch (BatchError), keeping
    every result already written.
    """
    started = time.monotonic()
    hide_from_inspection()  # this process writes the results: no same-uid process may trace it
    try:
        batch = _Batch(course=course, assignment=assignment, submissions=submissions, out_dir=out_dir,
                       workers=0 if cluster else workers, options=options, progress=progress, force=force)
    except OSError as exc:
        raise BatchError(f"cannot use the output folder {out_dir}: {exc.strerror or exc}") from None
    try:
        if cluster is None:
            batch.run()
        else:
            from .cluster import grade_on_cluster

            grade_on_cluster(batch, course=course, cluster=cluster)
    finally:
        batch.close()
    try:
        restored = batch.store.verify()
        gradebook = batch.store.write_gradebook(list(batch.grade_cells)) if batch.grade_cells else None
    except OSError as exc:
        raise BatchError(_write_failure(exc, out_dir, len(batch.rows))) from None
    return BatchReport(assignment, out_dir, sorted(batch.rows, key=lambda r: r.student), gradebook,
                       time.monotonic() - started, restored, batch.results, batch.isolation)


def _write_failure(exc: OSError, out_dir: Path, done: int) -> str:
    return (f"cannot write to the output folder {out_dir}: {exc.strerror or exc}. "
            f"The batch stopped; the {done} result(s) already written are kept. Fix the folder and run the "
            "same command again: finished submissions are not graded again.")


class _Batch:
    """The coordinator's loop: hand out submissions, collect results, replace slots that die."""

    def __init__(self, *, course: Course, assignment: str, submissions: list[Submission], out_dir: Path,
                 workers: int, options: dict, progress: bool, force: bool) -> None:
        self.assignment = assignment
        self.store = ResultStore(out_dir)
        target = course.assignment(assignment)
        grading = assignment_digest(target, public_only=bool(options.get("public_only")))
        self.fingerprints = {s.student: fingerprint(s.path, s.problem, grading=grading) for s in submissions}
        # The worker must see neither the results nor any submission (its own comes over its pipe).
        hidden = [str(out_dir), *{str(s.path.parent) for s in submissions if s.path}]
        options = {**options, "hidden_paths": sorted({*options.get("hidden_paths", ()), *hidden})}
        self.config = {"course": str(course.root), "assignment": assignment, "options": options,
                       "slots": workers}  # the slots share this machine's memory (grader.snapshots_allowed)
        self.isolation: dict = {}
        self.job_seconds = options["limits"]["submission_seconds"] + JOB_MARGIN_SECONDS
        self.rows: list[BatchRow] = []
        self.results: dict[str, dict] = {}
        self.grade_cells: dict[str, float] = {}
        pending = []
        for submission in submissions:
            stored = None if force else self.store.finished(submission.student, self.fingerprints[submission.student])
            if stored is None:
                pending.append(submission)
            else:
                self._keep(submission.student, stored)
        tests = AutogradedCells.from_notebook(read_notebook(target.release_notebook, max_bytes=2**30))
        groups = group_twins(pending, tests=tests, max_bytes=options["limits"]["notebook_bytes"], grading=grading)
        self.pending, self.twins = groups.to_grade, groups.twins
        self.retries: dict[str, int] = {}
        self.replacements = 0
        self.selector = selectors.DefaultSelector()
        self.slots = [self._start_slot(i) for i in range(min(workers, len(self.pending)))]
        self.bar = _progress(len(pending), enabled=progress)

    def _keep(self, student: str, data: dict) -> None:
        self.results[student] = data
        if not self.grade_cells:
            self.grade_cells = {g: float(v["max_score"]) for g, v in data["extra_data"]["grade_cells"].items()}
        self.rows.append(BatchRow(student, data["score"], data["max_score"], data["extra_data"]["status"],
                                  float(data.get("execution_time", 0.0)), kept=True))

    def _write(self, student: str, text: str) -> None:
        try:
            self.store.write(student, text)
        except OSError as exc:
            raise BatchError(_write_failure(exc, self.store.out_dir, len(self.store.written))) from None

    def _start_slot(self, index: int) -> _Slot:
        slot = _Slot(index, self.config)
        self.selector.register(slot.replies, selectors.EVENT_READ, slot)
        return slot

    def run(self) -> None:
        deadline = time.monotonic() + SLOT_START_SECONDS
        while self.pending or any(s.current for s in self.slots):
            events = self.selector.select(timeout=5.0)
            if not events and not any(s.ready for s in self.slots) and time.monotonic() > deadline:
                raise BatchError("no grading slot became ready in time")
            for key, _ in events:
                self._handle(key.data)
            for slot in self.slots:  # a slot stuck past any submission's budget is killed and replaced
                if slot.current and time.monotonic() - slot.assigned_at > self.job_seconds:
                    slot.process.kill()

    def _handle(self, slot: _Slot) -> None:
        message = slot.read()
        if message is None:
            self._replace(slot)
            return
        event = message.get("event")
        if event == "failed":
            raise BatchError(f"grading slot {slot.index} could not start:\n{message.get('detail')}")
        if event == "ready":
            slot.ready = True
            self.grade_cells = message["grade_cells"]
            self.isolation = message.get("isolation", {})
        elif event == "done":
            self.done(message)
            slot.current = None
        for idle in self.slots:  # `done` may have put a failed representative's twins back in line
            if idle.ready and idle.current is None and self.pending:
                submission = self.pending.pop(0)
                idle.assign(submission, self.fingerprints[submission.student])

    def _replace(self, slot: _Slot) -> None:
        """A slot died: start another, and retry its submission once (then record a grader error)."""
        self.selector.unregister(slot.replies)
        slot.close()
        if not slot.ready and not self.grade_cells:
            raise BatchError(f"grading slot {slot.index} exited before it was ready")
        self.replacements += 1
        if self.replacements > MAX_REPLACEMENTS:
            raise BatchError(f"grading slots died {self.replacements} times; giving up "
                             f"(results written so far are kept in {self.store.out_dir})")
        self.slots[self.slots.index(slot)] = self._start_slot(slot.index)
        lost = slot.current
        if lost is None:
            return
        self.retries[lost.student] = self.retries.get(lost.student, 0) + 1
        if self.retries[lost.student] <= 1:
            self.pending.insert(0, lost)
            return
        self.grader_error(lost, "the grading process died twice on this submission")

    def done(self, message: dict) -> None:
        """A slot's `done` message (see slot.done_message): write the result, count it."""
        self._write(message["student"], message["text"])
        self.results[message["student"]] = json.loads(message["text"])
        self.rows.append(BatchRow(message["student"], message["score"], message["max_score"], message["status"],
                                  message["seconds"], message["restarts"], message["cell_errors"]))
        self.bar.update(1)
        twins = self.twins.pop(message["student"], [])
        if message["status"] == "error":  # a grader error says nothing of the code: each twin is graded itself
            self.pending.extend(twins)
            return
        for twin in twins:
            text = twin_result(message["text"], student=twin.student, source=str(twin.path),
                               fingerprint=self.fingerprints[twin.student], graded_as=message["student"])
            self._write(twin.student, text)
            self.results[twin.student] = json.loads(text)
            self.rows.append(BatchRow(twin.student, message["score"], message["max_score"], message["status"],
                                      0.0, message["restarts"], message["cell_errors"], twin_of=message["student"]))
            self.bar.update(1)

    def grader_error(self, submission: Submission, detail: str) -> None:
        """A submission the grader could not grade (not the student's fault): a zero with `detail` for TAs.

        Its twins are not condemned with it: each goes back in line to be graded on its own.
        """
        self.pending.extend(self.twins.pop(submission.student, []))
        text = crash_result(student=submission.student, assignment=self.assignment,
                            source=str(submission.path or ""), grade_cells=self.grade_cells, detail=detail)
        self._write(submission.student, text)
        self.rows.append(BatchRow(submission.student, 0.0, sum(self.grade_cells.values()), "error", 0.0))
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        for slot in self.slots:  # every slot winds down at once, then each is waited for
            slot.finish()
        for slot in self.slots:
            slot.close()


def _progress(total: int, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="entrega", desc="corrigiendo", disable=not enabled or None, file=sys.stderr,
                dynamic_ncols=True)


def format_summary(report: BatchReport) -> str:
    """The class summary table printed at the end of `autograder grade`."""
    if not report.rows:
        return "No submissions were graded."
    width = max(8, *(len(r.student) for r in report.rows))
    lines = [f"{'student':<{width}}  {'score':>13}  {'status':<8}  {'time':>7}  notes",
             f"{'-' * width}  {'-' * 13}  {'-' * 8}  {'-' * 7}  -----"]
    for r in report.rows:
        notes = []
        if r.cell_errors:
            notes.append(f"{r.cell_errors} cell error{'s' * (r.cell_errors != 1)}")
        if r.restarts:
            notes.append(f"{r.restarts} worker restart{'s' * (r.restarts != 1)}")
        if r.kept:
            notes.append("kept from an earlier run")
        if r.twin_of:
            notes.append(f"same code as {r.twin_of}: graded once")
        lines.append(f"{r.student:<{width}}  {r.score:>6g} / {r.max_score:<4g}  {r.status:<8}  "
                     f"{r.seconds:>6.1f}s  {', '.join(notes)}")
    scores = [r.score for r in report.rows]
    lines.append("")
    lines.append(f"{len(report.rows)} submissions in {report.seconds:.1f}s; score mean {statistics.mean(scores):.2f}, "
                 f"median {statistics.median(scores):g}, max {max(scores):g} of {report.rows[0].max_score:g}")
    lines.append(f"results: {report.out_dir}/<student>.json; gradebook: {report.gradebook}")
    twins = sum(bool(r.twin_of) for r in report.rows)
    if twins:
        lines.append(f"{twins} submission(s) with the same code as another were graded once, with it")
    kept = sum(r.kept for r in report.rows)
    if kept:
        lines.append(f"{kept} submission(s) already graded by an earlier run were kept (--force regrades)")
    if report.isolation:
        missing = report.isolation.get("missing") or []
        lines.append(f"sandbox ({report.isolation.get('mode')}): "
                     + (f"MISSING layers: {', '.join(missing)} (run `autograder doctor`)" if missing
                        else "every layer in force"))
    if report.restored:
        lines.append(f"WARNING: result files altered during the batch were restored: {', '.join(report.restored)}")
    return "\n".join(lines)
