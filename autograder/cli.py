"""The `autograder` command: thin wrappers over the library functions.

    autograder build [ASSIGNMENT ...]          source/ -> release/ and solutions/
    autograder grade ASSIGNMENT PATH ...       grade a class, write results and gradebook.csv
    autograder check NOTEBOOK                  a student's public checks, isolated, from a terminal
    autograder calibrate ASSIGNMENT            timing ratios of the solution, to set thresholds
    autograder doctor [ASSIGNMENT]             which sandbox layers this machine gives the workers
    autograder similarity ASSIGNMENT PATH ...  who handed in the same code (similarity.html, similarity.csv)
    autograder report ASSIGNMENT               the class report for TAs (report.html) from a batch's results
    autograder audit ASSIGNMENT                mutation testing: do the checks catch small bugs in the solution?
    autograder gradescope ASSIGNMENT           the Gradescope autograder zip (setup.sh, run_autograder, checks)
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


def _skip_iri_format_checks() -> None:
    """jsonschema, under nbformat (which writes the graded and feedback notebooks), imports `rfc3987_syntax` when it
    is installed (nbgrader's dependencies install it) to check the "iri" string format, and that import compiles 39
    lark grammars: 2 to 5 s at every start of this command. Nothing here validates IRIs; with the module marked
    absent, jsonschema leaves the "iri" and "iri-reference" formats unchecked, as it does where the package is not
    installed."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    _skip_iri_format_checks()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (CourseError, _Failure) as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2


class _Failure(Exception):
    pass


#: what `run_autograder` needs before a notebook's budget starts (the slot and the zygote import torch)
GRADESCOPE_STARTUP_SECONDS = 60.0
#: `gradescope`'s limit defaults: a worker's extra memory and the time budgets that fit Gradescope's
#: default container (768 MB, half a CPU, 10 minutes); see autograder/gradescope/run.py.
GRADESCOPE_LIMITS = {"memory_mb": 1024, "submission_seconds": 420.0}


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
    grade.add_argument("--profile", action="store_true",
                       help="print where the grading time went: cells, each check, worker start-up and the rest")
    grade.add_argument("--cluster", metavar="ADDRESS", default=None,
                       help="grade on a Dask cluster: its scheduler (tcp://host:port, tls://host:port) or a scheduler "
                            "file; one grading slot per Dask worker (start workers with --nthreads 1); --workers "
                            "is then ignored")
    grade.add_argument("--cluster-tls-ca", type=Path, default=None, metavar="FILE",
                       help="CA certificate of the cluster's TLS (with --cluster-tls-cert and --cluster-tls-key)")
    grade.add_argument("--cluster-tls-cert", type=Path, default=None, metavar="FILE",
                       help="this client's TLS certificate, signed by that CA")
    grade.add_argument("--cluster-tls-key", type=Path, default=None, metavar="FILE", help="its private key")
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
    calibrate.add_argument("--cells", action="store_true",
                           help="write the demonstration cells' own time limits from the solution's times "
                                "(autograder/checks/ASSIGNMENT/cell_seconds.json)")
    _grading_options(calibrate)
    calibrate.set_defaults(run=_calibrate)

    doctor = commands.add_parser("doctor", help="verify the sandbox layers on this machine and time worker start-up")
    doctor.add_argument("assignment", nargs="?", default=None,
                        help="assignment whose hidden files the probe tries to read (default: the first)")
    doctor.add_argument("--sandbox", choices=SANDBOX_MODES, default="auto", help="mode to verify (default: auto)")
    doctor.add_argument("--runs", type=int, default=20, help="workers to start for the timing (default: 20)")
    doctor.set_defaults(run=_doctor)

    similarity = commands.add_parser("similarity", help="who handed in the same code: pairs of submissions whose "
                                                        "graded code is alike after normalisation (MOSS-style)")
    similarity.add_argument("assignment")
    similarity.add_argument("paths", nargs="+", type=Path, help="the submissions, as for `grade`")
    similarity.add_argument("--out", type=Path, default=None,
                            help="where similarity.html and similarity.csv go (default: autograded/<assignment>)")
    similarity.add_argument("--top", type=int, default=50, help="pairs to report (default: 50)")
    similarity.add_argument("--min-score", type=float, default=0.1,
                            help="report only pairs with at least this overall score, 0-1 (default: 0.1)")
    similarity.add_argument("--show", type=int, default=25, help="pairs shown side by side in the page (default: 25)")
    similarity.add_argument("--max-holders", type=int, default=None,
                            help="ignore fingerprints found in more submissions than this, as common code "
                                 "(default: max(10, 1%% of the class), as MOSS's -m)")
    similarity.add_argument("-k", type=int, default=8, help="tokens per k-gram (default: 8)")
    similarity.add_argument("--window", type=int, default=4,
                            help="winnowing window: shared runs of window + k - 1 tokens are always found (default: 4)")
    similarity.set_defaults(run=_similarity)

    report = commands.add_parser("report", help="write the class report (report.html) from a batch's result files")
    report.add_argument("assignment")
    report.add_argument("--out", type=Path, default=None,
                        help="the batch's output folder, where report.html goes (default: autograded/<assignment>)")
    report.set_defaults(run=_report)

    audit = commands.add_parser(
        "audit", help="mutation testing of the checks: grade small changes to the solution",
        description="Grade mutants of the solution notebook (one small change each) and report which survive. "
                    "Here --seed seeds both the sampling of mutants and the checks' inputs, and defaults to 0, "
                    "so a rerun grades the same mutants the same way and keeps their results.")
    audit.add_argument("assignment")
    audit.add_argument("--workers", type=int, default=1, help="mutants graded in parallel (default: 1)")
    audit.add_argument("--max-mutants", type=int, default=None,
                       help="grade at most this many, sampled evenly over parts and operators (default: all)")
    audit.add_argument("--parts", default=None, help="comma-separated grade cells to mutate (default: all)")
    audit.add_argument("--out", type=Path, default=None, help="output folder (default: autograded/audit-<assignment>)")
    audit.add_argument("--force", action="store_true", help="grade again mutants whose result is up to date")
    _grading_options(audit)  # its --seed also seeds the sampling of mutants (default here: 0)
    audit.set_defaults(run=_audit)

    gradescope = commands.add_parser("gradescope", help="write the Gradescope autograder zip of an assignment")
    gradescope.add_argument("assignment")
    gradescope.add_argument("--out", type=Path, default=None,
                            help="the zip to write (default: autograded/<assignment>-gradescope.zip)")
    gradescope.add_argument("--hidden-visibility", default="after_due_date",
                            choices=("after_due_date", "after_published", "hidden"),
                            help="when students see the hidden checks' results (default: after_due_date)")
    gradescope.add_argument("--deadline-seconds", type=float, default=540.0,
                            help="when run_autograder stops grading and writes what it has; keep it under the "
                                 "timeout set on Gradescope and above --submission-seconds plus a minute of "
                                 "start-up (default: 540, under Gradescope's default 600)")
    _grading_options(gradescope, GRADESCOPE_LIMITS)  # stored in the zip; defaults fit Gradescope's default container
    gradescope.set_defaults(run=_gradescope, devices="cpu")  # Gradescope has no GPU
    return parser


def _grading_options(parser: argparse.ArgumentParser, limits: dict | None = None) -> None:
    from .grading.options import Limits

    parser.add_argument("--seed", type=int, default=None, help="seed of the checks' random inputs (default: fresh)")
    parser.add_argument("--devices", default="cpu,cuda", help="devices checks may run on (default: cpu,cuda)")
    parser.add_argument("--timing-scale", type=float, default=1.0, help="multiply every timing threshold")
    parser.add_argument("--sandbox", choices=SANDBOX_MODES, default="auto",
                        help="auto: every layer the machine supports, missing ones reported; strict: refuse to "
                             "grade unless all are in force; off: no namespaces or seccomp (default: auto)")
    parser.add_argument("--no-cell-budgets", dest="cell_budgets", action="store_false",
                        help="give every cell the cell limit, not the demonstration cells the 10x of the "
                             "solution's times that `calibrate --cells` recorded")
    defaults = {f.name: f.default for f in fields(Limits)} | (limits or {})
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
                           public_only=public_only, timing_scale=args.timing_scale, sandbox=args.sandbox,
                           cell_budgets=args.cell_budgets)
    return options.to_dict()


