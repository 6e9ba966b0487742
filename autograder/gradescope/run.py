"""What `run_autograder` runs in Gradescope's container: grade one submission, write results.json.

Gradescope runs `/autograder/run_autograder` as root, in /autograder, once per submission,
with the upload in /autograder/submission, and reads /autograder/results/results.json
afterwards. This module:

1. checks that what the student could use to change the outcome is root's and not writable by
   anyone else (the bundle, run_autograder, the results folder, the virtual environment), and
   makes the upload, the submission metadata (it holds earlier results) and the checks readable
   by root only;
2. finds the notebook anywhere under /autograder/submission (as for a student's folder in
   `autograder grade`);
3. grades it with the same batch as `autograder grade`: one slot, a zygote in the sandbox and a
   worker per submission that runs as uid 61000, with the limits stored in the bundle;
4. kills every process the grading left (it is their subreaper), then writes results.json itself, atomically,
   and reads it back. Whatever fails on the way (a missing, malformed or hostile notebook, a
   grader error, the overall deadline), a result is written, with a message in Spanish.

`--doctor` instead prints which sandbox layers this container gives the workers
(setup.sh runs it when the image is built). The environment variable DATITOS_SANDBOX
(strict, auto, off) overrides the bundle's sandbox mode, for debugging an image.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from .results import ERROR_MESSAGE, dumps, failure_result, to_gradescope

ROOT = Path("/autograder")
CONFIG = "gradescope.json"
STUDENT = "entrega"
TIMEOUT_MESSAGE = ("La corrección superó el tiempo máximo y se detuvo antes de terminar. Revisa que ninguna celda de "
                   "tu notebook tarde demasiado (entrenamientos largos, bucles sin fin) y vuelve a entregar.")


class Deadline(Exception):
    """The overall time budget ran out (raised from SIGALRM in the main thread)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="Gradescope's folder (default: /autograder)")
    parser.add_argument("--doctor", action="store_true", help="print the sandbox layers in force and exit")
    args = parser.parse_args(argv)
    if args.doctor:
        return doctor(args.root)
    started = time.monotonic()
    prefer_survival()
    results = args.root / "results" / "results.json"
    try:
        config = load_config(args.root)
        with deadline(float(config.get("deadline_seconds", 540))):
            data = grade(args.root, config=config, started=started)
    except Deadline:
        data = failure_result(TIMEOUT_MESSAGE, detail=traceback.format_exc(), status="timeout",
                              execution_time=time.monotonic() - started)
    except BaseException:  # noqa: BLE001 - whatever happened, the student gets a result
        data = failure_result(ERROR_MESSAGE, detail=traceback.format_exc(), execution_time=time.monotonic() - started)
    left = sweep()
    if left:
        data = failure_result(ERROR_MESSAGE, detail=f"{left} process(es) left by the grading could not be killed",
                              execution_time=time.monotonic() - started)
    publish(results, data)
    print(f"results.json: score {data['score']:g}, status {data['extra_data'].get('status')}, "
          f"{len(data['tests'])} tests, {time.monotonic() - started:.1f}s")
    return 0


def load_config(root: Path) -> dict:
    return json.loads((root / "source" / CONFIG).read_text(encoding="utf-8"))


def grade(root: Path, *, config: dict, started: float) -> dict:
    """Grade the upload with the bundled course; our result mapped to Gradescope's schema."""
    from ..course import Course
    from ..grading.batch import format_summary, grade_batch
    from ..grading.discover import submission_in
    from ..grading.options import GradeOptions, Limits

    for note in harden(root, config=config):
        print(f"permissions: {note}")
    course = Course(root / "source" / config["course"])
    assignment = course.assignment(config["assignment"])
    submission = submission_in(root / "submission", student=STUDENT, notebook_name=assignment.notebook_name)
    private = [root / "submission", root / "submission_metadata.json", root / "results"]
    options = GradeOptions(limits=Limits(**config["limits"]), seed=int(config.get("seed") or _fresh_seed()),
                           devices=tuple(config.get("devices", ("cpu",))), timing_scale=config.get("timing_scale", 1.0),
                           sandbox=os.environ.get("DATITOS_SANDBOX", config.get("sandbox", "auto")),
                           cell_budgets=config.get("cell_budgets", True),
                           hidden_paths=tuple(str(p) for p in private if p.exists()))
    with tempfile.TemporaryDirectory(prefix="datitos-gradescope-") as out:  # 0700, root's
        report = grade_batch(course=course, assignment=assignment.id, submissions=[submission], out_dir=Path(out),
                             workers=1, options=options.to_dict(), progress=False)
        result = report.results[submission.student]
    print(format_summary(report))
    return to_gradescope(result, hidden_visibility=config.get("hidden_visibility", "after_due_date"),
                         execution_time=time.monotonic() - started)


