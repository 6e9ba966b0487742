"""A class of the heaviest unit graded by `autograder grade`, next to nbgrader autograde and otter-grader, one run.

1. The class: N submissions (default 200) of the assignment (default u4_recsys, the
   heaviest), the bundled examples mixed 3 correct : 3 partial : 1 broken : 1 empty.
   Each correct, partial and broken copy gets its own comment line, so no two of them
   have the same code, as in a real class; the empty ones are the untouched release,
   as students who did nothing hand it in (the same code, which the grader grades once:
   autograder/grading/twins.py). Graded with `autograder grade --workers 2` and the
   default limits: the wall clock against the 10-minute goal, and each kind's mean time
   in a slot.
2. Extra stub submissions: the marginal cost (T(N2) - T(N1)) / (N2 - N1) of more
   untouched releases, and of stubs that each differ by a comment (graded one by one);
   each T is the better of two runs.
3. The references: 8 submissions of that class (3:3:1:1) graded one at a time by
   `autograder grade --workers 1`, by `nbgrader autograde` (stock nbgrader: each notebook
   in a Jupyter kernel) and by `otter run` (each notebook in a kernel, then the unit's
   public checks as otter tests); seconds per submission and the ratios.

All graders see AUTOGRADER_GRADING=1, so the notebooks' demonstrations run at grading
size for each of them. Usage:

    .venv/bin/python bench/grading_throughput.py [--quick] [--assignment u4_recsys] [--students 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MIX = ("correct", "partial", "correct", "partial", "correct", "partial", "broken", "empty")  # 3:3:1:1
GOAL_SECONDS = 600.0
STUB_GOAL_SECONDS = 0.2
#: A reference grader gets as long per submission as ours does (the default --submission-seconds).
REFERENCE_SUBMISSION_SECONDS = 600.0
#: nbgrader as it comes (the course's own config sends autograde through our isolated grader): the reference
#: runs every notebook in a Jupyter kernel.
STOCK_NBGRADER_CONFIG = """c = get_config()
c.ClearSolutions.code_stub = {"python": "# TU CÓDIGO AQUÍ\\nraise NotImplementedError()"}
"""


@dataclass
class Reference:
    grader: str
    submissions: int
    seconds: float
    note: str = ""

    @property
    def per_submission(self) -> float:
        return self.seconds / self.submissions


def example(assignment: str, kind: str) -> dict:
    path = REPO / "examples" / assignment / f"{kind}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))


def with_comment(notebook: dict, text: str) -> dict:
    """The notebook with `# text` as the first line of its first code cell: the same program, other code."""
    notebook = json.loads(json.dumps(notebook))
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["source"] = f"# {text}\n{source}"
    return notebook


def make_class(folder: Path, assignment: str, n: int) -> dict[str, str]:
    """n submissions in `folder` following MIX; returns student -> kind."""
    folder.mkdir(parents=True)
    kinds = {}
    for i in range(n):
        kind = MIX[i % len(MIX)]
        student = f"{kind}_{i:03d}"
        notebook = example(assignment, kind)
        if kind != "empty":
            notebook = with_comment(notebook, f"entrega {i:03d}")
        (folder / f"{student}.ipynb").write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")
        kinds[student] = kind
    return kinds


def stubs(folder: Path, assignment: str, n: int, *, distinct: bool) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        notebook = example(assignment, "empty")
        if distinct:
            notebook = with_comment(notebook, f"entrega {i:03d}")
        (folder / f"stub_{i:03d}.ipynb").write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")


def grading_env() -> dict:
    return dict(os.environ, AUTOGRADER_GRADING="1",
                PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))


def timed(command: list[str], *, cwd: Path, env: dict | None = None, timeout: float | None = None,
          check: bool = True) -> float:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - started


def autograder(folder: Path, assignment: str, *, workers: int, tag: str = "") -> tuple[float, Path]:
    out = folder.with_name(f"{folder.name}-out{tag}")
    command = [str(BIN / "autograder"), "--course", str(REPO), "grade", assignment, str(folder), "--out", str(out),
               "--workers", str(workers), "--seed", "1"]
    return timed(command, cwd=REPO), out


def kind_seconds(out: Path, kinds: dict[str, str]) -> dict[str, list[float]]:
    """Each kind's seconds in a slot, over the submissions graded themselves (not the twins)."""
    found: dict[str, list[float]] = {}
    for student, kind in kinds.items():
        data = json.loads((out / f"{student}.json").read_text(encoding="utf-8"))
        if not data["extra_data"].get("same_code_as"):
            found.setdefault(kind, []).append(float(data["execution_time"]))
    return found


