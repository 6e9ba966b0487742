"""The `autograder` command: thin wrappers over the library functions.

    autograder build [ASSIGNMENT ...]          source/ -> release/ and solutions/
    autograder grade ASSIGNMENT PATH ...       grade a class, write results and gradebook.csv
    autograder check NOTEBOOK                  a student's public checks, isolated, from a terminal
    autograder calibrate ASSIGNMENT            timing ratios of the solution, to set thresholds
    autograder doctor [ASSIGNMENT]             which sandbox layers this machine gives the workers
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import fields
from pathlib import Path

from .course import Course, CourseError
from .grading.isolation import MODES as SANDBOX_MODES

LIMIT_FLAGS = {
    "call_seconds": "time limit of one call into the student's code",
    "cell_seconds": "time limit of one notebook cell",
    "check_seconds": "time budget of one check case",
    "submission_seconds": "time budget of a whole submission",
    "memory_mb": "extra memory a worker may use (MiB)",
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (CourseError, _Failure) as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2


class _Failure(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description="Build, check and grade the course notebooks.")
    parser.add_argument("--course", type=Path, default=None, help="course root (default: found from the cwd)")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build release/ and solutions/ from source/")
    build.add_argument("assignments", nargs="*", help="assignment ids (default: all)")
    build.set_defaults(run=_build)

    grade = commands.add_parser("grade", help="grade submissions of one assignment")
    grade.add_argument("assignment")
    grade.add_argument("paths", nargs="+", type=Path,
                       help="notebooks, folders of notebooks or of student folders, an nbgrader submitted/ tree, "
                            "or a .zip of any of these (as an LMS or Gradescope exports it)")
    grade.add_argument("--out", type=Path, default=None, help="output folder (default: autograded/<assignment>)")
    grade.add_argument("--workers", type=int, default=1, help="submissions graded in parallel (default: 1)")
    grade.add_argument("--force", action="store_true",
                       help="grade again submissions whose result in the output folder is already up to date")
    _grading_options(grade)
    grade.set_defaults(run=_grade)

    check = commands.add_parser("check", help="run a notebook's public checks, isolated, and print the feedback")
    check.add_argument("notebook", type=Path)
    check.add_argument("--assignment", default=None, help="assignment id (default: from the notebook's name)")
    _grading_options(check)
    check.set_defaults(run=_check)

    calibrate = commands.add_parser("calibrate", help="timing ratios of the solution notebook, repeated")
    calibrate.add_argument("assignment")
    calibrate.add_argument("--runs", type=int, default=10, help="how many times to grade the notebook")
    calibrate.add_argument("--notebook", type=Path, default=None,
                           help="notebook to time (default: the solution notebook)")
    _grading_options(calibrate)
    calibrate.set_defaults(run=_calibrate)

    doctor = commands.add_parser("doctor", help="verify the sandbox layers on this machine and time worker start-up")
    doctor.add_argument("assignment", nargs="?", default=None,
                        help="assignment whose hidden files the probe tries to read (default: the first)")
    doctor.add_argument("--sandbox", choices=SANDBOX_MODES, default="auto", help="mode to verify (default: auto)")
    doctor.add_argument("--runs", type=int, default=20, help="workers to start for the timing (default: 20)")
    doctor.set_defaults(run=_doctor)
    return parser


def _grading_options(parser: argparse.ArgumentParser) -> None:
    from .grading.options import Limits

    parser.add_argument("--seed", type=int, default=None, help="seed of the checks' random inputs (default: fresh)")
    parser.add_argument("--devices", default="cpu,cuda", help="devices checks may run on (default: cpu,cuda)")
    parser.add_argument("--timing-scale", type=float, default=1.0, help="multiply every timing threshold")
    parser.add_argument("--sandbox", choices=SANDBOX_MODES, default="auto",
                        help="auto: every layer the machine supports, missing ones reported; strict: refuse to "
                             "grade unless all are in force; off: no namespaces or seccomp (default: auto)")
    defaults = {f.name: f.default for f in fields(Limits)}
    for name, text in LIMIT_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(defaults[name]),
                            default=defaults[name], help=f"{text} (default: {defaults[name]})")


def _course(args: argparse.Namespace) -> Course:
    return Course.find(args.course)


def _options(args: argparse.Namespace, *, public_only: bool = False) -> dict:
    from .grading.options import GradeOptions, Limits

    limits = Limits(**{name: getattr(args, name) for name in LIMIT_FLAGS})
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    options = GradeOptions(limits=limits, seed=seed, devices=tuple(d for d in args.devices.split(",") if d),
                           public_only=public_only, timing_scale=args.timing_scale, sandbox=args.sandbox)
    return options.to_dict()


def _build(args: argparse.Namespace) -> int:
    from .build import BuildError, build_assignment

    course = _course(args)
    for assignment in args.assignments or course.assignments():
        try:
            report = build_assignment(course, assignment)
        except BuildError as exc:
            raise _Failure(f"{assignment}: {exc}") from None
        total = sum(p["points"] for p in report.points.values())
        print(f"built {assignment}: {report.release.relative_to(course.root)}, "
              f"{report.solutions.relative_to(course.root)} ({len(report.points)} grade cells, {total:g} points)")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from .grading.archive import ArchiveError, unpacked
    from .grading.batch import BatchError, format_summary, grade_batch
    from .grading.discover import DiscoveryError, discover

    course = _course(args)
    assignment = course.assignment(args.assignment)
    out = args.out or course.root / "autograded" / assignment.id
    try:
        with unpacked(args.paths) as paths:
            submissions = discover(paths, assignment=assignment.id, notebook_name=assignment.notebook_name)
            if not submissions:
                raise _Failure("no submissions found in the given paths")
            report = grade_batch(course=course, assignment=assignment.id, submissions=submissions, out_dir=out,
                                 workers=args.workers, options=_options(args), force=args.force)
    except (ArchiveError, DiscoveryError, BatchError) as exc:
        raise _Failure(str(exc)) from None
    print(format_summary(report))
    return 0


def _check(args: argparse.Namespace) -> int:
    import tempfile

    from .grading.batch import BatchError, grade_batch
    from .grading.discover import Submission, student_id
    from .grading.feedback import format_feedback

    course = _course(args)
    assignment_id = args.assignment or _assignment_for(course, args.notebook)
    submission = Submission(student_id(args.notebook.stem), args.notebook)
    with tempfile.TemporaryDirectory(prefix="autograder-check-") as out:
        try:
            report = grade_batch(course=course, assignment=assignment_id, submissions=[submission],
                                 out_dir=Path(out), workers=1, options=_options(args, public_only=True),
                                 progress=False)
        except BatchError as exc:
            raise _Failure(str(exc)) from None
    print(format_feedback(report.results[submission.student]))
    return 0


def _assignment_for(course: Course, notebook: Path) -> str:
    for assignment in course.assignments():
        if course.assignment(assignment).notebook_name == notebook.name:
            return assignment
    raise _Failure(f"no assignment has a notebook named {notebook.name}; pass --assignment")


def _calibrate(args: argparse.Namespace) -> int:
    from .grading.calibrate import calibrate, format_calibration

    course = _course(args)
    assignment = course.assignment(args.assignment)
    notebook = args.notebook or course.solutions_dir(assignment.id) / assignment.notebook_name
    report = calibrate(course=course, assignment=assignment.id, notebook=notebook, runs=args.runs,
                       options=_options(args))
    print(format_calibration(report))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .grading.doctor import doctor, format_doctor
    from .grading.options import Limits

    course = _course(args)
    assignment = course.assignment(args.assignment or course.assignments()[0])
    report = doctor(assignment, mode=args.sandbox, limits=Limits(), runs=args.runs)
    print(format_doctor(report))
    return 1 if args.sandbox == "strict" and report.assessment.missing else 0


if __name__ == "__main__":
    sys.exit(main())
