"""Gradescope, run here the way Gradescope runs it.

`autograder gradescope u1_backprop` writes the zip; it is unpacked into a real /autograder that only a
private mount namespace sees (bubblewrap binds a folder there and the host's system read-only, nothing
on the host's / changes), `setup.sh` builds /autograder/venv from a local wheel cache (no network:
the container has no network namespace of the host's), and `run_autograder` grades one upload at a
time with a fresh /autograder/submission, an empty /autograder/results and a realistic
submission_metadata.json, the way Gradescope starts a fresh container for every submission. Runs are
held to Gradescope's default container (768 MB, half a CPU) with a cgroup where the machine allows one.

The hostile upload is graded twice: in a container that lets the grader create namespaces (every
sandbox layer), and in one with Docker's default capabilities (no namespaces: only the worker's uid,
rlimits, seccomp, the subreaper and the file permissions stand), which is what a Gradescope
container may give.

Needs root, bubblewrap and a Python 3.11 with venv; the first run fills ~/.cache/datitos-wheels from
the package index pip is configured with (later runs reuse it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import nbformat
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

ASSIGNMENT = "u1_backprop"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
WHEELS = Path(os.environ.get("DATITOS_WHEELS", Path.home() / ".cache" / "datitos-wheels"))
PYTHON = os.environ.get("DATITOS_PYTHON", "/usr/bin/python3.11")
SCHEMA = json.loads((REPO / "tests" / "fixtures" / "gradescope_results.schema.json").read_text())
MEMORY_BYTES = 768 * 2**20  # Gradescope's default container
CPU_SHARE = 0.5
LINGER = 6.0  # seconds the harness waits after run_autograder before reading results.json again
DOCKER_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
               "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
HIDDEN_TEXT = "def test_linear_thin_shapes"  # a line only the hidden checks hold
WORKER_UID = 61000

#: Runs as root inside the container: what Gradescope's harness does around run_autograder, plus the
#: evidence the tests need (digests before and after, processes left, results.json after a while).
HARNESS = r'''
import hashlib, json, os, stat, subprocess, sys, time
linger = float(sys.argv[1])

def digest(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:
        return f"missing: {exc.strerror}"

def tree(top, *, content):
    """Every file under top (not __pycache__): path, owner, mode, and its content's digest or size."""
    h, loose = hashlib.sha256(), []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files) + dirs:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if info.st_uid != 0 or (info.st_mode & 0o022 and not stat.S_ISLNK(info.st_mode)):
                loose.append(path)
            h.update(f"{path} {info.st_uid} {info.st_mode:o} ".encode())
            if stat.S_ISREG(info.st_mode):
                h.update((digest(path) if content else str(info.st_size)).encode())
    return h.hexdigest(), loose

def snapshot():
    source, loose_source = tree("/autograder/source", content=True)
    venv, loose_venv = tree("/autograder/venv", content=False)
    return {"run_autograder": digest("/autograder/run_autograder"), "source": source, "venv": venv,
            "writable": loose_source + loose_venv, "results": sorted(os.listdir("/autograder/results"))}

def left():
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/status") as f:
                uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if any(61000 <= int(u) < 61064 for u in uids):
            pids.append(int(pid))
    return pids

before = snapshot()
started = time.monotonic()
with open("/autograder/results/stdout", "wb") as out:
    code = subprocess.call(["/autograder/run_autograder"], stdout=out, stderr=subprocess.STDOUT, cwd="/autograder")
seconds = time.monotonic() - started
leftover = left()
first = digest("/autograder/results/results.json")
time.sleep(linger)
report = {"code": code, "seconds": seconds, "leftover": leftover, "before": before, "after": snapshot(),
          "results_digest": first, "results_digest_later": digest("/autograder/results/results.json")}
with open("/harness/report.json", "w") as f:
    json.dump(report, f)
'''

#: The hostile cell (appended to the release notebook): each attack on Gradescope's layout, recorded, then
#: raised as the cell's error so the report reaches results.json through the cell summary.
ATTACKS = r'''
import json, os, sys, sysconfig, time
report = {}
def attempt(name, action):
    try:
        value = action()
        report[name] = "ok" + (f": {str(value)[:40]}" if value is not None else "")
    except BaseException as exc:
        report[name] = type(exc).__name__
def append(path, text):
    with open(path, "a") as f:
        f.write(text)
def read(path):
    with open(path) as f:
        return f.read()