def _fresh_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)


@contextmanager
def deadline(seconds: float):
    """Raise `Deadline` in the main thread after `seconds`, so a result is written before Gradescope's own
    timeout kills the container."""
    def expire(signum, frame):
        raise Deadline(f"the grading took more than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- the container's files

def harden(root: Path, *, config: dict) -> list[str]:
    """Make sure the student's uid can change nothing that decides the outcome, and read nothing private.

    Root-owned and not group/other-writable: /autograder, run_autograder, the bundle (source/) and
    the virtual environment (their tops: setup.sh fixed the trees). Root-only: the results folder, the
    upload, the submission metadata (it holds earlier results), gradescope.json (it may fix the seed),
    the checks and the course's notebook copies. Returns what it fixed.
    """
    if os.geteuid() != 0:
        return ["not running as root: the workers share the grader's uid, so file permissions protect nothing"]
    fixed = []
    results = root / "results"
    results.mkdir(mode=0o700, exist_ok=True)
    course = root / "source" / config["course"]
    shared = [root, root / "run_autograder", root / "source", root / "source" / "run_autograder",
              root / "source" / "setup.sh", root / "venv", course, course / "autograder"]
    private = [results, root / "submission", root / "submission_metadata.json", root / "source" / CONFIG,
               course / "autograder" / "checks", course / "source", course / "release"]
    for path in shared + private:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        mode = info.st_mode & 0o7777
        wanted = (mode & ~0o7022) if path in shared else (mode & 0o700)
        if (info.st_uid, info.st_gid) != (0, 0):
            os.lchown(path, 0, 0)
            fixed.append(f"{path} now owned by root")
        if mode != wanted and not os.path.islink(path):
            os.chmod(path, wanted)
            fixed.append(f"{path} mode {mode:o} -> {wanted:o}")
    return fixed


def sweep(*, rounds: int = 100) -> int:
    """SIGKILL every process this grading left behind and reap it; returns how many are still there.

    This process is a child subreaper (`prefer_survival`), so whatever the grading started, a worker's
    double-forked daemon included, is its descendant even after its parents die. The zygote already
    kills each worker's descendants; this also covers a slot or zygote that died, in a container where
    PID namespaces are not allowed. Only descendants: nothing else on the machine is touched.
    """
    from ..worker.zygote import descendants, is_alive

    pids: list[int] = []
    for _ in range(rounds):
        _reap()
        pids = [pid for pid in descendants(os.getpid()) if is_alive(pid)]
        if not pids:
            return 0
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
    _reap()
    return sum(is_alive(pid) for pid in descendants(os.getpid()))


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def publish(path: Path, data: dict) -> None:
    """Write results.json atomically, then read it back (and write it again if anything changed it)."""
    from ..grading.store import atomic_write

    text = dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        atomic_write(path, text)
        os.chmod(path, 0o644)
        if path.read_text(encoding="utf-8") == text:
            return
    raise RuntimeError(f"{path} keeps changing after it is written")


def prefer_survival() -> None:
    """Become a child subreaper (see `sweep`), and exempt this process from the OOM killer: under
    Gradescope's memory limit the kernel must pick a worker, never the grader. The slot and the zygote
    inherit the exemption; each worker raises its own score to the maximum (worker.limits.prefer_oom_kill)."""
    from ..worker.limits import become_subreaper

    become_subreaper()
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError:
        pass


def doctor(root: Path) -> int:
    """`autograder doctor` for the bundled assignment, as the grader will run it here."""
    from ..course import Course
    from ..grading.doctor import doctor as run_doctor, format_doctor
    from ..grading.options import Limits

    config = load_config(root)
    assignment = Course(root / "source" / config["course"]).assignment(config["assignment"])
    report = run_doctor(assignment, mode=os.environ.get("DATITOS_SANDBOX", config.get("sandbox", "auto")),
                        limits=Limits(**config["limits"]), runs=3)
    print(format_doctor(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
