"""Crash-safe, repeatable batches: a killed batch resumes without regrading, a full or read-only
output folder stops the batch with a clear message, and nothing already written is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import with_cells, write

pytestmark = pytest.mark.slow


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autograder.cli", *args]


def results_in(out: Path) -> dict[str, dict]:
    """Every result file in `out`, each of which must be complete, valid JSON."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.fixture
def submissions(demo_course, tmp_path):
    subs = tmp_path / "subs"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    for i in range(5):  # each takes about a second (a slow cell), so the batch can be killed midway; each
        # has its own code, as identical submissions would be graded once (twins.py)
        write(with_cells(solution, f"import time\ntime.sleep(1.0)  # student {i}"), subs / f"student{i}.ipynb")
    return subs


def test_a_killed_batch_resumes_without_regrading(demo_course, submissions, tmp_path):
    """After SIGKILL mid-batch, are the results whole, and does the same command finish the rest only?"""
    out = tmp_path / "out"
    args = cli("--course", str(demo_course.root), "grade", "demo", str(submissions), "--out", str(out),
               "--workers", "1", "--seed", "7")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(out.glob("*.json"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the grader and everything it started
    process.wait()
    first = results_in(out)
    assert 2 <= len(first) < 5
    assert all(r["score"] == 4 for r in first.values())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}

    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} submission(s) already graded by an earlier run were kept" in again.stdout
    final = results_in(out)
    assert set(final) == {f"student{i}" for i in range(5)} and all(r["score"] == 4 for r in final.values())
    assert all(out.joinpath(name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    assert not list(out.glob(".*.tmp"))
    assert (out / "gradebook.csv").read_text().count("\n") == 6

    forced = subprocess.run([*args, "--force"], capture_output=True, text=True, timeout=600)
    assert forced.returncode == 0 and "kept" not in forced.stdout
    assert all(out.joinpath(name).stat().st_mtime_ns != stamp for name, stamp in stamps.items())


def test_a_changed_submission_is_graded_again(demo_course, submissions, tmp_path):
    """Does a re-run grade again exactly the submissions whose file changed since?"""
    out = tmp_path / "out"
    args = cli("--course", str(demo_course.root), "grade", "demo", str(submissions), "--out", str(out))
    assert subprocess.run(args, capture_output=True, timeout=600).returncode == 0
    release = demo_course.release_dir("demo") / "demo.ipynb"
    shutil.copy(release, submissions / "student3.ipynb")
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert "4 submission(s) already graded by an earlier run were kept" in rerun.stdout
    assert results_in(out)["student3"]["score"] == 0


@pytest.fixture
def small_mount(tmp_path):
    """A 12 KiB tmpfs: room for about two result files."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    target = tmp_path / "small"
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(target)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield target
    subprocess.run(["umount", "-l", str(target)])


@pytest.mark.root
def test_a_full_disk_stops_the_batch_and_keeps_what_was_written(demo_course, submissions, small_mount):
    """When the output folder fills up, does the batch stop with a clear message and keep whole results?"""
    run = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(submissions), "--out",
                             str(small_mount)), capture_output=True, text=True, timeout=600)
    assert run.returncode == 2
    assert "No space left on device" in run.stderr and "already written are kept" in run.stderr
    kept = results_in(small_mount)
    assert 1 <= len(kept) < 5 and all(r["score"] == 4 for r in kept.values())


@pytest.mark.root
def test_a_read_only_output_folder_stops_the_batch_with_a_message(demo_course, submissions, small_mount):
    """When the output folder cannot be written at all, is that said plainly, with no traceback?"""
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    run = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(submissions), "--out",
                             str(small_mount)), capture_output=True, text=True, timeout=600)
    assert run.returncode == 2
    assert "Read-only file system" in run.stderr and "Traceback" not in run.stderr
