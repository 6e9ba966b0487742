"""Speed checks as a ratio to a reference timed in the same run, the same way.

Both sides are timed from the process that runs the checks, with fresh inputs for
every call (no caching pays), a warm-up first, and the fastest of interleaved
repeats on each side (load drift hits both alike, and a repeat that waited for a busy
CPU, which a call into the worker process is likelier to do, does not count). The reference's inputs and output go through
the same wire codec a call to the student pays for (trusted code, so it cannot be
slowed down from the worker), which keeps the ratio about compute on any device.
The student's result on the timed inputs is verified too, so a fast wrong answer
earns nothing. Speed checks run outside the by-hand rules' recorder, whose cost per
operation would distort the ratio: a check that times a function must come with correctness
checks of the same function, whose calls are watched.
A hopeless first call ends the check early instead of burning time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import CheckFailure
from ..remote import unwatched
from ..wire import copy_through_wire

HOPELESS_FACTOR = 4.0


@dataclass(frozen=True)
class SpeedBudget:
    """The timing marker's budget; `record` stores figures with the check's outcome."""

    max_ratio: float
    repeats: int
    record: Callable[[str, Any], None] = lambda key, value: None


@dataclass(frozen=True)
class SpeedReport:
    ratio: float
    student_seconds: float
    reference_seconds: float


def _timed(fn: Callable[..., Any], inputs: tuple, device: str) -> tuple[float, Any]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def compare_speed(*, student: Callable[..., Any], reference: Callable[..., Any],
                  make_inputs: Callable[[], tuple], verify: Callable[[Any, tuple], None],
                  budget: SpeedBudget, name: str, device: str) -> SpeedReport:
    """Time `student(*inputs)` against `reference(*inputs)`; fail if the ratio is over budget."""
    plain_reference = reference

    def reference(*inputs: Any) -> Any:
        return copy_through_wire(plain_reference(*copy_through_wire(inputs)))

    with unwatched():  # the by-hand rules' recorder would skew the times; correctness checks watch these calls
        inputs = make_inputs()
        reference_first, _ = _timed(reference, inputs, device)
        student_first, result = _timed(student, inputs, device)
        verify(result, inputs)
        if student_first > HOPELESS_FACTOR * budget.max_ratio * max(reference_first, 1e-9):
            # a first call can stall once (code pages read back from disk, a busy CPU): look again before deciding
            inputs = make_inputs()
            reference_first = min(reference_first, _timed(reference, inputs, device)[0])
            seconds, result = _timed(student, inputs, device)
            verify(result, inputs)
            student_first = min(student_first, seconds)
        reference_times, student_times = [], []
        if student_first <= HOPELESS_FACTOR * budget.max_ratio * max(reference_first, 1e-9):
            for _ in range(budget.repeats):
                inputs = make_inputs()
                reference_times.append(_timed(reference, inputs, device)[0])
                seconds, result = _timed(student, inputs, device)
                student_times.append(seconds)
                verify(result, inputs)  # every timed answer must be right, or skipping work would pay
        else:
            reference_times, student_times = [reference_first], [student_first]
    report = SpeedReport(
        ratio=min(student_times) / max(min(reference_times), 1e-9),
        student_seconds=min(student_times),
        reference_seconds=min(reference_times),
    )
    budget.record("ratio", round(report.ratio, 3))
    budget.record("max_ratio", budget.max_ratio)
    if report.ratio > budget.max_ratio:
        raise CheckFailure(
            f"`{name}` es demasiado lenta: tardó {report.student_seconds * 1e3:.1f} ms, "
            f"{report.ratio:.0f} veces lo que tarda la referencia ({report.reference_seconds * 1e3:.2f} ms); "
            f"se admite hasta {budget.max_ratio:.0f} veces. Pista: evita los bucles de Python y usa "
            "operaciones vectorizadas de torch (broadcasting, productos de matrices)."
        )
    return report