def _build(args: argparse.Namespace) -> int:
    from .build import BuildError, build_assignment
    from .runtime_package import RuntimePackageError, build_runtime_package, runtime_settings

    course = _course(args)
    runtime = runtime_settings(course)
    for assignment in args.assignments or course.assignments():
        try:
            report = build_assignment(course, assignment)
        except BuildError as exc:
            raise _Failure(f"{assignment}: {exc}") from None
        total = sum(p["points"] for p in report.points.values())
        print(f"built {assignment}: {report.release.relative_to(course.root)}, "
              f"{report.solutions.relative_to(course.root)} ({len(report.points)} grade cells, {total:g} points)")
    try:
        package = build_runtime_package(course, runtime)
    except RuntimePackageError as exc:
        raise _Failure(f"student runtime package: {exc}") from None
    print(f"built the student runtime: {package.path.relative_to(course.root)} "
          f"({', '.join(package.assignments) or 'no assignment released yet'}; "
          f"students install it from {runtime.install_url or 'nowhere: set c.StudentRuntime.url'})")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from .grading.archive import ArchiveError, unpacked
    from .grading.batch import BatchError, format_summary, grade_batch
    from .grading.discover import DiscoveryError, discover
    from .nbgrader_bridge.record import format_hand_back, hand_back

    course = _course(args)
    assignment = course.assignment(args.assignment)
    out = args.out or course.root / "autograded" / assignment.id
    try:
        with unpacked(args.paths) as paths:
            submissions = discover(paths, assignment=assignment.id, notebook_name=assignment.notebook_name)
            if not submissions:
                raise _Failure("no submissions found in the given paths")
            report = grade_batch(course=course, assignment=assignment.id, submissions=submissions, out_dir=out,
                                 workers=args.workers, options=_options(args), force=args.force,
                                 cluster=_cluster(args))
            handed = hand_back(course=course, assignment=assignment.id, submissions=submissions,
                               results=report.results, out_dir=out)
    except (ArchiveError, DiscoveryError, BatchError) as exc:
        raise _Failure(str(exc)) from None
    print(format_summary(report))
    print(format_hand_back(handed, course_root=course.root))
    if args.profile:
        from .grading.profile import format_profile, profile

        print(format_profile(profile(report.results, wall_seconds=report.seconds, slots=args.workers)))
    _report_after_batch(out_dir=out, assignment=assignment.id, course_root=course.root)
    return 0


