"""The student runtime as a wheel: public checks only, deterministic, and `check(...)` anywhere.

The fresh-environment tests stand for Colab, Kaggle or a laptop: a new virtual environment
that has torch, pytest and a Jupyter kernel (linked from this project's environment, without
this repository's editable install) but no `autograder`, and a folder holding the notebook
alone. No network: pip runs with `--no-index`, from the wheel's local path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

from autograder.course import Course
from autograder.runtime_package import (DIST_DIR, INSTALL_BLOCK, REQUIRES, URL_PLACEHOLDER, StudentRuntime,
                                        verify_runtime_package)
from autograder.sourcecheck import scan
from conftest import REPO, build, copy_course, run_cli

COURSE_ASSIGNMENTS = ("u1_backprop", "u2_cnn", "u3_attention", "u4_recsys")
WHEEL = StudentRuntime().wheel_name
#: What the notebooks need besides `autograder` (what Colab and Kaggle already have), and pip.
KERNEL_NEEDS = ("torch", "numpy", "pytest", "matplotlib", "ipykernel", "pip")
SOLUTION = r"BEGIN SOLUTION(.*?)END SOLUTION"


# --------------------------------------------------------------------------- what the wheel holds


def wheel_contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def solution_lines(assignment: str) -> list[str]:
    source = json.loads((REPO / "source" / assignment / f"{assignment}.ipynb").read_text())
    cells = ["".join(cell["source"]) for cell in source["cells"]]
    given = {line.strip() for cell in cells for line in re.sub(SOLUTION, "", cell, flags=re.S).splitlines()}
    return [line.strip() for cell in cells for region in re.findall(SOLUTION, cell, re.S)
            for line in region.splitlines()[1:-1] if len(line.strip()) > 8 and line.strip() not in given]


def test_the_committed_wheel_carries_every_unit_and_its_public_checks_only():
    """Does release/dist/ hold the runtime with each unit's public checks, and no hidden check file or name, no
    notebook and no solution line beyond those the released checks themselves show?"""
    contents = wheel_contents(REPO / DIST_DIR / WHEEL)
    names = set(contents)
    text = "\n".join(data.decode("utf-8", errors="replace") for data in contents.values())
    shown = "\n".join(p.read_text() for a in COURSE_ASSIGNMENTS  # lines any released check shows already
                      for p in (REPO / "release" / a / "autograder" / "checks" / a).glob("*.py"))
    assert "autograder/selfcheck.py" in names and "autograder/build.py" not in names
    assert not [n for n in names if n.endswith(".ipynb") or "test_hidden" in n or "/grading/" in n]
    for assignment in COURSE_ASSIGNMENTS:
        released = REPO / "release" / assignment / "autograder" / "checks" / assignment
        for path in released.iterdir():
            if path.is_file():
                assert contents[f"autograder/checks/{assignment}/{path.name}"] == path.read_bytes()
        hidden = re.findall(r"^def (test_\w+)", (REPO / "autograder" / "checks" / assignment / "test_hidden.py")
                            .read_text(), re.M)
        assert hidden
        assert not [name for name in hidden if name in text]
        assert not [line for line in solution_lines(assignment) if line in text and line not in shown]
    assert contents["autograder/checks/u2_cnn/small_resnet_glyphs.pt"] == (
        REPO / "release" / "u2_cnn" / "small_resnet_glyphs.pt").read_bytes()
    verify_runtime_package(Course(REPO), REPO / DIST_DIR / WHEEL)


def test_the_wheel_metadata_pins_no_torch_and_follows_the_engine_bounds():
    """Are the runtime's dependencies lower bounds only, the same as the engine's, with no torchvision?"""
    text = wheel_contents(REPO / DIST_DIR / WHEEL)[f"{WHEEL.split('-py3')[0]}.dist-info/METADATA"].decode()
    required = [Requirement(line.split(": ", 1)[1]) for line in text.splitlines() if line.startswith("Requires-Dist")]
    assert [r.name for r in required] == ["torch", "numpy", "pytest"]
    assert all(spec.operator == ">=" for r in required for spec in r.specifier)
    engine = {Requirement(r).name: str(Requirement(r).specifier)
              for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert {r.name: str(r.specifier) for r in map(Requirement, REQUIRES)} == {n: engine[n] for n in engine
                                                                              if n in ("torch", "numpy", "pytest")}


def test_a_wheel_with_a_hidden_check_or_a_solution_line_does_not_pass_verification(tmp_path):
    """Would a hidden check file, a solution line or a notebook slipped into the wheel stop the build?"""
    from autograder.runtime_package import RuntimePackageError, wheel_bytes

    contents = {n: d for n, d in wheel_contents(REPO / DIST_DIR / WHEEL).items() if ".dist-info/" not in n}
    hidden = (REPO / "autograder" / "checks" / "u1_backprop" / "test_hidden.py").read_bytes()
    leak = next(line for line in solution_lines("u1_backprop") if "=" in line)
    for extra, expected in [({"autograder/checks/u1_backprop/test_hidden.py": hidden}, "not a public check file"),
                            ({"autograder/checklib/extra.py": f"# {leak}\n".encode()}, "solution code of u1_backprop"),
                            ({"autograder/u1.ipynb": b"{}"}, "a notebook")]:
        path = tmp_path / WHEEL
        path.write_bytes(wheel_bytes(contents | extra, name="datitos-autograder-runtime", version="0.1.0"))
        with pytest.raises(RuntimePackageError, match=re.escape(expected)):
            verify_runtime_package(Course(REPO), path)


@pytest.mark.slow
def test_building_twice_gives_the_same_wheel_bytes(demo_course):
    """Is the wheel deterministic: rebuilding leaves it byte for byte, with fixed timestamps and modes?"""
    path = demo_course.root / DIST_DIR / WHEEL
    before = path.read_bytes()
    build(demo_course, "demo")
    assert path.read_bytes() == before
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos if ".dist-info/" not in i.filename] == sorted(
        i.filename for i in infos if ".dist-info/" not in i.filename)
    assert {(i.date_time, i.external_attr >> 16, i.create_system) for i in infos} == {((1980, 1, 1, 0, 0, 0), 0o644, 3)}


@pytest.mark.slow
def test_the_released_setup_cell_names_the_configured_wheel_with_a_valid_checksum(demo_course):
    """Does the build put the configured URL in the release and the solutions, in nbgrader's checksum and in
    the copy of the locked cell that nbgrader's gradebook keeps (so `nbgrader autograde` sees no change)?"""
    from nbgrader.api import Gradebook
    from nbgrader.utils import compute_checksum

    url = "https://example.org/datitos-demo/release/dist/" + WHEEL  # tests/fixtures/course/nbgrader_config.py
    for folder in ("release", "solutions"):
        nb = nbformat.read(demo_course.root / folder / "demo" / "demo.ipynb", as_version=4)
        setup = nb.cells[1]
        assert setup.metadata.nbgrader.grade_id == "setup"
        assert f'PAQUETE_DEL_CURSO = "{url}"' in setup.source and URL_PLACEHOLDER not in setup.source
        if folder == "release":
            assert setup.metadata.nbgrader.checksum == compute_checksum(setup)
    with Gradebook(f"sqlite:///{demo_course.root / 'gradebook.db'}") as gradebook:  # what autograde puts back
        assert gradebook.find_source_cell("setup", "demo", "demo").source == setup.source