def scores(out: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text())["score"] for p in out.glob("*.json")}


def public_checks_test(assignment: str, grade_id: str) -> list[str]:
    """Python lines that fail unless the unit's public checks of `grade_id` all pass on the notebook's globals:
    the test an nbgrader or otter course would write with our checks (here in the kernel, as `check()` runs them
    for students, but raising on failure)."""
    return ["import re",
            "from autograder.selfcheck import run_public_checks",
            f"report = run_public_checks({assignment!r}, {grade_id!r}, globals())",
            "earned, total = map(float, re.findall(r'\\*\\*([\\d.]+) de ([\\d.]+)\\*\\*', report)[-1])",
            "earned == total"]


def nbgrader(tmp: Path, assignment: str, sample: Path) -> Reference:
    """nbgrader autograde of the sample in a throwaway copy of the course: stock config, and each test cell asserts
    that the part's public checks pass (nbgrader restores the test cells from this source)."""
    course = tmp / "nbgrader-course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(STOCK_NBGRADER_CONFIG)
    shutil.copytree(REPO / "source" / assignment, course / "source" / assignment)
    source = course / "source" / assignment / f"{assignment}.ipynb"
    notebook = json.loads(source.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
            lines = public_checks_test(assignment, meta["grade_id"])
            cell["source"] = "\n".join(lines[:-1] + [f"assert {lines[-1]}, report"])
    source.write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")
    env = grading_env()
    nbg = [sys.executable, "-m", "nbgrader"]
    timed([*nbg, "generate_assignment", assignment, "--force"], cwd=course, env=env)
    paths = sorted(sample.glob("*.ipynb"))
    for path in paths:
        target = course / "submitted" / path.stem / assignment
        target.mkdir(parents=True)
        shutil.copy(path, target / f"{assignment}.ipynb")
    seconds = timed([*nbg, "autograde", assignment, "--create", "--force"], cwd=course, env=env, check=False)
    graded = sum((course / "autograded" / p.stem / assignment / f"{assignment}.ipynb").is_file() for p in paths)
    if not graded:  # a reference that graded nothing would only look fast
        raise SystemExit(f"nbgrader autograde graded none of the {len(paths)} submissions in {course}")
    note = "public checks only, in the kernel; 30 s per cell"
    if graded < len(paths):
        note += f"; {len(paths) - graded} submission(s) gave no autograded notebook"
    return Reference("nbgrader autograde", len(paths), seconds, note)


def otter(tmp: Path, assignment: str, sample: Path) -> Reference:
    """`otter run` of each notebook of the sample, with the unit's public checks as one otter test per grade cell."""
    if shutil.which("otter", path=str(BIN)) is None:
        raise SystemExit("otter-grader is not installed: `make bench` installs it (pip install otter-grader)")
    home = tmp / "otter"
    tests = home / "tests"
    tests.mkdir(parents=True)
    points = json.loads((REPO / "release" / assignment / "autograder" / "checks" / assignment / "points.json")
                        .read_text(encoding="utf-8"))
    for grade_id, value in points.items():
        if not value.get("public"):
            continue
        code = "\n".join([f">>> {line}" for line in public_checks_test(assignment, grade_id)] + ["True"])
        test = {"name": grade_id, "points": value["public"], "suites": [{
            "cases": [{"code": code, "hidden": False, "locked": False}],
            "scored": True, "setup": "", "teardown": "", "type": "doctest"}]}
        (tests / f"{grade_id}.py").write_text(f"OK_FORMAT = True\ntest = {test!r}\n")
    (home / "otter_config.json").write_text("{}")
    env = grading_env()
    timed([str(BIN / "otter"), "generate", "-t", "tests", "-o", "autograder.zip", "--no-requirements",
           "--no-environment"], cwd=home, env=env)
    paths = sorted(sample.glob("*.ipynb"))
    seconds = 0.0
    killed = 0
    for path in paths:
        out = home / "out" / path.stem
        out.mkdir(parents=True)
        took = timed([str(BIN / "otter"), "run", "-a", "autograder.zip", "-o", str(out), "--no-logo", str(path)],
                     cwd=home, env=env, timeout=REFERENCE_SUBMISSION_SECONDS, check=False)
        killed += not (out / "results.json").is_file()
        seconds += took
    note = "public checks only, in the kernel"
    if killed:
        note += f"; {killed} submission(s) gave no result (killed at {REFERENCE_SUBMISSION_SECONDS:g} s or failed)"
    return Reference("otter run", len(paths), seconds, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="u4_recsys")
    parser.add_argument("--students", type=int, default=200, help="size of the class (default: 200)")
    parser.add_argument("--quick", action="store_true", help="a class of 40 and smaller stub batches")
    args = parser.parse_args()
    n = 40 if args.quick else args.students
    stub_sizes = (4, 12) if args.quick else (10, 50)
    distinct_sizes = (2, 6) if args.quick else (4, 24)  # wide apart: start-up noise is about a second
    assignment = args.assignment
    with tempfile.TemporaryDirectory(prefix="autograder-bench-") as name:
        tmp = Path(name)
        print(f"1. a class of {n} submissions of {assignment}, 2 workers", flush=True)
        kinds = make_class(tmp / "class", assignment, n)
        class_seconds, out = autograder(tmp / "class", assignment, workers=2)
        per_kind = kind_seconds(out, kinds)
        got = scores(out)
        print(f"   {class_seconds:.1f} s", flush=True)

        print("2. extra stub submissions, 2 workers", flush=True)
        stub_rows = []
        for distinct, (n1, n2) in ((False, stub_sizes), (True, distinct_sizes)):
            times = []
            for size in (n1, n2):  # the better of two runs each: start-up noise is as large as the difference
                folder = tmp / f"stubs-{'distinct' if distinct else 'same'}-{size}"
                stubs(folder, assignment, size, distinct=distinct)
                times.append(min(autograder(folder, assignment, workers=2, tag=str(run))[0] for run in range(2)))
            stub_rows.append((distinct, n1, times[0], n2, times[1], (times[1] - times[0]) / (n2 - n1)))
            print(f"   {'distinct' if distinct else 'untouched'}: {times[0]:.1f} s for {n1}, {times[1]:.1f} s for "
                  f"{n2}", flush=True)

        print("3. 8 submissions of the class, one process at a time, three graders", flush=True)
        sample = tmp / "sample"
        sample.mkdir()
        for student in list(kinds)[:len(MIX)]:
            shutil.copy(tmp / "class" / f"{student}.ipynb", sample / f"{student}.ipynb")
        ours_seconds, _ = autograder(sample, assignment, workers=1)
        references = [Reference("autograder grade", len(MIX), ours_seconds, "1 worker, public and hidden checks")]
        print(f"   autograder: {ours_seconds:.1f} s", flush=True)
        for run in (nbgrader, otter):
            references.append(run(tmp, assignment, sample))
            print(f"   {references[-1].grader}: {references[-1].seconds:.1f} s", flush=True)

    counts = {kind: sum(k == kind for k in kinds.values()) for kind in ("correct", "partial", "broken", "empty")}
    print()
    print(f"class of {n} {assignment} submissions ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
          f"2 workers, default limits:")
    print(f"  autograder grade: {class_seconds:.1f} s = {class_seconds / 60:.1f} min; goal {GOAL_SECONDS:g} s "
          f"(x{class_seconds / GOAL_SECONDS:.2f} of it)")
    for kind, seconds in per_kind.items():
        graded = len(seconds)
        twins = counts[kind] - graded
        print(f"  {kind:<8} {statistics.mean(seconds):6.1f} s in a slot on average, {graded} graded"
              + (f" ({twins} more with the same code, graded with one of them)" if twins else "")
              + f"; scores {sorted(set(v for s, v in got.items() if kinds.get(s) == kind))}")
    print("extra stub submission (marginal, 2 workers):")
    for distinct, n1, t1, n2, t2, marginal in stub_rows:
        what = "each with its own comment" if distinct else "the untouched release"
        print(f"  {what:<28} T({n1}) {t1:6.1f} s, T({n2}) {t2:6.1f} s: {marginal:.3f} s each "
              f"(goal {STUB_GOAL_SECONDS:g} s)")
    ours = references[0].per_submission
    print(f"the same {len(MIX)} submissions, one process at a time:")
    print(f"  {'grader':<20} {'total s':>8} {'s/submission':>13} {'vs autograder':>14}  {'class of ' + str(n):>14}")
    for ref in references:
        projected = ref.per_submission * n
        print(f"  {ref.grader:<20} {ref.seconds:>8.1f} {ref.per_submission:>13.2f} "
              f"{ref.per_submission / ours:>13.2f}x  {projected / 60:>10.1f} min  ({ref.note})")


if __name__ == "__main__":
    main()
