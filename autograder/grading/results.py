"""One submission's result, as the Gradescope results.json schema plus what was executed.

`tests[]` has one entry per check (name, score, max_score, status, output,
visibility); device cases are in the entry's output and `extra_data`. Top-level
`extra_data` records what a TA needs to audit the run: cell errors, captured
output, limits, isolation layers, seed, versions and durations. Hidden checks are
`after_due_date` and their output never includes inputs or values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .. import __version__
from ..plugin import NO_GPU
from ..rules import PASSED, RuleVerdict
from .scoring import NOT_RUN, CheckScore, grade_cell_scores
from .session import CellRecord

STATUS_GRADED = "graded"
STATUS_INVALID = "invalid"
STATUS_ERROR = "error"
DEVICE_MARK = {"passed": "✔", "failed": "✘", "skipped": "omitido"}


@dataclass
class SubmissionResult:
    student: str
    assignment: str
    source: str
    status: str  # graded | invalid | error
    scores: list[CheckScore]
    message: str = ""
    cells: list[CellRecord] = field(default_factory=list)
    output: str = ""
    output_dropped: int = 0
    restarts: int = 0
    layers: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0
    ta_detail: str = ""
    fingerprint: str = ""  # what was graded, with what (see store.fingerprint); a re-run skips a match
    rules: list[RuleVerdict] = field(default_factory=list)  # by-hand rules, one verdict each

    @property
    def score(self) -> float:
        return round(sum(s.score for s in self.scores), 6)

    @property
    def max_score(self) -> float:
        return round(sum(s.info.points for s in self.scores), 6)

    def grade_cells(self) -> dict[str, dict[str, float]]:
        return grade_cell_scores(self.scores)

    def to_json(self) -> dict:
        return {
            "score": self.score,
            "max_score": self.max_score,
            "execution_time": round(self.seconds, 3),
            "output": self.summary(),
            "output_format": "md",
            "test_output_format": "md",
            "test_name_format": "md",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": self._tests(),
            "extra_data": {
                "student": self.student,
                "assignment": self.assignment,
                "source": self.source,
                "fingerprint": self.fingerprint,
                "status": self.status,
                "grade_cells": self.grade_cells(),
                "rules": [v.to_dict() for v in self.rules],
                "cells": [asdict(c) for c in self.cells],
                "output": self.output,
                "output_dropped_bytes": self.output_dropped,
                "worker_restarts": self.restarts,
                "isolation": self.layers,
                "limits": self.limits,
                "seed": self.seed,
                "grader_version": __version__,
                "ta_detail": self.ta_detail,
            },
        }

    def _tests(self) -> list[dict]:
        """One entry per check; each by-hand rule goes just before the first check of its grade cell."""
        rules: dict[str, list[RuleVerdict]] = {}
        for verdict in self.rules:
            rules.setdefault(verdict.rule.grade_id, []).append(verdict)
        entries = []
        for s in self.scores:
            entries += [_rule_entry(v) for v in rules.pop(s.info.grade_id, [])]
            entries.append(_test_entry(s))
        return entries + [_rule_entry(v) for verdicts in rules.values() for v in verdicts]

    def summary(self) -> str:
        """The top-level feedback text (Spanish)."""
        lines = [f"**Puntaje: {self.score:g} de {self.max_score:g}.**"]
        if self.message:
            lines.append("\n" + self.message)
        failed = [c for c in self.cells if c.status != "ok"]
        if failed:
            lines.append("\nCeldas de tu notebook que fallaron al ejecutarse (las demás celdas sí se ejecutaron):\n")
            for c in failed:
                error = c.error or {}
                where = f"celda {c.index}" + (f" (`{c.preview}`)" if c.preview else "")
                lines.append(f"- {where}: {error.get('type', c.status)}: {error.get('message', '')}".rstrip(": "))
        broken = [v for v in self.rules if v.violated]
        if broken:
            lines.append("\nPartes que valen 0 por no cumplir su regla «a mano»: "
                         + ", ".join(f"«{v.rule.grade_id}»" for v in broken) + " (el detalle está en cada regla).")
        if any(case.message == NO_GPU for s in self.scores for case in s.cases):
            lines.append("\nLos casos en `cuda` se omitieron porque no hay GPU en la máquina de corrección; "
                         "los puntos de cada comprobación se reparten entre los casos que sí corrieron.")
        notes = [n for c in self.cells for n in c.notes]
        if notes:
            lines.append("\nNotas:\n")
            lines += [f"- {n}" for n in dict.fromkeys(notes)]
        return "\n".join(lines)


def _test_entry(s: CheckScore) -> dict:
    info = s.info
    lines = []
    for case in s.cases:
        mark = DEVICE_MARK.get(case.outcome, case.outcome)
        message = case.message.splitlines() or [""]
        lines.append(f"- {case.device} {mark}" + (f": {message[0]}" if message[0] else ""))
        lines += [f"    {line}" for line in message[1:]]
    if s.voided_by is not None:
        lines.insert(0, f"Sin puntos: la parte «{info.grade_id}» no cumple su regla «a mano» "
                        f"({s.voided_by.rule.title}).")
    return {
        "name": info.title,
        "score": s.score,
        "max_score": info.points,
        "status": "passed" if s.passed else "failed",
        "output": "\n".join(lines) or NOT_RUN,
        "visibility": "after_due_date" if info.hidden else "visible",
        "tags": [info.grade_id],
        "extra_data": {
            "check": info.check,
            "grade_id": info.grade_id,
            "hidden": info.hidden,
            "cases": [{"device": c.device, "outcome": c.outcome, "seconds": round(c.seconds, 4),
                       "properties": c.properties, "ta_detail": c.ta_detail} for c in s.cases],
        },
    }


def _rule_entry(verdict: RuleVerdict) -> dict:
    """A by-hand rule as a test of 0 points: its verdict is what voids (or not) its grade cell."""
    return {
        "name": verdict.rule.title,
        "score": 0.0,
        "max_score": 0.0,
        "status": "passed" if verdict.status == PASSED else "failed",
        "output": verdict.message() or "Se cumple.",
        "visibility": "visible",
        "tags": [verdict.rule.grade_id, "by_hand"],
        "extra_data": {"check": f"by_hand:{verdict.rule.grade_id}", "grade_id": verdict.rule.grade_id, "hidden": False,
                       "cases": [], "rule": verdict.to_dict()},
    }


def dump(result: SubmissionResult) -> str:
    """The result file's text. Strings from the worker may hold lone surrogates: they become '?'."""
    text = json.dumps(result.to_json(), ensure_ascii=False, indent=1) + "\n"
    return text.encode("utf-8", "replace").decode("utf-8")
