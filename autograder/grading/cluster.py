"""Grading a class on a Dask `distributed` cluster: one grading slot per Dask worker process.

The client (the TA's `autograder grade ... --cluster ADDRESS`) registers `GradingSlot`, a
worker plugin that every worker of the cluster sets up once per batch: it unpacks the
assignment's course files into a private folder, takes a free slot number on its host and
starts the same slot process a local batch starts (slot.py: torch and the checks imported
once, the sandboxed zygote ready, the sandbox probe passed). A task is one submission's
bytes in and one result file's text out; the client writes every result (atomically, through the batch's
`ResultStore`), so resuming, the progress bar, the summary and gradebook.csv work as for
a local batch, and result fingerprints are the same.

A worker that dies takes its task with it; the scheduler runs the task again on another
worker. A task on which workers died more than the scheduler's
`distributed.scheduler.allowed-failures` times (set it to 1, as the local "died twice"
rule) comes back as `KilledWorker`, and the student gets a grader-error result saying so.
A slot process that dies or hangs under a live worker is replaced there, and its
submission graded once more, as locally.

Workers run in plain `dask worker --nthreads 1` processes of an environment where this
project is installed; `--nthreads 1` because one slot grades one submission at a time
(more threads only queue tasks behind the slot).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, Security, WorkerPlugin
from distributed import wait as dask_wait

from ..course import Course
from .discover import Submission

PLUGIN_PREFIX = "autograder-slot-"
SLOT_LOCKS = 256  # slot numbers a host hands out (each gives a CPU and, as root, a worker uid)
#: Test hook, for the test suite only: a Dask worker whose environment sets this kills itself (SIGKILL)
#: before grading a submission whose bytes contain the value. It stands in for a submission that brings its
#: grading process down, which the sandbox otherwise prevents; nothing in a submission can set it.
KILL_HOOK = "AUTOGRADER_TEST_KILL_WORKER_ON"


class ClusterError(Exception):
    """The cluster cannot be used (for TAs, English)."""


class SlotFailed(Exception):
    """A worker's grading slot could not start (its error in the message): the batch stops, as locally."""


class SlotDied(Exception):
    """A worker's grading slot died or hung on a submission: it is graded once more, as locally."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where the Dask scheduler is and how to talk to it.

    `address` is `tcp://host:port`, `tls://host:port` or the path of a scheduler file
    (`dask scheduler --scheduler-file`). The three TLS files go together: the CA that
    signed the scheduler's and workers' certificates, and this client's certificate and key.
    """

    address: str
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_seconds: float = 30.0

    def security(self) -> Security | None:
        files = (self.tls_ca, self.tls_cert, self.tls_key)
        if not any(files):
            return None  # Dask's own configuration (distributed.comm.tls.*) applies
        if not all(files):
            raise ClusterError("--cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key go together")
        for path in files:
            if not Path(path).is_file():
                raise ClusterError(f"TLS file not found: {path}")
        return Security(tls_ca_file=str(self.tls_ca), tls_client_cert=str(self.tls_cert),
                        tls_client_key=str(self.tls_key), require_encryption=True)

    def connect(self) -> Client:
        security = self.security()
        kwargs = {"security": security} if security else {}
        try:
            if "://" in self.address:
                return Client(self.address, timeout=self.connect_seconds, set_as_default=False, **kwargs)
            if Path(self.address).is_file():
                return Client(scheduler_file=self.address, timeout=self.connect_seconds, set_as_default=False,
                              **kwargs)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            hint = " (a tls:// scheduler needs --cluster-tls-ca/--cluster-tls-cert/--cluster-tls-key)" \
                if self.address.startswith("tls://") and security is None else ""
            raise ClusterError(f"cannot connect to the Dask scheduler at {self.address}: {exc}{hint}") from None
        raise ClusterError(f"--cluster {self.address}: neither a scheduler address (tcp://host:port, "
                           "tls://host:port) nor a scheduler file")


# ---------------------------------------------------------------------------------------- the client side


