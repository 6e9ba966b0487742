"""Trusted-side handles on the zygote and the workers it forks.

`ZygoteHandle` starts the fork server with a clean environment, inside the
sandbox the isolation `Plan` describes, and asks it for workers. `Worker` is one
forked worker: requests with deadlines, output capture with a cap, and `kill()`,
which has the zygote (a subreaper, in the PID namespace above the workers' own)
SIGKILL every descendant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from .. import wire
from ..errors import ProtocolError, WorkerLost, WorkerTimeout
from .isolation import Plan
from .options import Limits

#: Imported once by the zygote; torch._dynamo (1.8 s) is what the first `optimizer.step()` would import.
PRELOAD = ("numpy,torch,torch.nn,torch.nn.functional,torch.optim,torch._dynamo,matplotlib,matplotlib.pyplot,"
           "IPython.display,autograder.recorder")
ZYGOTE_START_TIMEOUT = 120.0
CONTROL_TIMEOUT = 30.0
WORKER_UID_BASE = 61000


class SandboxError(RuntimeError):
    """The sandbox failed before any student code ran: the grader's problem, not the student's."""


class OutputSink:
    """Drains a worker's stdout/stderr pipe in a thread, keeping the first `limit` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0
        self._stop = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def close(self) -> tuple[str, int]:
        self._stop = True
        self._thread.join(timeout=2)
        if not self._thread.is_alive():  # what the worker wrote just before it was killed is still in the pipe
            os.set_blocking(self.fd, False)
            with contextlib.suppress(OSError):
                for _ in range(self.limit // 65536 + 2):  # bounded: a survivor could keep the pipe full
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        break
                    self._keep(chunk)
        os.close(self.fd)
        return self.kept.decode("utf-8", "replace"), self.dropped


def exit_reason(status: dict) -> str:
    """How a worker that died on its own ended, in words a student understands."""
    if "signal" in status:
        try:
            name = signal.Signals(status["signal"]).name
        except ValueError:
            name = str(status["signal"])
        hint = {
            "SIGKILL": " (probablemente por usar demasiada memoria o tiempo de CPU)",
            "SIGXCPU": " (se agotó el tiempo de CPU)",
            "SIGSEGV": " (un acceso inválido a memoria)",
        }.get(name, "")
        return f"terminó por la señal {name}{hint}"
    if "exit" in status:
        return f"terminó con código de salida {status['exit']} (¿llamaste a `exit()` o `os._exit()`?)"
    return "dejó de responder"


class ZygoteHandle:
    """The fork server of one grading slot."""

    def __init__(self, *, threads: int, cuda: bool, limits: Limits, worker_uid: int | None,
                 plan: Plan, cpu: int | None = None) -> None:
        self.plan = plan
        self.cpu = cpu
        self.cuda = cuda
        self.limits = limits
        self.worker_uid = worker_uid
        self.threads = threads
        self.start()

    def start(self) -> None:
        """Launch the zygote; `wait_ready()` then waits for its preloading to finish."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = clean_environment(threads=self.threads)
        self.process = subprocess.Popen(
            [*self.plan.wrapper, sys.executable, "-P", "-m", "autograder.worker.zygote",
             "--control-fd", str(theirs.fileno()), "--preload", PRELOAD, "--threads", str(self.threads),
             *(["--cpu", str(self.cpu)] if self.cpu is not None else []), *self.plan.zygote_args],
            pass_fds=[theirs.fileno()], env=env, cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.control = ours
        self.info: dict | None = None
        self._serial = 0

    def wait_ready(self) -> dict:
        """The zygote's start-up report, waiting for its preloading to finish the first time."""
        if self.info is None:
            self.info = self._receive(ZYGOTE_START_TIMEOUT)
        return self.info

    def _receive(self, timeout: float) -> dict:
        self.control.settimeout(timeout)
        try:
            data = self.control.recv(65536)
        except (OSError, socket.timeout) as exc:
            raise RuntimeError(f"the zygote did not answer: {exc}") from exc
        if not data:
            raise RuntimeError(f"the zygote exited (status {self.process.poll()})")
        return json.loads(data)

    def _request(self, request: dict, fds: list[int] = ()) -> dict:
        """One request and its reply (matched by id). A zygote that fails to answer is replaced."""
        self.wait_ready()
        self._serial += 1
        try:
            socket.send_fds(self.control, [json.dumps({**request, "id": self._serial}).encode()], list(fds))
            deadline = time.monotonic() + CONTROL_TIMEOUT
            while True:
                reply = self._receive(max(0.001, deadline - time.monotonic()))
                if reply.get("id") == self._serial:
                    return reply
        except (OSError, RuntimeError, ValueError):
            self.restart()
            raise WorkerLost("El proceso que ejecuta tu código interfirió con el corrector y se reinició.") from None

    def restart(self) -> None:
        self.close()
        self.start()
        self.wait_ready()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def ensure_alive(self) -> None:
        """Restart the zygote if a worker managed to kill it."""
        if not self.alive:
            self.restart()

    def spawn(self, *, fork_server: bool = False) -> "Worker":
        """A fresh worker; the zygote gives it a private scratch folder (HOME, TMPDIR, cwd). `fork_server`: it also
        gets the channel that lets it become a fork server of itself (`Worker.start_fork_server`)."""
        ours, theirs = socket.socketpair()
        forks, their_forks = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if fork_server else (None, None)
        out_read, out_write = os.pipe()
        spec = {
            "limits": asdict(self.limits.worker_limits(cuda=self.cuda)),
            "env": {"AUTOGRADER_GRADING": "1", "USER": "estudiante", "LOGNAME": "estudiante"},
            "uid": self.worker_uid,
            "gid": self.worker_uid,
            "cuda": self.cuda,
            "seccomp": self.plan.mode != "off",
            "max_message_bytes": self.limits.message_bytes,
        }
        fds = [theirs.fileno(), out_write, *([their_forks.fileno()] if fork_server else [])]
        try:
            reply = self._request({"op": "fork", "spec": spec}, fds)
        except BaseException:
            for sock in (ours, forks):
                if sock is not None:
                    sock.close()
            os.close(out_read)
            raise
        finally:
            theirs.close()
            if their_forks is not None:
                their_forks.close()
            os.close(out_write)
        if "pid" not in reply:
            for sock in (ours, forks):
                if sock is not None:
                    sock.close()
            os.close(out_read)
            raise SandboxError(f"the zygote could not fork a worker: {reply.get('error')}")
        return Worker(self, reply["pid"], ours, OutputSink(out_read, self.limits.output_bytes),
                      max_bytes=self.limits.message_bytes, forks=forks)

    def reap(self) -> dict:
        if not self.alive:
            return {"killed": 0, "left": 0}
        return self._request({"op": "reap"})

    def status(self, pid: int) -> dict:
        if not self.alive:
            return {}
        return self._request({"op": "status", "pid": pid})

    def prune(self, pid: int) -> dict:
        """Kill everything below the worker the zygote forked as `pid`, sparing the worker (its fork server)."""
        if not self.alive:
            return {"error": "the zygote is gone"}
        return self._request({"op": "prune", "pid": pid})

    def close(self) -> None:
        try:
            self.control.close()
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()


def clean_environment(*, threads: int) -> dict[str, str]:
    """The zygote's environment: nothing of the grader's beyond what Python needs."""
    keep = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MPLBACKEND": "Agg",
        # matplotlib's and fontconfig's caches (the sandbox has no home; its /tmp is private)
        "MPLCONFIGDIR": os.path.join(tempfile.gettempdir(), "autograder-cache"),
        "XDG_CACHE_HOME": os.path.join(tempfile.gettempdir(), "autograder-cache"),
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
    })
    return env


