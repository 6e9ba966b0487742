"""The student runtime as an installable wheel, for notebooks run outside a course checkout.

Students run the released notebooks on Colab, Kaggle or a laptop, where nothing sits next
to the notebook. `autograder build` therefore also writes one small wheel for the whole
course, `release/dist/<name>-<version>-py3-none-any.whl`, holding exactly what release/
already gives next to each notebook: the check runtime (`build.RUNTIME_FILES`) and, per
released assignment, its public checks, their helpers, `points.json` and the data files
released with the notebook. No source notebook, solution or hidden check goes in, and
`verify_runtime_package` says so before the build ends.

The import name stays `autograder`, so the notebooks' code is the same everywhere. The
setup cell imports `make_check`, and only where that fails (no checkout, no engine) does it
install the wheel with the kernel's own `%pip`, from `StudentRuntime.url`: set once, in
`nbgrader_config.py`, and written into the notebooks by nbgrader itself (`StudentRuntime` is
also an nbgrader preprocessor). Never install the wheel beside the full engine
(`datitos-autograder`): both own the `autograder` package, and the last one installed wins
file by file.

The wheel is written by hand (zip entries in sorted order, fixed timestamps and modes, no
compression, RECORD with sha256), so building twice gives the same bytes on any machine
and the wheel can be committed with the rest of release/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode
from traitlets.config import Config

from . import __version__
from .course import Course

#: Where the wheel goes, relative to the course root (released, committed and published with release/).
DIST_DIR = Path("release") / "dist"
#: What the source notebooks write where the wheel's URL goes; nbgrader puts the URL there (`StudentRuntime`).
URL_PLACEHOLDER = "@STUDENT_RUNTIME_URL@"
#: The runtime's dependencies: lower bounds only (those of the engine's pyproject.toml), never a torch pin,
#: so that pip keeps the torch Colab or Kaggle already has.
REQUIRES = ("torch>=2.2", "numpy>=1.24", "pytest>=8.0")
REQUIRES_PYTHON = ">=3.11"
#: The top of every notebook's setup cell (`scripts/add_runtime_install.py` puts it there). Plain Python, no
#: `%pip` line: the cell also runs under a plain interpreter, and the source scan bans `subprocess` and
#: `importlib` in notebooks. `get_ipython().run_line_magic("pip", ...)` is what `%pip` becomes: pip for the
#: kernel's own interpreter. While grading the import succeeds and the rest never runs (the worker's shell
#: stub would only note the magic).
INSTALL_BLOCK = f"""\
try:  # las comprobaciones públicas del curso (en el repositorio del curso ya están)
    from autograder.selfcheck import make_check
except ImportError:  # en Colab, Kaggle o tu computadora se instalan aquí, una vez por entorno (hace falta internet)
    PAQUETE_DEL_CURSO = "{URL_PLACEHOLDER}"
    print("Instalando las comprobaciones del curso (solo la primera vez)...")
    get_ipython().run_line_magic("pip", f'install --quiet "{{PAQUETE_DEL_CURSO}}"')
    try:
        from autograder.selfcheck import make_check
    except ImportError:
        raise ImportError("No se pudieron instalar las comprobaciones del curso. Revisa la conexión a internet y "
                          "vuelve a ejecutar esta celda, o instálalas a mano con pip: "
                          f"pip install {{PAQUETE_DEL_CURSO}}") from None
    print("Listo: comprobaciones instaladas (no hace falta reiniciar el kernel).")
