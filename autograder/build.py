"""`autograder build`: source notebook -> student release and solution notebook.

Steps, each a function, run in this order by `build_assignment`:

1. `validate_points`: every nbgrader grade cell is worth exactly the points of its checks;
   `validate_rules`: the notebook's introduction states every by-hand rule the checks enforce;
2. `run_nbgrader`: `generate_assignment` (solutions and hidden tests stripped) into
   release/, `generate_solution` (hidden tests stripped, nothing executed) into solutions/; both
   start with `runtime_package.StudentRuntime`, which puts the URL of the student runtime wheel
   where the setup cell has its placeholder;
3. `vendor_runtime`: copy what the student needs to run the public checks (the check
   runtime and the public check files, byte for byte) next to both notebooks;
4. `verify_release`: no solution code and no hidden check reached release/.

After its assignments, `autograder build` writes the runtime wheel for Colab, Kaggle and laptops
from what release/ holds (`runtime_package.build_runtime_package`) and verifies it the same way.

The result is deterministic: building twice changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .course import Assignment, Course
from .runtime_package import URL_PLACEHOLDER

PACKAGE = Path(__file__).resolve().parent
#: The runtime a student needs for `check(...)` in the notebook (import closure of selfcheck, checklib and drivers).
RUNTIME_FILES = (
    "__init__.py", "errors.py", "wire.py", "dispatch.py", "remote.py", "plugin.py", "selfcheck.py", "drivers.py",
    "rules.py", "recorder.py", "sourcecheck.py",
    "checklib/__init__.py", "checklib/compare.py", "checklib/data.py", "checklib/forbidden.py",
    "checklib/models.py", "checklib/ratings.py", "checklib/text.py", "checklib/timing.py", "checks/__init__.py",
)
POINTS_FILE = "points.json"
_SOLUTION = re.compile(r"^\s*#+\s*BEGIN SOLUTION.*?^\s*#+\s*END SOLUTION", re.S | re.M)


class BuildError(Exception):
    """The assignment cannot be built; the message says what to fix (English)."""


@dataclass(frozen=True)
class BuildReport:
    assignment: str
    release: Path
    solutions: Path
    points: dict[str, dict[str, float]]


def build_assignment(course: Course, assignment_id: str) -> BuildReport:
    assignment = course.assignment(assignment_id)
    checks, rules = collect_checks(assignment)
    points = validate_points(assignment, checks)
    validate_rules(assignment, rules)
    run_nbgrader(course, assignment_id)
    public = public_check_files(assignment, checks)
    for target in (course.release_dir(assignment_id), course.solutions_dir(assignment_id)):
        vendor_runtime(assignment, public, points, target)
    verify_release(assignment, checks)
    return BuildReport(assignment_id, course.release_dir(assignment_id), course.solutions_dir(assignment_id), points)


def collect_checks(assignment: Assignment) -> tuple[list, tuple]:
    """The assignment's checks and its by-hand rules."""
    from .grading.checks import CheckSuite, SuiteError

    suite = CheckSuite(assignment.check_files())
    try:
        return suite.collect(), suite.rules
    except SuiteError as exc:
        raise BuildError(str(exc)) from None


def validate_rules(assignment: Assignment, rules: tuple) -> None:
    """The notebook's introduction (its first Markdown cell) must state every by-hand rule the checks enforce:
    one line (a row of its rules table) with each covered name in backticks and each forbidden label."""
    intro = next(iter(_cells(assignment.source_notebook, kind="markdown")), "")
    missing = []
    for rule in rules:
        wanted = [f"`{name}`" for name in rule.names] + [f.label for f in rule.forbid]
        best = max(intro.splitlines() or [""], key=lambda line: sum(text in line for text in wanted))
        absent = [text for text in wanted if text not in best]
        if absent:
            missing.append(f"rule of grade cell {rule.grade_id!r}: no line has {', '.join(absent)} "
                           f"next to the rest of {', '.join(wanted)}")
    if missing:
        notebook = assignment.source_notebook.relative_to(assignment.course.root)
        raise BuildError(f"the introduction of {notebook} does not state the by-hand rules its checks enforce:\n  "
                         + "\n  ".join(missing))


