"""A grading slot: a trusted process that grades the submissions the coordinator sends it.

Protocol (JSON lines over two pipes): the first job line is the configuration; the
slot answers `ready` (with the grade cells and their points) or `failed`; then one
`done` line per job, carrying the result file's text for the coordinator to write.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from pathlib import Path
from typing import Iterable, Iterator

from ..course import Course
from ..worker.limits import hide_from_inspection
from .discover import Submission
from .grader import Grader
from .isolation import IsolationError
from .options import GradeOptions
from .results import SubmissionResult, dump


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs-fd", type=int, required=True)
    parser.add_argument("--replies-fd", type=int, required=True)
    args = parser.parse_args()
    hide_from_inspection()  # the trusted process: no same-uid process may trace it or touch its memory
    jobs = os.fdopen(args.jobs_fd, "r", encoding="utf-8")
    replies = os.fdopen(args.replies_fd, "w", encoding="utf-8", buffering=1)

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    config = json.loads(jobs.readline())
    try:
        assignment = Course(Path(config["course"])).assignment(config["assignment"])
        grader = Grader(assignment, options=GradeOptions.from_dict(config["options"]), slot=config["slot"],
                        slots=config.get("slots", 1))
    except IsolationError as exc:
        send({"event": "failed", "detail": str(exc)})
        raise SystemExit(1) from None
    except Exception:
        send({"event": "failed", "detail": traceback.format_exc()})
        raise SystemExit(1) from None
    cells: dict[str, float] = {}
    for check in grader.checks:
        cells[check.grade_id] = cells.get(check.grade_id, 0.0) + check.points
    send({"event": "ready", "grade_cells": cells, "zygote": grader.zygote.info,
          "isolation": grader.isolation.to_dict()})

    def deliver(job: dict, result: SubmissionResult) -> None:
        result.fingerprint = job["fingerprint"]
        if job.get("source") is not None:  # a copy of the file (on a Dask worker): name the original
            result.source = job["source"]
        send(done_message(result))

    try:
        grader.serve(read_jobs(jobs), deliver=deliver)
    finally:
        grader.close()
    replies.close()
    os._exit(0)  # every reply is written: skip the interpreter's teardown of torch and the checks (about a second)


def read_jobs(lines: Iterable[str]) -> Iterator[tuple[dict, Submission]]:
    """Each job line, with its submission, as the coordinator sends them."""
    for line in lines:
        job = json.loads(line)
        yield job, Submission(job["student"], Path(job["path"]) if job["path"] else None, job["problem"])


def done_message(result: SubmissionResult) -> dict:
    """What the coordinator needs of one graded submission: the result file's text and its summary row."""
    return {"event": "done", "student": result.student, "text": dump(result), "score": result.score,
            "max_score": result.max_score, "status": result.status, "seconds": round(result.seconds, 3),
            "restarts": result.restarts, "cell_errors": sum(c.status != "ok" for c in result.cells)}


if __name__ == "__main__":
    main()