attempt("append_run_autograder", lambda: append("/autograder/run_autograder", "\necho 100 > /tmp/pwned\n"))
attempt("append_bundled_run_autograder", lambda: append("/autograder/source/run_autograder", "\necho pwned\n"))
attempt("append_setup", lambda: append("/autograder/source/setup.sh", "\necho pwned\n"))
attempt("rewrite_config", lambda: append("/autograder/source/gradescope.json", " "))
attempt("poison_engine", lambda: append("/autograder/source/course/autograder/gradescope/run.py", "\nraise SystemExit\n"))
attempt("poison_venv", lambda: append(os.path.join(sysconfig.get_paths()["purelib"], "sitecustomize.py"), "import os\n"))
attempt("forge_results", lambda: append("/autograder/results/results.json", '{"score": 1000}'))
attempt("new_results_file", lambda: append("/autograder/results/extra.json", "{}"))
attempt("read_hidden_checks", lambda: read("/autograder/source/course/autograder/checks/u1_backprop/test_hidden.py"))
attempt("list_checks", lambda: os.listdir("/autograder/source/course/autograder/checks"))
attempt("read_metadata", lambda: read("/autograder/submission_metadata.json"))
attempt("list_submission", lambda: os.listdir("/autograder/submission"))
attempt("list_results", lambda: os.listdir("/autograder/results"))
attempt("read_config", lambda: read("/autograder/source/gradescope.json"))

# A double-forked sleeper that would rewrite results.json once the grader is done.
child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() == 0:
        try:
            time.sleep(3)
            with open("/autograder/results/results.json", "w") as f:
                f.write('{"score": 999, "tests": []}')
        finally:
            os._exit(0)
    os._exit(0)
os.waitpid(child, 0)
report["uid"] = os.getuid()
raise RuntimeError("ATAQUES " + json.dumps(report, sort_keys=True))
'''


#: Touches 64 MiB after 64 MiB, far past what the container has left once the grader is loaded.
MEMORY_BOMB = r'''
import torch
hoard = []
for _ in range(40):
    hoard.append(torch.ones(16 * 2**20))
