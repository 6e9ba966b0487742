"""Failures a check can report, with student-facing text in Spanish.

Every failure carries a `summary`, safe to show for any check, and an optional
`detail` (values, indices, the student's own traceback) that is shown only for
public checks, so hidden inputs never reach feedback.
"""

from __future__ import annotations

import builtins

BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException))


class CheckFailure(AssertionError):
    """A check did not pass because of what the submission did."""

    def __init__(self, summary: str, *, detail: str | None = None) -> None:
        super().__init__(summary if detail is None else f"{summary}\n{detail}")
        self.summary = summary
        self.detail = detail

    def render(self, *, reveal: bool) -> str:
        """The message for feedback; `reveal` is False for hidden checks."""
        if reveal and self.detail:
            return f"{self.summary}\n{self.detail}"
        return self.summary


class StudentError(CheckFailure):
    """The student's code raised while a check called it."""

    def __init__(self, *, label: str, type_name: str, message: str, traceback: str) -> None:
        self.label = label
        self.type_name = type_name
        self.message = message
        if type_name == "NotImplementedError":
            summary = f"`{label}` todavía no está implementada (lanza `NotImplementedError`)."
            detail = None
        else:
            # The summary is shown for hidden checks too, so it names only built-in exception types:
            # a class name of the student's own could carry a hidden input out.
            shown = f" `{type_name}`" if type_name in BUILTIN_EXCEPTIONS else ""
            summary = f"`{label}` lanzó una excepción{shown}."
            parts = [] if shown else [f"Excepción: `{type_name}`"]
            parts += [f"Mensaje: {message}"] * bool(message) + [f"Dónde ocurrió:\n{traceback}"] * bool(traceback)
            detail = "\n".join(parts) or None
        super().__init__(summary, detail=detail)


class MissingName(CheckFailure):
    """The notebook does not define a name the check needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Tu notebook no define `{name}`. Revisa que exista con ese nombre exacto "
            "y que la celda donde la defines no tenga errores."
        )


class WorkerLost(CheckFailure):
    """The process running the student's code died, hung, or answered garbage."""


class WorkerTimeout(WorkerLost):
    """The student's code ran past its time limit and its process was killed. `call_limit`: the limit was the
    one for a single call (not a check's budget nor the submission's), so the code itself took that long."""

    call_limit = False


class ProtocolError(ValueError):
    """A message from the worker is malformed; the worker can no longer be trusted to stay in sync."""
