"""One submission's life in a worker: run its cells, serve the checks, restart when killed.

The session is the `Transport` the checks' `Client` talks through. If a call hangs
or kills the worker, that call's check fails, and the next request starts a fresh
worker that re-runs the notebook's cells. A cell that hung or killed the worker is
skipped from then on, so one runaway demo cell costs only what depends on it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .. import wire
from ..errors import WorkerLost, WorkerTimeout
from .options import Limits
from .sandbox import SandboxError, Worker, ZygoteHandle

HANDSHAKE_SECONDS = 30.0
#: The worker dumps a cell's stack this long before the cell's limit, so that the grader learns which function hung.
WATCHDOG_LEAD_SECONDS = 0.5
_HUNG_FRAME = re.compile(r'^\s*File "<celda \d+>", line \d+ in ([A-Za-z_]\w*)$')


@dataclass(frozen=True)
class Cell:
    """A code cell to execute: its 1-based position in the notebook, its Python source, and its first line."""

    index: int
    source: str
    preview: str = ""


@dataclass
class CellRecord:
    """What happened to one cell the first time it ran."""

    index: int
    status: str  # ok | error | timeout | crashed
    seconds: float
    preview: str = ""
    error: dict | None = None
    output: str = ""
    output_dropped: int = 0
    notes: list[str] = field(default_factory=list)


class SubmissionSession:
    """Transport for one submission's checks, backed by a restartable worker."""

    def __init__(self, zygote: ZygoteHandle, cells: list[Cell], *, limits: Limits) -> None:
        self.zygote = zygote
        self.cells = cells
        self.limits = limits
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
        self._worker: Worker | None = None

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
                worker = self._start_worker()
                self._execute(worker)
                return worker
            except WorkerLost:
                continue
            except SandboxError as exc:
                self.sandbox_failure = str(exc)
                raise

    def _start_worker(self) -> Worker:
        self.zygote.ensure_alive()
        self.generation += 1
        self._worker = self.zygote.spawn()
        self._worker.handshake(HANDSHAKE_SECONDS)
        self.layers = {**self._worker.layers, "subreaper": bool(self.zygote.info.get("subreaper")),
                       "cpu": self.zygote.cpu}
        return self._worker

    def _execute(self, worker: Worker) -> None:
        """Run the cells, each under its own time limit (between cells too, so no cell can stall)."""
        cells = [c for c in self.cells if c.index not in self.skipped]
        watchdog = self.limits.cell_seconds - WATCHDOG_LEAD_SECONDS
        worker.send({"op": "exec", "cells": [{"index": c.index, "source": c.source} for c in cells],
                     "watchdog": watchdog if watchdog > 0 else None}, deadline=self.deadline)
        pending = iter(cells)
        current: Cell | None = None  # the cell running now
        latest: Cell | None = None  # the cell that started last: the one to blame for a stall
        started = time.monotonic()
        while True:
            limit = min(self.deadline, started + self.limits.cell_seconds)
            try:
                event = worker.receive(limit).header
            except WorkerLost as exc:
                if latest is not None:
                    self.skipped.add(latest.index)
                    status = "timeout" if worker.end == "timeout" else "crashed"
                    # Replaces any record of this cell: its reported "end" may have been forged. The full
                    # message (exit cause included) is safe: cells run before any check, so nothing hidden leaks.
                    self.records[latest.index] = CellRecord(
                        latest.index, status, time.monotonic() - started, latest.preview,
                        error={"type": status, "message": exc.render(reveal=True), "traceback": ""})
                    if status == "timeout":
                        self._retire()
                        hung = hung_functions(self.output[-1])
                        self.output[-1] = hung.output
                        self.timed_out |= hung.functions
                raise
            kind = event.get("event")
            if kind == "start" and current is None:
                current = latest = next(pending, None)
                if current is None or event.get("index") != current.index:
                    self._protocol_violation(worker)
                started = time.monotonic()
            elif kind == "end" and current is not None and event.get("index") == current.index:
                self._record(_cell_record(event, time.monotonic() - started, current.preview))
                current = None
                started = time.monotonic()
            elif kind == "done" and current is None and next(pending, None) is None:
                return
            else:
                self._protocol_violation(worker)

    def _protocol_violation(self, worker: Worker) -> None:
        worker.kill("invalid")
        raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.")

    def _record(self, record: CellRecord) -> None:
        self.records.setdefault(record.index, record)

    def _retire(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            text, dropped = self._worker.output.close()
            self.output.append(text)
            self.output_dropped += dropped
            self._worker = None

    def close(self) -> None:
        self._retire()


def _cell_record(event: dict, seconds: float, preview: str) -> CellRecord:
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