'''


def metadata(submission_id: int) -> dict:
    """A submission_metadata.json like Gradescope's (fields from its documentation)."""
    return {
        "id": submission_id, "created_at": "2026-11-30T10:00:00.000000-03:00", "submission_method": "upload",
        "assignment": {"due_date": "2026-12-07T23:59:00.000000-03:00", "group_size": None,
                       "group_submission": False, "id": 4242, "course_id": 1234, "late_due_date": None,
                       "release_date": "2026-11-23T00:00:00.000000-03:00", "title": "Unidad 1: backprop",
                       "total_points": "40.0"},
        "users": [{"email": "estudiante@example.com", "id": 777, "name": "Estudiante Uno"}],
        "previous_submissions": [{"submission_time": "2026-11-29T10:00:00.000000-03:00", "score": 0.0,
                                  "results": {"score": 0.0, "tests": [], "output": "SECRETO-DE-ENTREGAS-PREVIAS"}}],
    }


# --------------------------------------------------------------------------- the container


class Cgroup:
    """A cgroup holding Gradescope's default limits (v1 memory + cpu, or v2), when the machine allows one."""

    def __init__(self, name: str) -> None:
        self.paths: list[Path] = []
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        try:
            if self.v2:
                path = Path("/sys/fs/cgroup") / name
                path.mkdir()
                self.paths = [path]
                (path / "memory.max").write_text(str(MEMORY_BYTES))
                (path / "cpu.max").write_text(f"{int(CPU_SHARE * 100000)} 100000")
            else:
                memory, cpu = Path("/sys/fs/cgroup/memory") / name, Path("/sys/fs/cgroup/cpu") / name
                memory.mkdir()
                self.paths.append(memory)
                (memory / "memory.limit_in_bytes").write_text(str(MEMORY_BYTES))
                cpu.mkdir()
                self.paths.append(cpu)
                (cpu / "cpu.cfs_quota_us").write_text(str(int(CPU_SHARE * int((cpu / "cpu.cfs_period_us").read_text()))))
        except OSError:
            self.close()
            self.paths = []

    @property
    def active(self) -> bool:
        return bool(self.paths)

    def enter(self) -> str:
        """Shell that moves itself into the cgroup (then execs the container)."""
        return "; ".join(f"echo $$ > {p}/cgroup.procs" for p in self.paths)

    def peak_bytes(self) -> int | None:
        for path, name in ((self.paths[0], "memory.peak"), (self.paths[0], "memory.max_usage_in_bytes")):
            if (path / name).exists():
                return int((path / name).read_text())
        return None

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        text = (self.paths[0] / name).read_text()
        found = re.search(r"^oom_kill (\d+)", text, re.M)
        return int(found.group(1)) if found else 0

    def close(self) -> None:
        for path in self.paths:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


@dataclass
class Run:
    results: dict
    text: str
    stdout: str
    report: dict
    peak_bytes: int | None
    oom_kills: int
    wall: float


class Gradescope:
    """/autograder in a private mount namespace: set up once, then one fresh grading per upload."""

    def __init__(self, base: Path, bundle: Path) -> None:
        self.base = base
        self.root = base / "autograder"
        self.harness = base / "harness"
        self.etc = base / "etc"
        (self.root / "source").mkdir(parents=True)
        subprocess.run(["unzip", "-q", str(bundle), "-d", str(self.root / "source")], check=True)
        shutil.copy2(self.root / "source" / "run_autograder", self.root / "run_autograder")  # as Gradescope does
        shutil.copytree("/etc", self.etc, symlinks=True)  # useradd writes /etc; the host's stays untouched
        self.harness.mkdir()
        (self.harness / "harness.py").write_text(HARNESS)
        self.count = 0

    def command(self, inner: list[str], *, caps: str) -> list[str]:
        args = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", "/sys", "/sys"]
        for entry in sorted(os.listdir("/")):
            if entry in ("proc", "dev", "tmp", "sys", "etc", "autograder", "harness"):
                continue
            path = f"/{entry}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--bind", str(self.etc), "/etc", "--bind", str(self.root), "/autograder",
                 "--bind", str(self.harness), "/harness", "--chdir", "/autograder", "--clearenv",
                 "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--setenv", "HOME", "/root", "--setenv", "LANG", "C.UTF-8"]
        if caps == "all":
            args += ["--cap-add", "ALL"]
        else:  # Docker's default set: no CAP_SYS_ADMIN, so no namespaces for the grader
            args += ["--cap-drop", "ALL", *(a for c in DOCKER_CAPS for a in ("--cap-add", f"CAP_{c}"))]
        return args + ["--", *inner]

    def setup(self) -> tuple[float, str]:
        started = time.monotonic()
        done = subprocess.run(
            self.command(["/usr/bin/env", f"DATITOS_WHEELS={WHEELS}", f"DATITOS_PYTHON={PYTHON}",
                          "bash", "/autograder/source/setup.sh"], caps="all"),
            capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return time.monotonic() - started, done.stdout + done.stderr

    def grade(self, files: dict[str, bytes], *, caps: str = "all") -> Run:
        """A fresh submission and results folder, then the harness around run_autograder."""
        self.count += 1
        for folder in ("submission", "results"):
            shutil.rmtree(self.root / folder, ignore_errors=True)
            (self.root / folder).mkdir()
        for name, data in files.items():
            path = self.root / "submission" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self.root / "submission_metadata.json").write_text(json.dumps(metadata(1000 + self.count)))
        (self.harness / "report.json").unlink(missing_ok=True)
        cgroup = Cgroup(f"datitos-gradescope-{os.getpid()}-{self.count}")
        try:
            inner = self.command(["/usr/bin/python3", "/harness/harness.py", str(LINGER)], caps=caps)
            shell = f"{cgroup.enter()}; exec \"$@\"" if cgroup.active else 'exec "$@"'
            started = time.monotonic()
            done = subprocess.run(["sh", "-c", shell, "sh", *inner], capture_output=True, text=True, timeout=900)
            wall = time.monotonic() - started
            peak, kills = (cgroup.peak_bytes(), cgroup.oom_kills()) if cgroup.active else (None, 0)
        finally:
            cgroup.close()
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        text = (self.root / "results" / "results.json").read_text(encoding="utf-8")
        return Run(json.loads(text), text, (self.root / "results" / "stdout").read_text(errors="replace"),
                   json.loads((self.harness / "report.json").read_text()), peak, kills, wall)


def _requirements(source: Path) -> list[str]:
    return (source / "requirements.txt").read_text().split()


def _wheel_cache(requirements: list[str]) -> None:
    """~/.cache/datitos-wheels from the package index pip is configured with (CPU torch when there is one)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    constraints = WHEELS / "constraints.txt"
    cpu = sorted(Path("/opt/wheels").glob("torch-*+cpu-*.whl")) if Path("/opt/wheels").is_dir() else []
    constraints.write_text("".join(f"torch=={w.name.split('-')[1]}\n" for w in cpu[-1:]))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELS),
                           "--only-binary=:all:", "-c", str(constraints), *requirements],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"could not fill the wheel cache {WHEELS}: {done.stderr[-500:]}")


@pytest.fixture(scope="module")
def gradescope(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("unzip"):
        pytest.skip("needs root, bubblewrap and unzip to lay out /autograder in a private mount namespace")
    if subprocess.run([PYTHON, "-c", "import venv, ensurepip"], capture_output=True).returncode != 0:
        pytest.skip(f"needs {PYTHON} with venv and ensurepip (set DATITOS_PYTHON)")
    base = tmp_path_factory.mktemp("gradescope")
    bundle = base / "u1_backprop-gradescope.zip"
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(REPO), "gradescope", ASSIGNMENT,
                           "--out", str(bundle)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    container = Gradescope(base, bundle)
    if not any(WHEELS.glob("torch-*.whl")):
        _wheel_cache(_requirements(container.root / "source"))
    container.setup_seconds, container.setup_log = container.setup()
    container.bundle = bundle
    return container


@pytest.fixture(scope="module")
def runs(gradescope):
    """Every upload, graded once each (Gradescope starts a fresh container per submission)."""
    release = (REPO / "release" / ASSIGNMENT / NOTEBOOK).read_bytes()
    hostile = nbformat.writes(_with_cell(REPO / "release" / ASSIGNMENT / NOTEBOOK, ATTACKS)).encode()
    uploads = {
        "solution": ({f"entrega/{NOTEBOOK}": (REPO / "solutions" / ASSIGNMENT / NOTEBOOK).read_bytes()}, "all"),
        "release": ({NOTEBOOK: release}, "all"),
        "broken": ({"mi_tarea.ipynb": (REPO / "examples" / ASSIGNMENT / "broken.ipynb").read_bytes()}, "all"),
        "malformed": ({NOTEBOOK: b'{"cells": [ esto no es JSON'}, "all"),
        "missing": ({"tarea.py": b"print('hola')\n"}, "all"),
        "memory": ({NOTEBOOK: nbformat.writes(_with_cell(REPO / "release" / ASSIGNMENT / NOTEBOOK,
                                                        MEMORY_BOMB)).encode()}, "all"),
        "hostile": ({NOTEBOOK: hostile}, "all"),
        "hostile_docker": ({NOTEBOOK: hostile}, "docker"),
    }
    done = {name: gradescope.grade(files, caps=caps) for name, (files, caps) in uploads.items()}
    _print_figures(gradescope, done)
    return done


def _with_cell(notebook: Path, source: str) -> nbformat.NotebookNode:
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    return nb


def _print_figures(gradescope: Gradescope, runs: dict[str, Run]) -> None:
    """The figures the README quotes (shown with pytest -s)."""
    print(f"\nbundle {gradescope.bundle.stat().st_size / 1024:.0f} KiB; setup.sh {gradescope.setup_seconds:.0f}s")
    for name, run in runs.items():
        peak = f"{run.peak_bytes / 2**20:.0f} MiB" if run.peak_bytes else "n/a"
        print(f"{name:15} score {run.results['score']:>5g}  run_autograder {run.report['seconds']:5.1f}s  "
              f"cgroup peak {peak}  oom kills {run.oom_kills}  "
              f"layers {run.results['extra_data'].get('isolation', {}).get('missing', '?')} missing")


def _attacks(run: Run) -> dict:
    found = re.search(r"ATAQUES (\{.*?\})", run.results["output"])
    assert found, run.results["output"]
    return json.loads(found.group(1))


# --------------------------------------------------------------------------- the bundle


def test_the_bundle_is_a_zip_gradescope_accepts(gradescope):
    """Are setup.sh and run_autograder at the root of the zip, executable, beside the course and no solution?"""
    import zipfile

    with zipfile.ZipFile(gradescope.bundle) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        data = {n: archive.read(n) for n in names}
    assert {"setup.sh", "run_autograder", "requirements.txt", "gradescope.json"} <= set(names)
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert f"course/autograder/checks/{ASSIGNMENT}/test_hidden.py" in names
    assert f"course/autograder/checks/{ASSIGNMENT}/cell_seconds.json" in names  # the demonstrations' limits
    assert json.loads(data["gradescope.json"])["cell_budgets"] is True
    assert not any("/checks/u2_cnn/" in n or "solutions/" in n or "__pycache__" in n for n in names)
    solution = (REPO / "solutions" / ASSIGNMENT / NOTEBOOK).read_bytes()
    source = (REPO / "source" / ASSIGNMENT / NOTEBOOK).read_bytes()
    assert solution not in data.values() and source not in data.values()
    requirements = data["requirements.txt"].decode().split()
    assert "torch>=2.2" in requirements and not any("==" in r for r in requirements)


def test_the_bundle_keeps_the_choice_of_cell_limits():
    """Do settings without cell budgets (what `autograder gradescope --no-cell-budgets` makes) reach the bundle's
    gradescope.json (the demonstrations then get the whole cell limit there too)?"""
    from autograder.course import Course
    from autograder.gradescope.bundle import GradescopeSettings, bundle_files

    assignment = Course(REPO).assignment(ASSIGNMENT)
    files = bundle_files(assignment, GradescopeSettings(limits={"memory_mb": 1024}, cell_budgets=False))
    assert json.loads(files["gradescope.json"])["cell_budgets"] is False


def test_the_bundle_is_written_byte_for_byte_the_same(tmp_path):
    """Does writing the zip twice give the same bytes (so a course can compare or commit it)?"""
    from autograder.course import Course
    from autograder.gradescope.bundle import GradescopeSettings, write_bundle

    assignment = Course(REPO).assignment(ASSIGNMENT)
    settings = GradescopeSettings(limits={"memory_mb": 1024})
    first = write_bundle(assignment, tmp_path / "first.zip", settings=settings).path.read_bytes()
    assert write_bundle(assignment, tmp_path / "again.zip", settings=settings).path.read_bytes() == first


def test_setup_installs_cpu_torch_into_a_fresh_venv(gradescope):
    """Did setup.sh build /autograder/venv itself (not the system Python) with CPU torch, and lock the files?"""
    venv = gradescope.root / "venv"
    assert (venv / "pyvenv.cfg").is_file()
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    torch = list((venv / "lib").glob("python3.*/site-packages/torch/version.py"))
    assert torch and "+cpu" in torch[0].read_text()
    assert list((venv / "lib").glob("python3.*/site-packages/datitos-course.pth"))
    checks = gradescope.root / "source" / "course" / "autograder" / "checks"
    assert (checks.stat().st_mode & 0o777) == 0o700
    assert (gradescope.root / "source" / "gradescope.json").stat().st_mode & 0o077 == 0
    assert "datitos-estudiante" in (gradescope.etc / "passwd").read_text()
    assert "every layer of this mode is in force" in gradescope.setup_log, gradescope.setup_log[-2000:]


# --------------------------------------------------------------------------- results.json


@pytest.mark.parametrize("name", ["solution", "release", "broken", "malformed", "missing", "memory", "hostile",
                                  "hostile_docker"])
def test_every_results_json_follows_gradescopes_schema(runs, name):
    """Is every results.json valid against Gradescope's documented schema, whatever the upload?"""
    run = runs[name]
    jsonschema.validate(run.results, SCHEMA)
    assert run.report["code"] == 0
    assert len(run.text.encode()) < 1_000_000


def test_the_solution_gets_full_marks(runs):
    """Does the solution, uploaded inside a folder, get 40 of 40 with every check passed?"""
    run = runs["solution"]
    assert run.results["score"] == 40
    assert run.results["tests"] and all(t["status"] == "passed" for t in run.results["tests"])
    assert run.results["extra_data"]["status"] == "graded"


def test_hidden_checks_show_after_the_due_date(runs):
    """Are hidden checks marked after_due_date, and their points part of the score?"""
    tests = runs["solution"].results["tests"]
    hidden = [t for t in tests if t["extra_data"]["hidden"]]
    assert hidden and all(t["visibility"] == "after_due_date" for t in hidden)
    assert all(t["visibility"] == "visible" for t in tests if not t["extra_data"]["hidden"])
    assert sum(t["score"] for t in tests) == runs["solution"].results["score"]


def test_the_release_gets_zero(runs):
    assert runs["release"].results["score"] == 0
    assert runs["release"].results["extra_data"]["status"] == "graded"


def test_a_broken_notebook_gets_partial_marks_and_its_cell_errors(runs):
    """Does the broken example keep its 10 points and say which cells failed (under any file name)?"""
    run = runs["broken"]
    assert run.results["score"] == 10
    assert "Celdas de tu notebook que fallaron" in run.results["output"]
    assert any(c["status"] != "ok" for c in run.results["extra_data"]["cells"])


def test_a_malformed_file_gets_zero_with_a_message(runs):
    run = runs["malformed"]
    assert run.results["score"] == 0
    assert run.results["extra_data"]["status"] == "invalid"
    assert "notebook" in run.results["output"].lower()


def test_a_missing_notebook_gets_zero_with_a_message(runs):
    run = runs["missing"]
    assert run.results["score"] == 0
    assert "no contiene ningún notebook" in run.results["output"]
    assert "tarea.py" in run.results["output"]


# --------------------------------------------------------------------------- the attacks


@pytest.mark.parametrize("name", ["hostile", "hostile_docker"])
def test_the_student_cannot_change_what_grades_it(runs, name):
    """Does every write to run_autograder, the bundle, the engine, the venv or the results fail, as uid 61000?"""
    attacks = _attacks(runs[name])
    assert attacks["uid"] == WORKER_UID
    for attack in ("append_run_autograder", "append_bundled_run_autograder", "append_setup", "rewrite_config",
                   "poison_engine", "poison_venv", "forge_results", "new_results_file"):
        assert not attacks[attack].startswith("ok"), (attack, attacks[attack])
    report = runs[name].report
    assert report["before"] == report["after"] | {"results": report["before"]["results"]}
    assert report["after"]["writable"] == []
    assert report["after"]["results"] == ["results.json", "stdout"]


@pytest.mark.parametrize("name", ["hostile", "hostile_docker"])
def test_the_student_cannot_read_the_hidden_checks_or_the_metadata(runs, name):
    attacks = _attacks(runs[name])
    for attack in ("read_hidden_checks", "list_checks", "read_metadata", "list_submission", "list_results",
                   "read_config"):
        assert not attacks[attack].startswith("ok") or attacks[attack] == "ok: []", (attack, attacks[attack])
    assert HIDDEN_TEXT not in runs[name].text
    assert "SECRETO-DE-ENTREGAS-PREVIAS" not in runs[name].text


@pytest.mark.parametrize("name", ["hostile", "hostile_docker"])
def test_nothing_outlives_the_grading_and_results_json_stays_the_graders(runs, name):
    """Is the double-forked sleeper gone when run_autograder returns, and results.json unchanged after it woke?"""
    run = runs[name]
    assert run.report["leftover"] == []
    assert run.report["results_digest"] == run.report["results_digest_later"]
    assert run.results["score"] == 0
    assert run.results["extra_data"]["status"] == "graded"
    assert hashlib.sha256(run.text.encode()).hexdigest() == run.report["results_digest"]


def test_the_layers_in_force_are_reported(runs):
    """Every layer with namespaces allowed; with Docker's capabilities, only the namespaces' layers missing."""
    full = runs["hostile"].results["extra_data"]["isolation"]
    docker = runs["hostile_docker"].results["extra_data"]["isolation"]
    assert full["missing"] == []
    assert set(docker["missing"]) == {"filesystem", "network", "pid_namespace"}
    assert docker["layers"]["user"] == f"uid {WORKER_UID}" and docker["layers"]["seccomp"]


def test_grading_fits_gradescopes_default_container(runs):
    """Did every run but the memory bomb stay inside 768 MB and half a CPU without the kernel killing anything?"""
    if runs["solution"].peak_bytes is None:
        pytest.skip("no cgroup could be made here: the memory limit was not applied")
    for name, run in runs.items():
        assert run.oom_kills == 0 or name == "memory", name
        assert run.report["seconds"] < 300, name


def test_a_memory_bomb_costs_its_cell_not_the_grading(runs):
    """Does a cell that takes all the container's memory fail alone, the grader surviving to write the result?"""
    run = runs["memory"]
    assert run.results["extra_data"]["status"] == "graded"
    assert run.results["score"] == 0 and len(run.results["tests"]) == len(runs["solution"].results["tests"])
    bomb = run.results["extra_data"]["cells"][-1]
    assert bomb["status"] != "ok", bomb
    assert run.report["leftover"] == []