"""
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class StudentRuntime(NbGraderPreprocessor):
    """Where students get the runtime package (`c.StudentRuntime.url = "..."` in nbgrader_config.py), and the
    nbgrader step that writes the wheel's URL where a notebook has `URL_PLACEHOLDER`.

    It runs first in `generate_assignment` and `generate_solution` (`use_student_runtime(c)`), so the released
    setup cell, its checksum and the copy nbgrader keeps in its gradebook (what `autograde` puts back in place
    of a locked cell) all have the URL.
    """

    url = Unicode("", help="The folder (URL or path) where release/dist/ is published; the setup cell of every "
                           "notebook installs <url>/<wheel file name> when `autograder` cannot be imported.",
                  ).tag(config=True)
    name = Unicode("datitos-autograder-runtime", help="Distribution name of the runtime wheel.").tag(config=True)

    @property
    def wheel_name(self) -> str:
        return f"{_normalized(self.name)}-{__version__}-py3-none-any.whl"

    @property
    def install_url(self) -> str:
        """What the setup cell gives to `pip install`."""
        return f"{self.url.rstrip('/')}/{self.wheel_name}" if self.url else ""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and URL_PLACEHOLDER in cell.source:
            if not self.url:
                raise RuntimePackageError(
                    f"a notebook installs the student runtime from {URL_PLACEHOLDER}, but nbgrader_config.py sets "
                    "no c.StudentRuntime.url (where release/dist/ is published)")
            cell.source = cell.source.replace(URL_PLACEHOLDER, self.install_url)
        return cell, resources


def use_student_runtime(c: Config) -> None:
    """In nbgrader_config.py: put `StudentRuntime` first in the steps that generate release/ and solutions/
    (call it after any line that sets `GenerateAssignment.preprocessors` or `GenerateSolution.preprocessors`)."""
    from nbgrader.converters import GenerateAssignment, GenerateSolution

    for converter in (GenerateAssignment, GenerateSolution):
        section = c[converter.__name__]
        steps = list(section.preprocessors if "preprocessors" in section
                     else converter.class_traits()["preprocessors"].default())
        if StudentRuntime not in steps:
            section.preprocessors = [StudentRuntime, *steps]


class RuntimePackageError(Exception):
    """The runtime wheel cannot be built or holds what it must not (English, for instructors)."""


@dataclass(frozen=True)
class RuntimePackage:
    path: Path
    assignments: tuple[str, ...]
    files: int


def runtime_settings(course: Course) -> StudentRuntime:
    """The course's `StudentRuntime` settings, read from nbgrader_config.py the way nbgrader reads it."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.root)).load_config()
    return StudentRuntime(config=config)


# --------------------------------------------------------------------------- the wheel


