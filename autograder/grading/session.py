"""One submission's life in a worker: run its cells, serve the checks, restart when killed.

The session is the `Transport` the checks' `Client` talks through. If a call hangs
or kills the worker, that call's check fails, and the next request gets a fresh
process with the notebook's state after its cells. Where the worker is PID 1 of its
own PID namespace (and has no GPU, which a fork cannot share), that process is a
fork of the worker, which became a fork server of itself once its cells ran
(`worker.main.serve_forks`): a restart costs a fork, not the cells again. Otherwise
a fresh worker re-runs the cells. A cell that hung or killed the worker is skipped
from then on, so one runaway demo cell costs only what depends on it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .. import wire
from ..errors import WorkerLost, WorkerTimeout
from .options import CELL_BUDGET_FACTOR, CELL_BUDGET_FLOOR, Limits
from .sandbox import ForkedChild, SandboxError, Worker, ZygoteHandle

HANDSHAKE_SECONDS = 30.0
#: How long the fork server may take to answer (a fork of a process holding torch and the notebook's data).
FORK_SECONDS = 10.0
#: The worker dumps a cell's stack this long before the cell's limit, so that the grader learns which function hung.
WATCHDOG_LEAD_SECONDS = 0.5
_HUNG_FRAME = re.compile(r'^\s*File "<celda \d+>", line \d+ in ([A-Za-z_]\w*)$')


@dataclass(frozen=True)
class Cell:
    """A code cell to execute: its 1-based position in the notebook, its Python source, its first line, and its
    own time limit when it has one (a demonstration cell: see budgets.py); None means `Limits.cell_seconds`."""

    index: int
    source: str
    preview: str = ""
    limit: float | None = None


@dataclass
class CellRecord:
    """What happened to one cell the first time it ran."""

    index: int
    status: str  # ok | error | timeout | crashed
    seconds: float
    preview: str = ""
    limit: float = 0.0  # the seconds it was allowed
    error: dict | None = None
    output: str = ""
    output_dropped: int = 0
    notes: list[str] = field(default_factory=list)


class SubmissionSession:
    """Transport for one submission's checks, backed by a restartable worker."""

    def __init__(self, zygote: ZygoteHandle, cells: list[Cell], *, limits: Limits, snapshots: bool = False) -> None:
        self.zygote = zygote
        self.cells = cells
        self.limits = limits
        self.snapshots = snapshots  # restart from the fork server (see the module's docstring)
        self.generation = 0
        self.records: dict[int, CellRecord] = {}
        self.skipped: set[int] = set()
        self.restarts = 0
        self.sandbox_failure: str | None = None
        self.layers: dict = {}
        self.output: list[str] = []
        self.output_dropped = 0
        self.timed_out: set[str] = set()  # the student's names whose code ran out of time (see remote.Client)
        self.deadline = time.monotonic() + limits.submission_seconds
        self._worker: Worker | None = None  # the process serving the checks
        self._template: Worker | None = None  # the fork server the checks' processes come from

    # Transport protocol ------------------------------------------------------

    def device_ok(self, device: str) -> bool:
        if device == "cpu":
            return True
        import torch

        index = int(device.partition(":")[2] or 0)
        return self.zygote.cuda and index < torch.cuda.device_count()

    def prepare(self) -> None:
        self.ensure_worker()

    def roundtrip(self, header: dict, buffers: list[memoryview], *, deadline: float | None) -> wire.Message:
        worker = self.ensure_worker()
        own = time.monotonic() + self.limits.call_seconds
        limit = min(self.deadline, own if deadline is None else min(own, deadline))
        try:
            worker.send(header, buffers, deadline=limit)
            return worker.receive(limit)
        except WorkerTimeout as exc:
            exc.call_limit = limit == own
            raise

    def discard(self) -> None:
        if self._worker is not None:
            self._worker.kill("invalid")

    # Worker lifecycle ----------------------------------------------------------

    def ensure_worker(self) -> Worker:
        if self._worker is not None and not self._worker.dead:
            return self._worker
        while True:
            if time.monotonic() >= self.deadline:
                raise WorkerLost(
                    f"Se agotó el tiempo total para tu entrega ({self.limits.submission_seconds:g} s)."
                )
            if self.generation > 0:
                self._retire()
                if self.restarts >= self.limits.restarts:
                    raise WorkerLost(
                        "Tu código detuvo el proceso demasiadas veces; esta comprobación no se pudo evaluar."
                    )
                self.restarts += 1
            try:
                if self._template is not None and not self._template.dead:
                    return self._fork_child()
                worker = self._start_worker()
                self._execute(worker)
                return self._snapshot(worker) if self.snapshots else worker
            except WorkerLost:
                continue
            except SandboxError as exc:
                self.sandbox_failure = str(exc)
                raise

    def _start_worker(self) -> Worker:
        self.zygote.ensure_alive()
        self.generation += 1
        self._worker = self.zygote.spawn(fork_server=self.snapshots)
        self._worker.handshake(HANDSHAKE_SECONDS)
        self.layers = {**self._worker.layers, "subreaper": bool(self.zygote.info.get("subreaper")),
                       "cpu": self.zygote.cpu}
        return self._worker

    def _snapshot(self, worker: Worker) -> Worker:
        """The worker whose cells just ran becomes the fork server; its first child serves the checks."""
        try:
            worker.start_fork_server(deadline=min(self.deadline, time.monotonic() + FORK_SECONDS))
            self._template, self._worker = worker, None
            return self._fork_child()
        except WorkerLost:
            self.snapshots = False  # the notebook broke the fork server: restarts re-run the cells from now on
            raise

    def _fork_child(self) -> Worker:
        """A new child of the fork server serves the checks; a fork server that fails is not used again."""
        self.generation += 1
        try:
            self._worker = self._template.fork_child(deadline=min(self.deadline, time.monotonic() + FORK_SECONDS))
        except WorkerLost:
            self.snapshots = False
            self._retire_template()
            raise
        return self._worker

    def _execute(self, worker: Worker) -> None:
        """Run the cells, each under its own time limit; the wait for a cell to start gets that cell's limit too,
        so nothing between cells can stall either."""
        cells = [c for c in self.cells if c.index not in self.skipped]
        worker.send({"op": "exec", "cells": [{"index": c.index, "source": c.source,
                                              "watchdog": self._watchdog(c)} for c in cells]},
                    deadline=self.deadline)
        position = 0  # of the next cell to start
        current: Cell | None = None  # the cell running now
        latest: Cell | None = None  # the cell that started last: the one to blame for a stall
        started = time.monotonic()
        while True:
            upcoming = current or (cells[position] if position < len(cells) else None)
            allowed = self._limit(upcoming) if upcoming is not None else self.limits.cell_seconds
            limit = min(self.deadline, started + allowed)
            try:
                event = worker.receive(limit).header
            except WorkerLost as exc:
                if latest is not None:
                    self.skipped.add(latest.index)
                    status = "timeout" if worker.end == "timeout" else "crashed"
                    message = exc.render(reveal=True)
                    if status == "timeout" and limit < self.deadline and current is not None:
                        message += " " + limit_note(latest, limit=allowed)
                    # Replaces any record of this cell: its reported "end" may have been forged. The full
                    # message (exit cause included) is safe: cells run before any check, so nothing hidden leaks.
                    self.records[latest.index] = CellRecord(
                        latest.index, status, time.monotonic() - started, latest.preview, self._limit(latest),
                        error={"type": status, "message": message, "traceback": ""})
                    if status == "timeout":
                        self._retire()
                        hung = hung_functions(self.output[-1])
                        self.output[-1] = hung.output
                        self.timed_out |= hung.functions
                raise
            kind = event.get("event")
            if kind == "start" and current is None:
                current = latest = cells[position] if position < len(cells) else None
                position += 1
                if current is None or event.get("index") != current.index:
                    self._protocol_violation(worker)
                started = time.monotonic()
            elif kind == "end" and current is not None and event.get("index") == current.index:
                self._record(_cell_record(event, time.monotonic() - started, current.preview, self._limit(current)))
                current = None
                started = time.monotonic()
            elif kind == "done" and current is None and position == len(cells):
                return
            else:
                self._protocol_violation(worker)

    def _limit(self, cell: Cell) -> float:
        return self.limits.cell_seconds if cell.limit is None else min(cell.limit, self.limits.cell_seconds)

    def _watchdog(self, cell: Cell) -> float | None:
        """When the worker dumps the cell's stack: just before the grader stops it."""
        seconds = self._limit(cell) - WATCHDOG_LEAD_SECONDS
        return seconds if seconds > 0 else None

    def _protocol_violation(self, worker: Worker) -> None:
        worker.kill("invalid")
        raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.")

    def _record(self, record: CellRecord) -> None:
        self.records.setdefault(record.index, record)

    def _retire(self) -> None:
        """Kill the process serving the checks; a worker's output is complete then, a child's goes on in its
        template's. A template killed on the way (it did not answer, or something it spared survived a child's
        kill, or the zygote failed to prune) is not used again: restarts re-run the cells from then on."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            worker.kill()
        finally:
            if not isinstance(worker, ForkedChild):
                self._keep_output(worker)
            elif worker.template.dead:
                self.snapshots = False
                self._retire_template()

    def _retire_template(self) -> None:
        template, self._template = self._template, None
        if template is not None:
            try:
                template.kill()
            finally:
                self._keep_output(template)

    def _keep_output(self, worker: Worker) -> None:
        text, dropped = worker.output.close()
        self.output.append(text)
        self.output_dropped += dropped

    def close(self) -> None:
        """Kill every process of the submission. A child of the fork server is not pruned on its own first: the
        template's kill (the zygote's reap of every process below it) takes the child with it."""
        if isinstance(self._worker, ForkedChild) and self._worker.template is self._template:
            self._worker.abandon()
        try:
            self._retire()
        finally:
            self._retire_template()


def limit_note(cell: Cell, *, limit: float) -> str:
    """What the student reads about a cell stopped at its limit."""
    if cell.limit is None or cell.limit > limit:
        return f"Cada celda tiene hasta {limit:g} s."
    return (f"Esta celda tenía {limit:g} s: es una demostración del curso, y en tu notebook tiene hasta "
            f"{CELL_BUDGET_FACTOR:g} veces lo que tarda en la solución (al menos {CELL_BUDGET_FLOOR:g} s). Revisa las "
            "funciones tuyas que usa.")


def _cell_record(event: dict, seconds: float, preview: str, limit: float) -> CellRecord:
    """A cell record from the worker's report, keeping only well-typed fields."""
    error = event.get("error")
    if not isinstance(error, dict):
        error = None
    else:
        error = {k: str(error.get(k, ""))[:4000] for k in ("type", "message", "traceback")}
    notes = event.get("notes")
    return CellRecord(
        index=int(event["index"]),
        status="error" if error else "ok",
        seconds=seconds,
        preview=preview,
        limit=limit,
        error=error,
        output=str(event.get("output", ""))[:16384],
        output_dropped=int(event.get("output_dropped", 0)) if isinstance(event.get("output_dropped"), int) else 0,
        notes=[str(n)[:500] for n in notes[:50]] if isinstance(notes, list) else [],
    )


@dataclass(frozen=True)
class HungCell:
    output: str  # the worker's output without the watchdog's dump
    functions: frozenset[str]  # the student's functions on the dump's stack, of every thread


def hung_functions(output: str) -> HungCell:
    """A worker's raw output without its last watchdog dump (see worker.main.run_cell), and the student's
    functions on that dump's stack. The output is the student's to write: a forged dump only shortens the
    limits of the student's own code."""
    if "Timeout (" not in output:
        return HungCell(output, frozenset())
    output, _, dump = output.rpartition("Timeout (")
    return HungCell(output, frozenset(m.group(1) for m in map(_HUNG_FRAME.match, dump.splitlines()) if m))
