"""The worker process: cells, limits enforced from outside, restarts, and a process tree that dies with it."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from autograder.errors import StudentError, WorkerLost
from autograder.grading.intake import AutogradedCells, code_cells
from autograder.grading.options import Limits
from autograder.grading import sandbox
from autograder.grading.isolation import plan
from autograder.grading.sandbox import SandboxError, ZygoteHandle, worker_uid_for
from autograder.grading.session import Cell, SubmissionSession
from autograder.remote import Client, StudentNamespace

LIMITS = Limits(call_seconds=2, cell_seconds=2, submission_seconds=120, memory_mb=1024, output_bytes=4096)
PLAN = plan("auto", hidden=[str(Path(__file__).resolve().parent.parent)], tmp_bytes=2**27, cuda=False)
#: Each worker forked through a holder process, as where the zygote cannot return to its own PID namespace.
HOLDERS_PLAN = replace(PLAN, zygote_args=(*PLAN.zygote_args, "--pid-holders"))


def make_zygote(plan=PLAN) -> ZygoteHandle:
    return ZygoteHandle(threads=1, cuda=False, limits=LIMITS, worker_uid=worker_uid_for(0), plan=plan)


def zygote_pid(handle: ZygoteHandle) -> int:
    """The zygote's pid as this process sees it (inside bubblewrap it is a grandchild of the handle's process)."""
    from autograder.worker.zygote import descendants

    for pid in [handle.process.pid, *descendants(handle.process.pid)]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"autograder.worker.zygote" in f.read() and b"bwrap" not in Path(f"/proc/{pid}/comm").read_bytes():
                return pid
    raise AssertionError("no zygote process found")


@pytest.fixture(scope="module")
def zygote():
    os.environ["AUTOGRADER_TEST_SECRET"] = "s3cret"
    try:
        handle = make_zygote()
    finally:
        del os.environ["AUTOGRADER_TEST_SECRET"]
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def holder_zygote():
    handle = make_zygote(HOLDERS_PLAN)
    yield handle
    handle.close()


@pytest.fixture(params=["direct", "through-a-holder"])
def forking_zygote(request):
    """The zygote that forks each worker straight into its PID namespace, and the one that forks it through a
    holder process."""
    return request.getfixturevalue("zygote" if request.param == "direct" else "holder_zygote")


def session_for(zygote, *sources: str, snapshots: bool = False) -> tuple[SubmissionSession, StudentNamespace]:
    cells = [Cell(index=i, source=source) for i, source in enumerate(sources, start=1)]
    session = SubmissionSession(zygote, cells, limits=LIMITS, snapshots=snapshots)
    return session, StudentNamespace(Client(session))


def test_cells_run_in_order_and_an_error_does_not_stop_later_cells(zygote):
    """Are errors recorded per cell while the following cells still run, as nbgrader does?"""
    session, student = session_for(zygote, "x = 1\nprint('hola')", "1 / 0", "def f():\n    return x + 1",
                                   "def g(:\n    pass")
    try:
        session.ensure_worker()
        assert [r.status for r in session.records.values()] == ["ok", "error", "ok", "error"]
        assert session.records[1].output == "hola\n"
        assert session.records[2].error["type"] == "ZeroDivisionError"
        assert session.records[4].error["type"] == "SyntaxError"
        assert student.f() == 2
    finally:
        session.close()


def test_workers_start_with_what_the_zygote_warmed(zygote):
    """Does the zygote build pyplot's first figure and Unit 4's seed-0 ratings once, so that every worker forked
    from it starts with them (the notebook's first draw is the kept one) and no figure is left open?"""
    assert zygote.wait_ready()["warmed"] == ["pyplot", "synthetic_ratings"]
    session, student = session_for(
        zygote, "import matplotlib.pyplot as plt\nfrom autograder.checklib.ratings import _drawn",
        "kept = _drawn.cache_info().currsize\nopen_figures = len(plt.get_fignums())")
    try:
        session.ensure_worker()
        assert (student.kept, student.open_figures) == (1, 0)
    finally:
        session.close()


def test_plotting_cells_build_figures_without_drawing_them(zygote):
    """Does a plotting cell still run (its figure is built, its axes can be read back) while `plt.show()`,
    `plt.tight_layout()` and `fig.tight_layout()` skip the drawing, leaving the subplots where they were?"""
    session, student = session_for(
        zygote, "import matplotlib.pyplot as plt\nfig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2], [3, 4])\n"
                "a.set_title('t')\nbefore = tuple(a.get_position().bounds)\nfig.tight_layout()\nplt.tight_layout()\n"
                "after = tuple(a.get_position().bounds)\nylim = tuple(a.get_ylim())\nplt.show()")
    try:
        session.ensure_worker()
        assert session.records[1].status == "ok"
        assert student.after == student.before and student.ylim[0] < 3 and student.ylim[1] > 4
    finally:
        session.close()


def test_a_warm_up_step_that_fails_is_skipped_not_fatal(monkeypatch):
    """Does a warm-up step that raises (a broken font or library on the grading machine) leave the other steps
    warmed and the zygote able to start, the step reported as not warmed?"""
    from autograder.worker import warm

    def broken() -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(warm, "_first_figure", broken)
    assert warm.warm_up() == ["synthetic_ratings"]


def test_magics_and_shell_escapes_are_neutralised(zygote):
    """Do `%magic` and `!cmd` lines run nothing, leave a note, and keep `%%time` code running?"""
    notebook = {"cells": [
        {"cell_type": "code", "source": "%matplotlib inline\n!rm -rf /tmp/anything\nx = 3", "metadata": {}},
        {"cell_type": "code", "source": "%%time\ny = x * 2", "metadata": {}},
        {"cell_type": "code", "source": "%%bash\necho hacked > /tmp/hacked", "metadata": {}},
    ]}
    session = SubmissionSession(zygote, code_cells(notebook, tests=AutogradedCells(frozenset(), frozenset())), limits=LIMITS)
    try:
        session.ensure_worker()
        student = StudentNamespace(Client(session))
        assert student.y == 6
        notes = [n for r in session.records.values() for n in r.notes]
        assert any("%matplotlib inline" in n for n in notes) and any("!rm -rf" in n for n in notes)
        assert any("%%bash" in n for n in notes)
        assert not Path("/tmp/hacked").exists()
    finally:
        session.close()


def test_a_hanging_cell_is_stopped_and_skipped_after_restart(zygote):
    """Does a cell that never ends cost only itself: later cells run on a fresh worker?"""
    session, student = session_for(zygote, "a = 1", "while True:\n    pass", "b = a + 1")
    try:
        started = time.monotonic()
        session.ensure_worker()
        assert time.monotonic() - started < LIMITS.cell_seconds + 10
        assert [session.records[i].status for i in (1, 2, 3)] == ["ok", "timeout", "ok"]
        assert student.b == 2
        assert session.restarts == 1
    finally:
        session.close()


def test_a_cell_that_ends_the_process_is_recorded_as_a_crash(zygote):
    """Is a cell calling `os._exit` reported as a crash (not a timeout), with later cells still run?"""
    session, student = session_for(zygote, "a = 1", "import os\nos._exit(3)", "b = a + 1")
    try:
        session.ensure_worker()
        assert session.records[2].status == "crashed"
        assert "código de salida 3" in session.records[2].error["message"]
        assert student.b == 2
    finally:
        session.close()


@pytest.mark.parametrize("snapshots", [False, True], ids=["rerun-cells", "fork-server"])
def test_a_call_that_kills_the_worker_costs_only_that_call(zygote, snapshots):
    """After `os._exit` in one call, does the next call get a fresh, working worker, and does the message say how
    the process ended (from the zygote, or from the fork server for one of its children)?"""
    session, student = session_for(zygote, "import os\ndef die():\n    os._exit(0)\ndef ok():\n    return 7",
                                   snapshots=snapshots)
    try:
        with pytest.raises(WorkerLost, match="código de salida 0"):
            student.die()
        assert student.ok() == 7
        assert session.restarts == 1 and session.snapshots == snapshots  # the fork server served throughout
    finally:
        session.close()


@pytest.mark.parametrize("snapshots", [False, True], ids=["rerun-cells", "fork-server"])
def test_a_loop_that_ignores_signals_is_killed_at_the_call_deadline(zygote, snapshots):
    """Is a call that ignores SIGTERM and SIGALRM still stopped on time from outside?"""
    session, student = session_for(zygote, (
        "import signal\n"
        "def spin():\n"
        "    for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT):\n"
        "        signal.signal(s, signal.SIG_IGN)\n"
        "    while True:\n"
        "        pass\n"), snapshots=snapshots)
    try:
        started = time.monotonic()
        with pytest.raises(WorkerLost, match="tiempo límite"):
            student.spin()
        assert time.monotonic() - started < LIMITS.call_seconds + 2
        assert session.snapshots == snapshots
    finally:
        session.close()


@pytest.mark.parametrize("snapshots", [False, True], ids=["rerun-cells", "fork-server"])
def test_nothing_the_submission_starts_outlives_it(forking_zygote, snapshots):
    """Are double-forked, setsid daemons killed with the worker (seen from outside the sandbox)?"""
    from autograder.worker.zygote import descendants

    zygote = forking_zygote
    session, student = session_for(zygote, (
        "import os, time\n"
        "def spawn():\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "        os._exit(0)\n"
        "    time.sleep(0.2)\n"), snapshots=snapshots)
    try:
        student.spawn()
        alive = descendants(zygote_pid(zygote))
        assert len(alive) >= 2  # the worker and its daemon, at least
        assert session.snapshots == snapshots
    finally:
        session.close()
    assert not [pid for pid in alive if Path(f"/proc/{pid}").exists()]
    assert descendants(zygote_pid(zygote)) == []


def _nspid(pid: int) -> list[int]:
    """The pid of `pid` in each PID namespace it is in, outermost first."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("NSpid:"))
    return [int(n) for n in line.split()[1:]]


@pytest.mark.parametrize("holders", [False, True], ids=["direct", "through-a-holder"])
def test_each_worker_is_pid_1_of_a_namespace_of_its_own(request, holders):
    """Is each worker PID 1 of a PID namespace of its own, one level below the zygote's, seeing no other process:
    forked straight into it by the zygote (no process between them), or through a holder process with
    `--pid-holders`? Do two workers alive at once have two namespaces, and are the zygote's next children back in
    its own namespace?"""
    from autograder.worker.zygote import process_tree

    handle = request.getfixturevalue("holder_zygote" if holders else "zygote")
    zygote = zygote_pid(handle)
    sessions = [session_for(handle, "import os\ndef me():\n    return os.getpid(), "
                                    "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())") for _ in range(2)]
    try:
        for _, student in sessions:
            assert student.me() == (1, [1])
        tree = process_tree()
        forked = tree.get(zygote, [])
        assert len(forked) == 2
        namespaces = set()
        for pid in forked:
            if holders:
                assert len(tree.get(pid, [])) == 1 and _nspid(pid)[-1] != 1
                worker = tree[pid][0]
            else:
                worker = pid
            assert tree.get(worker, []) == []
            assert _nspid(worker)[-1] == 1 and len(_nspid(worker)) == len(_nspid(zygote)) + 1
            namespaces.add(os.readlink(f"/proc/{worker}/ns/pid"))
        assert len(namespaces) == 2
        assert os.readlink(f"/proc/{zygote}/ns/pid_for_children") == os.readlink(f"/proc/{zygote}/ns/pid")
    finally:
        for session, _ in sessions:
            session.close()


def test_a_holder_ends_the_way_its_worker_did():
    """Does a holder process (`namespaces.isolate_pids`, the path where the zygote cannot fork a worker straight
    into its namespace) pass on how its worker ended, so the zygote reports the same? A worker killed by SIGKILL,
    a signal that takes no handler, must make its holder die of SIGKILL too, not exit with status 137."""
    from autograder.worker import namespaces
    from autograder.worker.zygote import process_tree

    holder = os.fork()
    if holder == 0:
        try:
            namespaces.isolate_pids(())
            time.sleep(60)  # the worker, PID 1 of its namespace, until the test kills it
        finally:
            os._exit(0)
    status, workers = None, []
    try:
        deadline = time.monotonic() + 10
        while not process_tree().get(holder) and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = process_tree().get(holder, [])
        assert len(workers) == 1, "the holder should have started one worker"
        os.kill(workers[0], signal.SIGKILL)
        _, status = os.waitpid(holder, 0)
    finally:
        if status is None:  # the test failed on the way: nothing it started may outlive it
            for pid in (*workers, holder):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            os.waitpid(holder, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


ZOMBIE_LEADER = (
    "import ctypes, os, threading, time\n"
    "def spawn():\n"
    "    if os.fork() == 0:\n"
    "        os.setsid()\n"
    "        threading.Thread(target=time.sleep, args=(60,)).start()\n"
    "        ctypes.CDLL(None).pthread_exit(None)  # only the main thread ends; /proc says zombie\n"
    "    time.sleep(0.2)\n"
    "def die():\n"
    "    os._exit(0)\n"
    "def ok():\n"
    "    return 7\n")


@pytest.mark.parametrize("mode", ["fork-server", "sandbox-off"])
def test_a_process_whose_main_thread_exited_is_still_killed(zygote, mode):
    """A daemon that ends its main thread while another runs is listed as a zombie in /proc: is it still killed,
    by the zygote's `prune` when the child that started it dies (the fork server surviving), and by its `reap`
    without a PID namespace (as in plain Docker or on Gradescope)?"""
    from autograder.worker.zygote import descendants, is_alive

    snapshots = mode == "fork-server"
    handle = zygote if snapshots else make_zygote(plan("off", hidden=[], tmp_bytes=2**27, cuda=False))
    session, student = session_for(handle, ZOMBIE_LEADER, snapshots=snapshots)
    try:
        student.spawn()
        leaders = [pid for pid in descendants(zygote_pid(handle)) if is_alive(pid)
                   and Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"]
        assert leaders, "the daemon should be alive with a zombie main thread"
        if snapshots:
            with pytest.raises(WorkerLost):
                student.die()
            assert not [pid for pid in leaders if is_alive(pid)]
            assert student.ok() == 7 and session.snapshots  # a fork of the surviving fork server answered
    finally:
        session.close()
        if handle is not zygote:
            handle.close()
    assert not [pid for pid in leaders if is_alive(pid)]


def test_a_restart_forks_the_state_after_the_cells_instead_of_running_them_again(forking_zygote):
    """With the fork server, does a call that kills its process cost a fork: the next call sees the notebook's
    state right after its cells (not what earlier calls changed), the cells ran once, their output appears once,
    and the message still says how the process ended?"""
    session, student = session_for(
        forking_zygote,
        "import os\nos.write(1, b'celdas ejecutadas\\n')  # past the capture, to the raw output\ncount = [0]",
        "def bump():\n    count[0] += 1\n    return count[0]", "def die():\n    os._exit(3)", snapshots=True)
    try:
        assert (student.bump(), student.bump()) == (1, 2)
        with pytest.raises(WorkerLost, match="código de salida 3"):
            student.die()
        assert student.bump() == 1
        assert session.restarts == 1 and session.snapshots
    finally:
        session.close()
    assert [r.status for r in session.records.values()] == ["ok", "ok", "ok"]
    assert "".join(session.output).count("celdas ejecutadas") == 1


def test_a_child_whose_kill_fails_takes_the_fork_server_with_it(zygote, monkeypatch):
    """When the zygote cannot prune below a dead child (its request fails), is the fork server retired with its
    output kept, and does the next call get a fresh worker that re-runs the cells instead of a fork?"""
    session, student = session_for(
        zygote, "import os\nos.write(1, b'celdas ejecutadas\\n')\ncount = [0]",
        "def bump():\n    count[0] += 1\n    return count[0]", "def die():\n    os._exit(3)", snapshots=True)

    def failing_prune(holder: int) -> dict:
        raise WorkerLost("the zygote did not answer")

    try:
        assert student.bump() == 1
        monkeypatch.setattr(zygote, "prune", failing_prune)
        with pytest.raises(WorkerLost):
            student.die()  # the crash's kill asks the zygote to prune, which fails: the fork server goes too
        assert student.bump() == 1  # so this call gets a fresh worker that re-runs the cells
        assert not session.snapshots and session.restarts == 1
    finally:
        session.close()
    assert "".join(session.output).count("celdas ejecutadas") == 2  # the template's output was kept


def test_a_hung_child_dies_with_what_it_started_and_holds_no_descriptor_of_the_fork_server(zygote):
    """When a call hangs after starting a process, are both killed while the fork server survives, does the
    next child see only itself and the fork server in its PID namespace, and hold no file descriptor beyond
    stdin/stdout/stderr and its own socket (none of the fork server's)?"""
    session, student = session_for(zygote, (
        "import os, subprocess\n"
        "def spawn_and_hang():\n"
        "    subprocess.Popen(['sleep', '300'])\n"
        "    if os.fork() == 0:  # and a daemon, orphaned to the fork server\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execvp('sleep', ['sleep', '300'])\n"
        "        os._exit(0)\n"
        "    while True:\n"
        "        pass\n"
        "def processes():\n"
        "    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "def descriptors():\n"
        "    return sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"), snapshots=True)
    try:
        first = student.processes()
        assert len(first) == 2 and first[0] == 1  # the fork server (PID 1) and this child
        with pytest.raises(WorkerLost, match="tiempo límite"):
            student.spawn_and_hang()
        second = student.processes()
        assert len(second) == 2 and second[0] == 1 and second[1] != first[1]  # the sleeps and the old child: gone
        assert len(student.descriptors()) == 5  # 0, 1, 2, the child's socket, and the listing's own
        assert session.restarts == 1 and session.snapshots
    finally:
        session.close()


FORGED_FORK_REPLIES = (
    "import socket\n"
    "_send = socket.socket.send\n"
    "def forged(self, data, *args):  # what the fork server answers the grader\n"
    "    return _send(self, REPLY, *args)\n"
    "socket.socket.send = forged\n")


@pytest.mark.parametrize("breakage", ["no fork", "nested JSON", "a reply to another request", "silence"])
def test_a_notebook_that_breaks_the_fork_server_gets_its_cells_run_again(zygote, breakage, monkeypatch):
    """If the notebook's own code breaks forking or makes the fork server answer garbage, a reply to another
    request or nothing at all, is the fork server killed in time and does grading go on with workers that
    re-run the cells (never a grader error)?"""
    monkeypatch.setattr("autograder.grading.session.FORK_SECONDS", 2.0)
    sabotage = {"no fork": "import os\nos.fork = None",
                "nested JSON": "REPLY = b'[' * 60\n" + FORGED_FORK_REPLIES,
                "a reply to another request": "REPLY = b'999 pid 5'\n" + FORGED_FORK_REPLIES,
                "silence": "import time\nREPLY = b''\n_sleep = time.sleep\n" + FORGED_FORK_REPLIES.replace(
                    "    return _send(self, REPLY, *args)", "    _sleep(600)")}[breakage]
    session, student = session_for(zygote, sabotage, "def ok():\n    return 7", snapshots=True)
    try:
        started = time.monotonic()
        assert student.ok() == 7
        assert time.monotonic() - started < 2.0 + 10
        assert not session.snapshots and session.restarts == 1
    finally:
        session.close()


def test_memory_is_capped_and_the_error_is_the_students(zygote):
    """Does an allocation beyond the memory limit fail inside the worker, not take the machine?"""
    session, student = session_for(zygote, "import torch\ndef hog():\n    return torch.empty(8 * 2**30, dtype=torch.uint8).sum()")
    try:
        with pytest.raises((StudentError, WorkerLost)):
            student.hog()
    finally:
        session.close()


def test_output_is_captured_and_capped(zygote):
    """Is a flood of prints cut to the limit, with the rest counted, on both capture paths?"""
    session, _ = session_for(zygote, "print('x' * 100_000)", "import os\nos.write(1, b'y' * 100_000)")
    try:
        session.ensure_worker()
    finally:
        session.close()
    assert len(session.records[1].output) <= 16 * 1024 and session.records[1].output_dropped > 0
    assert len("".join(session.output)) <= LIMITS.output_bytes and session.output_dropped > 0


def test_the_worker_environment_holds_none_of_the_graders(zygote):
    """Are the grader's environment variables (tokens, paths) absent in the worker?"""
    session, student = session_for(zygote, "import os\nenv = dict(os.environ)")
    try:
        env = student.env
        assert "AUTOGRADER_TEST_SECRET" not in env
        assert env["AUTOGRADER_GRADING"] == "1"
    finally:
        session.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to an unprivileged uid needs root")
def test_workers_run_as_an_unprivileged_user(tmp_path):
    """With the namespaces off (so the folder is visible), can the worker's uid still not write root's files?"""
    target = tmp_path / "results"
    target.mkdir(mode=0o755)
    zygote = make_zygote(plan("off", hidden=[], tmp_bytes=2**27, cuda=False))
    session, student = session_for(zygote, (
        "import os\n"
        "def who():\n"
        "    return os.getuid()\n"
        "def forge(path):\n"
        "    try:\n"
        "        open(path, 'w').write('{}')\n"
        "        return 'written'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"))
    try:
        assert student.who() == worker_uid_for(0) != 0
        assert student.forge(str(target / "alice.json")) == "PermissionError"
        assert session.layers["uid"] == worker_uid_for(0)
    finally:
        session.close()
        zygote.close()


FORGE_END = """
import os, socket
from autograder import wire
for fd in sorted(int(name) for name in os.listdir('/proc/self/fd')):
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if sock.type == socket.SOCK_STREAM:
        wire.Connection(sock, max_bytes=2**20).send({"event": "end", "index": 2, "status": "ok"})
        break
while True:
    pass
"""


def test_a_forged_cell_end_does_not_lift_the_cell_time_limit(zygote):
    """If a cell forges its own 'end' report and then spins, is it still stopped and skipped?"""
    session, student = session_for(zygote, "a = 1", FORGE_END, "b = a + 1")
    try:
        session.ensure_worker()
        assert session.records[2].status == "timeout"
        assert student.b == 2
    finally:
        session.close()


def test_a_stopped_zygote_is_replaced(monkeypatch):
    """If the fork server stops answering (SIGSTOP), is it replaced so grading can go on?"""
    monkeypatch.setattr(sandbox, "CONTROL_TIMEOUT", 2.0)
    handle = make_zygote()
    try:
        handle.wait_ready()
        first = handle.process.pid
        os.kill(zygote_pid(handle), signal.SIGSTOP)
        session, student = session_for(handle, "x = 42")
        try:
            assert student.x == 42
        finally:
            session.close()
        assert handle.process.pid != first
    finally:
        handle.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="an invalid uid is only tried when grading as root")
def test_a_worker_that_cannot_confine_itself_is_a_sandbox_error(zygote, monkeypatch):
    """When the worker's own set-up fails (before any student code), is that the grader's error?"""
    monkeypatch.setattr(zygote, "worker_uid", 2**32 - 1)  # chown takes it as "unchanged"; setuid refuses it
    worker = zygote.spawn()
    try:
        with pytest.raises(SandboxError, match="confine"):
            worker.handshake(10)
    finally:
        worker.kill()


def test_a_zygote_that_cannot_serve_a_request_says_why_and_keeps_serving(zygote, monkeypatch):
    """Does a request the zygote cannot carry out become a SandboxError, with the zygote still usable?"""
    monkeypatch.setattr(zygote, "worker_uid", "nobody")
    with pytest.raises(SandboxError, match="could not fork"):
        zygote.spawn()
    monkeypatch.undo()
    session, student = session_for(zygote, "x = 7")
    try:
        assert student.x == 7
    finally:
        session.close()


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("mount") is None,
                    reason="needs unshare(1) and mount(8) to mount in a namespace of its own")