@pytest.mark.slow
def test_a_placeholder_without_a_configured_url_stops_the_build(tmp_path):
    """If the notebooks install the runtime but nbgrader_config.py says not from where, or does not let nbgrader
    write it, does the build say so?"""
    course = copy_course(tmp_path / "course")
    config = course.root / "nbgrader_config.py"
    config.write_text(config.read_text().replace("c.StudentRuntime.url", "# c.StudentRuntime.url"))
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode == 2 and "c.StudentRuntime.url" in done.stderr and URL_PLACEHOLDER in done.stderr
    config.write_text(config.read_text().replace("use_student_runtime(c)", "pass"))
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode == 2 and "must call use_student_runtime(c)" in done.stderr


@pytest.mark.parametrize("assignment", COURSE_ASSIGNMENTS)
def test_the_setup_cell_passes_the_tampering_scan(assignment):
    """Does the install block (pip through the kernel's %pip, no subprocess or importlib) pass the source scan
    that every notebook goes through, and is it at the top of each unit's released setup cell?"""
    nb = nbformat.read(REPO / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    setup = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    assert setup.source.startswith(INSTALL_BLOCK.split(URL_PLACEHOLDER)[0])
    assert [e.what for e in scan([("celda 1", setup.source)], ()).tamper] == []
    compile(setup.source, "setup", "exec")  # plain Python: no IPython syntax to transform


# --------------------------------------------------------------------------- a fresh environment


def _closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions `roots` need, by their declared requirements and extras, recursively."""
    seen: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [(root, "") for root in roots]
    while todo:
        name, extra = todo.pop()
        name = re.sub(r"[-_.]+", "-", name).lower()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = seen.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(requirement.name, e) for e in ("", *requirement.extras)]
    return list(seen.values())


def linked_site_packages(target: Path) -> Path:
    """A folder of links to what `KERNEL_NEEDS` need in this project's environment, and to nothing else: this
    repository's editable install (whose import hook would shadow the wheel) stays out."""
    target.mkdir(parents=True)
    dists = _closure(KERNEL_NEEDS)
    assert "datitos-autograder" not in {d.metadata["Name"].lower() for d in dists}
    for dist in dists:
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}:
            if top != "__pycache__" and not top.endswith(".pth") and not (target / top).exists():
                (target / top).symlink_to(site / top)
    assert not (target / "autograder").exists()
    return target