def _cluster(args: argparse.Namespace):
    """The Dask cluster of `grade --cluster`, or None to grade on local slots."""
    tls = (args.cluster_tls_ca, args.cluster_tls_cert, args.cluster_tls_key)
    if args.cluster is None:
        if any(tls):
            raise _Failure("--cluster-tls-* options need --cluster")
        return None
    try:
        from .grading.cluster import ClusterSpec
    except ImportError as exc:
        raise _Failure(f"--cluster needs Dask's distributed package ({exc}): pip install 'dask[distributed]'") from None
    return ClusterSpec(args.cluster, *tls)


def _report(args: argparse.Namespace) -> int:
    from .report import write_class_report

    course = _course(args)
    assignment = course.assignment(args.assignment)
    out = args.out or course.root / "autograded" / assignment.id
    if not out.is_dir():
        raise _Failure(f"no results folder {out}: grade first, or pass --out")
    print(f"class report: {write_class_report(out_dir=out, assignment=assignment.id, course_root=course.root)}")
    return 0


def _report_after_batch(*, out_dir: Path, assignment: str, course_root: Path) -> Path | None:
    """The class report at the end of `grade`; a failure only warns (the results are already written)."""
    from .report import write_class_report

    try:
        path = write_class_report(out_dir=out_dir, assignment=assignment, course_root=course_root)
    except Exception as exc:  # noqa: BLE001 - the report must never cost the batch
        print(f"warning: could not write the class report: {type(exc).__name__}: {exc} "
              f"(results are kept; try `autograder report {assignment}`)", file=sys.stderr)
        return None
    print(f"class report: {path}")
    return path


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
    from .grading.budgets import write_budgets
    from .grading.calibrate import calibrate, format_calibration

    course = _course(args)
    assignment = course.assignment(args.assignment)
    if args.cells and args.notebook:
        raise _Failure("--cells measures the solution notebook: leave out --notebook")
    notebook = args.notebook or course.solutions_dir(assignment.id) / assignment.notebook_name
    if not notebook.is_file():
        raise _Failure(f"{notebook} does not exist" + ("" if args.notebook else
                                                        f": run `autograder build {assignment.id}` first"))
    options = _options(args) | ({"cell_budgets": False} if args.cells else {})  # measured under the cell limit
    report = calibrate(course=course, assignment=assignment.id, notebook=notebook, runs=args.runs,
                       options=options)
    print(format_calibration(report))
    if args.cells:
        path = write_budgets(assignment, cells=report.cells, times=report.cell_seconds)
        print(f"\nwrote {path.relative_to(course.root)}: the limits of the cells shared by release and solutions")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .grading.doctor import doctor, format_doctor
    from .grading.options import Limits

    course = _course(args)
    assignment = course.assignment(args.assignment or course.assignments()[0])
    report = doctor(assignment, mode=args.sandbox, limits=Limits(), runs=args.runs)
    print(format_doctor(report))
    return 1 if args.sandbox == "strict" and report.assessment.missing else 0


