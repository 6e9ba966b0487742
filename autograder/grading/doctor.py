"""Verifying the sandbox by its effects: a probe in a fresh worker, and the `doctor` report.

Every grading slot runs the probe once at start-up (before any submission), so the
layers a result file reports are the layers measured on that machine, and
`--sandbox strict` can refuse to grade when one is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..course import Assignment
from .isolation import LAYERS, Assessment, IsolationError, Plan, assess, probe_source, read_probe
from .options import Limits
from .sandbox import ZygoteHandle
from .session import Cell, SubmissionSession


def secrets_of(assignment: Assignment, hidden: list[str]) -> list[str]:
    """Paths a worker must not read: the hidden checks, the source and solution notebooks, `hidden`."""
    course = assignment.course
    paths = [str(p) for p in sorted(course.checks_dir(assignment.id).glob("test_*.py"))]
    paths += [str(assignment.source_notebook), str(course.solutions_dir(assignment.id) / assignment.notebook_name)]
    paths += [str(Path(p).resolve()) for p in hidden]
    return [p for p in paths if os.path.exists(p)]


def verify(zygote: ZygoteHandle, *, secrets: list[str], limits: Limits) -> Assessment:
    """Run the probe in a fresh worker and judge each layer; `strict` raises when one is missing."""
    session = SubmissionSession(zygote, [Cell(1, probe_source(secrets))], limits=limits)
    try:
        worker = session.ensure_worker()
        record = session.records.get(1)
        probe = read_probe(record.output if record else "")
        assessment = assess(zygote.plan, probe=probe, worker=worker.layers, grader_uid=os.getuid(),
                            secrets=secrets)
    finally:
        session.close()
    if zygote.plan.mode == "strict" and assessment.missing:
        raise IsolationError("--sandbox strict: these layers are missing, so nothing was graded: "
                             f"{', '.join(assessment.missing)}\n" + "\n".join(assessment.notes))
    return assessment


def format_assessment(assessment: Assessment, *, startup_seconds: float | None = None) -> str:
    """The `autograder doctor` table."""
    lines = [f"sandbox mode: {assessment.mode}; namespaces by: {assessment.tool or 'none'}", ""]
    for name in LAYERS:
        state = assessment.layers.get(name) or ("off" if name not in assessment.missing else "MISSING")
        lines.append(f"  {name:<14} {state}")
    if startup_seconds is not None:
        lines += ["", f"worker start-up (fork, confine, handshake): {startup_seconds * 1000:.1f} ms median"]
    if assessment.notes:
        lines += ["", *(f"note: {n}" for n in assessment.notes)]
    lines.append("")
    lines.append("all layers in force" if not assessment.missing else f"missing: {', '.join(assessment.missing)}")
    return "\n".join(lines)


def plan_for(assignment: Assignment, *, mode: str, hidden: list[str], limits: Limits, cuda: bool) -> Plan:
    from .isolation import plan

    return plan(mode, hidden=[str(assignment.course.root), *hidden], tmp_bytes=limits.scratch_mb * 2**20, cuda=cuda)
