"""The worker: runs a student's notebook code and serves the checks' requests.

It is forked by the zygote for one submission, confines itself (new session,
limits, unprivileged uid, private scratch directory, seccomp filter), then reads requests from
its socket until the socket closes or the grader kills it. Nothing it sends is
trusted: the grader decodes replies with the safe codec and verifies every value.
"""

from __future__ import annotations

import builtins
import contextlib
import faulthandler
import io
import linecache
import os
import socket
import sys
import time
import traceback
import types

from .. import wire
from ..dispatch import CELL_PREFIX, Dispatcher, describe_exception
from . import limits, seccomp
from .shell import ShellStub, display

MAX_CELL_OUTPUT = 16 * 1024


class CappedText(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def take(self) -> tuple[str, int]:
        text, dropped = "".join(self.parts), self.dropped
        self.parts, self.kept, self.dropped = [], 0, 0
        return text, dropped


class Captured:
    """Redirects sys.stdout and sys.stderr into one capped buffer."""

    def __init__(self, limit: int) -> None:
        self.buffer = CappedText(limit)

    def __enter__(self) -> CappedText:
        self._saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.buffer
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved


def fresh_namespace() -> tuple[dict, ShellStub]:
    """A new `__main__` module, as a notebook kernel gives each session."""
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    shell = ShellStub(namespace)
    namespace["get_ipython"] = lambda: shell
    namespace["display"] = display
    return namespace, shell


def skip_drawing() -> None:
    """Figures are built while grading (a plotting cell's code still runs) but never drawn or shown.

    The zygote preloaded pyplot with the non-interactive Agg backend, which renders only on
    `savefig`; `show()` becomes a no-op instead of a warning, and so does `tight_layout()`
    (pyplot's and every figure's): it only places the subplots for drawing, yet measures each
    text with a renderer to do so, about 0.1 s for a figure of two subplots in every
    submission. `run_cell` closes every figure after each cell so they do not pile up in memory.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.show = pyplot.tight_layout = lambda *args, **kwargs: None
        pyplot.Figure.tight_layout = lambda self, *args, **kwargs: None


def close_figures() -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            pyplot.close("all")
        except Exception:  # a student's figure subclass, or pyplot replaced by the cell
            pass


def run_cell(namespace: dict, shell: ShellStub, cell: dict, *, watchdog: float | None = None) -> dict:
    """Execute one cell; a raised exception is recorded, never propagated. If the cell is still running after
    `watchdog` seconds (just before the grader stops it), the stack goes to the raw stderr, where the grader reads
    which of the student's functions hung (session.hung_functions)."""
    index, source = cell["index"], cell["source"]
    filename = f"{CELL_PREFIX}{index}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    started = time.perf_counter()
    error = None
    with Captured(MAX_CELL_OUTPUT) as out:
        if watchdog:
            with contextlib.suppress(RuntimeError, OSError):  # no thread to spare (the student's took them): no dump
                faulthandler.dump_traceback_later(watchdog, exit=False, file=2)
        try:
            exec(compile(source, filename, "exec"), namespace)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are the student's too
            error = describe_exception(exc)
            if isinstance(exc, SyntaxError):
                error["traceback"] = f"  {filename}, línea {exc.lineno}\n    {(exc.text or '').rstrip()}"
        finally:
            faulthandler.cancel_dump_traceback_later()
        close_figures()
    text, dropped = out.take()
    return {"index": index, "status": "error" if error else "ok", "error": error,
            "output": text, "output_dropped": dropped, "notes": shell.take_notes(),
            "seconds": time.perf_counter() - started}


def serve(conn: wire.Connection, dispatcher: Dispatcher, shell: ShellStub, *,
          forks: socket.socket | None = None) -> socket.socket | None:
    """Answer the grader's requests until it closes the connection. After "fork_server" this process becomes a
    fork server of itself (`serve_forks`): the call then returns only in a forked child, with that child's
    socket."""
    while True:
        try:
            message = conn.recv()
        except (wire.ConnectionClosed, OSError):
            return None
        op = message.header.get("op")
        if op == "exec":
            for cell in message.header.get("cells", []):
                watchdog = cell.get("watchdog")  # each cell's own: its limit differs (grading/budgets.py)
                watchdog = float(watchdog) if isinstance(watchdog, (int, float)) and watchdog > 0 else None
                conn.send({"event": "start", "index": cell["index"]})
                conn.send({"event": "end", **run_cell(dispatcher.namespace, shell, cell, watchdog=watchdog)})
            conn.send({"event": "done"})
            continue
        if op == "fork_server" and forks is not None:
            conn.send({"event": "forking"})
            conn.close()
            return serve_forks(forks)
        header, buffers = dispatcher.handle(message)
        conn.send(header, buffers)


def serve_forks(forks: socket.socket) -> socket.socket:
    """The worker once its cells ran: each request on `forks` (a SOCK_SEQPACKET socket) either forks a child that
    starts from this state, the notebook's right after its cells, and serves the checks on the socket that came
    with the request, or asks how the last child ended. The grader kills a child that hangs or dies and asks for
    another, instead of starting a worker that runs the cells again. Returns only in a child, with its socket;
    this process exits when the grader closes `forks`.

    Requests are "fork N" and "status N"; each reply is one line starting with the same N: "N pid P",
    "N running", "N exit E", "N signal S" or "N error". This process is PID 1 of the worker's PID namespace (the
    grader asks for children only there), so every process a child leaves behind is re-parented here and reaped
    as it ends."""
    child, ended = None, "running"
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(forks, 64, 1)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)
        while True:  # reap what ended, remembering how the last child did
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                ended = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                         else f"exit {os.WEXITSTATUS(status)}")
        op, _, serial = data.decode("ascii", "replace").partition(" ")
        if op == "fork" and len(fds) == 1:
            child, ended = os.fork(), "running"
            if child == 0:
                forks.close()
                limits.die_with_parent()
                return socket.socket(fileno=fds[0])
            reply = f"pid {child}"
        elif op == "status":
            reply = ended
        else:
            reply = "error"
        for fd in fds:
            os.close(fd)
        forks.send(f"{serial[:12]} {reply}".encode("ascii"))


