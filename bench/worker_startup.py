"""What the sandbox layers cost: zygote and worker start-up with each way of isolating, in the same run.

For `off` (the foundation only: separate process, rlimits, uid, no_new_privs), the
`unshare` fallback and bubblewrap, this starts a zygote as grading does, verifies
the layers by their effect, and times `--runs` workers from request to ready. The
ratio column is each median worker start over the `off` median. Usage:

    .venv/bin/python bench/worker_startup.py [--runs 40] [--assignment u1_backprop]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from autograder.course import Course
from autograder.grading.doctor import doctor
from autograder.grading.isolation import bwrap_available, unshare_available
from autograder.grading.options import Limits

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--assignment", default="u1_backprop")
    args = parser.parse_args()
    assignment = Course(REPO).assignment(args.assignment)
    variants = [("off", "off", ())]
    if unshare_available():
        variants.append(("unshare", "auto", ("unshare",)))
    if bwrap_available():
        variants.append(("bubblewrap", "auto", ("bwrap",)))
    rows = []
    for name, mode, prefer in variants:
        report = doctor(assignment, mode=mode, limits=Limits(), runs=args.runs, prefer=prefer)
        rows.append((name, report))
    base = statistics.median(rows[0][1].startup_seconds)
    print(f"{'sandbox':<11} {'zygote s':>8} {'worker ms (median)':>19} {'p90 ms':>7} {'ratio':>6}  missing layers")
    for name, report in rows:
        times = sorted(report.startup_seconds)
        median = statistics.median(times)
        p90 = times[int(0.9 * (len(times) - 1))]
        missing = ", ".join(report.assessment.missing) or "-"
        print(f"{name:<11} {report.zygote_seconds:>8.2f} {median * 1000:>19.1f} {p90 * 1000:>7.1f} "
              f"{median / base:>6.2f}  {missing}")


if __name__ == "__main__":
    main()
