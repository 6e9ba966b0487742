"""Marginal grading cost per submission: `autograder grade` next to `nbgrader autograde`, same notebooks, same run.

For each grader, a batch of N1 and a batch of N2 submissions (half copies of the
solution, half of the empty release) is graded from the command line, wall clock
included; the marginal cost is (T(N2) - T(N1)) / (N2 - N1), which removes start-up
costs. Usage:

    .venv/bin/python bench/grading_throughput.py [--quick] [--assignment u1_backprop]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: nbgrader as it comes (the course's own config sends autograde through our isolated grader): the reference
#: runs every notebook in a Jupyter kernel.
STOCK_NBGRADER_CONFIG = """c = get_config()
c.ClearSolutions.code_stub = {"python": "# TU CÓDIGO AQUÍ\\nraise NotImplementedError()"}
"""


@dataclass
class Row:
    grader: str
    workers: int
    n1: int
    t1: float
    n2: int
    t2: float

    @property
    def marginal(self) -> float:
        return (self.t2 - self.t1) / (self.n2 - self.n1)


def copies(folder: Path, assignment: str, n: int) -> list[Path]:
    """n notebooks: alternately the solution and the empty release."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        kind = "solutions" if i % 2 == 0 else "release"
        path = folder / f"{kind}_{i:03d}.ipynb"
        shutil.copy(REPO / kind / assignment / f"{assignment}.ipynb", path)
        paths.append(path)
    return paths


def timed(command: list[str], *, cwd: Path, env: dict | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - started


def autograder_time(tmp: Path, assignment: str, n: int, workers: int) -> float:
    folder = tmp / f"ag-{workers}-{n}"
    copies(folder / "in", assignment, n)
    command = [str(Path(sys.executable).parent / "autograder"), "--course", str(REPO), "grade", assignment,
               str(folder / "in"), "--out", str(folder / "out"), "--workers", str(workers), "--seed", "1"]
    seconds = timed(command, cwd=REPO)
    scores = sorted({json.loads(p.read_text())["score"] for p in (folder / "out").glob("*.json")})
    print(f"  autograder, {workers} worker(s), {n} submissions: {seconds:.1f} s (scores seen: {scores})", flush=True)
    return seconds


def nbgrader_time(tmp: Path, assignment: str, n: int) -> float:
    """nbgrader autograde of the same notebooks in a throwaway copy of the course."""
    course = tmp / f"nbg-{n}"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(STOCK_NBGRADER_CONFIG)
    shutil.copytree(REPO / "source" / assignment, course / "source" / assignment)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    nbgrader = [sys.executable, "-m", "nbgrader"]
    timed([*nbgrader, "generate_assignment", assignment, "--force"], cwd=course, env=env)
    for i, path in enumerate(copies(tmp / f"nbg-in-{n}", assignment, n)):
        target = course / "submitted" / f"student{i:03d}" / assignment
        target.mkdir(parents=True)
        shutil.copy(path, target / f"{assignment}.ipynb")
    seconds = timed([*nbgrader, "autograde", assignment, "--create", "--force"], cwd=course, env=env)
    print(f"  nbgrader autograde, {n} submissions: {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="u1_backprop")
    parser.add_argument("--quick", action="store_true", help="smaller batches (a rough figure in a few minutes)")
    args = parser.parse_args()
    n1, n2 = (4, 12) if args.quick else (8, 32)
    m1, m2 = (2, 4) if args.quick else (2, 8)
    rows = []
    with tempfile.TemporaryDirectory(prefix="autograder-bench-") as name:
        tmp = Path(name)
        for workers in (1, 2):
            rows.append(Row("autograder grade", workers, n1, autograder_time(tmp, args.assignment, n1, workers),
                            n2, autograder_time(tmp, args.assignment, n2, workers)))
        rows.append(Row("nbgrader autograde", 1, m1, nbgrader_time(tmp, args.assignment, m1),
                        m2, nbgrader_time(tmp, args.assignment, m2)))
    print()
    print(f"{'grader':<20} {'workers':>7} {'N1':>4} {'T(N1) s':>8} {'N2':>4} {'T(N2) s':>8} {'marginal s/submission':>22}")
    for r in rows:
        print(f"{r.grader:<20} {r.workers:>7} {r.n1:>4} {r.t1:>8.1f} {r.n2:>4} {r.t2:>8.1f} {r.marginal:>22.2f}")
    reference = rows[-1].marginal
    for r in rows[:-1]:
        print(f"autograder with {r.workers} worker(s) is {reference / r.marginal:.1f}x cheaper per submission "
              f"than nbgrader autograde")


if __name__ == "__main__":
    main()