def confine(spec: dict, *, rpc_fd: int, out_fd: int, fork_fd: int | None = None) -> dict:
    """Everything between fork and the first line of student code. Returns what is in force."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    kept = sorted({rpc_fd} | ({fork_fd} if fork_fd is not None else set()))
    for low, high in zip([3] + [fd + 1 for fd in kept], kept + [65536]):
        os.closerange(low, high)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="replace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="replace")
    failed = limits.apply(limits.WorkerLimits(**spec["limits"]))
    os.chdir(spec["cwd"])
    os.environ.update(spec["env"])
    layers = {"session": True, "rlimits": not failed, "rlimits_failed": failed,
              "pid_namespace": spec.get("pid_namespace")}
    layers["oom_first"] = limits.prefer_oom_kill()
    if spec.get("uid") is not None:
        limits.drop_privileges(spec["uid"], spec["gid"])
    layers["uid"] = os.getuid()
    layers["no_new_privs"] = limits.no_new_privileges()
    layers["die_with_parent"] = limits.die_with_parent()
    layers["seccomp"] = spec.get("seccomp", False) and layers["no_new_privs"] and seccomp.install()
    return layers


def run_worker(spec: dict, *, rpc_fd: int, out_fd: int, fork_fd: int | None = None) -> None:
    """Entry point in the forked child; never returns. `fork_fd`: the socket of `serve_forks`, kept only where
    the worker is PID 1 of its own PID namespace."""
    fork_fd = fork_fd if spec.get("pid_namespace") else None  # never a fork server outside its own namespace
    try:
        try:
            layers = confine(spec, rpc_fd=rpc_fd, out_fd=out_fd, fork_fd=fork_fd)
        except BaseException:
            wire.Connection(socket.socket(fileno=rpc_fd), max_bytes=2**20).send(
                {"event": "setup_failed", "detail": traceback.format_exc()[-4000:]})
            raise
        import torch

        torch.manual_seed(0)
        skip_drawing()
        namespace, shell = fresh_namespace()
        cuda = spec.get("cuda", False)
        dispatcher = Dispatcher(namespace, max_bytes=spec["max_message_bytes"],
                                device_ok=lambda d: d == "cpu" or cuda)
        forks = socket.socket(fileno=fork_fd) if fork_fd is not None else None
        child = serve(ready(socket.socket(fileno=rpc_fd), spec, layers), dispatcher, shell, forks=forks)
        if child is not None:  # a child of the fork server: the checks' worker from here on
            serve(ready(child, spec, layers), dispatcher, shell)
    finally:
        os._exit(0)


def ready(sock: socket.socket, spec: dict, layers: dict) -> wire.Connection:
    """The connection to the grader, once it knows this process is ready and what confines it."""
    conn = wire.Connection(sock, max_bytes=spec["max_message_bytes"])
    conn.send({"event": "ready", "pid": os.getpid(), "layers": layers})
    return conn
