"""The Gradescope autograder zip of one assignment (`autograder gradescope ASSIGNMENT`).

Layout (Gradescope unpacks it into /autograder/source):

    setup.sh             builds /autograder/venv (CPU torch and the engine's needs), the workers' user
    run_autograder       grades /autograder/submission -> /autograder/results/results.json
    requirements.txt     lower bounds only (no torch pin: setup.sh takes CPU torch from its own index)
    gradescope.json      the assignment, the limits and options the grading uses
    course/              a course directory the engine can grade with:
      autograder/        the engine, with this assignment's checks only (public and hidden)
      release/<id>/      the release notebook and the files released with it
      source/<id>/       the same files: the engine finds the notebook's name (and Unit 2 its
                         checkpoint) there. No source notebook, no solution is ever in the zip.

The zip is the same byte for byte on every run with the same inputs: sorted entries, a fixed
timestamp, fixed permissions.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..course import Assignment
from .scripts import RUN_AUTOGRADER, SETUP_SH

COURSE_DIR = "course"
#: What the grading path imports besides the standard library; bounds come from pyproject.toml.
REQUIREMENTS = {"torch": "2.2", "numpy": "1.24", "pytest": "8.0", "nbformat": "5.9", "ipython": "8.10",
                "matplotlib": "3.7", "tqdm": "4.60"}
TORCHVISION = "0.17"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SKIP = re.compile(r"(^|/)(__pycache__|\.[^/]*)(/|$)|\.py[co]$")
ENGINE = Path(__file__).resolve().parent.parent


class BundleError(Exception):
    """The bundle cannot be written (for instructors, English)."""


@dataclass(frozen=True)
class GradescopeSettings:
    """How the bundle grades: the limits and options stored in gradescope.json."""

    limits: dict
    timing_scale: float = 1.0
    sandbox: str = "auto"
    hidden_visibility: str = "after_due_date"
    deadline_seconds: float = 540.0  # Gradescope's default timeout is 600 s: leave time to write the result
    seed: int | None = None  # None: fresh inputs every run
    devices: tuple[str, ...] = ("cpu",)
    cell_budgets: bool = True  # demonstration cells' own limits (grading/budgets.py)


@dataclass
class Bundle:
    path: Path
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    requirements: list[str] = field(default_factory=list)


def requirements(assignment: Assignment) -> list[str]:
    """Lower bounds of what grading imports; torchvision only when the assignment uses it (it pins torch)."""
    lines = [f"{name}>={bound}" for name, bound in REQUIREMENTS.items()]
    texts = [assignment.release_notebook.read_text(encoding="utf-8"),
             *(p.read_text(encoding="utf-8") for p in sorted(assignment.checks_dir.rglob("*.py")))]
    if any("torchvision" in text for text in texts):
        lines.insert(1, f"torchvision>={TORCHVISION}")
    return lines


def bundle_files(assignment: Assignment, settings: GradescopeSettings) -> dict[str, bytes]:
    """Every file of the zip, by its path in the zip."""
    course = assignment.course
    files: dict[str, bytes] = {
        "setup.sh": SETUP_SH.encode(),
        "run_autograder": RUN_AUTOGRADER.encode(),
        "requirements.txt": ("\n".join(requirements(assignment)) + "\n").encode(),
    }
    config = {"assignment": assignment.id, "course": COURSE_DIR, "grader_version": __version__, "workers": 1,
              "limits": settings.limits, "timing_scale": settings.timing_scale, "sandbox": settings.sandbox,
              "hidden_visibility": settings.hidden_visibility, "deadline_seconds": settings.deadline_seconds,
              "seed": settings.seed, "devices": list(settings.devices), "cell_budgets": settings.cell_budgets}
    files["gradescope.json"] = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    checks = ENGINE / "checks"
    for path in sorted(ENGINE.rglob("*")):
        relative = path.relative_to(ENGINE).as_posix()
        if path.is_file() and not SKIP.search(relative) and (path.parent == checks or not path.is_relative_to(checks)):
            files[f"{COURSE_DIR}/autograder/{relative}"] = path.read_bytes()
    for path in sorted(assignment.checks_dir.rglob("*")):  # this assignment's checks, public and hidden
        relative = path.relative_to(assignment.checks_dir).as_posix()
        if path.is_file() and not SKIP.search(relative):
            files[f"{COURSE_DIR}/autograder/checks/{assignment.id}/{relative}"] = path.read_bytes()
    release = course.release_dir(assignment.id)
    for path in sorted(release.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            data = path.read_bytes()
            files[f"{COURSE_DIR}/release/{assignment.id}/{path.name}"] = data
            files[f"{COURSE_DIR}/source/{assignment.id}/{path.name}"] = data
    _refuse_secrets(assignment, files)
    return files


def _refuse_secrets(assignment: Assignment, files: dict[str, bytes]) -> None:
    """No source or solution notebook may reach the zip (the release notebook is the only notebook)."""
    course = assignment.course
    release = assignment.release_notebook.read_bytes()
    secrets = [assignment.source_notebook, course.solutions_dir(assignment.id) / assignment.notebook_name]
    forbidden = {p.read_bytes() for p in secrets if p.is_file()} - {release}
    for name, data in files.items():
        if name.endswith(".ipynb") and data != release:
            raise BundleError(f"{name} is not the release notebook")
        if data in forbidden:
            raise BundleError(f"{name} is a source or solution notebook")


def write_bundle(assignment: Assignment, out: Path, *, settings: GradescopeSettings) -> Bundle:
    """Write the zip to `out` (deterministically) and return what it holds."""
    files = bundle_files(assignment, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = name in ("setup.sh", "run_autograder")
            info.external_attr = ((0o100755 if executable else 0o100644) << 16)
            info.create_system = 3  # unix, so the permissions above are read
            archive.writestr(info, files[name])
    tmp.replace(out)
    req = files["requirements.txt"].decode().split()
    return Bundle(out, sorted(files), out.stat().st_size, req)