def validate_points(assignment: Assignment, checks: list) -> dict[str, dict[str, float]]:
    """Grade cell points must equal the sum of their checks' points; returns points per cell."""
    cells = {c.grade_id: c.points for c in assignment.grade_cells()}
    by_cell: dict[str, list] = {}
    for check in checks:
        by_cell.setdefault(check.grade_id, []).append(check)
    problems = []
    notebook = assignment.source_notebook.relative_to(assignment.course.root)
    for grade_id, points in cells.items():
        listed = by_cell.get(grade_id, [])
        total = sum(c.points for c in listed)
        if abs(total - points) > 1e-9:
            detail = ", ".join(f"{c.check} ({c.points:g})" for c in listed) or "no checks"
            problems.append(f"grade cell {grade_id!r} in {notebook} is worth {points:g} points, "
                            f"but its checks add up to {total:g}: {detail}")
    for grade_id, listed in by_cell.items():
        if grade_id not in cells:
            names = ", ".join(c.check for c in listed)
            problems.append(f"checks {names} use grade_id {grade_id!r}, which is no grade cell of {notebook}")
    if problems:
        raise BuildError("points do not match:\n  " + "\n  ".join(problems))
    return {g: {"points": float(cells[g]), "public": float(sum(c.points for c in by_cell.get(g, []) if not c.hidden))}
            for g in cells}


def public_check_files(assignment: Assignment, checks: list) -> list[Path]:
    """Helpers and the check files that hold only public checks; mixing both in one file is an error."""
    public = []
    for path in assignment.check_files():
        hidden = {c.hidden for c in checks if c.file == path.name}
        if hidden == {True, False}:
            raise BuildError(f"{path.name} mixes public and hidden checks; keep hidden checks in their own file")
        if hidden == {False}:
            public.append(path)
    helpers = [p for p in sorted(assignment.checks_dir.glob("*.py")) if not p.name.startswith("test_")]
    return helpers + public


def nbgrader_environment() -> dict[str, str]:
    """nbgrader runs `alembic` from PATH: put this interpreter's scripts first. nbgrader also puts the course
    directory first on sys.path, where a course's own `autograder/checks/` folder would shadow an editable
    install of the engine (its `nbgrader_config.py` imports it): PYTHONPATH names the engine's folder."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE.parent), env.get("PYTHONPATH", "")) if p)
    return env


def run_nbgrader(course: Course, assignment_id: str) -> None:
    for command in ("generate_assignment", "generate_solution"):
        done = subprocess.run(
            [sys.executable, "-m", "nbgrader", command, assignment_id, "--force",
             f"--CourseDirectory.root={course.root}"],
            cwd=course.root, env=nbgrader_environment(), capture_output=True, text=True,
        )
        if done.returncode != 0 or "ERROR" in done.stderr:
            raise BuildError(f"nbgrader {command} failed for {assignment_id}:\n{done.stderr[-4000:]}")


def vendor_runtime(assignment: Assignment, public: list[Path], points: dict, target: Path) -> None:
    """Copy the check runtime and the public checks into `target/autograder/`."""
    root = target / "autograder"
    shutil.rmtree(root, ignore_errors=True)
    for name in RUNTIME_FILES:
        _copy(PACKAGE / name, root / name)
    checks = root / "checks" / assignment.id
    for path in public:
        _copy(path, checks / path.name)
    (checks / POINTS_FILE).write_text(json.dumps(points, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(source.read_bytes())


def verify_release(assignment: Assignment, checks: list) -> None:
    """No solution line of the source and no hidden check may appear anywhere in release/.

    A solution line the source also gives outside its solution regions (boilerplate such as
    `def _backward():` in a worked example) is not a leak.
    """
    cells = _cells(assignment.source_notebook)
    given = {line.strip() for cell in cells for line in _SOLUTION.sub("", cell).splitlines()}
    solution_lines = [
        line.strip()
        for cell in cells
        for region in _SOLUTION.findall(cell)
        for line in region.splitlines()[1:-1]
        if len(line.strip()) > 8 and line.strip() not in given
    ]
    hidden = [c.check for c in checks if c.hidden]
    for path in sorted(assignment.course.release_dir(assignment.id).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        code = "\n".join(_cells(path, kind="code")) if path.suffix == ".ipynb" else ""
        if "BEGIN SOLUTION" in code or "BEGIN HIDDEN TESTS" in code:
            raise BuildError(f"{path} still contains solution or hidden-test markers")
        if URL_PLACEHOLDER in code:
            raise BuildError(f"{path} still has {URL_PLACEHOLDER} where the student runtime's URL goes: "
                             "nbgrader_config.py must call use_student_runtime(c) (autograder.runtime_package)")
        leaked = [line for line in solution_lines if line in code]
        if leaked:
            raise BuildError(f"{path} contains solution code: {leaked[0]!r}")
        names = [name for name in hidden if re.search(rf"\b{re.escape(name)}\b", text)]
        if names:
            raise BuildError(f"{path} mentions hidden checks: {', '.join(names)}")


def _cells(notebook: Path, *, kind: str | None = None) -> list[str]:
    data = json.loads(notebook.read_text(encoding="utf-8"))
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in data["cells"] if kind is None or c["cell_type"] == kind]