def _audit(args: argparse.Namespace) -> int:
    from .audit import AuditError, audit, format_audit

    course = _course(args)
    assignment = course.assignment(args.assignment)
    args.seed = 0 if args.seed is None else args.seed  # reproducible by default: same mutants, same inputs
    parts = [p for p in (args.parts or "").split(",") if p] or None
    try:
        report = audit(course=course, assignment=assignment.id, workers=args.workers, options=_options(args),
                       out_dir=args.out or course.root / "autograded" / f"audit-{assignment.id}", seed=args.seed,
                       max_mutants=args.max_mutants, parts=parts, force=args.force)
    except AuditError as exc:
        raise _Failure(str(exc)) from None
    print(format_audit(report))
    return 0


def _gradescope(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .gradescope.bundle import BundleError, GradescopeSettings, write_bundle
    from .grading.options import Limits

    course = _course(args)
    assignment = course.assignment(args.assignment)
    out = args.out or course.root / "autograded" / f"{assignment.id}-gradescope.zip"
    limits = Limits(**{name: getattr(args, name) for name in LIMIT_FLAGS})
    if args.deadline_seconds < limits.submission_seconds + GRADESCOPE_STARTUP_SECONDS:
        raise _Failure(f"--deadline-seconds {args.deadline_seconds:g} leaves no time to grade: it must be at least "
                       f"--submission-seconds ({limits.submission_seconds:g}) plus {GRADESCOPE_STARTUP_SECONDS:g} s "
                       "of start-up, or a slow notebook would be cut off as if its code were slow")
    settings = GradescopeSettings(limits=asdict(limits), timing_scale=args.timing_scale, sandbox=args.sandbox,
                                  hidden_visibility=args.hidden_visibility, seed=args.seed,
                                  devices=tuple(d for d in args.devices.split(",") if d),
                                  deadline_seconds=args.deadline_seconds, cell_budgets=args.cell_budgets)
    try:
        bundle = write_bundle(assignment, out, settings=settings)
    except BundleError as exc:
        raise _Failure(str(exc)) from None
    print(f"wrote {bundle.path} ({bundle.bytes / 1024:.0f} KiB, {len(bundle.files)} files); "
          f"requirements: {', '.join(bundle.requirements)}")
    print("Upload it as the assignment's autograder (Configure Autograder > Zip file upload).")
    return 0


def _similarity(args: argparse.Namespace) -> int:
    from .grading.archive import ArchiveError, unpacked
    from .grading.discover import DiscoveryError, discover
    from .similarity import Settings, similarity_report
    from .similarity.extract import Unreadable
    from .similarity.page import format_similarity

    course = _course(args)
    assignment = course.assignment(args.assignment)
    out = args.out or course.root / "autograded" / assignment.id
    if args.k < 1 or args.window < 1 or (args.max_holders is not None and args.max_holders < 2):
        raise _Failure("-k and --window must be at least 1, --max-holders at least 2")
    settings = Settings(k=args.k, window=args.window, max_holders=args.max_holders)
    try:
        with unpacked(args.paths) as paths:
            submissions = discover(paths, assignment=assignment.id, notebook_name=assignment.notebook_name)
            if not submissions:
                raise _Failure("no submissions found in the given paths")
            report = similarity_report(course=course, assignment=assignment.id, submissions=submissions, out_dir=out,
                                       top=args.top, min_score=args.min_score, settings=settings, show=args.show)
    except (ArchiveError, DiscoveryError, Unreadable) as exc:
        raise _Failure(str(exc)) from None
    print(format_similarity(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