def grade_on_cluster(batch, *, course: Course, cluster: ClusterSpec) -> None:
    """Grade `batch.pending` (a batch._Batch) on the cluster; results go through the batch as local ones do."""
    from .batch import SLOT_START_SECONDS, BatchError

    if not batch.pending:
        return
    try:
        client = cluster.connect()
    except ClusterError as exc:
        raise BatchError(str(exc)) from None
    plugin = GradingSlot(assignment=batch.assignment, files=course_files(course, batch.assignment),
                         options=batch.config["options"], job_seconds=batch.job_seconds)
    try:
        try:
            client.wait_for_workers(1, timeout=SLOT_START_SECONDS)
        except TimeoutError:
            raise BatchError(f"no Dask worker joined {cluster.address} in {SLOT_START_SECONDS:.0f} s") from None
        try:
            client.register_plugin(plugin, name=plugin.name)  # every worker sets its slot up; errors come here
        except Exception as exc:  # noqa: BLE001 - a slot that cannot start (e.g. --sandbox strict) stops the batch
            raise BatchError(f"a grading slot on the cluster could not start: {type(exc).__name__}: {exc}") from None
        ready = [info for info in client.run(_slot_info, plugin.name).values() if info]
        if not ready:
            raise BatchError("no grading slot on the cluster became ready")
        batch.grade_cells = ready[0]["grade_cells"]
        missing = sorted({layer for info in ready for layer in info["isolation"].get("missing") or ()})
        batch.isolation = {**ready[0]["isolation"], "missing": missing}  # a layer missing on any worker is said
        with client.as_current():
            _Dispatch(batch, client, plugin.name, deadline=SLOT_START_SECONDS).run()
    finally:
        try:
            client.unregister_worker_plugin(plugin.name)  # the slots' zygotes and folders go with it
        except Exception:  # noqa: BLE001 - a cluster that went away has nothing left to free
            pass
        client.close()