@pytest.fixture
def fresh_python(tmp_path) -> Path:
    """A new virtual environment without `autograder`: torch, pytest and a kernel come through a .pth file."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)  # pip too comes through the .pth file
    python = env / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "course_dependencies.pth").write_text(f"{linked_site_packages(tmp_path / 'linked')}\n")
    done = subprocess.run([python, "-c", "import torch, pytest, ipykernel, matplotlib.pyplot, autograder"],
                          capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)  # not from the repo
    assert "No module named 'autograder'" in done.stderr, done.stderr[-3000:]
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                  "MPLBACKEND": "Agg", "PYTHONNOUSERSITE": "1"}


def run_alone(notebook: nbformat.NotebookNode, python: Path, tmp_path: Path, name: str) -> nbformat.NotebookNode:
    """Execute `notebook` in a kernel of `python`, from a folder that holds only that notebook."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = tmp_path / name
    folder.mkdir()
    nbformat.write(notebook, folder / "alumno.ipynb")
    spec = tmp_path / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name, "language": "python", "env": {**_clean_env(), "PYTHONPATH": ""}}))
    manager = KernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    notebook.cells.append(nbformat.v4.new_code_cell("import autograder\nprint(autograder.__file__)"))
    NotebookClient(notebook, km=manager, timeout=600, allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    assert sorted(p.name for p in folder.iterdir()) == ["alumno.ipynb"]
    return notebook


def text_of(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/markdown", "") or
                   "\n".join(o.get("traceback", [])) for o in cell.get("outputs", []))


def graded(nb) -> list:
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def up_to_first_graded_cell(path: Path) -> nbformat.NotebookNode:
    """The notebook's cells up to its first graded part's check cell: setup, that part's code, `check(...)`."""
    nb = nbformat.read(path, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    nb.cells = nb.cells[: first + 1]
    return nb


@pytest.mark.slow
def test_the_setup_cell_installs_the_wheel_in_a_fresh_environment_and_the_checks_run_there(tmp_path, fresh_python):
    """On a machine with no course files, does the first cell install the built wheel with pip, so that the
    release fails its public checks in Spanish and the solution passes them, all from the installed package?"""
    course = copy_course(tmp_path / "course")
    config = course.root / "nbgrader_config.py"
    dist = course.root / DIST_DIR
    config.write_text(config.read_text() + f"\nc.StudentRuntime.url = {str(dist)!r}\n")
    build(course, "demo")
    site = subprocess.run([fresh_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()

    release = run_alone(nbformat.read(course.root / "release" / "demo" / "demo.ipynb", as_version=4),
                        fresh_python, tmp_path, "release")
    setup = text_of(release.cells[1])
    assert not [o for o in release.cells[1].outputs if o.output_type == "error"], setup
    assert "Instalando las comprobaciones del curso" in setup and "Listo: comprobaciones instaladas" in setup, setup
    assert text_of(release.cells[-1]).strip() == str(Path(site) / "autograder" / "__init__.py")
    for cell in graded(release):
        output = text_of(cell)
        assert "todavía no está implementada" in output
        assert "Puntos de estas comprobaciones públicas: **0 de" in output
        assert not [o for o in cell.outputs if o.output_type == "error"]

    solution = run_alone(nbformat.read(course.root / "solutions" / "demo" / "demo.ipynb", as_version=4),
                         fresh_python, tmp_path, "solution")
    assert "Instalando" not in text_of(solution.cells[1])  # installed once per environment
    assert not [o for c in solution.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert text_of(solution.cells[-1]).strip() == str(Path(site) / "autograder" / "__init__.py")
    for cell in graded(solution):
        output = text_of(cell)
        assert "Comprobaciones públicas de" in output and "✘" not in output, output


@pytest.mark.slow
def test_the_committed_wheel_installed_alone_runs_unit_1_from_a_bare_folder(tmp_path, fresh_python):
    """With the committed wheel installed by `pip install --no-index` and nothing else of the course around, does
    Unit 1's first part pass with the solution and fail, in Spanish, with the release?"""
    done = subprocess.run([fresh_python, "-m", "pip", "install", "--no-index", str(REPO / DIST_DIR / WHEEL)],
                          capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    site = subprocess.run([fresh_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    where = str(Path(site) / "autograder" / "__init__.py")

    solution = run_alone(up_to_first_graded_cell(REPO / "solutions" / "u1_backprop" / "u1_backprop.ipynb"),
                         fresh_python, tmp_path, "solution")
    assert text_of(solution.cells[-1]).strip() == where
    (cell,) = graded(solution)
    assert "Comprobaciones públicas de «linear»" in text_of(cell) and "✘" not in text_of(cell), text_of(cell)

    release = run_alone(up_to_first_graded_cell(REPO / "release" / "u1_backprop" / "u1_backprop.ipynb"),
                        fresh_python, tmp_path, "release")
    (cell,) = graded(release)
    assert "todavía no está implementada" in text_of(cell), text_of(cell)
    assert "Puntos de estas comprobaciones públicas: **0 de 3**." in text_of(cell)