def test_the_tmp_wipe_deletes_a_workers_leftovers_but_never_enters_a_mount(tmp_path):
    """Where the grader's environment lives under /tmp, bubblewrap binds it into the sandbox's fresh tmpfs /tmp, at
    the top or deeper. Does the wipe after each submission leave every file of those binds alone (here writable,
    so a walk into them would delete them), and still delete every leftover beside them, in the folders leading
    to them, and at the path of a mount that the tmpfs covers (which a worker can read in mountinfo)?"""
    environment = tmp_path / ".venv"
    (environment / "lib").mkdir(parents=True)
    (environment / "lib" / "site.py").write_text("packages")
    folder = tmp_path / "tmp"  # stands for the sandbox's /tmp
    (folder / "covered").mkdir(parents=True)
    wipe = ("import json, os\n"
            "from autograder.worker.zygote import clear_folder\n"
            f"folder = {str(folder)!r}\n"
            "clear_folder(folder, keep={'cache'}, everything=True, uids=set())\n"
            "print(json.dumps({d[len(folder):] or '/': sorted(n) for d, n, f in os.walk(folder)} | "
            "{os.path.join(d, x)[len(folder):]: 'file' for d, _, f in os.walk(folder) for x in f}))\n")
    script = " && ".join([
        f"mount --bind {environment} {folder / 'covered'}",  # then covered by the tmpfs
        f"mount -t tmpfs none {folder}",
        f"cd {folder} && mkdir -p pytest-of-root/.venv top loot/deeper cache covered",
        "echo w > pytest-of-root/loot.txt && echo w > loot/deeper/a.txt && echo w > note.txt",
        "echo w > covered/loot.txt",
        f"mount --bind {environment} pytest-of-root/.venv && mount --bind {environment} top",
        f"{sys.executable} -c \"$WIPE\""])
    isolated = ["unshare", "--mount", "--propagation", "private"]
    probe = subprocess.run([*isolated, "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    done = subprocess.run([*isolated, "sh", "-c", script], env={**os.environ, "WIPE": wipe}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    left = json.loads(done.stdout)
    assert left["/"] == ["cache", "pytest-of-root", "top"]
    assert left["/pytest-of-root"] == [".venv"]
    assert left["/top"] == left["/pytest-of-root/.venv"] == ["lib"]  # the binds, untouched
    assert "/covered" not in left and "/loot" not in left
    files = {key for key, kind in left.items() if kind == "file"}
    assert files == {"/top/lib/site.py", "/pytest-of-root/.venv/lib/site.py"}
    assert (environment / "lib" / "site.py").read_text() == "packages"