def cpu_for(slot: int) -> int | None:
    """The CPU a slot, its zygote and its workers share, or None where affinity is not available.

    A slot and its worker take turns (every call is synchronous), so sharing a core costs
    no parallelism, and a wake-up on the same core is several times cheaper than across cores.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[slot % len(cpus)]


def pin_to_cpu(cpu: int | None) -> None:
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def worker_uid_for(slot: int) -> int | None:
    """An unprivileged uid per slot when the grader runs as root; None otherwise."""
    return WORKER_UID_BASE + slot if os.geteuid() == 0 else None


@dataclass
class Worker:
    """One forked worker process serving one submission; where asked, later a fork server of itself whose
    children (`ForkedChild`) serve the checks."""

    zygote: ZygoteHandle
    pid: int  # the process the zygote forked
    sock: socket.socket
    output: OutputSink
    max_bytes: int
    layers: dict = field(default_factory=dict)
    end: str | None = None  # why it is gone: timeout | crashed | invalid | closed
    forks: socket.socket | None = None  # the fork server's channel (worker.main.serve_forks), when wanted
    _serial: int = field(default=0, repr=False)  # of the last request to the fork server

    @property
    def dead(self) -> bool:
        return self.end is not None

    def __post_init__(self) -> None:
        self.conn = wire.Connection(self.sock, max_bytes=self.max_bytes)

    def handshake(self, timeout: float) -> None:
        """Wait for the worker's report from before any student code ran; a failure here is the sandbox's."""
        try:
            header = self.receive(time.monotonic() + timeout).header
        except WorkerLost as exc:
            raise SandboxError(f"the worker did not start: {exc.summary}") from None
        if header.get("event") != "ready":
            self.kill("invalid")
            raise SandboxError(f"the worker could not confine itself:\n{header.get('detail', header)}")
        self.layers = header.get("layers", {})

    def send(self, header: dict, buffers: list = (), *, deadline: float | None) -> None:
        try:
            self.conn.send(header, buffers, deadline=deadline)
        except (TimeoutError, socket.timeout):
            self.kill("timeout")
            raise WorkerTimeout("Tu código no terminó a tiempo (no aceptó más datos).") from None
        except OSError:
            self._lost()

    def receive(self, deadline: float | None) -> wire.Message:
        try:
            return self.conn.recv(deadline=deadline)
        except (TimeoutError, socket.timeout):
            self.kill("timeout")
            raise WorkerTimeout("Tu código excedió el tiempo límite y se detuvo.") from None
        except wire.TooLarge:
            self.kill("invalid")
            raise WorkerLost("Tu código devolvió un resultado demasiado grande.") from None
        except ProtocolError:
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.") from None
        except (wire.ConnectionClosed, OSError):
            self._lost()

    def _lost(self) -> None:
        status = self._status()
        waited = time.monotonic() + 1.0
        while status.get("running") and time.monotonic() < waited:
            time.sleep(0.01)
            status = self._status()
        self.kill("crashed")
        # How it ended (an exit code the code chose) is detail: hidden checks show only the summary.
        raise WorkerLost("El proceso que ejecuta tu código terminó antes de responder.",
                         detail=f"Causa: {exit_reason(status)}.")

    def _status(self) -> dict:
        """How the process ended ({"running": True} while it runs)."""
        return self.zygote.status(self.pid)

    def kill(self, end: str = "closed") -> None:
        """Have the zygote SIGKILL the worker and every descendant (its pids are the zygote's to name)."""
        if self.dead:
            return
        self.end = end
        self.sock.close()
        if self.forks is not None:
            self.forks.close()
        self.zygote.reap()

    # The fork server (worker.main.serve_forks) -------------------------------------------------------------

    def start_fork_server(self, *, deadline: float) -> None:
        """Make this worker, whose cells just ran, a fork server of itself; from now on `fork_child` gives the
        processes that serve the checks."""
        self.send({"op": "fork_server"}, deadline=deadline)
        if self.receive(deadline).header != {"event": "forking"}:
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.")
        self.sock.close()

    def fork_child(self, *, deadline: float) -> "ForkedChild":
        """A child of the fork server, ready to serve: the notebook's state right after its cells."""
        ours, theirs = socket.socketpair()
        try:
            kind, _ = self.ask_fork_server("fork", deadline=deadline, fds=[theirs.fileno()])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if kind != "pid":
            ours.close()
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.")
        child = ForkedChild(self.zygote, self.pid, ours, self.output, max_bytes=self.max_bytes, template=self)
        try:
            header = child.receive(deadline).header
        except WorkerLost:
            self.kill("invalid")  # a fork that does not come up: the fork server is no longer usable
            raise
        if header.get("event") != "ready":
            child.kill("invalid")
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.")
        return child

    def ask_fork_server(self, op: str, *, deadline: float, fds: list[int] = ()) -> tuple[str, int | None]:
        """One request to the fork server and its reply as (kind, value): ("pid", P), ("running", None),
        ("exit", E) or ("signal", S). Replies to earlier requests are skipped; a fork server that does not answer
        by `deadline`, or answers anything else, is killed with its children."""
        if self.forks is None:  # a grader bug (not spawned with fork_server=True), never the student's doing
            raise RuntimeError("ask_fork_server on a worker spawned without a fork server")
        self._serial += 1
        try:
            self.forks.settimeout(max(0.001, deadline - time.monotonic()))
            socket.send_fds(self.forks, [f"{op} {self._serial}".encode()], list(fds))
            while True:
                self.forks.settimeout(max(0.001, deadline - time.monotonic()))
                reply = _FORK_REPLY.fullmatch(self.forks.recv(64))
                if reply is None or (reply["kind"] in (b"pid", b"exit", b"signal")) != (reply["value"] is not None):
                    raise ValueError("not a reply of the fork server")
                if int(reply["serial"]) == self._serial:
                    break
        except (OSError, ValueError):
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código dejó de responder al corrector.") from None
        if reply["kind"] == b"error":
            self.kill("invalid")
            raise WorkerLost("El proceso que ejecuta tu código dejó de responder al corrector.")
        return reply["kind"].decode(), None if reply["value"] is None else int(reply["value"])


#: A line of the fork server (worker.main.serve_forks), in full: the request's number, then what it says.
_FORK_REPLY = re.compile(rb"(?P<serial>\d{1,12}) (?P<kind>pid|running|exit|signal|error)(?: (?P<value>\d{1,10}))?")


@dataclass
class ForkedChild(Worker):
    """A child of a worker's fork server (`Worker.fork_child`): it serves the checks from the notebook's state
    after its cells, and writes to its template's output."""

    template: Worker = field(kw_only=True)

    def _status(self) -> dict:
        """How the child ended, in its fork server's words: only this submission can have made them untrue."""
        if self.template.dead:
            return {}
        try:
            kind, value = self.template.ask_fork_server("status", deadline=time.monotonic() + 1.0)
        except WorkerLost:
            return {}
        return {"running": True} if kind == "running" else {kind: value}

    def abandon(self) -> None:
        """Stop serving through this child and leave it to its template's kill, which reaps every process of the
        zygote (`Worker.kill`): the way to end a submission, one request to the zygote instead of two."""
        if not self.dead:
            self.end = "closed"
            self.sock.close()

    def kill(self, end: str = "closed") -> None:
        """Have the zygote SIGKILL every process below the template, sparing the template: this child and what
        it started (and what the cells left running). Where some survive, or the zygote fails, the template goes
        too."""
        if self.dead:
            return
        self.end = end
        self.sock.close()
        if self.template.dead:
            return
        try:
            pruned = self.zygote.prune(self.pid)
        except BaseException:  # the zygote failed: nothing says what the child left below the template
            self.template.kill("invalid")
            raise
        if pruned.get("left", 0) or "error" in pruned:
            self.template.kill("invalid")