def build_runtime_package(course: Course, settings: StudentRuntime) -> RuntimePackage:
    """Write release/dist/<wheel> from what release/ holds, verify it, and say what it holds."""
    files, assignments = runtime_contents(course)
    path = course.root / DIST_DIR / settings.wheel_name
    data = wheel_bytes(files, name=settings.name, version=__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_bytes() != data:  # untouched when nothing changed
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        try:
            verify_runtime_package(course, tmp)  # before it replaces the published wheel
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
    else:
        verify_runtime_package(course, path)
    return RuntimePackage(path, tuple(assignments), len(files))


def runtime_contents(course: Course) -> tuple[dict[str, bytes], list[str]]:
    """Archive name -> bytes: the check runtime, and per released assignment its released checks and data files."""
    from .build import PACKAGE, RUNTIME_FILES

    files = {f"autograder/{name}": (PACKAGE / name).read_bytes() for name in RUNTIME_FILES}
    assignments = []
    for assignment_id in course.assignments():
        release = course.release_dir(assignment_id)
        checks = release / "autograder" / "checks" / assignment_id
        if not checks.is_dir():
            continue  # not released yet
        assignments.append(assignment_id)
        prefix = f"autograder/checks/{assignment_id}/"
        for path in sorted(checks.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[prefix + path.relative_to(checks).as_posix()] = path.read_bytes()
        # Files released beside the notebook (u2's pretrained weights): the public checks look next to themselves.
        for path in sorted(release.iterdir()):
            if path.is_file() and path.suffix != ".ipynb" and not path.name.startswith("."):
                if prefix + path.name in files:
                    raise RuntimePackageError(f"release/{assignment_id}/{path.name} has the name of a check file")
                files[prefix + path.name] = path.read_bytes()
    return files, assignments


def wheel_bytes(files: dict[str, bytes], *, name: str, version: str) -> bytes:
    """A pure-Python wheel holding `files`, the same bytes for the same input."""
    dist_info = f"{_normalized(name)}-{version}.dist-info"
    entries = dict(sorted(files.items()))
    entries[f"{dist_info}/METADATA"] = _metadata(name, version).encode()
    entries[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: autograder build\nRoot-Is-Purelib: true\nTag: py3-none-any\n").encode()
    entries[f"{dist_info}/top_level.txt"] = b"autograder\n"
    record = [f"{n},sha256={_digest(d)},{len(d)}" for n, d in entries.items()] + [f"{dist_info}/RECORD,,"]
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for entry, data in entries.items():
            info = zipfile.ZipInfo(entry, date_time=_ZIP_TIME)
            info.create_system = 3  # Unix, whatever the building machine: the mode bits below are read as such
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _metadata(name: str, version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        "Summary: Public checks of the Datitos deep-learning course, for check(...) in the student notebooks",
        "License: MIT",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *[f"Requires-Dist: {requirement}" for requirement in REQUIRES],
        "Description-Content-Type: text/markdown",
        "",
        "The check runtime and the public checks of the course's assignments (import name `autograder`).",
        "The first cell of every released notebook installs it when `autograder` cannot be imported.",
        "Do not install it beside the full grader (`datitos-autograder`): both own the `autograder` package.",
        "",
    ]
    return "\n".join(lines)


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


# --------------------------------------------------------------------------- verification


def verify_runtime_package(course: Course, wheel: Path) -> None:
    """The wheel holds what release/ gives and nothing more: the engine's runtime files and, per assignment, its
    released public checks and data files, byte for byte; no notebook, no hidden check (file or name), no solution
    marker, and no solution line of an assignment beyond those the released checks or the engine already contain
    (generic lines such as `if training:` or `return scores`); a RECORD that matches."""
    from .build import _SOLUTION, PACKAGE, RUNTIME_FILES, BuildError, _cells, collect_checks, public_check_files

    with zipfile.ZipFile(wheel) as archive:
        contents = {info.filename: archive.read(info) for info in archive.infolist()}
    problems = _record_problems(contents)
    dist_info = next((n.split("/")[0] for n in contents if n.endswith(".dist-info/RECORD")), "")
    problems += [f"{n}: outside the autograder package" for n in contents
                 if not n.startswith(("autograder/", f"{dist_info}/"))]
    problems += [f"{n}: a notebook" for n in contents if n.endswith(".ipynb")]
    engine = {f"autograder/{name}": (PACKAGE / name).read_bytes() for name in RUNTIME_FILES}
    problems += [f"{n}: differs from the engine's {n}" for n, data in engine.items() if contents.get(n, data) != data]
    texts = {n: d.decode("utf-8", errors="replace") for n, d in contents.items() if not n.endswith((".pt", ".pth"))}
    problems += [f"{n}: solution or hidden-test markers" for n, t in texts.items()
                 if "BEGIN SOLUTION" in t or "BEGIN HIDDEN TESTS" in t]
    carried = sorted({n.split("/")[2] for n in contents if n.startswith("autograder/checks/") and n.count("/") >= 3})
    shown = "\n".join([d.decode("utf-8", errors="replace") for d in engine.values()] + [  # public already
        p.read_text(encoding="utf-8", errors="replace") for assignment_id in carried
        for p in sorted((course.release_dir(assignment_id) / "autograder" / "checks" / assignment_id).glob("*.py"))])
    for assignment_id in carried:
        assignment = course.assignment(assignment_id)
        try:
            checks, _ = collect_checks(assignment)
            public = {p.name for p in public_check_files(assignment, checks)}
        except BuildError as exc:
            raise RuntimePackageError(str(exc)) from None
        release = course.release_dir(assignment_id)
        released = release / "autograder" / "checks" / assignment_id
        prefix = f"autograder/checks/{assignment_id}/"
        for name in (n for n in contents if n.startswith(prefix)):
            relative = name[len(prefix):]
            if relative.endswith(".py") and relative not in public:
                problems.append(f"{name}: not a public check file of {assignment_id}")
            origin = released / relative if (released / relative).is_file() else release / relative
            if not origin.is_file() or origin.read_bytes() != contents[name]:
                problems.append(f"{name}: not a copy of a file in release/{assignment_id}/")
        hidden = [c.check for c in checks if c.hidden]
        for name, text in texts.items():
            found = [h for h in hidden if re.search(rf"\b{re.escape(h)}\b", text)]
            problems += [f"{name}: mentions hidden checks of {assignment_id}: {', '.join(found)}"] if found else []
        cells = _cells(assignment.source_notebook)
        given = {line.strip() for cell in cells for line in _SOLUTION.sub("", cell).splitlines()}
        solution = {line.strip() for cell in cells for region in _SOLUTION.findall(cell)
                    for line in region.splitlines()[1:-1]
                    if len(line.strip()) > 8 and line.strip() not in given and line.strip() not in shown}
        for name, text in texts.items():
            leaked = sorted(line for line in solution if line in text)
            problems += [f"{name}: solution code of {assignment_id}: {leaked[0]!r}"] if leaked else []
    if problems:
        raise RuntimePackageError(f"{wheel.name} must not ship as built:\n  " + "\n  ".join(problems))


def _record_problems(contents: dict[str, bytes]) -> list[str]:
    record = next((d for n, d in contents.items() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return ["no RECORD"]
    listed = {}
    for line in record.decode().splitlines():
        entry, digest, size = line.rsplit(",", 2)
        listed[entry] = (digest, size)
    problems = [f"{n}: not in RECORD" for n in contents if n not in listed]
    problems += [f"{n}: RECORD hash differs" for n, (digest, _) in listed.items()
                 if digest and (n not in contents or digest != f"sha256={_digest(contents[n])}")]
    return problems
