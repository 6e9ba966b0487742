"""What grading on a Dask cluster costs next to local slots, on this machine.

One class (the assignment's examples/ notebooks, cycled to N copies) is graded from the
command line with 1 local slot, 2 local slots and 2 Dask workers (a scheduler and two
`dask worker --nthreads 1` processes started here on 127.0.0.1 beforehand, as a
long-lived cluster would be; their start is not timed, the slots' start is, in every
run). Then the per-submission overhead of the cluster: the same notebooks sent one at a
time as Dask tasks, round trip minus the grading time the slot measured itself. Usage:

    .venv/bin/python bench/cluster_overhead.py [--assignment u1_backprop] [--copies 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))


def class_of(folder: Path, assignment: str, copies: int) -> Path:
    examples = sorted((REPO / "examples" / assignment).glob("*.ipynb"))
    folder.mkdir(parents=True)
    for i in range(copies):
        source = examples[i % len(examples)]
        shutil.copy(source, folder / f"{source.stem}_{i:03d}.ipynb")
    return folder


def grade(subs: Path, out: Path, assignment: str, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", assignment, str(subs), "--out", str(out),
                           "--seed", "1", "--call-seconds", "3", *extra], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"grading failed:\n{done.stderr}")
    return time.perf_counter() - started


def verdicts(out: Path) -> dict:
    return {p.stem: (json.loads(p.read_text())["score"],
                     [(t["name"], t["status"]) for t in json.loads(p.read_text())["tests"]])
            for p in out.glob("*.json")}


def start_cluster(folder: Path, workers: int) -> tuple[list[subprocess.Popen], Path]:
    scheduler_file = folder / "scheduler.json"
    logs = open(folder / "dask.log", "wb")  # noqa: SIM115
    common = {"stdout": logs, "stderr": subprocess.STDOUT, "start_new_session": True}
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], env=env, **common)]
    while not scheduler_file.exists():
        time.sleep(0.1)
    time.sleep(0.5)
    for i in range(workers):
        processes.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1", "--name", f"bench{i}"], **common))
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=300)
    return processes, scheduler_file


def round_trips(scheduler_file: Path, subs: Path, assignment: str) -> list[tuple[float, float, int]]:
    """(round trip, slot's own grading time, notebook bytes) per notebook, one task at a time."""
    from distributed import Client

    from autograder.course import Course
    from autograder.grading.cluster import GradingSlot, _job, course_files, grade_task
    from autograder.grading.discover import discover
    from autograder.grading.options import GradeOptions, Limits

    course = Course(REPO)
    target = course.assignment(assignment)
    options = GradeOptions(limits=Limits(call_seconds=3), seed=1).to_dict()
    plugin = GradingSlot(assignment=assignment, files=course_files(course, assignment), options=options,
                         job_seconds=720)
    rows = []
    with Client(scheduler_file=str(scheduler_file), set_as_default=False) as client:
        client.register_plugin(plugin, name=plugin.name)
        try:
            for submission in discover([subs], assignment=assignment, notebook_name=target.notebook_name):
                job = _job(submission, "bench", max_bytes=2**30)
                started = time.perf_counter()
                message = client.submit(grade_task, plugin.name, job, pure=False).result()
                rows.append((time.perf_counter() - started, message["seconds"], len(job["data"] or b"")))
        finally:
            client.unregister_worker_plugin(plugin.name)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignment", default="u1_backprop")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2,
                        help="times each configuration runs, in alternating order (default: 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        tmp = Path(tmp)
        subs = class_of(tmp / "class", args.assignment, args.copies)
        processes, scheduler_file = start_cluster(tmp, 2)
        configurations = {"local, 1 slot": ("--workers", "1"), "local, 2 slots": ("--workers", "2"),
                          "Dask, 2 workers": ("--cluster", str(scheduler_file))}
        times: dict[str, list[float]] = {name: [] for name in configurations}
        outcomes = []
        try:
            for round_ in range(args.rounds):  # A B C, then C B A: a machine getting busier favours no one
                for name in (list if round_ % 2 == 0 else reversed)(list(configurations)):
                    out = tmp / f"out-{len(outcomes)}"
                    times[name].append(grade(subs, out, args.assignment, *configurations[name]))
                    outcomes.append(verdicts(out))
            same = all(o == outcomes[0] for o in outcomes)
            trips = round_trips(scheduler_file, subs, args.assignment)
        finally:
            for process in reversed(processes):
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait()
    load = os.getloadavg()[0]
    print(f"{args.copies} submissions of {args.assignment} (examples cycled), {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; wall clock of `autograder grade`, slot start-up included:")
    for name, runs in times.items():
        print(f"  {name:<16} {' / '.join(f'{t:5.1f} s' for t in runs)}  "
              f"(best {min(runs) / args.copies:.2f} s per submission)")
    print(f"  same scores and check statuses in all {len(outcomes)} runs: {'yes' if same else 'NO'}")
    overheads = [trip - own for trip, own, _ in trips]
    sizes = [size / 1024 for *_, size in trips]
    print(f"cluster overhead per submission (one task at a time, round trip minus the slot's grading time, "
          f"{len(trips)} tasks, notebooks of {min(sizes):.0f}-{max(sizes):.0f} KiB): "
          f"median {1000 * statistics.median(overheads):.0f} ms, max {1000 * max(overheads):.0f} ms; "
          f"grading itself: median {statistics.median(t[1] for t in trips):.2f} s")


if __name__ == "__main__":
    main()