class _Dispatch:
    """Keep every worker thread busy with one submission, write each result as it comes back."""

    def __init__(self, batch, client: Client, plugin: str, *, deadline: float) -> None:
        self.batch = batch
        self.client = client
        self.plugin = plugin
        self.deadline = deadline
        self.in_flight: dict = {}  # future -> Submission
        self.retries: dict[str, int] = {}

    def run(self) -> None:
        from distributed.scheduler import KilledWorker

        from .batch import BatchError

        self._top_up()
        idle_since = None
        while self.in_flight:
            try:
                done, _ = dask_wait(list(self.in_flight), timeout=10, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            if not done:  # nothing finished: fine while workers grade; a cluster without workers is an error
                if self._capacity(known=False):
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.deadline:
                    raise BatchError(f"the cluster has had no worker for {self.deadline:.0f} s; results written "
                                     f"so far are kept in {self.batch.store.out_dir} (run again to finish)")
                continue
            for future in done:
                submission = self.in_flight.pop(future)
                try:
                    message = future.result()
                except SlotFailed as exc:
                    raise BatchError(f"a grading slot on the cluster could not start:\n{exc}") from None
                except SlotDied as exc:  # as locally: one more try, then a grader error
                    self.retries[submission.student] = self.retries.get(submission.student, 0) + 1
                    if self.retries[submission.student] <= 1:
                        self.batch.pending.insert(0, submission)
                    else:
                        self.batch.grader_error(submission, f"the grading process died twice on this submission "
                                                            f"({exc})")
                except KilledWorker as exc:
                    self.batch.grader_error(submission, f"Dask workers died grading this submission ({exc})")
                except Exception as exc:  # noqa: BLE001 - a grader failure costs this submission, never the batch
                    self.batch.grader_error(submission, f"grading on the cluster failed: {type(exc).__name__}: {exc}")
                else:
                    self.batch.done(message)
                future.release()
            self._top_up()

    def _capacity(self, *, known: bool = True) -> int:
        """Threads of the cluster's workers now (at least 1 when `known`, so the batch always moves)."""
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001
            threads = 0
        return max(threads, 1) if known else threads

    def _top_up(self) -> None:
        """As many submissions in flight as the cluster has threads: the rest wait here, not on a worker
        (a task waiting on a worker that dies would count that death against its submission)."""
        free = self._capacity() - len(self.in_flight)
        while free > 0 and self.batch.pending:
            submission = self.batch.pending.pop(0)
            job = _job(submission, self.batch.fingerprints[submission.student],
                       max_bytes=self.batch.config["options"]["limits"]["notebook_bytes"])
            future = self.client.submit(grade_task, self.plugin, job, pure=False,
                                        key=f"autograder-{submission.student}-{uuid.uuid4().hex[:8]}")
            self.in_flight[future] = submission
            free -= 1


def _job(submission: Submission, fingerprint: str, *, max_bytes: int) -> dict:
    """One task's input: the submission's bytes (read here, by the client), or why there are none."""
    job = {"student": submission.student, "problem": submission.problem, "fingerprint": fingerprint,
           "source": str(submission.path) if submission.path else None,
           "name": submission.path.name if submission.path else None, "data": None, "size": None}
    if submission.path is not None:
        try:
            size = submission.path.stat().st_size
            if size > max_bytes:
                job["size"] = size  # too large: the worker grades a sparse file of this size (same message)
            else:
                job["data"] = submission.path.read_bytes()
        except OSError:
            pass  # the worker finds no file and says the submission could not be read
    return job


def course_files(course: Course, assignment: str) -> dict[str, bytes]:
    """What a slot needs of the course, by path in the course: the assignment's source and release
    notebooks and its checks folder (the worker's own installed engine provides the rest)."""
    target = course.assignment(assignment)
    files = [target.source_notebook, target.release_notebook,
             *(p for p in sorted(target.checks_dir.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)]
    return {str(p.relative_to(course.root)): p.read_bytes() for p in files}


# ---------------------------------------------------------------------------------------- the worker side


def grade_task(plugin: str, job: dict) -> dict:
    """The Dask task: grade one submission with this worker's slot; returns the slot's `done` message."""
    from distributed import get_worker

    marker = os.environ.get(KILL_HOOK)
    if marker and job["data"] and marker.encode() in job["data"]:
        os.kill(os.getpid(), signal.SIGKILL)  # the test hook (see KILL_HOOK)
    slot = get_worker().plugins.get(plugin)
    if slot is None:
        raise ClusterError(f"this worker has no grading slot {plugin} (did another batch replace it?)")
    return slot.grade(job)


def _slot_info(plugin: str, dask_worker=None) -> dict | None:
    slot = dask_worker.plugins.get(plugin) if dask_worker is not None else None
    return getattr(slot, "info", None)


class GradingSlot(WorkerPlugin):
    """A grading slot for a Dask worker process: a local slot process (slot.py) the worker talks to.

    Each batch gets a fresh slot process, as a local batch does: a long-lived Dask worker
    would otherwise keep the check modules of an earlier batch (pytest does not import a
    module name twice) and grade with stale checks. One thread of the plugin owns the slot's
    pipes, so the worker's event loop never waits on grading.
    """

    def __init__(self, *, assignment: str, files: dict[str, bytes], options: dict, job_seconds: float) -> None:
        self.assignment = assignment
        self.files = files
        self.options = options
        self.job_seconds = job_seconds
        digest = hashlib.sha256(json.dumps([assignment, options, sorted(files)], sort_keys=True).encode())
        for path in sorted(files):
            digest.update(files[path])
        self.name = PLUGIN_PREFIX + digest.hexdigest()[:16]
        self.info: dict | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    async def setup(self, worker) -> None:
        self._slot = None
        self._lock = None
        self._folder = None
        self._failure = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autograder-slot")
        try:
            await asyncio.wrap_future(self._executor.submit(self._start))
        except Exception as exc:
            self._failure = str(exc)  # every task sent here says so (the batch stops)
            raise

    def _start(self) -> None:
        self._index, self._lock = _claim_slot()
        # The slot's own folder: what a slot that held this number left (a killed worker) goes first.
        self._folder = _slots_folder() / str(self._index)
        shutil.rmtree(self._folder, ignore_errors=True)
        self._folder.mkdir(mode=0o700)
        for relative, data in self.files.items():
            path = self._folder / "course" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self._folder / "submissions").mkdir()
        # The worker must see neither the slots' folders (course copies, submissions) nor, where they exist
        # on this host, the client's output folder and submission folders.
        hidden = sorted({str(_slots_folder()), *self.options.get("hidden_paths", ())})
        self._config = {"course": str(self._folder / "course"), "assignment": self.assignment,
                        "options": {**self.options, "hidden_paths": hidden}}
        self._launch()

    def _launch(self) -> None:
        """Start the slot process and wait for its `ready` (SlotFailed with its error otherwise)."""
        from .batch import SLOT_START_SECONDS, _Slot

        slot = _Slot(self._index, self._config)
        message = _reply(slot, SLOT_START_SECONDS)
        if message is None or message.get("event") != "ready":
            slot.process.kill()
            slot.close()
            where = f"on {socket.gethostname()} (Dask worker pid {os.getpid()})"
            raise SlotFailed(f"{where}:\n{message.get('detail') if message else 'the slot process exited'}")
        self._slot = slot
        self.info = {"grade_cells": message["grade_cells"], "isolation": message.get("isolation", {}),
                     "slot": self._index, "host": socket.gethostname(), "pid": os.getpid()}

    def grade(self, job: dict) -> dict:
        return self._executor.submit(self._grade, job).result()

    def _grade(self, job: dict) -> dict:
        if self._slot is None:
            if self._failure is not None:
                raise SlotFailed(self._failure)
            self._launch()  # the last one died: a new slot, as the local coordinator does
        folder = Path(tempfile.mkdtemp(dir=self._folder / "submissions"))
        try:
            path = None
            if job["name"] is not None:
                path = folder / job["name"]
                if job["data"] is not None:
                    path.write_bytes(job["data"])
                elif job["size"] is not None:
                    with open(path, "wb") as f:
                        f.truncate(job["size"])
            try:
                self._slot._send({"student": job["student"], "path": str(path) if path else None,
                                  "problem": job["problem"], "fingerprint": job["fingerprint"],
                                  "source": job["source"] or ""})  # the result names the file as the client has it
                message = _reply(self._slot, self.job_seconds)  # the slot enforces the budget; past it, it is stuck
            except OSError:  # the slot was gone before this submission
                message = None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if message is None or message.get("event") != "done":
            self._slot.process.kill()
            self._slot.close()
            self._slot = None
            raise SlotDied(f"the grading process died or hung on this submission "
                           f"(on {socket.gethostname()}, Dask worker pid {os.getpid()})")
        return message

    def teardown(self, worker) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:  # the plugin's thread closes the slot, after a submission it may still grade
            executor.submit(self._close)
            executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._slot is not None:
            self._slot.close()
            self._slot = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()


def _reply(slot, seconds: float) -> dict | None:
    """The slot's next message, or None if it died or said nothing for `seconds`."""
    ready, _, _ = select.select([slot.replies], [], [], seconds)
    return slot.read() if ready else None


def _slots_folder() -> Path:
    """Where this host's slots keep `<n>.lock` (held while slot n lives) and `<n>/` (its private folder)."""
    return Path(tempfile.gettempdir()) / "autograder-slots"


def _claim_slot():
    """The lowest slot number no other process on this host holds (an flock, freed when the process dies)."""
    folder = _slots_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    for index in range(SLOT_LOCKS):
        handle = open(folder / f"{index}.lock", "a")  # noqa: SIM115 - held for the slot's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return index, handle
    raise ClusterError(f"more than {SLOT_LOCKS} grading slots on this host")
