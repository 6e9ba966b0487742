"""Verifying the sandbox by its effects: a probe in a fresh worker, and the `doctor` report.

Every grading slot runs the probe once at start-up (before any submission), so the
layers a result file reports are the layers measured on that machine, and
`--sandbox strict` can refuse to grade when one is missing.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ..course import Assignment
from .isolation import LAYERS, Assessment, IsolationError, Plan, assess, plan, probe_source, read_probe
from .options import Limits
from .sandbox import ZygoteHandle, worker_uid_for
from .session import HANDSHAKE_SECONDS, Cell, SubmissionSession


@dataclass
class DoctorReport:
    assessment: Assessment
    zygote_seconds: float  # starting the zygote: the wrapper plus preloading torch
    startup_seconds: list[float]  # asking for a worker until it is ready, once per worker


def secrets_of(assignment: Assignment, hidden: list[str]) -> list[str]:
    """Paths a worker must not read: the hidden checks, the source and solution notebooks, `hidden`."""
    course = assignment.course
    paths = [str(p) for p in sorted(course.checks_dir(assignment.id).glob("test_*.py"))]
    paths += [str(assignment.source_notebook), str(course.solutions_dir(assignment.id) / assignment.notebook_name)]
    paths += [str(Path(p).resolve()) for p in hidden]
    return [p for p in paths if os.path.exists(p)]


def plan_for(assignment: Assignment, *, mode: str, hidden: list[str], limits: Limits, cuda: bool,
             prefer: tuple[str, ...] = ("bwrap", "unshare")) -> Plan:
    """The sandbox of a grading slot: the course and `hidden` paths out of the worker's sight."""
    return plan(mode, hidden=[str(assignment.course.root), *hidden], tmp_bytes=limits.scratch_mb * 2**20,
                cuda=cuda, prefer=prefer)


def measure(zygote: ZygoteHandle, *, secrets: list[str], limits: Limits) -> Assessment:
    """Run the probe in a fresh worker and judge each layer by what the probe could do."""
    session = SubmissionSession(zygote, [Cell(1, probe_source(secrets))], limits=limits)
    try:
        worker = session.ensure_worker()
        record = session.records.get(1)
        probe = read_probe(record.output if record else "")
        return assess(zygote.plan, probe=probe, worker=worker.layers, grader_uid=os.getuid(), secrets=secrets)
    finally:
        session.close()


def enforce(assessment: Assessment) -> None:
    """`--sandbox strict`: refuse to grade when any layer is missing."""
    if assessment.mode == "strict" and assessment.missing:
        raise IsolationError("--sandbox strict: these layers are missing, so nothing was graded: "
                             f"{', '.join(assessment.missing)}\n" + "\n".join(assessment.notes))


def verify(zygote: ZygoteHandle, *, secrets: list[str], limits: Limits) -> Assessment:
    assessment = measure(zygote, secrets=secrets, limits=limits)
    enforce(assessment)
    return assessment


def worker_startup(zygote: ZygoteHandle, *, runs: int) -> list[float]:
    """Seconds from asking for a worker to its `ready` (fork, namespaces, confinement), `runs` times."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        worker = zygote.spawn()
        try:
            worker.handshake(HANDSHAKE_SECONDS)
            times.append(time.perf_counter() - started)
        finally:
            worker.kill()
            worker.output.close()
    return times


def doctor(assignment: Assignment, *, mode: str, limits: Limits, runs: int = 20,
           prefer: tuple[str, ...] = ("bwrap", "unshare")) -> DoctorReport:
    """Start a zygote as grading would, judge every layer by its effect, and time worker start-up."""
    started = time.perf_counter()
    zygote = ZygoteHandle(threads=1, cuda=False, limits=limits, worker_uid=worker_uid_for(0),
                          plan=plan_for(assignment, mode=mode, hidden=[], limits=limits, cuda=False, prefer=prefer))
    try:
        zygote.wait_ready()
        zygote_seconds = time.perf_counter() - started
        assessment = measure(zygote, secrets=secrets_of(assignment, []), limits=limits)
        return DoctorReport(assessment, zygote_seconds, worker_startup(zygote, runs=runs))
    finally:
        zygote.close()


def format_doctor(report: DoctorReport) -> str:
    """The `autograder doctor` table."""
    assessment = report.assessment
    lines = [f"sandbox mode: {assessment.mode}; namespaces by: {assessment.tool or 'none'}", ""]
    for name in LAYERS:
        state = assessment.layers.get(name) or ("MISSING" if name in assessment.missing else "off")
        lines.append(f"  {name:<14} {state}")
    lines += ["", f"zygote start (wrapper + preloading torch): {report.zygote_seconds:.2f} s",
              f"worker start (fork to ready), median of {len(report.startup_seconds)}: "
              f"{statistics.median(report.startup_seconds) * 1000:.1f} ms"]
    lines += [f"note: {n}" for n in assessment.notes]
    if assessment.missing:
        refusal = " (--sandbox strict refuses to grade)" if assessment.mode != "off" else ""
        lines.append(f"missing: {', '.join(assessment.missing)}{refusal}")
    else:
        lines.append("every layer of this mode is in force")
    return "\n".join(lines)
